#!/usr/bin/env bash
# Scale test: globaldns serve on a large multi-cluster ServiceEntry tree.
#
# Usage: benches/scale.sh [options]
#   --hosts N          hosts to generate (default 100000)
#   --clusters K       cluster subdirectories (default 10)
#   --per-file M       ServiceEntry documents per file (default 500)
#   --iterations I     propagation measurements (default 20)
#   --timeout S        max wait for one change to become visible (default 30)
#   --gd-args "..."    flags for `globaldns serve` (default "--vip-range 240.10.0.0/15": 100,000
#                      hosts do not fit the default /16, whose 65,024 usable addresses run out)
#   --no-build         never run cargo; use the existing binary
#   --wait-idle S      wait up to S seconds for idle CPUs before starting (default 0)
#   --keep             keep the work directory
#   --workdir DIR      use DIR instead of a fresh mktemp dir
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# Prints (a) start -> /readyz time (cold and warm restart), (b) VmRSS/VmHWM,
# (c) rebuild time from a *build*_seconds metric if exposed (else skipped),
# (d) propagation delay p50/p99/max of a new host (new file and rewritten file),
# measured by polling the DNS port over UDP.  All waits are bounded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"

HOSTS=100000 CLUSTERS=10 PER_FILE=500 ITER=20 TIMEOUT=30 GD_ARGS="--vip-range 240.10.0.0/15" BUILD=1 KEEP=0 WORK="" WAIT_IDLE=0
while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --clusters) CLUSTERS=$2; shift 2 ;;
    --per-file) PER_FILE=$2; shift 2 ;;
    --iterations) ITER=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --wait-idle) WAIT_IDLE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --workdir) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

if [[ -z $WORK ]]; then WORK=$(mktemp -d /tmp/globaldns-scale.XXXXXX); else mkdir -p "$WORK"; fi
OK=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  kill_tracked
  # the probe kills the server itself; this is the backstop
  if [[ -s $WORK/server.pid ]]; then
    local sp; sp=$(cat "$WORK/server.pid")
    alive "$sp" && { kill -TERM "$sp" 2>/dev/null; sleep 1; kill -KILL "$sp" 2>/dev/null || true; }
  fi
  if ((KEEP)) || ((OK == 0)); then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools curl:curl dig:bind9-dnsutils
require_globaldns

log "work dir $WORK; generating $HOSTS hosts over $CLUSTERS cluster dir(s)"
t0=$(date +%s.%N)
"$PY" "$HERE/gen-serviceentries.py" "$HOSTS" "$WORK/se" --clusters "$CLUSTERS" --per-file "$PER_FILE" \
  --queries-dir "$WORK/queries" || die "generator failed"
log "generated in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s, $(du -sh "$WORK/se" | cut -f1) of YAML"

DNS_PORT=$(free_port)
ADMIN_PORT=$(free_port)
mkdir -p "$WORK/state"
idle_deadline=$((SECONDS + WAIT_IDLE))
until check_idle 2; do
  if ((SECONDS >= idle_deadline)); then warn "machine busy: timings will be inflated"; break; fi
  sleep 8
done

echo
echo "== globaldns scale: $HOSTS hosts, $CLUSTERS clusters, $(find "$WORK/se" -name '*.yaml' | wc -l) files =="
rc=0
timeout -k 10 $((600 + ITER * (TIMEOUT + 5))) "$PY" "$HERE/lib/scale_probe.py" \
  --bin "$GLOBALDNS_BIN" --zones "$WORK/se" --state-dir "$WORK/state" \
  --hosts-file "$WORK/queries/hosts.txt" --dns-port "$DNS_PORT" --admin-port "$ADMIN_PORT" \
  --gd-args "$GD_ARGS" --iterations "$ITER" --timeout "$TIMEOUT" \
  --log "$WORK/globaldns.log" --pidfile "$WORK/server.pid" &
track_pid $!
wait $! || rc=$?
BENCH_PIDS=()
if ((rc != 0)); then
  tail -20 "$WORK/globaldns.log" >&2 || true
  die "scale probe failed (rc $rc); server log: $WORK/globaldns.log"
fi
OK=1
