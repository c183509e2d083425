#!/usr/bin/env bash
# One throw-away test cluster = one etcd + one kube-apiserver, on 127.0.0.1 only.
#
#   cluster.sh up DIR APISERVER_PORT      start (etcd on PORT+1 client, PORT+2 peer)
#   cluster.sh down DIR                   stop both, wait for exit (DIR is kept)
#   cluster.sh stop-apiserver DIR         stop only the apiserver (cluster "unreachable")
#   cluster.sh start-apiserver DIR        start it again: same port, certs, etcd
#   cluster.sh sa-kubeconfig DIR NS SA OUT
#                                         kubeconfig OUT authenticating as ServiceAccount
#                                         NS/SA (created if missing), token via TokenRequest
#   cluster.sh kubectl DIR ARGS...        kubectl v1.20.2 as admin (system:masters)
#
# DIR gets: ca.crt (trust anchor), apiserver.crt/key (leaf signed by the CA:
# rustls rejects a self-signed leaf), tokens.csv, sa.key/sa.pub,
# admin.kubeconfig, admin.token, port, *.pid, *.log, etcd-data/, and
# audit.log: one JSON line per ServiceEntry list the apiserver answered (who
# asked, its requestURI with the query, the response code), so tests can see
# which list a client asked for (watch cache or paged).
#
# Env: GLOBALDNS_CACHE (binary cache, see build-apiserver.sh),
#      KUBE_READY_TIMEOUT (seconds, default 60), SA_TOKEN_SECONDS (default 86400).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
READY_TIMEOUT=${KUBE_READY_TIMEOUT:-60}

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

bins() {
  local cache
  cache=$("$HERE/build-apiserver.sh")
  APISERVER_BIN=$cache/kube-apiserver-1.20.2
  KUBECTL_BIN=$cache/kubectl-1.20.2
}

# Absolute path, so pid checks can match it in /proc/PID/cmdline.
absdir() { mkdir -p "$1" && (cd "$1" && pwd); }
# Same for an existing cluster dir (made by 'up').
clusterdir() { [[ -f $1/port ]] || die "$1 is not a cluster dir (run 'up' first)"; (cd "$1" && pwd); }

# --- process helpers ----------------------------------------------------------

