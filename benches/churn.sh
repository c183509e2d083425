#!/usr/bin/env bash
# The tail while the mesh changes: 100,000 hosts, an open-loop query load (benches/loadgen.rs)
# at half of Knot's peak, and 1 % of the hosts rewritten per second (benches/lib/churn_driver.py);
# p50/p99/p99.9 during churn against the same load without, interleaved, and a check that
# changed names answer their new data within one publish.
#
# --source kube: the hosts are ServiceEntries of --per-object hosts each in a real kube-apiserver
# (scripts/kube/cluster.sh, on the client's core; lib/kube_mesh.py), globaldns watches it as its
# home cluster (file store), the churn patches spec.addresses of entries through the API, and
# each round adds a re-list phase: globaldns's connections to the apiserver are cut every
# --relist-every seconds and its watch lists all 100,000 hosts again (lib/relist_driver.py).
#
# Usage: benches/churn.sh [options]
#   --hosts N          hosts (default 100000, 10 clusters, files of 500)
#   --rate Q           queries per second (default: half of Knot's median positive saturation
#                      qps in the last benches/floor.sh run, /tmp/globaldns-floor-last.tsv;
#                      else 50000)
#   --change-pct P     percent of the hosts changed per second (default 1; one file = 500 hosts
#                      per step, so P=1 at 100,000 hosts is 2 files a second)
#   --duration S       seconds per phase (default 20)
#   --rounds R         quiet/churn phase pairs, interleaved (default 2)
#   --sample K         changed names polled per step (default 5)
#   --gd-args "..."    flags for `globaldns serve` (default "--vip-range 240.10.0.0/15")
#   --source S         files (default) or kube
#   --per-object H     hosts per ServiceEntry with --source kube (default 50: 1 % of 100,000
#                      hosts a second is 20 patches a second)
#   --relist-every S   seconds between re-lists in the kube re-list phase (default 5)
#   --server-cpu N / --client-cpu N (defaults 1 / 0); --no-build; --keep; --workdir DIR
# Env: GLOBALDNS_BIN (default target/release/globaldns).
#
# globaldns runs on one core (every thread, so rebuilds compete with answering), the
# generator and the churn driver on the other. Loopback only; every phase bounded in time.
# Exits non-zero when a changed name answered data older than one publish or never converged.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/loadgen.sh
source "$HERE/lib/loadgen.sh"

HOSTS=100000 RATE=0 CHANGE_PCT=1 DURATION=20 ROUNDS=2 SAMPLE=5 GD_ARGS="--vip-range 240.10.0.0/15"
SRV_CPU=1 CLI_CPU=0 BUILD=1 KEEP=0 WORK="" PER_FILE=500 SOURCE=files PER_OBJECT=50 RELIST_EVERY=5
while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --change-pct) CHANGE_PCT=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --server-cpu) SRV_CPU=$2; shift 2 ;;
    --client-cpu) CLI_CPU=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --source) SOURCE=$2; shift 2 ;;
    --per-object) PER_OBJECT=$2; shift 2 ;;
    --relist-every) RELIST_EVERY=$2; shift 2 ;;
    --workdir) WORK=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $HOSTS =~ ^[0-9]+$ && $RATE =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ ]] || die "numeric options expected"
((DURATION > 0 && DURATION <= 300)) || die "--duration must be 1..300"
[[ $SOURCE == files || $SOURCE == kube ]] || die "--source: files or kube"
[[ $PER_OBJECT =~ ^[1-9][0-9]*$ ]] || die "--per-object: a positive number"

setup_workdir churn

ensure_tools curl:curl taskset:util-linux
require_globaldns
build_bench_bins "$BUILD"

if ((RATE == 0)); then
  if [[ -s /tmp/globaldns-floor-last.tsv ]] && grep -q $'^peak\tpositive\t[0-9]*\tknot' /tmp/globaldns-floor-last.tsv; then
    RATE=$("$PY" "$HERE/lib/floor_report.py" --half-peak positive knot /tmp/globaldns-floor-last.tsv)
    log "rate: half of Knot's positive peak in the last floor.sh run: $RATE q/s"
  else
    RATE=50000
    warn "no floor.sh result with Knot: using $RATE q/s (pass --rate)"
  fi
fi
UNIT=$PER_FILE
[[ $SOURCE == kube ]] && UNIT=$PER_OBJECT
STEPS_PER_S=$(awk -v h="$HOSTS" -v p="$CHANGE_PCT" -v f="$UNIT" 'BEGIN{printf "%.3f", h*p/100/f}')

