#!/usr/bin/env bash
# A primary's memory while it serves bursts of concurrent AXFRs (a DaemonSet rollout makes
# every secondary transfer at once).
#
# Usage: benches/xfr_burst.sh [options]
#   --hosts N          hosts to generate (default 100000)
#   --clients LIST     concurrent AXFRs of each burst, comma-separated (default 5,50)
#   --gd-args "..."    flags for `globaldns serve` (default "--vip-range 240.10.0.0/15"; add e.g.
#                      "--transfers-out 50" to let a whole burst through at once)
#   --settle S         seconds after a burst before the RSS "after" is read (default 5)
#   --no-build         never run cargo; use the existing binary
#   --keep             keep the work directory
#   --workdir DIR      use DIR instead of a fresh mktemp dir
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# Generates the hosts (benches/gen-serviceentries.py), starts one primary, waits for /readyz,
# then runs each burst in turn (benches/lib/xfr_burst.py): per burst the server's VmRSS before,
# its peak during the burst (sampled every 10 ms) and after it, how many transfers completed and
# how many were answered SERVFAIL (over --transfers-out). One JSON line per burst.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"

HOSTS=100000 CLIENTS=5,50 GD_ARGS="--vip-range 240.10.0.0/15" SETTLE=5 BUILD=1 KEEP=0 WORK=""
while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --workdir) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

setup_workdir xfr-burst
ensure_tools curl:curl
require_globaldns

log "work dir $WORK; generating $HOSTS hosts"
"$PY" "$HERE/gen-serviceentries.py" "$HOSTS" "$WORK/se" --queries-dir "$WORK/queries" >/dev/null \
  || die "generator failed"
DNS_PORT=$(free_port)
ADMIN_PORT=$(free_port)
mkdir -p "$WORK/state"
# shellcheck disable=SC2086 # GD_ARGS is a list of flags
"$GLOBALDNS_BIN" serve --zones "$WORK/se" --state-dir "$WORK/state" \
  --listen "127.0.0.1:$DNS_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
  --allow-transfer 127.0.0.0/8 $GD_ARGS >"$WORK/globaldns.log" 2>&1 &
SERVER=$!
track_pid "$SERVER"
t0=$SECONDS
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 600 || die "not ready in 600 s; see $WORK/globaldns.log"
log "ready in $((SECONDS - t0)) s; $GLOBALDNS_BIN $GD_ARGS"

echo "== globaldns transfer bursts: $HOSTS hosts, flags: $GD_ARGS =="
IFS=, read -ra BURSTS <<<"$CLIENTS"
for n in "${BURSTS[@]}"; do
  timeout -k 10 900 "$PY" "$HERE/lib/xfr_burst.py" --port "$DNS_PORT" --pid "$SERVER" \
    --clients "$n" --settle "$SETTLE" || die "burst of $n failed"
done
OK=1
