#!/usr/bin/env bash
# Throughput / latency comparison of globaldns against Knot DNS serving the same data.
#
# Usage: benches/load.sh [options]
#   --hosts N          number of generated ServiceEntry hosts (default 10000)
#   --rounds R         alternating rounds per server and mix (default 3)
#   --duration S       seconds per dnsperf run (default 12)
#   --tcp              use TCP (dnsperf -m tcp) instead of UDP
#   --proto P          udp | tcp | udp,tcp (default udp; --tcp == --proto tcp)
#   --mix M            positive | mixed | both (default both)
#   --clients C        dnsperf -c (UDP sockets / TCP connections, default 4)
#   --outstanding Q    dnsperf -q, max queries in flight (default 200)
#   --warmup S         unrecorded warm-up run per server, mix and proto (default 2, 0 = off)
#   --peak-p99 | --no-peak-p99
#                      run the peak rounds with dnsperf -v so p99 can be computed
#                      (default on; costs the client ~5-10 % of its throughput,
#                      equally for both servers)
#   --no-half-peak     skip the latency-at-half-of-Knot's-peak runs
#   --servers LIST     knot,globaldns (default) | knot | globaldns, plus "secondary": a globaldns
#                      secondary (`serve --primary`) fed by AXFR from the globaldns primary and
#                      measured like the others (the primary runs even when not measured)
#   --fake-zone        serve the generator's approximate zone file in Knot instead
#                      of `globaldns zonefile` output (pipeline testing only; implied
#                      when globaldns is not among --servers and the binary is absent)
#   --no-build         never run cargo; use the existing binary
#   --gd-args "..."    extra flags for both `globaldns zonefile` and `globaldns serve`
#                      (e.g. "--vip-range fd00:10::/64 --ttl 30")
#   --server-quota PCT cap each server at PCT % of its core (CFS quota, 10 ms period), so
#                      the server, not the dnsperf core, is the bottleneck (default off)
#   --server-cpu N     core for the servers (default 1); --client-cpu N (default 0)
#   --wait-idle S      before measuring, wait up to S seconds for both cores to be idle
#                      (default 0: just warn when they are not)
#   --keep             keep the work directory (default: kept only on failure)
#   --workdir DIR      use DIR instead of a fresh mktemp dir
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# Everything runs on loopback; every dnsperf run is bounded by -l and by timeout(1).
# Exits non-zero when something failed (setup, a server died, dnsperf failed),
# never because globaldns was slower than a goal.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/knot.sh
source "$HERE/lib/knot.sh"

HOSTS=10000 ROUNDS=3 DURATION=12 PROTOS=udp MIX=both CLIENTS=4 OUTSTANDING=200 WARMUP=2
PEAK_P99=1 HALF_PEAK=1 SERVERS=knot,globaldns FAKE_ZONE=0 BUILD=1 GD_ARGS="" SRV_CPU=1 CLI_CPU=0
KEEP=0 WORK="" QUOTA=0 WAIT_IDLE=0

while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --tcp) PROTOS=tcp; shift ;;
    --proto) PROTOS=$2; shift 2 ;;
    --mix) MIX=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --outstanding) OUTSTANDING=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --peak-p99) PEAK_P99=1; shift ;;
    --no-peak-p99) PEAK_P99=0; shift ;;
    --no-half-peak) HALF_PEAK=0; shift ;;
    --servers) SERVERS=$2; shift 2 ;;
    --fake-zone) FAKE_ZONE=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --server-quota) QUOTA=$2; shift 2 ;;
    --server-cpu) SRV_CPU=$2; shift 2 ;;
    --client-cpu) CLI_CPU=$2; shift 2 ;;
    --wait-idle) WAIT_IDLE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --workdir) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case $MIX in positive) MIXES=(positive) ;; mixed) MIXES=(mixed) ;; both) MIXES=(positive mixed) ;;
  *) die "--mix must be positive, mixed or both" ;; esac
IFS=, read -r -a PROTO_LIST <<<"$PROTOS"
for p in "${PROTO_LIST[@]}"; do [[ $p == udp || $p == tcp ]] || die "bad --proto $p"; done
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do [[ $s == knot || $s == globaldns || $s == secondary ]] || die "bad server $s"; done
has_server() { [[ ",$SERVERS," == *",$1,"* ]]; }
[[ $HOSTS =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ && $DURATION =~ ^[0-9]+$ ]] || die "numeric options expected"
(($(nproc) >= 2)) || warn "fewer than 2 CPUs: server and client will share a core"

