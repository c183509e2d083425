# shellcheck shell=bash
# Shared helpers for benches/load.sh and benches/scale.sh.  Source, don't run.

BENCH_LIB=${BENCH_LIB:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
BENCH_DIR=$(dirname "$BENCH_LIB")
REPO_ROOT=$(dirname "$BENCH_DIR")

# Prefer the system python for helpers (stdlib only), fall back to whatever is on PATH.
PY=${PY:-$(command -v /usr/bin/python3 || command -v python3)}

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- processes
# PIDs we started; killed (by PID, with their process group if we own it) on exit.
BENCH_PIDS=()

track_pid() { BENCH_PIDS+=("$1"); }

kill_tracked() {
  local pid
  for pid in "${BENCH_PIDS[@]:-}"; do
    [[ -n "$pid" ]] || continue
    kill -TERM "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 5))
  for pid in "${BENCH_PIDS[@]:-}"; do
    [[ -n "$pid" ]] || continue
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
}

alive() { kill -0 "$1" 2>/dev/null; }

# utime+stime of a whole process (all threads), in clock ticks.
proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# "busy total" ticks for one CPU from /proc/stat (busy = all but idle+iowait).
core_ticks() {
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# Pin every thread of PID to the given CPU list (knotd pins a UDP worker to
# CPU0 by itself, so pinning at exec time is not enough).
repin() {
  local pid=$1 cpus=$2
  taskset -a -p -c "$cpus" "$pid" >/dev/null || die "taskset -a -p -c $cpus $pid failed"
  local t bad=0
  for t in /proc/"$pid"/task/*; do
    [[ "$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null)" == "$cpus" ]] || bad=1
  done
  ((bad == 0)) || warn "not all threads of $pid are pinned to $cpus"
}

# Show thread affinities (for the log).
show_affinity() {
  local pid=$1 t
  for t in /proc/"$pid"/task/*; do
    printf '%s:%s ' "$(cat "$t/comm" 2>/dev/null)" "$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null)"
  done
  echo
}

# A loopback port currently free for both TCP and UDP.
free_port() {
  "$PY" - <<'EOF'
import socket, random
for _ in range(200):
    # Below the ephemeral range (32768-60999): see tests/common free_ports.
    p = random.randint(20000, 32000)
    try:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("127.0.0.1", p))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", p))
        t.close(); u.close(); print(p); break
    except OSError:
        pass
else:
    raise SystemExit("no free port")
EOF
}

# ---------------------------------------------------------------- tools
APT_UPDATED=0
# ensure_tools cmd:package ...
ensure_tools() {
  local spec cmd pkg missing=()
  for spec in "$@"; do
    cmd=${spec%%:*}; pkg=${spec#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]} and not root"
  log "installing: ${missing[*]}"
  # Keep Debian's maintainer scripts from starting the packaged knot service:
  # we run our own knotd with our own config on a loopback port.
  local prc=/usr/sbin/policy-rc.d created_prc=0
  if [[ ! -e $prc ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; created_prc=1
  fi
  if ((APT_UPDATED == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { ((created_prc)) && rm -f "$prc"; die "apt-get install ${missing[*]} failed"; }
  ((created_prc)) && rm -f "$prc"
  for spec in "$@"; do
    cmd=${spec%%:*}
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after install"
  done
}

# Make sure Debian's packaged knot.service is not running / holding port 53.
# We never touch knotd processes we did not start; we only ask systemd.
quiesce_knot_service() {
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-active --quiet knot 2>/dev/null || systemctl is-enabled --quiet knot 2>/dev/null; then
      log "stopping and disabling Debian's knot.service"
      systemctl disable --now knot >/dev/null 2>&1 || warn "could not stop knot.service"
    fi
  fi
  local others
  others=$(pgrep -x knotd || true)
  [[ -z "$others" ]] || warn "other knotd processes already running (pids: $others) - they may steal CPU"
}

# Warn when something else is using CPU: benchmarks on a 2-core box are
# meaningless while e.g. a compiler runs next to them.
check_idle() {
  local secs=${1:-2} a0 a1 b0 b1
  read -r a0 _ < <(core_ticks 0); read -r a1 _ < <(core_ticks 1)
  sleep "$secs"
  read -r b0 _ < <(core_ticks 0); read -r b1 _ < <(core_ticks 1)
  local u0=$(( (b0 - a0) * 100 / (secs * CLK_TCK) )) u1=$(( (b1 - a1) * 100 / (secs * CLK_TCK) ))
  if ((u0 > 10 || u1 > 10)); then
    warn "machine not idle before the run: cpu0 ${u0}% cpu1 ${u1}% busy. Top processes:"
    ps -eo pid,psr,pcpu,comm --sort=-pcpu | head -6 >&2
    return 1
  fi
  log "idle check ok: cpu0 ${u0}% cpu1 ${u1}% busy"
  return 0
}

# ---------------------------------------------------------------- globaldns
GLOBALDNS_BIN=${GLOBALDNS_BIN:-$REPO_ROOT/target/release/globaldns}

# Build the release binary only when it is missing or older than its sources.
maybe_build_globaldns() {
  local need=0
  if [[ ! -x "$GLOBALDNS_BIN" ]]; then
    need=1
  elif [[ -n "$(find "$REPO_ROOT/src" "$REPO_ROOT/Cargo.toml" "$REPO_ROOT/Cargo.lock" \
                 -newer "$GLOBALDNS_BIN" -print -quit 2>/dev/null)" ]]; then
    need=1
  fi
  ((need)) || { log "globaldns binary up to date: $GLOBALDNS_BIN"; return 0; }
  command -v cargo >/dev/null || die "cargo not found and $GLOBALDNS_BIN missing/stale"
  log "building globaldns (cargo build --release --locked)"
  (cd "$REPO_ROOT" && cargo build --release --locked) >&2 || die "cargo build failed"
}

# wait_http URL TIMEOUT_S : poll until HTTP 200, bounded.
wait_http() {
  local url=$1 timeout=${2:-60} deadline
  deadline=$(( $(date +%s) + timeout ))
  while (( $(date +%s) < deadline )); do
    curl -sf -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.05
  done
  return 1
}

# wait_dns PORT NAME TYPE TIMEOUT_S : poll until the server answers (any rcode).
wait_dns() {
  local port=$1 name=$2 type=$3 timeout=${4:-60} deadline
  deadline=$(( $(date +%s) + timeout ))
  while (( $(date +%s) < deadline )); do
    dig +norec +time=1 +tries=1 -p "$port" @127.0.0.1 "$name" "$type" 2>/dev/null | grep -q 'status: NOERROR' && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- CPU quota (opt-in)
# On a 2-core box the dnsperf core saturates before a fast server does, so peak
# qps is client-bound.  Capping each server to PCT % of a core (CFS quota with a
# 10 ms period, cgroup v1 "cpu" or cgroup v2) makes the server the bottleneck
# again, so that the qps ratio reflects server efficiency.
BENCH_CGROUPS=()
cg_limit() { # cg_limit NAME PID PCT
  local name=$1 pid=$2 pct=$3 dir
  if [[ -w /sys/fs/cgroup/cpu/cgroup.procs || -d /sys/fs/cgroup/cpu ]] && [[ -f /sys/fs/cgroup/cpu/cpu.cfs_period_us ]]; then
    dir=/sys/fs/cgroup/cpu/gdbench-$$-$name
    mkdir -p "$dir" || die "cannot create $dir"
    echo 10000 >"$dir/cpu.cfs_period_us"
    echo $((pct * 100)) >"$dir/cpu.cfs_quota_us"
  elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    dir=/sys/fs/cgroup/gdbench-$$-$name
    mkdir -p "$dir" || die "cannot create $dir"
    echo "$((pct * 100)) 10000" >"$dir/cpu.max"
  else
    die "no usable cgroup cpu controller for --server-quota"
  fi
  BENCH_CGROUPS+=("$dir")
  echo "$pid" >"$dir/cgroup.procs" || die "cannot move $pid into $dir"
  log "$name (pid $pid) limited to $pct % of a core via $dir"
}
cg_cleanup() {
  local d
  for d in "${BENCH_CGROUPS[@]:-}"; do
    if [[ -n $d && -d $d ]]; then rmdir "$d" 2>/dev/null || true; fi
  done
  BENCH_CGROUPS=()
}

# setup_workdir NAME: $WORK (given, or a fresh /tmp/globaldns-NAME.*), and an exit trap that ends
# every tracked process and removes $WORK unless --keep ($KEEP) or the run failed ($OK stays 0
# until the script sets OK=1 at its end).
# on_exit CMD: run CMD (a shell string) when the script exits, after the tracked processes ended.
BENCH_EXIT_CMDS=()
on_exit() { BENCH_EXIT_CMDS+=("$1"); }

setup_workdir() {
  if [[ -z ${WORK:-} ]]; then WORK=$(mktemp -d "/tmp/globaldns-$1.XXXXXX"); else mkdir -p "$WORK"; fi
  OK=0
  trap _workdir_cleanup EXIT
  trap 'exit 130' INT TERM
}

_workdir_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  kill_tracked
  local c
  for c in "${BENCH_EXIT_CMDS[@]:-}"; do [[ -z $c ]] || eval "$c" || true; done
  if ((KEEP)) || ((OK == 0)); then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}

# common_opt "$@": the options every script takes (--gd-args, --no-build, --keep, --workdir,
# --help); anything else is an error. Sets BENCH_SHIFT to how many arguments it used.
common_opt() {
  BENCH_SHIFT=1
  case $1 in
    --gd-args) GD_ARGS=$2; BENCH_SHIFT=2 ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --workdir) WORK=$2; BENCH_SHIFT=2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
}

# common_option "$@": the options every bench script takes (--no-build, --keep, --workdir DIR,
# -h/--help, which prints the script's header comment); sets SHIFT to the arguments it took (0:
# not one of them).
common_option() {
  SHIFT=1
  case $1 in
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --workdir) WORK=$2; SHIFT=2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) SHIFT=0 ;;
  esac
}

# require_globaldns: builds the release binary unless --no-build ($BUILD=0), then insists on it.
require_globaldns() {
  if ((BUILD)); then maybe_build_globaldns; fi
  [[ -x $GLOBALDNS_BIN ]] || die "globaldns binary not found: $GLOBALDNS_BIN"
}

