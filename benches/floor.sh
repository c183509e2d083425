#!/usr/bin/env bash
# globaldns against the floor (a null UDP reflector running the fast path's own loop) and
# Knot DNS, with a load generator that is not the limit (benches/loadgen.rs).
#
# Usage: benches/floor.sh [options]
#   --hosts N          generated ServiceEntry hosts (default 10000)
#   --rounds R         saturation rounds per server and mix, rotating the order (default 3)
#   --duration S       seconds per generator run (default 8)
#   --mix M            positive | mixed | both (default both; mixed = 80/10/10
#                      positive / NODATA (AAAA) / NXDOMAIN)
#   --rate Q           fixed rate for the CPU-per-answer and latency runs (default: half of
#                      Knot's median saturation qps for that mix)
#   --rate-rounds R    fixed-rate runs per server and mix (default 1)
#   --servers LIST     globaldns,knot,reflector (default all three)
#   --sockets S        generator sockets (default 4); --window W queries in flight per socket at
#                      saturation (default 100)
#   --server-cpu N     core for the servers (default 1); --client-cpu N (default 0)
#   --gd-args "..."    extra flags for `globaldns zonefile` and `globaldns serve`
#   --no-build         never run cargo; use the existing executables
#   --wait-idle S      wait up to S s for idle cores first (default 0: warn only)
#   --keep / --workdir DIR
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# Every server runs on one core (taskset, every thread), the generator on the other.
# Saturation: the generator keeps --window queries in flight per socket; fixed rate: an open
# loop at --rate. Server CPU = utime+stime from /proc/PID/stat over the run ÷ answers.
# Loopback only; every run bounded by --duration and timeout(1). Prints one table per mix;
# raw results in /tmp/globaldns-floor-last.tsv.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/knot.sh
source "$HERE/lib/knot.sh"
# shellcheck source=lib/loadgen.sh
source "$HERE/lib/loadgen.sh"

HOSTS=10000 ROUNDS=3 DURATION=8 MIX=both RATE=0 RATE_ROUNDS=1 SERVERS=globaldns,knot,reflector
SOCKETS=4 WINDOW=100 SRV_CPU=1 CLI_CPU=0 GD_ARGS="" BUILD=1 WAIT_IDLE=0 KEEP=0 WORK=""
while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --mix) MIX=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --rate-rounds) RATE_ROUNDS=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --sockets) SOCKETS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --server-cpu) SRV_CPU=$2; shift 2 ;;
    --client-cpu) CLI_CPU=$2; shift 2 ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --wait-idle) WAIT_IDLE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --workdir) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case $MIX in positive) MIXES=(positive) ;; mixed) MIXES=(mixed) ;; both) MIXES=(positive mixed) ;;
  *) die "--mix must be positive, mixed or both" ;; esac
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do [[ $s =~ ^(globaldns|knot|reflector)$ ]] || die "bad server $s"; done
has_server() { [[ ",$SERVERS," == *",$1,"* ]]; }
[[ $HOSTS =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ && $RATE =~ ^[0-9]+$ ]] || die "numeric options expected"
((DURATION > 0 && DURATION <= 120)) || die "--duration must be 1..120"

setup_workdir floor

ensure_tools knotd:knot knotc:knot dig:bind9-dnsutils curl:curl taskset:util-linux
quiesce_knot_service
require_globaldns
build_bench_bins "$BUILD"

log "work dir $WORK; hosts=$HOSTS rounds=$ROUNDS duration=${DURATION}s mixes=${MIXES[*]} servers=$SERVERS"
"$PY" "$HERE/gen-serviceentries.py" "$HOSTS" "$WORK/se" --queries-dir "$WORK/queries" >&2 \
  || die "generator failed"
mkdir -p "$WORK/state"
# shellcheck disable=SC2086
"$GLOBALDNS_BIN" zonefile --zones "$WORK/se" --state-dir "$WORK/state" $GD_ARGS \
  >"$WORK/zone.txt" 2>"$WORK/zonefile.err" || { cat "$WORK/zonefile.err" >&2; die "globaldns zonefile failed"; }

