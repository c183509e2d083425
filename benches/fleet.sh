#!/usr/bin/env bash
# Fleet benchmark: a globaldns primary and globaldns secondaries on loopback.
#
# Usage: benches/fleet.sh [options]
#   --hosts N            hosts for the transfer measurements (default 100000)
#   --secondaries N      secondaries for the NOTIFY measurement (default 50)
#   --notify-hosts N|auto  hosts for the NOTIFY measurement (default 5000: every secondary
#                        rebuilds its zone per change, and 50 of them at 50,000 hosts take minutes
#                        per change on 2 cores; auto: --hosts when N x the secondary's measured
#                        VmHWM x 1.3 fits in MemAvailable - 2 GiB, else halved until it does)
#   --changes C          changes for the NOTIFY measurement (default 50)
#   --ixfr-reps R        IXFR repetitions (default 10); --axfr-reps R (default 3)
#   --parts LIST         measurements to run, comma-separated (default xfr,notify; notify without
#                        xfr needs a number for --notify-hosts); --qps and --kube add theirs
#   --qps                also run benches/load.sh --servers knot,globaldns,secondary
#                        (dnsperf against Knot, the primary and a secondary, each capped at 50 %
#                        of its core so the server is the bottleneck; --load-args "..." to change)
#   --rollout            also run (or with --parts rollout, only) a rolling restart of 2 primaries
#                        with changes flowing (lib/rollout_probe.py): bytes sent to
#                        --rollout-secondaries N (default 4) secondaries at --rollout-hosts N
#                        (default --hosts) while each primary is stopped, kept down
#                        --rollout-down S (default 5), started again on its state directory
#                        and given 10 s; a change (one new host) every 2 s meanwhile
#   --kube               also run the real-apiserver comparison (lib/fleet_kube.py: 2 clusters,
#                        --kube-hosts new hosts (default 400); for each N of --kube-sizes "N ..."
#                        (default "50"): N all-in-one instances vs 4 primaries + N secondaries)
#   --timeout S          max wait for one change (default 30)
#   --gd-args "..."      flags for every `globaldns serve` (default "--vip-range 240.10.0.0/15")
#   --no-build           never run cargo; use the existing binary
#   --keep               keep the work directory; --workdir DIR: use DIR
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# The primary is file mode with --allow-transfer 127.0.0.0/8; secondaries run with
# --primary 127.0.0.1:PORT and --refresh 1h, so after their start only NOTIFY moves them.
# Prints one table at the end; all servers on 127.0.0.1, every wait bounded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"

HOSTS=100000 NSEC=50 NOTIFY_HOSTS=5000 CHANGES=50 IXFR_REPS=10 AXFR_REPS=3 PARTS=xfr,notify QPS=0 KUBE=0 KUBE_SIZES=50 KUBE_HOSTS=400 TIMEOUT=30
ROLLOUT=0 ROLLOUT_SECS=4 ROLLOUT_HOSTS="" ROLLOUT_DOWN=5
GD_ARGS="--vip-range 240.10.0.0/15" BUILD=1 KEEP=0 WORK="" LOAD_ARGS="--hosts 10000 --rounds 2 --duration 10 --mix positive --server-quota 50 --no-half-peak"
while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --secondaries) NSEC=$2; shift 2 ;;
    --notify-hosts) NOTIFY_HOSTS=$2; shift 2 ;;
    --changes) CHANGES=$2; shift 2 ;;
    --ixfr-reps) IXFR_REPS=$2; shift 2 ;;
    --axfr-reps) AXFR_REPS=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --qps) QPS=1; shift ;;
    --load-args) LOAD_ARGS=$2; shift 2 ;;
    --kube) KUBE=1; shift ;;
    --rollout) ROLLOUT=1; shift ;;
    --rollout-secondaries) ROLLOUT_SECS=$2; shift 2 ;;
    --rollout-hosts) ROLLOUT_HOSTS=$2; shift 2 ;;
    --rollout-down) ROLLOUT_DOWN=$2; shift 2 ;;
    --kube-sizes) KUBE_SIZES=$2; shift 2 ;;
    --kube-hosts) KUBE_HOSTS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --workdir) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $HOSTS =~ ^[0-9]+$ && $NSEC =~ ^[0-9]+$ && $CHANGES =~ ^[0-9]+$ ]] || die "numeric options expected"
