#!/usr/bin/env bash
# Self-test of the kube test harness: two real clusters on 127.0.0.1, the
# ServiceEntry CRD in three versions, the status subresource, a ServiceAccount
# kubeconfig, and an apiserver restart that keeps its data. Exits non-zero on
# the first failure and leaves nothing running.
#
# Env: SELFTEST_PORT_A / SELFTEST_PORT_B (default 16443 / 17443; each also
#      uses PORT+1 and PORT+2 for etcd), KEEP_SELFTEST_DIR=1 keeps the temp dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLUSTER=$HERE/cluster.sh
CRD=$ROOT/tests/kube/serviceentry-crd.yaml
PORT_A=${SELFTEST_PORT_A:-16443}
PORT_B=${SELFTEST_PORT_B:-17443}
NS=globaldns-selftest
GROUP=networking.istio.io

passed=0
t0=$SECONDS
step() { echo "--- $*" >&2; }
ok() { passed=$((passed + 1)); echo "ok $passed - $*" >&2; }
fail() { echo "FAIL: $*" >&2; echo "$passed passed, 1 failed"; exit 1; }

# expect WHAT WANT GOT
expect() { [[ $3 == "$2" ]] || fail "$1: want '$2', got '$3'"; ok "$1"; }

trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

step "build (cached after the first run)"
tb=$SECONDS
KUBECTL=$("$HERE/build-apiserver.sh")/kubectl-1.20.2
build_s=$((SECONDS - tb))