log "work dir $WORK; source=$SOURCE hosts=$HOSTS rate=$RATE changes=$CHANGE_PCT %/s ($STEPS_PER_S steps/s of $UNIT hosts) duration=${DURATION}s rounds=$ROUNDS"
"$PY" "$HERE/gen-serviceentries.py" "$HOSTS" "$WORK/se" --clusters 10 --per-file "$PER_FILE" \
  --queries-dir "$WORK/queries" >&2 || die "generator failed"
mkdir -p "$WORK/state"
PORT=$(free_port) ADMIN=$(free_port)
export RUST_LOG=${RUST_LOG:-info} # the publish lines are counted at the end
if [[ $SOURCE == kube ]]; then
  ensure_tools ss:iproute2
  CLUSTER_SH=$REPO_ROOT/scripts/kube/cluster.sh
  CLUSTER=$WORK/cluster
  on_exit "'$CLUSTER_SH' down '$CLUSTER' >/dev/null 2>&1"
  for attempt in 1 2 3; do # the apiserver uses PORT, etcd PORT+1 and PORT+2
    API_PORT=$(free_port)
    taskset -c "$CLI_CPU" "$CLUSTER_SH" up "$CLUSTER" "$API_PORT" >&2 && break
    "$CLUSTER_SH" down "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$CLUSTER"
    ((attempt < 3)) || die "the test cluster did not come up"
  done
  kubectl() { "$CLUSTER_SH" kubectl "$CLUSTER" "$@"; }
  kubectl apply -f "$REPO_ROOT/tests/kube/serviceentry-crd.yaml" >&2
  kubectl wait --for=condition=Established --timeout=60s crd/serviceentries.networking.istio.io >&2
  kubectl create namespace bench >&2
  log "loading $HOSTS hosts into the apiserver on 127.0.0.1:$API_PORT: $("$PY" "$HERE/lib/kube_mesh.py" load "$CLUSTER" \
    "$WORK/queries/hosts.txt" --per-object "$PER_OBJECT")"
  mkdir -p "$WORK/empty-zones"
  start_globaldns_pinned "$WORK/empty-zones" "$WORK/state" "$PORT" "$ADMIN" "$SRV_CPU" "$WORK/globaldns.log" \
    "$GD_ARGS --cluster-name c1 --cluster c1=$CLUSTER/admin.kubeconfig"
  DRIVER_TARGET=$CLUSTER DRIVER_ARGS=(--kube "$WORK/queries/hosts.txt" --per-object "$PER_OBJECT")
else
  start_globaldns_pinned "$WORK/se" "$WORK/state" "$PORT" "$ADMIN" "$SRV_CPU" "$WORK/globaldns.log" "$GD_ARGS"
  DRIVER_TARGET=$WORK/se DRIVER_ARGS=()
