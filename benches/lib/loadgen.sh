# shellcheck shell=bash
# Helpers for the scripts driving benches/loadgen.rs and benches/reflector.rs (floor.sh,
# churn.sh).  Requires common.sh to be sourced first.

# build_bench_bins BUILD(0|1) -> sets LOADGEN_BIN and REFLECTOR_BIN (release profile, same
# target dir).  With BUILD=0 the newest existing executables are used.
build_bench_bins() {
  local build=$1 json
  if ((build)); then
    log "building loadgen and reflector (cargo bench --no-run)"
    json=$(mktemp)
    (cd "$REPO_ROOT" && cargo bench --no-run --bench loadgen --bench reflector \
      --message-format=json >"$json") || die "cargo bench --no-run failed"
    LOADGEN_BIN=$(jq_exe "$json" loadgen) REFLECTOR_BIN=$(jq_exe "$json" reflector)
    rm -f "$json"
  else
    LOADGEN_BIN=$(newest_exe loadgen) REFLECTOR_BIN=$(newest_exe reflector)
  fi
  [[ -x $LOADGEN_BIN && -x $REFLECTOR_BIN ]] || die "loadgen/reflector executables not found"
  log "loadgen: $LOADGEN_BIN; reflector: $REFLECTOR_BIN"
}
jq_exe() {
  "$PY" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[2] and m.get("executable"):
        print(m["executable"])' "$1" "$2"
}
newest_exe() {
  find "$REPO_ROOT/target/release/deps" -maxdepth 1 -type f -executable -name "$1-*" \
    -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-
}

# start_globaldns_pinned ZONES STATE PORT ADMIN CPU LOG EXTRA_ARGS -> sets GD_PID.
# Started under taskset so that it sizes its UDP workers to the one core it may use.
start_globaldns_pinned() {
  local zones=$1 state=$2 port=$3 admin=$4 cpu=$5 logf=$6 extra=$7
  # shellcheck disable=SC2086
  RUST_LOG=${RUST_LOG:-warn} taskset -c "$cpu" "$GLOBALDNS_BIN" serve --zones "$zones" \
    --state-dir "$state" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" $extra \
    >"$logf" 2>&1 &
  GD_PID=$!
  track_pid "$GD_PID"
  wait_http "http://127.0.0.1:$admin/readyz" 180 \
    || { tail -20 "$logf" >&2; die "globaldns not ready within 180 s"; }
  alive "$GD_PID" || die "globaldns exited"
  repin "$GD_PID" "$cpu"
}

# run_loadgen OUTFILE CPU ARGS... : runs the generator pinned to CPU, bounded by timeout(1);
# prints its key=value line.  Also appends c0/c1 (client and server core busy %, /proc/stat)
# when CLI_CPU and SRV_CPU are set.
run_loadgen() {
  local out=$1 cpu=$2; shift 2
  local a0 at b0 bt a1 a1t b1 b1t rc=0 dur=600 i
  for ((i = 1; i <= $#; i++)); do [[ ${!i} == --duration ]] && { local j=$((i + 1)); dur=${!j%.*}; }; done
  read -r a0 at < <(core_ticks "$CLI_CPU"); read -r a1 a1t < <(core_ticks "$SRV_CPU")
  timeout -k 5 $((dur + 30)) taskset -c "$cpu" "$LOADGEN_BIN" "$@" >"$out" 2>"$out.err" || rc=$?
  read -r b0 bt < <(core_ticks "$CLI_CPU"); read -r b1 b1t < <(core_ticks "$SRV_CPU")
  ((rc == 0)) || { cat "$out.err" >&2; die "loadgen failed (rc $rc)"; }
  grep -q WARNING "$out.err" && warn "$(grep WARNING "$out.err")"
  printf '%s c0=%s c1=%s\n' "$(cat "$out")" \
    "$(awk -v a="$a0" -v b="$b0" -v t="$at" -v u="$bt" 'BEGIN{printf "%.0f", (u>t)?100*(b-a)/(u-t):0}')" \
    "$(awk -v a="$a1" -v b="$b1" -v t="$a1t" -v u="$b1t" 'BEGIN{printf "%.0f", (u>t)?100*(b-a)/(u-t):0}')"
}