for p in "$PORT_A" "$PORT_B"; do
  for q in "$p" $((p + 1)) $((p + 2)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then
      fail "port $q on 127.0.0.1 is already in use"
    fi
  done
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/globaldns-kube-selftest.XXXXXX")
A=$TMP/a
B=$TMP/b
cleanup() {
  local rc=$?
  "$CLUSTER" down "$A" >/dev/null 2>&1 || true
  "$CLUSTER" down "$B" >/dev/null 2>&1 || true
  if [[ ${KEEP_SELFTEST_DIR:-0} == 1 || $rc != 0 ]]; then
    echo "selftest: logs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT

k() { local dir=$1; shift; "$CLUSTER" kubectl "$dir" "$@"; }
# curl as admin against cluster DIR; PATH is relative to the server root.
api() {
  local dir=$1 method=$2 path=$3; shift 3
  curl -fsS --cacert "$dir/ca.crt" -H "Authorization: Bearer $(<"$dir/admin.token")" \
    -X "$method" "$@" "https://127.0.0.1:$(<"$dir/port")$path"
}

step "up: two clusters (ports $PORT_A and $PORT_B) in $TMP"
tu=$SECONDS
"$CLUSTER" up "$A" "$PORT_A" &
pa=$!
"$CLUSTER" up "$B" "$PORT_B" &
pb=$!
wait "$pa" || fail "cluster A did not come up"
wait "$pb" || fail "cluster B did not come up"
up_s=$((SECONDS - tu))
for d in "$A" "$B"; do
  expect "version $(basename "$d")" v1.20.2 "$(api "$d" GET /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"
done

step "CRD applied and Established on both"
for d in "$A" "$B"; do
  k "$d" apply -f "$CRD" >/dev/null
  k "$d" wait --for=condition=Established --timeout=60s "crd/serviceentries.$GROUP" >/dev/null
  ok "CRD established on $(basename "$d")"
  k "$d" create namespace "$NS" >/dev/null
done
served=$(k "$A" get crd "serviceentries.$GROUP" \
  -o 'jsonpath={range .spec.versions[*]}{.name}:{.served}:{.storage}:{.subresources.status} {end}')
expect "CRD versions" "v1:true:true:{} v1alpha3:true:false:{} v1beta1:true:false:{} " "$served"

step "ServiceEntries written as v1 and v1alpha3, read back in all three versions"
k "$A" -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: se-v1
spec:
  hosts: [db.global]
  location: MESH_INTERNAL
  resolution: DNS
  ports:
  - {number: 5432, name: tcp-db, protocol: TCP}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: se-alpha
spec:
  hosts: [web.global]
  addresses: [240.0.0.2]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 10.1.2.3
  ports:
  - {number: 80, name: http, protocol: HTTP}
EOF
for name in se-v1:db.global se-alpha:web.global; do
  for v in v1 v1beta1 v1alpha3; do
    got=$(k "$A" -n "$NS" get "serviceentries.$v.$GROUP" "${name%%:*}" \
      -o 'jsonpath={.apiVersion} {.spec.hosts[0]}')
    expect "read ${name%%:*} as $v" "$GROUP/$v ${name#*:}" "$got"
  done
done
expect "cluster B does not see cluster A's objects" "" \
  "$(k "$B" -n "$NS" get serviceentries -o name)"

step "status.addresses through the status subresource (merge patch)"
STATUS=/apis/$GROUP/v1/namespaces/$NS/serviceentries/se-v1/status
api "$A" PATCH "$STATUS" -H 'Content-Type: application/merge-patch+json' \
  --data '{"status":{"addresses":[{"host":"db.global","value":"240.240.0.7"}]},"spec":{"hosts":["ignored.global"]}}' >/dev/null
for v in v1 v1beta1 v1alpha3; do
  got=$(k "$A" -n "$NS" get "serviceentries.$v.$GROUP" se-v1 \
    -o 'jsonpath={.status.addresses[0].host}={.status.addresses[0].value} {.spec.hosts[0]}')
  expect "status.addresses read as $v (spec untouched by /status)" "db.global=240.240.0.7 db.global" "$got"
done
# A write to the main resource must not change status (subresource enabled).
api "$A" PATCH "/apis/$GROUP/v1/namespaces/$NS/serviceentries/se-v1" \
  -H 'Content-Type: application/merge-patch+json' --data '{"status":{"addresses":[]}}' >/dev/null
expect "main resource ignores status" 240.240.0.7 \
  "$(k "$A" -n "$NS" get "serviceentries.v1.$GROUP" se-v1 -o 'jsonpath={.status.addresses[0].value}')"
# JSON patch on /status via the v1alpha3 endpoint works too.
api "$A" PATCH "/apis/$GROUP/v1alpha3/namespaces/$NS/serviceentries/se-alpha/status" \
  -H 'Content-Type: application/json-patch+json' \
  --data '[{"op":"add","path":"/status","value":{"addresses":[{"host":"web.global","value":"240.240.0.8"}]}}]' >/dev/null
expect "json-patch status on se-alpha" 240.240.0.8 \
  "$(k "$A" -n "$NS" get "serviceentries.v1.$GROUP" se-alpha -o 'jsonpath={.status.addresses[0].value}')"

# Server-side apply on /status (what a controller using apply patches sends).
api "$A" PATCH "/apis/$GROUP/v1/namespaces/$NS/serviceentries/se-alpha/status?fieldManager=selftest&force=true" \
  -H 'Content-Type: application/apply-patch+yaml' \
  --data "{\"apiVersion\":\"$GROUP/v1\",\"kind\":\"ServiceEntry\",\"metadata\":{\"name\":\"se-alpha\"},\"status\":{\"addresses\":[{\"host\":\"web.global\",\"value\":\"240.240.0.9\"}]}}" >/dev/null
expect "server-side apply on status" 240.240.0.9 \
  "$(k "$A" -n "$NS" get "serviceentries.v1beta1.$GROUP" se-alpha -o 'jsonpath={.status.addresses[0].value}')"

step "schema validation is in force"
if api "$A" PATCH "/apis/$GROUP/v1/namespaces/$NS/serviceentries/se-v1" \
  -H 'Content-Type: application/merge-patch+json' --data '{"spec":{"resolution":"BOGUS"}}' >/dev/null 2>&1; then
  fail "invalid spec.resolution accepted"
fi
ok "invalid spec.resolution rejected"
if api "$A" PATCH "$STATUS" -H 'Content-Type: application/merge-patch+json' \
  --data '{"status":{"observedGeneration":true}}' >/dev/null 2>&1; then
  fail "boolean status.observedGeneration accepted"
fi
api "$A" PATCH "$STATUS" -H 'Content-Type: application/merge-patch+json' \
  --data '{"status":{"observedGeneration":1}}' >/dev/null
ok "status.observedGeneration is int-or-string"

step "ServiceAccount kubeconfig via TokenRequest"
SA_KC=$TMP/sa.kubeconfig
"$CLUSTER" sa-kubeconfig "$A" "$NS" globaldns "$SA_KC"
ksa() { "$KUBECTL" --cache-dir "$A/kubectl-cache" --kubeconfig "$SA_KC" "$@"; }
expect "SA without RBAC cannot list" no "$(ksa auth can-i list "serviceentries.$GROUP" 2>/dev/null || true)"
k "$A" -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: globaldns}
rules:
- apiGroups: [$GROUP]
  resources: [serviceentries]
  verbs: [get, list, watch]
- apiGroups: [$GROUP]
  resources: [serviceentries/status]
  verbs: [get, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: globaldns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: globaldns}
subjects:
- {kind: ServiceAccount, name: globaldns, namespace: $NS}
EOF
expect "SA with Role can list" yes "$(ksa auth can-i list "serviceentries.$GROUP")"
expect "SA lists ServiceEntries" "se-alpha se-v1" \
  "$(ksa get "serviceentries.v1.$GROUP" -o 'jsonpath={.items[*].metadata.name}')"
expect "SA may not read secrets" no "$(ksa auth can-i get secrets 2>/dev/null || true)"
if ksa get secrets >/dev/null 2>&1; then fail "SA could list secrets"; fi
ok "SA forbidden on secrets"

step "memory (RSS) per cluster"
rss() { awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$(<"$1")/status"; }
for d in "$A" "$B"; do
  echo "cluster $(basename "$d"): etcd $(rss "$d/etcd.pid") MiB, kube-apiserver $(rss "$d/apiserver.pid") MiB" >&2
done

step "stop apiserver A (cluster unreachable), B unaffected, restart A, data survives"
"$CLUSTER" stop-apiserver "$A"
if api "$A" GET /readyz >/dev/null 2>&1; then fail "apiserver A still answers after stop"; fi
ok "apiserver A unreachable"
if ! [[ -f $A/etcd.pid ]] || ! kill -0 "$(<"$A/etcd.pid")"; then fail "etcd A should keep running"; fi
k "$B" get crd "serviceentries.$GROUP" >/dev/null
ok "cluster B still serves"
tr=$SECONDS
"$CLUSTER" start-apiserver "$A"
restart_s=$((SECONDS - tr))
expect "se-v1 status survived restart" "db.global 240.240.0.7" \
  "$(k "$A" -n "$NS" get "serviceentries.v1beta1.$GROUP" se-v1 -o 'jsonpath={.spec.hosts[0]} {.status.addresses[0].value}')"
expect "SA token still valid after restart" "se-alpha se-v1" \
  "$(ksa get "serviceentries.v1.$GROUP" -o 'jsonpath={.items[*].metadata.name}')"

step "down"
"$CLUSTER" down "$A"
"$CLUSTER" down "$B"
for d in "$A" "$B"; do
  [[ ! -e $d/etcd.pid && ! -e $d/apiserver.pid ]] || fail "pid files left in $d"
done
for p in "$PORT_A" "$PORT_B"; do
  for q in "$p" $((p + 1)) $((p + 2)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then fail "port $q still open after down"; fi
  done
done
ok "both clusters down, ports closed"

echo "selftest: build ${build_s}s, two clusters up ${up_s}s, apiserver restart ${restart_s}s, total $((SECONDS - t0))s" >&2
echo "$passed passed, 0 failed"
