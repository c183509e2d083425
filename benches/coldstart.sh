#!/usr/bin/env bash
# Cold start from a large mesh of single-host ServiceEntries in a real kube-apiserver, and the
# first-start memory against a warm restart's.
#
# One cluster from scripts/kube/cluster.sh (etcd + kube-apiserver v1.20.2, 127.0.0.1), the
# ServiceEntry CRD, and --hosts ServiceEntries of one host each in namespace `bench`
# (lib/kube_mesh.py load --per-object 1; ~4 min for 100,000). Then:
#   1. the apiserver's own list time (lib/kube_mesh.py list): in pages of 500 as globaldns's
#      watcher asks, and whole from the watch cache; the goal is a cold start within 2x of it;
#   2. per round and per build: globaldns watching the cluster (--cluster c1=…, file store),
#      started with an empty state dir (every VIP allocated: the cold start), then restarted on
#      the state it left (warm): start → /readyz, start → every host served, VmRSS / VmHWM once
#      served, and the server's CPU time until then (lib/coldstart_probe.py): on a busy machine
#      the wall time is mostly the apiserver's, the CPU time globaldns's own work;
#   3. with --kube-store, the same with --store kube (VipClaims in the same cluster, a fresh
#      store namespace per build, so the first start claims every VIP through the API), once.
#
# Usage: benches/coldstart.sh [options]
#   --hosts N        ServiceEntries, one host each (default 100000)
#   --rounds R       rounds of step 2 (default 2); builds alternate within a round
#   --kube-store L   also step 3 for the builds labelled L (comma-separated, or `all`; once per
#                    build: 100,000 creates take minutes)
#   --reuse DIR      the cluster directory of an earlier run kept with --keep (its etcd data holds
#                    the ServiceEntries): brought up again on its port, nothing loaded
#   --gd-args "..."  extra flags for `globaldns serve` (default "--vip-range 240.10.0.0/15")
#   --lists "K ..."  run each build once per --kube-list kind (`paged`, `cache`), labelled
#                    BUILD-KIND: the list from etcd in pages against the whole list from the
#                    apiserver's watch cache, same binary, same minutes (default: the build's
#                    default, no flag)
#   --no-build; --keep; --workdir DIR
# Env: GLOBALDNS_BIN (default target/release/globaldns), or GLOBALDNS_BINS="label=path ..." to
# compare builds in the same cluster.
#
# Loopback only; every wait bounded. Prints one line per start and a summary table.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"

HOSTS=100000 ROUNDS=2 KUBE_STORE="" REUSE="" GD_ARGS="--vip-range 240.10.0.0/15" BUILD=1 KEEP=0 WORK=""
LISTS=""
while (($#)); do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --lists) LISTS=$2; shift 2 ;;
    --kube-store) KUBE_STORE=$2; shift 2 ;;
    --gd-args) GD_ARGS=$2; shift 2 ;;
    --reuse) REUSE=$2; shift 2 ;;
    *) common_opt "$@"; shift "$BENCH_SHIFT" ;;
  esac