[[ $NOTIFY_HOSTS == auto || $NOTIFY_HOSTS =~ ^[0-9]+$ ]] || die "--notify-hosts: a number or auto"
part() { [[ ",$PARTS," == *",$1,"* ]]; }
XFR=0 NOTIFY=0
part xfr && XFR=1
part notify && ((NSEC > 0)) && NOTIFY=1
part qps && QPS=1
part kube && KUBE=1
part rollout && ROLLOUT=1
ROLLOUT_HOSTS=${ROLLOUT_HOSTS:-$HOSTS}
((NOTIFY && !XFR)) && [[ $NOTIFY_HOSTS == auto ]] && die "--parts notify without xfr: give --notify-hosts N"

setup_workdir fleet

ensure_tools curl:curl dig:bind9-dnsutils
require_globaldns

# gen TREE N: the ServiceEntry tree of scale.sh (10 cluster directories).
gen() {
  log "generating $2 hosts in $1"
  "$PY" "$HERE/gen-serviceentries.py" "$2" "$1/se" --clusters 10 --per-file 500 \
    --queries-dir "$1/queries" >/dev/null || die "generator failed"
}

# probe MODE DIR HOSTS ARGS...: run fleet_probe.py, bounded, tracked.
probe() {
  local mode=$1 dir=$2 hosts=$3 rc=0; shift 3
  timeout -k 10 "$PROBE_LIMIT" "$PY" "$HERE/lib/fleet_probe.py" "$mode" --bin "$GLOBALDNS_BIN" \
    --zones "$dir/se" --hosts "$hosts" --work "$dir" --gd-args "$GD_ARGS" --timeout "$TIMEOUT" "$@" &
  track_pid $!
  wait $! || rc=$?
  BENCH_PIDS=()
  ((rc == 0)) || { tail -n 5 "$dir"/*.log >&2 || true; die "fleet probe $mode failed (rc $rc); logs in $dir"; }
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +%FT%TZ)

# ---------------------------------------------------------------- AXFR, IXFR, RSS
if ((XFR)); then
  mkdir -p "$WORK/xfr"
  gen "$WORK/xfr" "$HOSTS"
  PROBE_LIMIT=$((900 + IXFR_REPS * (TIMEOUT + 10)))
  log "== transfers at $HOSTS hosts =="
  probe xfr "$WORK/xfr" "$HOSTS" --axfr-reps "$AXFR_REPS" --ixfr-reps "$IXFR_REPS" --hwm-out "$WORK/xfr/hwm"
fi

# ---------------------------------------------------------------- NOTIFY over N secondaries
if ((NOTIFY)); then
  if [[ $NOTIFY_HOSTS == auto ]]; then
    hwm_kb=$(cat "$WORK/xfr/hwm")
    avail_kb=$(awk '/^MemAvailable/ {print $2}' /proc/meminfo)
    NOTIFY_HOSTS=$HOSTS
    # A secondary's memory is roughly proportional to the zone: scale the measured HWM.
    while ((NOTIFY_HOSTS > 1000)) &&
      (( NSEC * hwm_kb * NOTIFY_HOSTS / HOSTS * 13 / 10 > avail_kb - 2 * 1024 * 1024 )); do
      NOTIFY_HOSTS=$((NOTIFY_HOSTS / 2))
    done
    if ((NOTIFY_HOSTS != HOSTS)); then
      warn "$NSEC secondaries x $((hwm_kb / 1024)) MiB at $HOSTS hosts do not fit in $((avail_kb / 1024)) MiB available: NOTIFY part at $NOTIFY_HOSTS hosts"
    fi
  fi
  if ((NOTIFY_HOSTS == HOSTS && XFR)); then
    ndir=$WORK/xfr
  else
    ndir=$WORK/notify; mkdir -p "$ndir"; gen "$ndir" "$NOTIFY_HOSTS"
  fi
  PROBE_LIMIT=$((900 + NSEC * 20 + CHANGES * (TIMEOUT + 5)))
  log "== NOTIFY to $NSEC secondaries at $NOTIFY_HOSTS hosts =="
  probe notify "$ndir" "$NOTIFY_HOSTS" --secondaries "$NSEC" --changes "$CHANGES"
fi

# ---------------------------------------------------------------- a rolling restart of the primaries
if ((ROLLOUT)); then
  rdir=$WORK/rollout; mkdir -p "$rdir"
  gen "$rdir" "$ROLLOUT_HOSTS"
  log "== rolling restart of 2 primaries: $ROLLOUT_SECS secondaries, $ROLLOUT_HOSTS hosts =="
  rc=0
  timeout -k 10 5400 "$PY" "$HERE/lib/rollout_probe.py" --bin "$GLOBALDNS_BIN" --zones "$rdir/se" \
    --hosts "$ROLLOUT_HOSTS" --work "$rdir" --gd-args "$GD_ARGS" --secondaries "$ROLLOUT_SECS" \
    --down "$ROLLOUT_DOWN" &
  track_pid $!
  wait $! || rc=$?
  BENCH_PIDS=()
  ((rc == 0)) || { tail -n 5 "$rdir"/*.log >&2 || true; die "rollout probe failed (rc $rc); logs in $rdir"; }
fi

# ---------------------------------------------------------------- qps: secondary vs Knot
if ((QPS)); then
  log "== qps: benches/load.sh --servers knot,globaldns,secondary $LOAD_ARGS =="
  # shellcheck disable=SC2086
  "$HERE/load.sh" --servers knot,globaldns,secondary --no-build --gd-args "$GD_ARGS" $LOAD_ARGS \
    >"$WORK/load.txt" || die "load.sh failed (output in $WORK/load.txt)"
fi

# ---------------------------------------------------------------- real apiservers
if ((KUBE)); then
  log "== real apiservers =="
  : >"$WORK/kube.txt"
  for n in $KUBE_SIZES; do
    [[ $n =~ ^[0-9]+$ ]] || die "--kube-sizes: numbers expected"
    log "-- $n all-in-one vs 4 primaries + $n secondaries"
    mkdir -p "$WORK/kube-$n"
    rc=0
    timeout -k 30 3600 "$PY" "$HERE/lib/fleet_kube.py" --bin "$GLOBALDNS_BIN" --work "$WORK/kube-$n" --aio "$n" \
      --secondaries "$n" --hosts "$KUBE_HOSTS" --gd-args "$GD_ARGS" >>"$WORK/kube.txt" &
    track_pid $!
    wait $! || rc=$?
    BENCH_PIDS=()
    ((rc == 0)) || { cat "$WORK/kube.txt" >&2; die "fleet_kube.py failed (rc $rc); logs in $WORK/kube-$n"; }
  done
fi

echo
echo "globaldns fleet benchmark: $START, $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "  binary $GLOBALDNS_BIN; gd-args \"$GD_ARGS\"; load average before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg)"
if ((XFR)); then
  echo
  echo "== transfers: $HOSTS hosts =="
  cat "$WORK/xfr/rows-xfr.txt"
fi
if ((NOTIFY)); then
  echo
  echo "== NOTIFY: $NSEC secondaries (--udp-workers 1, --refresh 1h), $NOTIFY_HOSTS hosts =="
  cat "$ndir/rows-notify.txt"
fi
if ((ROLLOUT)); then
  echo
  echo "== rolling restart of 2 primaries (changes flowing): $ROLLOUT_SECS secondaries, $ROLLOUT_HOSTS hosts =="
  cat "$rdir/rows-rollout.txt"
fi
if ((QPS)); then echo; cat "$WORK/load.txt"; fi
if ((KUBE)); then echo; cat "$WORK/kube.txt"; fi
OK=1