# Is the process in DIR/NAME.pid alive, and really ours? (The cmdline must
# mention DIR, which guards against a recycled pid.) Zombies count as dead.
alive() {
  local dir=$1 name=$2 pid state
  [[ -f $dir/$name.pid ]] || return 1
  pid=$(<"$dir/$name.pid")
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

# Start a daemon detached from our session (so it outlives this script and
# the caller's terminal) and record its pid. setsid execs in place here
# because a background job of a non-interactive shell is no group leader.
spawn() {
  local dir=$1 name=$2; shift 2
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# SIGTERM, poll for exit, SIGKILL after 30 s.
stop_proc() {
  local dir=$1 name=$2 pid i
  if ! alive "$dir" "$name"; then
    rm -f "$dir/$name.pid"
    return 0
  fi
  pid=$(<"$dir/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    alive "$dir" "$name" || break
    sleep 0.1
  done
  if alive "$dir" "$name"; then
    log "$name ($pid) ignored SIGTERM; killing"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$dir" "$name" || break
      sleep 0.1
    done
  fi
  alive "$dir" "$name" && die "$name ($pid) did not exit"
  rm -f "$dir/$name.pid"
}

# Poll CHECK (a command) until it succeeds; return 1 if NAME died or time ran out.
wait_for() {
  local dir=$1 name=$2 what=$3; shift 3
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$dir" "$name"; then
      tail -n 30 "$dir/$name.log" >&2 || true
      log "$name exited while waiting for $what (log: $dir/$name.log)"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$dir/$name.log" >&2 || true
      log "timed out after ${READY_TIMEOUT}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# --- certificates and credentials ---------------------------------------------

gen_credentials() {
  local dir=$1
  [[ -f $dir/apiserver.crt && -f $dir/sa.key && -f $dir/tokens.csv ]] && return 0
  command -v openssl >/dev/null || die "openssl missing (run build-apiserver.sh)"
  (
    cd "$dir"
    # CA: explicit CA extensions (webpki wants basicConstraints CA:TRUE).
    openssl req -x509 -new -nodes -sha256 -days 3650 \
      -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout ca.key -out ca.crt -subj "/CN=globaldns-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$dir/openssl.log"
    # Serving leaf signed by the CA, valid for https://127.0.0.1 and localhost.
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>>"$dir/openssl.log"
    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
    openssl x509 -req -sha256 -days 3650 -in apiserver.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -extfile apiserver.ext -out apiserver.crt 2>>"$dir/openssl.log"
    rm -f apiserver.csr apiserver.ext ca.srl
    # ServiceAccount token signing key pair (RS256).
    openssl genrsa -out sa.key 2048 2>>"$dir/openssl.log"
    openssl rsa -in sa.key -pubout -out sa.pub 2>>"$dir/openssl.log"
    # Static admin token in system:masters (bypasses RBAC).
    openssl rand -hex 24 >admin.token
    echo "$(<admin.token),admin,admin-uid,\"system:masters\"" >tokens.csv
    chmod 600 ca.key apiserver.key sa.key tokens.csv admin.token
  )
}

# kubeconfig with inline CA data and a bearer token.
write_kubeconfig() {
  local out=$1 port=$2 ca=$3 user=$4 token=$5 ns=${6:-default} tmp
  tmp=$(mktemp "$out.XXXXXX")
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: globaldns-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 "$ca")
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@globaldns-test
  context:
    cluster: globaldns-test
    user: $user
    namespace: $ns
current-context: $user@globaldns-test
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$out"
}

# --- etcd / apiserver ---------------------------------------------------------

start_etcd() {
  local dir=$1 port=$2
  local client=http://127.0.0.1:$((port + 1)) peer=http://127.0.0.1:$((port + 2))
  alive "$dir" etcd && die "etcd already running in $dir"
  spawn "$dir" etcd etcd \
    --name=default \
    --data-dir="$dir/etcd-data" \
    --listen-client-urls="$client" --advertise-client-urls="$client" \
    --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" \
    --initial-cluster="default=$peer" \
    --logger=zap --log-outputs=stderr
  if ! wait_for "$dir" etcd "etcd health on $client" \
    sh -c "curl -fsS '$client/health' | grep -q '\"health\":\"true\"'"; then
    stop_proc "$dir" etcd
    return 1
  fi
}

start_apiserver() {
  local dir=$1 port
  port=$(<"$dir/port")
  alive "$dir" apiserver && die "apiserver already running in $dir"
  alive "$dir" etcd || die "etcd is not running in $dir (use 'up')"
  mkdir -p "$dir/cert-dir"
  # Audit only ServiceEntry lists (not watches, not other resources): cheap.
  cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["list"]
  resources:
  - group: networking.istio.io
    resources: ["serviceentries"]
- level: None
EOF
  # Admission: only NamespaceLifecycle. Every other default plugin is turned
  # off: there is no controller-manager/scheduler/kubelet, and we only need
  # CRDs, Secrets, ServiceAccounts, RBAC and TokenRequest.
  # --endpoint-reconciler-type=none: the "kubernetes" Service endpoint would
  # be 127.0.0.1, which Endpoints validation rejects (log spam every 10 s).
  spawn "$dir" apiserver "$APISERVER_BIN" \
    --etcd-servers="http://127.0.0.1:$((port + 1))" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$port" --insecure-port=0 \
    --cert-dir="$dir/cert-dir" \
    --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \
    --client-ca-file="$dir/ca.crt" \
    --token-auth-file="$dir/tokens.csv" \
    --service-account-key-file="$dir/sa.pub" \
    --service-account-signing-key-file="$dir/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none \
    --enable-admission-plugins=NamespaceLifecycle \
    --disable-admission-plugins=LimitRanger,ServiceAccount,TaintNodesByCondition,Priority,DefaultTolerationSeconds,DefaultStorageClass,StorageObjectInUseProtection,PersistentVolumeClaimResize,RuntimeClass,CertificateApproval,CertificateSigning,CertificateSubjectRestriction,DefaultIngressClass,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota \
    --audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log" \
    --profiling=false
  local curl_args=(-fsS --cacert "$dir/ca.crt" -H "Authorization: Bearer $(<"$dir/admin.token")")
  # /readyz covers etcd, RBAC bootstrap roles and the CRD informers; the
  # default namespace is made by a post-start controller, so wait for it too.
  if ! wait_for "$dir" apiserver "https://127.0.0.1:$port/readyz" \
    curl "${curl_args[@]}" "https://127.0.0.1:$port/readyz" ||
    ! wait_for "$dir" apiserver "namespace default" \
      curl "${curl_args[@]}" "https://127.0.0.1:$port/api/v1/namespaces/default"; then
    stop_proc "$dir" apiserver
    return 1
  fi
}

# --- commands -----------------------------------------------------------------

cmd_up() {
  [[ $# == 2 ]] || usage
  local dir port=$2
  dir=$(absdir "$1")
  if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port + 2 > 65535)); then die "bad port: $port"; fi
  bins
  if alive "$dir" apiserver || alive "$dir" etcd; then
    die "cluster in $dir is already (partly) up; run down first"
  fi
  if [[ -f $dir/port && $(<"$dir/port") != "$port" ]]; then
    die "$dir was set up for port $(<"$dir/port")"
  fi
  echo "$port" >"$dir/port"
  gen_credentials "$dir"
  write_kubeconfig "$dir/admin.kubeconfig" "$port" "$dir/ca.crt" admin "$(<"$dir/admin.token")"
  # On failure leave nothing running (each start_* cleans up its own process).
  start_etcd "$dir" "$port" || die "etcd did not become healthy (log: $dir/etcd.log)"
  if ! start_apiserver "$dir"; then
    stop_proc "$dir" etcd
    die "apiserver did not become ready (log: $dir/apiserver.log)"
  fi
  log "up: https://127.0.0.1:$port (kubeconfig $dir/admin.kubeconfig)"
}

cmd_down() {
  [[ $# == 1 ]] || usage
  local dir
  [[ -f $1/port ]] || return 0  # never came up: nothing to stop (handy in cleanup)
  dir=$(clusterdir "$1")
  stop_proc "$dir" apiserver
  stop_proc "$dir" etcd
}

cmd_stop_apiserver() {
  [[ $# == 1 ]] || usage
  local dir
  dir=$(clusterdir "$1")
  stop_proc "$dir" apiserver
}

cmd_start_apiserver() {
  [[ $# == 1 ]] || usage
  local dir
  dir=$(clusterdir "$1")
  bins
  start_apiserver "$dir" || die "apiserver did not become ready (log: $dir/apiserver.log)"
}

# kubectl's discovery cache lives in DIR: ~/.kube/cache is keyed by host:port
# and would go stale across clusters reusing a port.
kubectl_admin() {
  local dir=$1; shift
  "$KUBECTL_BIN" --cache-dir "$dir/kubectl-cache" --kubeconfig "$dir/admin.kubeconfig" "$@"
}

cmd_sa_kubeconfig() {
  [[ $# == 4 ]] || usage
  local dir ns=$2 sa=$3 out=$4 resp token answer
  dir=$(clusterdir "$1")
  bins
  # Create namespace and ServiceAccount only if missing.
  kubectl_admin "$dir" get namespace "$ns" >/dev/null 2>&1 ||
    kubectl_admin "$dir" create namespace "$ns" >/dev/null
  kubectl_admin "$dir" -n "$ns" get serviceaccount "$sa" >/dev/null 2>&1 ||
    kubectl_admin "$dir" -n "$ns" create serviceaccount "$sa" >/dev/null
  # kubectl 1.20 has no "create token": POST a TokenRequest directly.
  resp=$(printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":%d}}' \
    "${SA_TOKEN_SECONDS:-86400}" |
    kubectl_admin "$dir" create --raw "/api/v1/namespaces/$ns/serviceaccounts/$sa/token" -f -)
  token=$(printf '%s' "$resp" | grep -o '"token" *: *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/' || true)
  [[ -n $token ]] || die "no token in TokenRequest response: $resp"
  mkdir -p "$(dirname "$out")"
  write_kubeconfig "$out" "$(<"$dir/port")" "$dir/ca.crt" "system:serviceaccount:$ns:$sa" "$token" "$ns"
  # The token must authenticate: an RBAC answer (yes/no), not Unauthorized.
  # (stderr may carry a warning if the CRD is not installed yet.)
  answer=$("$KUBECTL_BIN" --cache-dir "$dir/kubectl-cache" --kubeconfig "$out" auth can-i list serviceentries.networking.istio.io \
    -n "$ns" 2>"$out.err") || true
  [[ $answer == yes || $answer == no ]] || die "SA token not accepted: $answer $(<"$out.err")"
  rm -f "$out.err"
}

cmd_kubectl() {
  [[ $# -ge 1 ]] || usage
  local dir
  dir=$(clusterdir "$1"); shift
  bins
  exec "$KUBECTL_BIN" --cache-dir "$dir/kubectl-cache" --kubeconfig "$dir/admin.kubeconfig" "$@"
}

[[ $# -ge 1 ]] || usage
cmd=$1; shift
case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  stop-apiserver) cmd_stop_apiserver "$@" ;;
  start-apiserver) cmd_start_apiserver "$@" ;;
  sa-kubeconfig) cmd_sa_kubeconfig "$@" ;;
  kubectl) cmd_kubectl "$@" ;;
  *) usage ;;
esac
