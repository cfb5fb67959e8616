#!/usr/bin/env bash
# Load benchmark of the appliance API and dashboard (docs/bench/web.md).
# 1,000,000 audit entries, 50 VMs (test guest, booted and powered off), 100 concurrent clients
# (wrk, 2 threads, 20 s per endpoint). Prints p50/p99 per endpoint and the daemon's RSS.
# Usage: web/bench/web_load.sh [entries] [vms]   (needs a release build:
#   cargo build --release -p sakshi-web -p sakshi-host --bins && cargo build --release -p sakshi-web --example seed_audit)
set -euo pipefail
ENTRIES=${1:-1000000}
VMS=${2:-50}
T=${CARGO_TARGET_DIR:-target}/release
SAKSHI=$T/sakshi
SEED=$T/examples/seed_audit
DATA=$(mktemp -d /tmp/sakshi-bench.XXXXXX)
PORT=${PORT:-18480}
URL=http://127.0.0.1:$PORT
LOG=$DATA.log
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DATA" "$DATA.toml"; }
trap cleanup EXIT

cat > "$DATA.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[data]
dir = "$DATA"
[vms]
max_vms = $((VMS + 8))
[demo]
enabled = false
TOML

start() { "$SAKSHI" serve --config "$DATA.toml" >>"$LOG" 2>&1 & PID=$!;
  for _ in $(seq 600); do grep -q "listening on" "$LOG" 2>/dev/null && return; sleep 0.1; done; echo "daemon did not start"; cat "$LOG"; exit 1; }
stop() { kill "$PID"; wait "$PID" || true; PID=; }

start
PW=$(grep "initial admin password:" "$LOG" | awk '{print $NF}')
stop
echo "seeding $ENTRIES audit entries..."
"$SEED" "$DATA" "$ENTRIES"
: > "$LOG"
start
export SAKSHI_URL=$URL
eval "$(SAKSHI_PASSWORD=$PW "$SAKSHI" login --user admin --name bench --days 1)"
GUEST=${GUEST:-$("$T/sakshi-vmm" --print-test-guest)}
SHA=$("$SAKSHI" image add "$GUEST" --kind kernel --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["sha256"])')
for i in $(seq 1 "$VMS"); do
  "$SAKSHI" vm create --name "bench-$i" --kernel "$SHA" --cmdline "console=ttyS0 marker=b$i" --memory 32 --start --json >/dev/null
done
sleep 2
VM=$("$SAKSHI" vm list --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["items"][0]["id"])')
# Dashboard session cookie: GET /login for the CSRF cookie, then POST the form.
JAR=$(mktemp)
CSRF=$(curl -s -c "$JAR" "$URL/login" | grep -o 'name="csrf" value="[0-9a-f]*"' | head -1 | grep -o '[0-9a-f]\{64\}')
curl -s -b "$JAR" -c "$JAR" -o /dev/null --data-urlencode "username=admin" --data-urlencode "password=$PW" \
     --data-urlencode "csrf=$CSRF" --data-urlencode "next=/" "$URL/login"
COOKIE=$(awk '$6=="sakshi_session"{print $7}' "$JAR")
sleep 20
RSS_IDLE=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
echo "daemon RSS idle (1M entries, $VMS VMs, 20 s after the last request): $((RSS_IDLE / 1024)) MiB"

run() { # name path header
  local out; out=$(wrk -t2 -c100 -d20s --latency -H "$3" "$URL$2" 2>&1)
  local p50 p99 rps non2xx
  p50=$(echo "$out" | awk '/^ *50%/{print $2}'); p99=$(echo "$out" | awk '/^ *99%/{print $2}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}'); non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  printf "| %-34s | %8s | %8s | %9s | %s |\n" "$1" "$p50" "$p99" "$rps" "${non2xx:-0}"
}
echo "| endpoint (100 connections, 20 s) | p50 | p99 | req/s | non-2xx |"
echo "|---|---|---|---|---|"
AUTH="Authorization: Bearer $SAKSHI_TOKEN"
CK="Cookie: sakshi_session=$COOKIE"
run "API GET /api/v1/vms ($VMS VMs)" /api/v1/vms "$AUTH"
run "API GET /api/v1/vms/{id}" "/api/v1/vms/$VM" "$AUTH"
run "API GET /api/v1/overview" /api/v1/overview "$AUTH"
run "API GET /api/v1/audit/entries (50)" "/api/v1/audit/entries?limit=50" "$AUTH"
run "API GET audit entries, filter actor" "/api/v1/audit/entries?limit=50&actor=user3" "$AUTH"
run "UI GET /vms" /vms "$CK"
run "UI GET /vms/{id}" "/vms/$VM" "$CK"
run "UI GET / (overview)" / "$CK"
run "UI GET /audit" /audit "$CK"
run "UI GET /audit/{index} (+ proof)" "/audit/$((ENTRIES / 2))" "$CK"
RSS_AFTER=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
sleep 20
RSS_SETTLED=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
echo "daemon RSS right after the load: $((RSS_AFTER / 1024)) MiB, 20 s later: $((RSS_SETTLED / 1024)) MiB"
echo "daemon RSS after the load: $((RSS_AFTER / 1024)) MiB; audit size now $("$SAKSHI" status --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["audit_size"])')"
