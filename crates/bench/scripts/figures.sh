#!/usr/bin/env bash
# Reproduces the figures of docs/benchmarks.md ("Load tool results"): builds the release
# binaries, then runs every measurement one after the other (never in parallel: the figures
# are only as good as the machine is quiet). Results (JSON, SVG) go to $OUT.
#
#   crates/bench/scripts/figures.sh [OUT]        # default OUT=target/bench-results
#
# Environment: CARGO_TARGET_DIR (default target), DURATION (10s; whole seconds or minutes,
# e.g. 10s, 15 or 2m, because pgbench -T takes whole seconds), WARMUP (2s), RUNS (3),
# PG_URL (default postgres://postgres@127.0.0.1:5432; PostgreSQL parts are skipped when
# psql/pgbench are missing or the server does not answer). Every run starts on a fresh
# server, and on PostgreSQL on a freshly created database.
set -euo pipefail
cd "$(dirname "$0")/../../.."
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${1:-$TARGET/bench-results}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
RUNS="${RUNS:-3}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"

# DURATION in whole seconds, for pgbench -T (the load tool takes 500ms or 1.5s too, but the
# baselines must measure the same window as the load tool).
if [[ ! "$DURATION" =~ ^[0-9]+[sm]?$ ]]; then
  echo "DURATION=$DURATION: use whole seconds or minutes (e.g. 10s, 15, 2m)" >&2
  exit 2
fi
case "$DURATION" in
  *m) DURATION_S=$(( 10#${DURATION%m} * 60 )) ;;
  *)  DURATION_S=$(( 10#${DURATION%s} )) ;;
esac
mkdir -p "$OUT"

cargo build --release -p trueline -p trueline-bench
BENCH="$TARGET/release/trueline-bench"
COMMON=(--spawn --server-bin "$TARGET/release/trueline" --duration "$DURATION" --warmup "$WARMUP")

{ echo "nproc: $(nproc)"; grep -m1 'model name' /proc/cpuinfo; uname -srvm; date -u; } | tee "$OUT/machine.txt"

"$BENCH" sweep hot-item "${COMMON[@]}" --clients 1,4,16,64 --runs "$RUNS" \
  --json "$OUT/hot-item.json" --chart-dir "$OUT/charts" | tee "$OUT/hot-item.txt"
"$BENCH" sweep spread "${COMMON[@]}" --clients 64 --runs "$RUNS" \
  --json "$OUT/spread.json" | tee "$OUT/spread.txt"
"$BENCH" sweep mixed "${COMMON[@]}" --clients 16 --runs "$RUNS" \
  --json "$OUT/mixed.json" | tee "$OUT/mixed.txt"
"$BENCH" sweep events-append "${COMMON[@]}" --clients 1,64 --runs "$RUNS" \
  --json "$OUT/events-append.json" | tee "$OUT/events-append.txt"
"$TARGET/release/sqlite-baseline" --tasks 1,64 --duration "$DURATION" --runs "$RUNS" \
  --json "$OUT/sqlite-baseline.json" | tee "$OUT/sqlite-baseline.txt"

if command -v pgbench >/dev/null && psql "$PG_URL/postgres" -c 'select 1' >/dev/null 2>&1; then
  # A fresh database for every pgbench run too: the dead row versions of one run's updates
  # must not slow the next.
  DB=trueline_bench_pgbench
  for clients in 1 64; do
    for run in $(seq "$RUNS"); do
      psql "$PG_URL/postgres" -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
      psql "$PG_URL/$DB" -q -c 'CREATE TABLE items (id bigint PRIMARY KEY, qty bigint NOT NULL CHECK (qty >= 0))' \
        -c 'INSERT INTO items VALUES (1, 1000000)'
      pgbench "$PG_URL/$DB" -n -c "$clients" -j 2 -T "$DURATION_S" \
        -f crates/bench/pgbench/guarded_update.sql | tee -a "$OUT/pgbench-c$clients.txt"
    done
  done
  psql "$PG_URL/postgres" -q -c "DROP DATABASE $DB"

  # A fresh database for every run of the sweep, as for SQLite's fresh data directory: the
  # tool runs this after stopping one run's server and before starting the next one's.
  DB=trueline_bench_server
  FRESH_DB="psql '$PG_URL/postgres' -q -c 'DROP DATABASE IF EXISTS $DB' -c 'CREATE DATABASE $DB'"
  "$BENCH" sweep hot-item "${COMMON[@]}" --database-url "$PG_URL/$DB" --before-each-run "$FRESH_DB" \
    --clients 1,64 --runs "$RUNS" --json "$OUT/hot-item-postgres.json" | tee "$OUT/hot-item-postgres.txt"
  psql "$PG_URL/postgres" -q -c "DROP DATABASE $DB"
else
  echo "PostgreSQL or pgbench not available: skipping the PostgreSQL figures" >&2
fi
