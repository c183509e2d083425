#!/usr/bin/env bash
# Spec write-back with a fleet on a real kube-apiserver: applies per entry (issue 17's goal:
# with 12 instances, at most 1.2 applies per entry; none after a restart).
#
# Usage: benches/writeback.sh [options]
#   --instances M        globaldns instances sharing the kube store, all --write-back spec (default 12)
#   --hosts N            single-host TCP ServiceEntries created in phase 1 (default 200); phase 3
#                        creates N/2 more while the claimer instance is killed
#   --timeout S          max wait per phase for every entry to be written (default 300)
#   --quiet S            seconds no applies counter may move before a phase counts as settled
#                        (default 10)
#   --gd-args "..."      more flags for every `globaldns serve` (default "--vip-range 240.10.0.0/15")
#   --no-build           never run cargo; use the existing binary
#   --keep               keep the work directory; --workdir DIR: use DIR
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# One etcd + kube-apiserver v1.20.2 from scripts/kube/cluster.sh (built and cached by
# scripts/kube/build-apiserver.sh), both CRDs; the instances run
# `serve --cluster c1=… --cluster-name c1 --store kube --store-cluster c1 --write-back spec
# --udp-workers 1` on 127.0.0.1. Phases (lib/writeback_kube.py): 1. N entries created; 2. every
# instance restarted; 3. N/2 entries created while the claimer is killed with SIGKILL. Reported per
# phase: applies sent (globaldns_spec_writes_total summed over the instances) and the apiserver's
# PATCH/APPLY requests on serviceentries, per entry. All traffic to 127.0.0.1, every wait bounded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"

INSTANCES=12 HOSTS=200 TIMEOUT=300 QUIET=10 GD_ARGS="--vip-range 240.10.0.0/15" BUILD=1 KEEP=0 WORK=""
while (($#)); do
  case $1 in
    --instances) INSTANCES=$2; shift 2 ;;
    --hosts) HOSTS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --quiet) QUIET=$2; shift 2 ;;
    *) common_opt "$@"; shift "$BENCH_SHIFT" ;;
  esac
done
for v in "$INSTANCES" "$HOSTS" "$TIMEOUT" "$QUIET"; do
  [[ $v =~ ^[0-9]+$ ]] || die "numeric options expected"
done
((INSTANCES >= 2 && HOSTS >= 2)) || die "--instances and --hosts: at least 2"

setup_workdir writeback
WORK=$(cd "$WORK" && pwd)
# Should the driver be killed before its own teardown: its instances (own sessions) and the cluster.
reap_driver() {
  local pid
  while read -r pid; do
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$WORK/" && { kill -KILL "$pid" || true; }
  done < <(cat "$WORK/instances.pids" 2>/dev/null)
  [[ ! -f $WORK/c1/port ]] || "$REPO_ROOT/scripts/kube/cluster.sh" down "$WORK/c1" >/dev/null 2>&1
}
on_exit reap_driver
ensure_tools curl:curl
require_globaldns

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +%FT%TZ)
# Start-up of the cluster and three rounds of instances, three phases of waits and settles.
LIMIT=$((600 + INSTANCES * 30 + 3 * (TIMEOUT + 2 * QUIET + 60)))
log "== spec write-back: $INSTANCES instances, $HOSTS entries (bounded by ${LIMIT}s) =="
rc=0
timeout -k 30 "$LIMIT" "$PY" "$HERE/lib/writeback_kube.py" --bin "$GLOBALDNS_BIN" --work "$WORK" \
  --instances "$INSTANCES" --hosts "$HOSTS" --timeout "$TIMEOUT" --quiet "$QUIET" --gd-args "$GD_ARGS" \
  >"$WORK/writeback.txt" &
track_pid $!
wait $! || rc=$?
BENCH_PIDS=()

echo
echo "globaldns spec write-back benchmark: $START, $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "  binary $GLOBALDNS_BIN; gd-args \"$GD_ARGS\"; load average before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cat "$WORK/writeback.txt"
((rc == 0)) || die "writeback_kube.py failed (rc $rc); logs in $WORK/logs"
OK=1
