#!/usr/bin/env bash
# Memory benchmark: resident memory of a primary, a secondary and Knot on the same zones.
#
# Usage: benches/memory.sh [options]
#   --sizes "N ..."    host counts (default "1000 10000 100000")
#   --settle S         seconds between a server's readiness and reading its memory (default 5)
#   --gd-args "..."    flags for `globaldns zonefile` and every `globaldns serve` (default
#                      "--vip-range 240.10.0.0/15", as scale.sh and fleet.sh)
#   --no-build         never run cargo; use the existing binary
#   --keep             keep the work directory; --workdir DIR: use DIR
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# For each size: generates scale.sh's tree (10 cluster directories, 500 entries a file), runs
# `globaldns zonefile` into Knot (lib/knot.sh: one zone a file, no journal), then a primary on the
# same tree and state directory (the same VIPs) and a secondary that transfers from it
# (lib/memory_probe.py checks it serves the primary's serial and answers). Each server's VmRSS
# and VmHWM are read --settle seconds after it answers; the secondary's VmRSS once more after it
# answered every host once (its answer cache full). Prints one table beside CoreDNS's sizing
# rule, (pods + services) / 1000 + 54 MB with services = hosts. Everything on 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/knot.sh
source "$HERE/lib/knot.sh"

SIZES="1000 10000 100000" SETTLE=5 GD_ARGS="--vip-range 240.10.0.0/15" BUILD=1 KEEP=0 WORK=""
while (($#)); do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    *) common_opt "$@"; shift "$BENCH_SHIFT" ;;
  esac
done
for n in $SIZES; do [[ $n =~ ^[0-9]+$ ]] || die "--sizes: numbers expected"; done

setup_workdir memory
ensure_tools knotd:knot knotc:knot dig:bind9-dnsutils curl:curl taskset:util-linux
quiesce_knot_service
require_globaldns

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

START=$(date -u +%FT%TZ)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=()
for n in $SIZES; do
  dir=$WORK/$n
  mkdir -p "$dir/state"
  log "== $n hosts =="
  "$PY" "$HERE/gen-serviceentries.py" "$n" "$dir/se" --clusters 10 --per-file 500 \
    --queries-dir "$dir/queries" >/dev/null || die "generator failed"
  # shellcheck disable=SC2086
  "$GLOBALDNS_BIN" zonefile --zones "$dir/se" --state-dir "$dir/state" $GD_ARGS \
    >"$dir/zone.txt" 2>"$dir/zonefile.err" || { cat "$dir/zonefile.err" >&2; die "globaldns zonefile failed"; }

  start_knot "$dir/knot" "$dir/zone.txt" "$(free_port)" 0-1
  sleep "$SETTLE" # a reading after a fixed interval, not a synchronisation
  k_rss=$(status_kb "$KNOT_PID" VmRSS) k_hwm=$(status_kb "$KNOT_PID" VmHWM)
  kill_tracked

  rc=0
  read -r p_rss p_hwm s_rss s_hwm s_q < <(timeout -k 10 1200 "$PY" "$HERE/lib/memory_probe.py" \
    --bin "$GLOBALDNS_BIN" --zones "$dir/se" --work "$dir" --hosts-file "$dir/queries/hosts.txt" \
    --gd-args "$GD_ARGS" --settle "$SETTLE" || echo "fail") || rc=$?
  [[ $p_rss =~ ^[0-9]+$ && $rc == 0 ]] || { tail -n 5 "$dir"/*.log >&2 || true; die "memory probe failed at $n hosts; logs in $dir"; }
  rule=$(awk -v n="$n" 'BEGIN { printf "%.1f", (n / 1000 + 54) * 1e6 / 1048576 }')
  ratio=$(awk -v s="$s_rss" -v k="$k_rss" 'BEGIN { printf "%.2f", s / k }')
  ROWS+=("| $(printf "%'d" "$n") | $(mib "$p_rss") / $(mib "$p_hwm") | $(mib "$s_rss") / $(mib "$s_hwm") | $(mib "$s_q") | $(mib "$k_rss") / $(mib "$k_hwm") | $ratio | $rule |")
done

echo
echo "globaldns memory benchmark: $START, $(nproc) CPUs, kernel $(uname -r), knotd $(knotd --version | head -1 | awk '{print $NF}')"
echo "  binary $GLOBALDNS_BIN; gd-args \"$GD_ARGS\"; settle ${SETTLE}s; load average before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| hosts | primary VmRSS / VmHWM, MiB | secondary VmRSS / VmHWM, MiB | secondary VmRSS after every host asked once | Knot VmRSS / VmHWM, MiB | secondary / Knot (VmRSS) | CoreDNS rule, MiB |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${ROWS[@]}"
OK=1