fi
served() { curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN/metrics" | awk '/^globaldns_hosts_served / {print $2}'; }
for ((i = 0; i < 600; i++)); do [[ $(served) == "$HOSTS" ]] && break; sleep 0.1; done
[[ $(served) == "$HOSTS" ]] || die "globaldns serves $(served) hosts, not $HOSTS"
log "globaldns pid $GD_PID on 127.0.0.1:$PORT, threads: $(show_affinity "$GD_PID")"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

gen() { # gen OUT DURATION: the generator's line, and the server's own socket wait over the run
  curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN/metrics" >"$1.m0" || die "metrics"
  local line
  line=$(run_loadgen "$1" "$CLI_CPU" --server "127.0.0.1:$PORT" --queries "$WORK/queries/positive.txt" \
    --rate "$RATE" --duration "$2" --server-pid "$GD_PID")
  curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN/metrics" >"$1.m1" || die "metrics"
  echo "$line $("$PY" "$HERE/lib/wait_quantiles.py" "$1.m0" "$1.m1")"
}
gen "$WORK/warmup.out" 3 >/dev/null

RESULTS=$WORK/results.tsv
: >"$RESULTS"
FAILED=0
# phase NAME ROUND DRIVER ARGS...: the generator for one phase while the driver (a helper of
# lib/) runs on the client's core; the driver's summary line is appended to the phase's row.
phase() {
  local name=$1 r=$2 script=$3 line rc=0 driver; shift 3
  taskset -c "$CLI_CPU" "$PY" "$HERE/lib/$script" "$@" >"$WORK/$name-$r.out" 2>"$WORK/$name-$r.err" &
  driver=$!
  track_pid "$driver"
  line=$(gen "$WORK/$name-$r.gen" "$DURATION")
  wait "$driver" || rc=$?
  alive "$GD_PID" || die "globaldns died"
  printf '%s\t%s\t%s %s\n' "$name" "$r" "$line" "$(cat "$WORK/$name-$r.out")" >>"$RESULTS"
  log "$name r$r: $line | $(cat "$WORK/$name-$r.out")"
  ((rc == 0)) || { FAILED=1; warn "$name check failed in round $r: $(cat "$WORK/$name-$r.err" "$WORK/$name-$r.out")"; }
}
for ((r = 1; r <= ROUNDS; r++)); do
  line=$(gen "$WORK/quiet-$r.out" "$DURATION")
  printf 'quiet\t%s\t%s\n' "$r" "$line" >>"$RESULTS"
  log "quiet r$r: $line"
  phase churn "$r" churn_driver.py "$DRIVER_TARGET" "$PORT" "${DRIVER_ARGS[@]}" \
    --steps-per-second "$STEPS_PER_S" --duration "$DURATION" --sample "$SAMPLE" --state "$WORK/visits.json"
  [[ $SOURCE == kube ]] || continue
  phase relist "$r" relist_driver.py "$ADMIN" "$PORT" "$API_PORT" --hosts-file "$WORK/queries/hosts.txt" \
    --duration "$DURATION" --every "$RELIST_EVERY" --expect-hosts "$HOSTS"
done
PUBLISHES=$(grep -c 'snapshot published' "$WORK/globaldns.log" || true)

echo
echo "globaldns churn benchmark: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "  load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  source=$SOURCE hosts=$HOSTS rate=$RATE q/s changes=$CHANGE_PCT %/s ($STEPS_PER_S steps/s of $UNIT hosts) duration=${DURATION}s rounds=$ROUNDS"
echo
"$PY" - "$RESULTS" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    phase, rnd, kv = line.rstrip("\n").split("\t")
    rows.append((phase, rnd, dict(p.split("=", 1) for p in kv.split())))
def lat(d):
    s = " / ".join(d[k] for k in ("p50_us", "p99_us", "p999_us", "max_us"))
    if "arr_p99_us" in d:  # by arrival in the generator's socket: without the client's own delay
        s += " (arrival " + " / ".join(d[k] for k in ("arr_p50_us", "arr_p99_us", "arr_p999_us")) + ")"
    if "wait_p99_le_us" in d:  # the server's own: queries' wait in its socket, bucket bounds
        s += " [server wait ≤ " + " / ".join(d[k] for k in ("wait_p50_le_us", "wait_p99_le_us", "wait_p999_le_us")) + "]"
    return s
print("| phase | round | answered q/s | p50 / p99 / p99.9 / max µs | lost | server µs/answer "
      "| hosts changed/s | change visible p50 / p99 / max ms | publishes to visible (max) | violations |")
print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |")
for phase, rnd, d in rows:
    if phase == "relist":
        continue
    ch = (d.get("hosts_per_second", "-"), " / ".join(d.get(k, "-") for k in ("visible_ms_p50", "visible_ms_p99", "visible_ms_max")),
          d.get("publishes_to_visible_max", "-"), d.get("violations", "-") + (" (timeouts %s)" % d["timeouts"] if d.get("timeouts", "0") != "0" else ""))
    print(f"| {phase} | {rnd} | {d['qps']} | {lat(d)} | {d['lost']} | {d['cpu_us_per_answer']} | {ch[0]} | {ch[1]} | {ch[2]} | {ch[3]} |")
relists = [(rnd, d) for phase, rnd, d in rows if phase == "relist"]
if relists:
    print()
    print("| re-list phase | answered q/s | p50 / p99 / p99.9 / max µs | lost | server µs/answer | re-lists "
          "| re-list done p50 / max ms | publishes | fewest hosts served | answers changed |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for rnd, d in relists:
        print(f"| {rnd} | {d['qps']} | {lat(d)} | {d['lost']} | {d['cpu_us_per_answer']} | {d.get('relists', '-')} "
              f"| {d.get('relist_ms_p50', '-')} / {d.get('relist_ms_max', '-')} | {d.get('relist_publishes', '-')} "
              f"| {d.get('hosts_served_min', '-')} | {d.get('answers_changed', '-')} |")
PY
echo
echo "  publishes logged by the server: $PUBLISHES"
cp "$RESULTS" /tmp/globaldns-churn-last.tsv && log "raw results: /tmp/globaldns-churn-last.tsv"
OK=1
((FAILED == 0)) || die "a changed name answered data older than one publish or never converged, or a re-list withdrew or changed an answer"