# ------------------------------------------------------------------ setup
if [[ -z $WORK ]]; then WORK=$(mktemp -d /tmp/globaldns-load.XXXXXX); else mkdir -p "$WORK"; fi
OK=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  kill_tracked
  cg_cleanup
  if ((KEEP)) || ((OK == 0)); then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools knotd:knot knotc:knot dnsperf:dnsperf dig:bind9-dnsutils curl:curl taskset:util-linux
quiesce_knot_service

if has_server globaldns || has_server secondary; then
  ((BUILD)) && maybe_build_globaldns
  [[ -x $GLOBALDNS_BIN ]] || die "globaldns binary not found: $GLOBALDNS_BIN"
elif [[ ! -x $GLOBALDNS_BIN ]]; then
  FAKE_ZONE=1
fi

log "work dir $WORK; hosts=$HOSTS rounds=$ROUNDS duration=${DURATION}s protos=$PROTOS mixes=${MIXES[*]} servers=$SERVERS"
GEN_ARGS=("$HOSTS" "$WORK/se" --queries-dir "$WORK/queries")
((FAKE_ZONE)) && GEN_ARGS+=(--zonefile "$WORK/fake-zone.txt")
"$PY" "$HERE/gen-serviceentries.py" "${GEN_ARGS[@]}" || die "generator failed"

mkdir -p "$WORK/state"
if ((FAKE_ZONE)); then
  warn "using the generator's APPROXIMATE zone (--fake-zone): Knot numbers are for pipeline testing only"
  cp "$WORK/fake-zone.txt" "$WORK/zone.txt"
else
  # shellcheck disable=SC2086
  "$GLOBALDNS_BIN" zonefile --zones "$WORK/se" --state-dir "$WORK/state" $GD_ARGS \
    >"$WORK/zone.txt" 2>"$WORK/zonefile.err" || { cat "$WORK/zonefile.err" >&2; die "globaldns zonefile failed"; }
fi
log "zone file: $(wc -l <"$WORK/zone.txt") lines, $(grep -c '^[$]ORIGIN' "$WORK/zone.txt") \$ORIGIN lines"

declare -A PORT PID
if has_server knot; then
  PORT[knot]=$(free_port)
  start_knot "$WORK/knot" "$WORK/zone.txt" "${PORT[knot]}" "$SRV_CPU"
  PID[knot]=$KNOT_PID
fi
if has_server globaldns || has_server secondary; then
  PORT[globaldns]=$(free_port)
  ADMIN_PORT=$(free_port)
  XFR_ARGS=(); has_server secondary && XFR_ARGS=(--allow-transfer 127.0.0.0/8)
  # shellcheck disable=SC2086
  RUST_LOG=${RUST_LOG:-warn} taskset -c "$SRV_CPU" "$GLOBALDNS_BIN" serve --zones "$WORK/se" --state-dir "$WORK/state" \
    --listen "127.0.0.1:${PORT[globaldns]}" --admin "127.0.0.1:$ADMIN_PORT" "${XFR_ARGS[@]}" $GD_ARGS \
    >"$WORK/globaldns.log" 2>&1 &
  PID[globaldns]=$!
  track_pid "${PID[globaldns]}"
  wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 120 \
    || { tail -20 "$WORK/globaldns.log" >&2; die "globaldns not ready within 120 s"; }
  alive "${PID[globaldns]}" || die "globaldns exited"
  repin "${PID[globaldns]}" "$SRV_CPU"
  log "globaldns pid ${PID[globaldns]} on 127.0.0.1:${PORT[globaldns]} (admin $ADMIN_PORT), threads: $(show_affinity "${PID[globaldns]}")"
