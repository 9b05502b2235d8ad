#!/usr/bin/env bash
# Runs Schemathesis (all default checks) against a freshly started server on a temp data dir.
# Usage: .ci/schemathesis.sh [path/to/trueline] [extra st args…]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug/trueline}"
shift || true
VENV="${TRUELINE_ST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/trueline/schemathesis-4.32.5}"
if [ ! -x "$VENV/bin/st" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet schemathesis==4.32.5
fi
DATA="$(mktemp -d)"
LOG="$DATA/server.log"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait "${PID:-}" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
# Fuzzing hammers one address: rate limits off; cheap password hashing.
TRUELINE_LIMITS__ENABLED=false TRUELINE_AUTH__PASSWORD_MEMORY_KIB=64 TRUELINE_AUTH__PASSWORD_ITERATIONS=1 \
TRUELINE_SERVER__SHUTDOWN_DRAIN_MS=0 \
    "$BIN" serve --bind 127.0.0.1:0 --data-dir "$DATA" >"$LOG" 2>&1 &
PID=$!
ADDR=""
for _ in $(seq 1 100); do
    ADDR=$(grep -o '"address":"[^"]*"' "$LOG" | head -1 | cut -d'"' -f4 || true)
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "server did not start"; cat "$LOG"; exit 1; }
TOKEN=$(curl -sf -X POST "http://$ADDR/api/v1/auth/signup" -H 'content-type: application/json' \
    -d '{"email":"schemathesis@example.com","password":"a long passphrase","organization_name":"Fuzz"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"]["token"])')
# DELETE /auth/tokens/current would revoke the token every other request uses; SSE never ends.
"$VENV/bin/st" run "http://$ADDR/api/v1/openapi.json" \
    -H "Authorization: Bearer $TOKEN" \
    --exclude-path /api/v1/auth/tokens/current \
    --exclude-path /api/v1/events/subscribe \
    --request-timeout 10 --no-color "$@"