declare -A PORT PID
if has_server knot; then
  PORT[knot]=$(free_port)
  start_knot "$WORK/knot" "$WORK/zone.txt" "${PORT[knot]}" "$SRV_CPU"
  PID[knot]=$KNOT_PID
fi
if has_server globaldns; then
  PORT[globaldns]=$(free_port)
  start_globaldns_pinned "$WORK/se" "$WORK/state" "${PORT[globaldns]}" "$(free_port)" "$SRV_CPU" \
    "$WORK/globaldns.log" "$GD_ARGS"
  PID[globaldns]=$GD_PID
  log "globaldns pid $GD_PID, threads: $(show_affinity "$GD_PID")"
fi
if has_server reflector; then
  PORT[reflector]=$(free_port)
  # One worker, as globaldns sizes itself on one core.
  taskset -c "$SRV_CPU" "$REFLECTOR_BIN" --listen "127.0.0.1:${PORT[reflector]}" --workers 1 \
    --max-seconds 3600 >"$WORK/reflector.log" 2>&1 &
  PID[reflector]=$!
  track_pid "${PID[reflector]}"
  until grep -q 'worker' "$WORK/reflector.log" 2>/dev/null; do
    alive "${PID[reflector]}" || { cat "$WORK/reflector.log" >&2; die "reflector exited"; }
    sleep 0.05
  done
  repin "${PID[reflector]}" "$SRV_CPU"
fi

idle_deadline=$((SECONDS + WAIT_IDLE))
until check_idle 2; do
  if ((SECONDS >= idle_deadline)); then warn "results will be noisy (other processes use the CPUs)"; break; fi
  sleep 8
done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

RESULTS=$WORK/results.tsv
printf 'kind\tmix\tround\tserver\t%s\n' "kv" >"$RESULTS"
# run KIND MIX ROUND SERVER RATE DURATION
run() {
  local kind=$1 mix=$2 round=$3 srv=$4 rate=$5 dur=$6 line
  alive "${PID[$srv]}" || die "$srv is not running"
  line=$(run_loadgen "$WORK/run.out" "$CLI_CPU" --server "127.0.0.1:${PORT[$srv]}" \
    --queries "$WORK/queries/$mix.txt" --rate "$rate" --window "$WINDOW" --sockets "$SOCKETS" \
    --duration "$dur" --server-pid "${PID[$srv]}")
  alive "${PID[$srv]}" || die "$srv died during the run"
  [[ $kind == warmup ]] && return 0
  printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$mix" "$round" "$srv" "$line" >>"$RESULTS"
  log "$kind $mix r$round $srv: $line"
}

for mix in "${MIXES[@]}"; do
  for s in "${SERVER_LIST[@]}"; do run warmup "$mix" 0 "$s" 0 2; done
  for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round so that drift on the machine spreads over every server.
    order=("${SERVER_LIST[@]}")
    for ((k = 0; k < (r - 1) % ${#order[@]}; k++)); do order=("${order[@]:1}" "${order[0]}"); done
    for s in "${order[@]}"; do run peak "$mix" "$r" "$s" 0 "$DURATION"; done
  done
  rate=$RATE
  if ((rate == 0)); then
    ref=knot; has_server knot || ref=${SERVER_LIST[0]}
    rate=$("$PY" "$HERE/lib/floor_report.py" --half-peak "$mix" "$ref" "$RESULTS")
  fi
  for ((r = 1; r <= RATE_ROUNDS; r++)); do
    order=("${SERVER_LIST[@]}")
    for ((k = 0; k < (r - 1) % ${#order[@]}; k++)); do order=("${order[@]:1}" "${order[0]}"); done
    for s in "${order[@]}"; do run rate "$mix" "$r" "$s" "$rate" "$DURATION"; done
  done
done

echo
echo "globaldns floor benchmark: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "  load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg); $(knotd --version 2>&1 | head -1)"
echo "  hosts=$HOSTS rounds=$ROUNDS duration=${DURATION}s sockets=$SOCKETS window=$WINDOW server-cpu=$SRV_CPU client-cpu=$CLI_CPU"
echo
"$PY" "$HERE/lib/floor_report.py" "$RESULTS"
cp "$RESULTS" /tmp/globaldns-floor-last.tsv && log "raw results: /tmp/globaldns-floor-last.tsv"
OK=1