done
[[ $HOSTS =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "numeric options expected"

setup_workdir coldstart
ensure_tools curl:curl
if [[ -n ${GLOBALDNS_BINS:-} ]]; then
  read -r -a BINS <<<"$GLOBALDNS_BINS"
else
  require_globaldns
  BINS=("this=$GLOBALDNS_BIN")
fi
for b in "${BINS[@]}"; do [[ $b == *=* && -x ${b#*=} ]] || die "not label=executable: $b"; done
# Each build once per list kind: LABEL-KIND=PATH, its flag looked up by list_args.
if [[ -n $LISTS ]]; then
  variants=()
  for b in "${BINS[@]}"; do
    for k in $LISTS; do
      [[ $k == paged || $k == cache ]] || die "--lists: paged or cache, not $k"
      variants+=("${b%%=*}-$k=${b#*=}")
    done
  done
  BINS=("${variants[@]}")
fi
# The --kube-list flag of a label made by --lists (none otherwise).
list_args() { case $1 in *-paged) echo "--kube-list paged" ;; *-cache) echo "--kube-list cache" ;; esac; }

"$PY" "$HERE/gen-serviceentries.py" "$HOSTS" "$WORK/se" --clusters 1 --queries-dir "$WORK/queries" >&2 \
  || die "generator failed"
CLUSTER_SH=$REPO_ROOT/scripts/kube/cluster.sh
CLUSTER=${REUSE:-$WORK/cluster}
on_exit "'$CLUSTER_SH' down '$CLUSTER' >/dev/null 2>&1"
kubectl() { "$CLUSTER_SH" kubectl "$CLUSTER" "$@"; }
if [[ -n $REUSE ]]; then
  [[ -f $REUSE/port && -d $REUSE/etcd-data ]] || die "--reuse: $REUSE is no kept cluster directory"
  "$CLUSTER_SH" up "$CLUSTER" "$(<"$REUSE/port")" >&2 || die "the kept cluster did not come up"
else
  for attempt in 1 2 3; do # the apiserver uses PORT, etcd PORT+1 and PORT+2
    API_PORT=$(free_port)
    "$CLUSTER_SH" up "$CLUSTER" "$API_PORT" >&2 && break
    "$CLUSTER_SH" down "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$CLUSTER"
    ((attempt < 3)) || die "the test cluster did not come up"
  done
  kubectl apply -f "$REPO_ROOT/tests/kube/serviceentry-crd.yaml" -f "$REPO_ROOT/deploy/base/vipclaim-crd.yaml" >&2
  kubectl wait --for=condition=Established --timeout=60s crd/serviceentries.networking.istio.io \
    crd/vipclaims.globaldns.io >&2
  kubectl create namespace bench >&2
  log "loading $HOSTS single-host ServiceEntries: $("$PY" "$HERE/lib/kube_mesh.py" load "$CLUSTER" \
    "$WORK/queries/hosts.txt" --per-object 1 --connections 8)"
fi
LIST=$("$PY" "$HERE/lib/kube_mesh.py" list "$CLUSTER" --rounds 3)
log "apiserver list: $(tr '\n' ';' <<<"$LIST")"

mkdir -p "$WORK/empty-zones"
RESULTS=$WORK/results.txt
: >"$RESULTS"
# start LABEL STATE_DIR ARGS...: one timed start, its line appended to the results.
start() {
  local label=$1 state=$2; shift 2
  local line
  line=$("$PY" "$HERE/lib/coldstart_probe.py" --bin "$BIN" --zones "$WORK/empty-zones" \
    --state-dir "$state" --dns-port "$(free_port)" --admin-port "$(free_port)" --expect "$HOSTS" \
    --label "$label" --log "$WORK/${label//\//-}.log" -- $GD_ARGS --cluster-name c1 \
    --cluster "c1=$CLUSTER/admin.kubeconfig" "$@") || die "$label failed (see $WORK/${label//\//-}.log)"
  log "$line (load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "$line" >>"$RESULTS"
}
for ((r = 1; r <= ROUNDS; r++)); do
  for b in "${BINS[@]}"; do
    NAME=${b%%=*} BIN=${b#*=}
    rm -rf "$WORK/state-$NAME"
    # shellcheck disable=SC2046 # the flag and its value are two words
    start "$NAME/file/cold/$r" "$WORK/state-$NAME" $(list_args "$NAME")
    # shellcheck disable=SC2046
    start "$NAME/file/warm/$r" "$WORK/state-$NAME" $(list_args "$NAME")
  done
done
if [[ -n $KUBE_STORE ]]; then
  for b in "${BINS[@]}"; do
    NAME=${b%%=*} BIN=${b#*=}
    [[ $KUBE_STORE == all || ,$KUBE_STORE, == *,$NAME,* ]] || continue
    NS=gd-store-$NAME-$RANDOM
    kubectl create namespace "$NS" >&2
    rm -rf "$WORK/kstate-$NAME"
    # shellcheck disable=SC2046
    start "$NAME/kube/cold/1" "$WORK/kstate-$NAME" --store kube --store-namespace "$NS" $(list_args "$NAME")
    # shellcheck disable=SC2046
    start "$NAME/kube/warm/1" "$WORK/kstate-$NAME" --store kube --store-namespace "$NS" $(list_args "$NAME")
  done
fi

echo "$LIST"
"$PY" - "$RESULTS" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split())
    build, store, kind, _ = f["label"].split("/")
    rows.setdefault((build, store, kind), []).append(f)
print("| build | store | start | runs | ready s | every host served s | CPU s | VmRSS MiB | VmHWM MiB |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for (build, store, kind), fs in rows.items():
    med = lambda k: statistics.median(float(x[k]) for x in fs)
    print("| %s | %s | %s | %d | %.1f | %.1f | %.2f | %.0f | %.0f |"
          % (build, store, kind, len(fs), med("ready_s"), med("served_s"), med("cpu_s"),
             med("rss_mib"), med("hwm_mib")))
EOF
OK=1