fi
if has_server secondary; then
  # Same zone flags as the primary; the default --refresh: it is idle once it has the zones.
  PORT[secondary]=$(free_port)
  SEC_ADMIN=$(free_port)
  mkdir -p "$WORK/sec-zones" "$WORK/sec-state"
  # shellcheck disable=SC2086
  RUST_LOG=${RUST_LOG:-warn} taskset -c "$SRV_CPU" "$GLOBALDNS_BIN" serve --primary "127.0.0.1:${PORT[globaldns]}" \
    --zones "$WORK/sec-zones" --state-dir "$WORK/sec-state" \
    --listen "127.0.0.1:${PORT[secondary]}" --admin "127.0.0.1:$SEC_ADMIN" $GD_ARGS \
    >"$WORK/secondary.log" 2>&1 &
  PID[secondary]=$!
  track_pid "${PID[secondary]}"
  wait_http "http://127.0.0.1:$SEC_ADMIN/readyz" 120 \
    || { tail -20 "$WORK/secondary.log" >&2; die "secondary not ready within 120 s"; }
  alive "${PID[secondary]}" || die "secondary exited"
  repin "${PID[secondary]}" "$SRV_CPU"
  log "secondary pid ${PID[secondary]} on 127.0.0.1:${PORT[secondary]} (admin $SEC_ADMIN), threads: $(show_affinity "${PID[secondary]}")"
fi

if ((QUOTA > 0)); then
  for s in "${SERVER_LIST[@]}"; do cg_limit "$s" "${PID[$s]}" "$QUOTA"; done
fi

# Same data? Compare a sample of answers (rcode, AA, answer RRset, SOA in authority for negatives).
for other in globaldns secondary; do
  has_server knot && has_server "$other" || continue
  for m in "${MIXES[@]}"; do
    for p in "${PROTO_LIST[@]}"; do
      cmp_args=(--sample 60); [[ $p == tcp ]] && cmp_args+=(--tcp)
      "$PY" "$HERE/lib/dnsq.py" compare "${PORT[knot]}" "${PORT[$other]}" "$WORK/queries/$m.txt" \
        "${cmp_args[@]}" >&2 \
        || warn "knot and $other answer differently ($m, $p) - the comparison is not like for like"
    done
  done
done

idle_deadline=$((SECONDS + WAIT_IDLE))
until check_idle 2; do
  if ((SECONDS >= idle_deadline)); then warn "results will be noisy (other processes use the CPUs)"; break; fi
  sleep 8
done

# ------------------------------------------------------------------ runs
RESULTS=$WORK/results.tsv
printf 'kind\tproto\tmix\tround\tserver\trate\tqps\tcompleted\tlost\tmean_ms\tp50_ms\tp99_ms\tp999_ms\tcpu_s\tcpu_us_per_q\tsrv_pct\tc0_pct\tc1_pct\trcodes\n' >"$RESULTS"

# run_one KIND PROTO MIX ROUND SERVER RATE(0=unlimited) VERBOSE DURATION
run_one() {
  local kind=$1 proto=$2 mix=$3 round=$4 srv=$5 rate=$6 verbose=$7 dur=$8
  local pid=${PID[$srv]} port=${PORT[$srv]}
  local out="$WORK/runs/$kind-$proto-$mix-$round-$srv.out"
  mkdir -p "$WORK/runs"
  alive "$pid" || die "$srv (pid $pid) is not running"
  local args=(-s 127.0.0.1 -p "$port" -d "$WORK/queries/$mix.txt" -l "$dur" -t 2
              -c "$CLIENTS" -q "$OUTSTANDING" -T 1 -m "$proto")
  ((rate > 0)) && args+=(-Q "$rate")
  ((verbose)) && args+=(-v)
  local t0 c0a c0t c1a c1t t1 c0b c0u c1b c1u
  t0=$(proc_cpu_ticks "$pid")
  read -r c0a c0t < <(core_ticks "$CLI_CPU"); read -r c1a c1t < <(core_ticks "$SRV_CPU")
  local rc=0
  timeout -k 5 $((dur + 30)) taskset -c "$CLI_CPU" dnsperf "${args[@]}" >"$out" 2>&1 || rc=$?
  t1=$(proc_cpu_ticks "$pid")
  read -r c0b c0u < <(core_ticks "$CLI_CPU"); read -r c1b c1u < <(core_ticks "$SRV_CPU")
  ((rc == 0)) || { tail -5 "$out" >&2; die "dnsperf failed (rc $rc) against $srv"; }
  alive "$pid" || die "$srv died during the run"
  [[ $kind == warmup ]] && { rm -f "$out"; return 0; }
  local parsed
  parsed=$("$PY" "$HERE/lib/dnsperf_parse.py" "$out") || die "cannot parse $out"
  # Keep the run logs small: drop the per-query lines once parsed.
  ((verbose)) && sed -i '/^> /d' "$out"
  local -A R=()
  local kv
  for kv in $parsed; do R[${kv%%=*}]=${kv#*=}; done
  local cpu_s cpu_us srv_pct c0p c1p
  cpu_s=$(awk -v a="$t0" -v b="$t1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}')
  cpu_us=$(awk -v s="$cpu_s" -v n="${R[completed]}" 'BEGIN{ if (n>0) printf "%.2f", s*1e6/n; else print "-"}')
  srv_pct=$(awk -v s="$cpu_s" -v r="${R[runtime]}" 'BEGIN{ if (r>0) printf "%.0f", 100*s/r; else print "-"}')
  c0p=$(awk -v a="$c0a" -v b="$c0b" -v t="$c0t" -v u="$c0u" 'BEGIN{ if (u>t) printf "%.0f", 100*(b-a)/(u-t); else print "-"}')
  c1p=$(awk -v a="$c1a" -v b="$c1b" -v t="$c1t" -v u="$c1u" 'BEGIN{ if (u>t) printf "%.0f", 100*(b-a)/(u-t); else print "-"}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$kind" "$proto" "$mix" "$round" "$srv" "$rate" "${R[qps]}" "${R[completed]}" "${R[lost]}" \
    "${R[mean_ms]}" "${R[p50_ms]}" "${R[p99_ms]}" "${R[p999_ms]}" "$cpu_s" "$cpu_us" "$srv_pct" \
    "$c0p" "$c1p" "${R[rcodes]}" >>"$RESULTS"
  log "$kind $proto $mix r$round $srv: qps=${R[qps]} mean=${R[mean_ms]}ms p99=${R[p99_ms]}ms cpu/q=${cpu_us}us srv=${srv_pct}% cores=${c0p}%/${c1p}% lost=${R[lost]}"
}

for proto in "${PROTO_LIST[@]}"; do
  for mix in "${MIXES[@]}"; do
    if ((WARMUP > 0)); then
      for s in "${SERVER_LIST[@]}"; do run_one warmup "$proto" "$mix" 0 "$s" 0 0 "$WARMUP"; done
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
      # Rotate which server goes first (ABBA for two) so slow drift cancels out.
      n=${#SERVER_LIST[@]} order=()
      for ((i = 0; i < n; i++)); do order+=("${SERVER_LIST[$(((i + r - 1) % n))]}"); done
      for s in "${order[@]}"; do run_one peak "$proto" "$mix" "$r" "$s" 0 "$PEAK_P99" "$DURATION"; done
    done
    if ((HALF_PEAK)) && ((ROUNDS > 0)); then
      ref=knot; has_server knot || ref=${SERVER_LIST[0]}
      peak=$(awk -F'\t' -v p="$proto" -v m="$mix" -v s="$ref" \
        '$1=="peak" && $2==p && $3==m && $5==s && $7+0 > best {best=$7+0} END{printf "%d", best}' "$RESULTS")
      rate=$((peak / 2))
      if ((rate > 0)); then
        for s in "${SERVER_LIST[@]}"; do run_one half "$proto" "$mix" 1 "$s" "$rate" 1 "$DURATION"; done
      fi
    fi
  done
done

echo
echo "globaldns load benchmark: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "  $(knotd --version 2>&1 | head -1); dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'); globaldns: $( ((FAKE_ZONE)) && echo 'not used (fake zone)' || echo "$GLOBALDNS_BIN")"
echo "  hosts=$HOSTS rounds=$ROUNDS duration=${DURATION}s clients=$CLIENTS outstanding=$OUTSTANDING peak-p99=$PEAK_P99 quota=$( ((QUOTA)) && echo "$QUOTA%" || echo none) server-cpu=$SRV_CPU client-cpu=$CLI_CPU"
echo
"$PY" "$HERE/lib/report.py" "$RESULTS"
cp "$RESULTS" /tmp/globaldns-load-last.tsv && log "raw results: /tmp/globaldns-load-last.tsv"
OK=1
