#!/usr/bin/env bash
# Build (once) a real kube-apiserver and kubectl v1.20.2 for end-to-end tests,
# and make sure etcd and openssl are installed.
#
# Prints the directory holding kube-apiserver-1.20.2 and kubectl-1.20.2 on
# stdout (everything else goes to stderr). Exits fast when they are cached.
#
# Why this way: the machine only reaches Debian's archive, so the Kubernetes
# source comes from bookworm's source package (which ships upstream v1.20.2
# with vendor/) and the compiler from bullseye's Go 1.15 (Go >= 1.18 produces
# an apiserver that crashes on the first custom-resource write).
#
# Env: GLOBALDNS_CACHE (default ~/.cache/globaldns), KEEP_BUILD=1 keeps the
#      extracted tree and Go build cache after a successful build.
set -euo pipefail

K8S_VERSION=1.20.2
K8S_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
GO_DEB_VERSION=1.15.15-1~deb11u4

CACHE=${GLOBALDNS_CACHE:-$HOME/.cache/globaldns}
APISERVER=$CACHE/kube-apiserver-$K8S_VERSION
KUBECTL=$CACHE/kubectl-$K8S_VERSION

log() { echo "build-apiserver: $*" >&2; }

# Run as root directly, via sudo otherwise (apt-get install).
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_system_tools() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    as_root apt-get update -qq >&2
    # The package's init script may try to start a system etcd; we never use
    # it (each cluster runs its own etcd), so stop it if it came up.
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
    if [[ -d /run/systemd/system ]]; then
      as_root systemctl disable --now etcd.service >&2 2>/dev/null || true
    elif command -v service >/dev/null; then
      as_root service etcd stop >&2 2>/dev/null || true
    fi
  fi
}

ensure_system_tools

if [[ -x $APISERVER && -x $KUBECTL ]]; then
  echo "$CACHE"
  exit 0
fi

mkdir -p "$CACHE"
# Serialise concurrent builds (e.g. parallel test runs) on one lock.
exec 9>"$CACHE/.build.lock"
flock 9
if [[ -x $APISERVER && -x $KUBECTL ]]; then
  echo "$CACHE"
  exit 0
fi

start=$(date +%s)
WORK=$CACHE/build-$K8S_VERSION
APT=$WORK/apt
DL=$WORK/dl
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DL"

# --- private apt configuration --------------------------------------------
# Reuse the mirror the system already uses; never edit the system's sources.
mirror=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources |
  awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
if [[ -z $mirror ]]; then
  mirror=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    grep -v '\[.*\]' | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$APT/sources.list" <<EOF
deb-src [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror bullseye main
EOF
apt_opts=(
  -o "Dir::Etc::sourcelist=$APT/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$APT/lists"
  -o "Dir::Cache=$APT/cache"
  -o "APT::Sandbox::User=root"  # _apt cannot write into a root-owned cache dir
)

src_tar=$DL/kubernetes_${K8S_SRC_VERSION%-*}.orig.tar.gz
go_debs=("$DL/golang-1.15-go_${GO_DEB_VERSION}_amd64.deb" "$DL/golang-1.15-src_${GO_DEB_VERSION}_amd64.deb")
if [[ ! -f $src_tar || ! -f ${go_debs[0]} || ! -f ${go_debs[1]} ]]; then
  log "apt-get update (private lists: bookworm deb-src + bullseye, mirror $mirror)"
  apt-get "${apt_opts[@]}" update -qq >&2
fi

# --- Kubernetes source ------------------------------------------------------
if [[ ! -f $src_tar ]]; then
  log "downloading source package kubernetes=$K8S_SRC_VERSION"
  (cd "$DL" && apt-get "${apt_opts[@]}" source --download-only "kubernetes=$K8S_SRC_VERSION" >&2)
fi

# --- Go 1.15 (extracted, not installed) -----------------------------------
if [[ ! -f ${go_debs[0]} || ! -f ${go_debs[1]} ]]; then
  log "downloading golang-1.15 $GO_DEB_VERSION"
  (cd "$DL" && apt-get "${apt_opts[@]}" download \
    "golang-1.15-go=$GO_DEB_VERSION" "golang-1.15-src=$GO_DEB_VERSION" >&2)
fi
GOROOT_DIR=$WORK/go/usr/lib/go-1.15
if [[ ! -x $GOROOT_DIR/bin/go ]]; then
  rm -rf "$WORK/go"
  for d in "${go_debs[@]}"; do dpkg-deb -x "$d" "$WORK/go"; done
fi

# --- GOPATH-mode workspace --------------------------------------------------
# Upstream 1.20 builds in GOPATH mode with the tree at src/k8s.io/kubernetes;
# the vendor/k8s.io/* symlinks into staging/ only resolve that way.
SRC=$WORK/kubernetes-$K8S_VERSION
if [[ ! -f $SRC/.extracted ]]; then
  log "extracting source"
  rm -rf "$SRC"
  mkdir -p "$SRC"
  tar -xzf "$src_tar" -C "$SRC" --strip-components=1
  touch "$SRC/.extracted"
fi
GOPATH_DIR=$WORK/gopath
mkdir -p "$GOPATH_DIR/src/k8s.io" "$WORK/bin"
ln -sfn "$SRC" "$GOPATH_DIR/src/k8s.io/kubernetes"

export GOROOT=$GOROOT_DIR GOPATH=$GOPATH_DIR GOCACHE=$WORK/gocache
export GO111MODULE=off GOPROXY=off GOFLAGS='' CGO_ENABLED=0 GOOS=linux GOARCH=amd64
export PATH=$GOROOT/bin:$WORK/bin:$PATH
cd "$GOPATH_DIR/src/k8s.io/kubernetes"
log "using $(go version)"

# --- generated OpenAPI definitions -----------------------------------------
# The tarball lacks pkg/generated/openapi/zz_generated.openapi.go (make
# generates it). Inputs mirror build/root/Makefile.generated_files: every
# package with a +k8s:openapi-gen= tag, staging/src named as its vendor/
# path, minus code-generator and sample-apiserver.
OPENAPI_OUT=pkg/generated/openapi/zz_generated.openapi.go
if [[ ! -f $SRC/.openapi-generated ]]; then  # marker: survives an interrupted run
  log "generating $OPENAPI_OUT"
  # Files (from stdin) that contain a pattern; no match is not an error.
  grep_l() { xargs -r grep -l -- "$1" || [[ $? == 123 ]]; }
  go build -o "$WORK/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  dirs=$(
    find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o \
      -type f -name '*.go' -print |
      grep_l '^// *+k8s:' | grep_l '+k8s:openapi-gen=' |
      sed -e 's|^\./staging/src|vendor|' -e 's|^\./||' -e 's|/[^/]*$||' |
      grep -Ev '^vendor/k8s.io/(code-generator|sample-apiserver)/' |
      LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd,
  )
  openapi-gen --logtostderr \
    -i "$dirs" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$WORK/openapi-violations.report" >&2
  test -s "$OPENAPI_OUT"
  touch "$SRC/.openapi-generated"
fi

# --- build ------------------------------------------------------------------
# Version stamps as hack/lib/version.sh sets them, so /version says v1.20.2.
ldflags="-s -w"
for pkg in client-go/pkg/version component-base/version; do
  p=k8s.io/kubernetes/vendor/k8s.io/$pkg
  ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=20"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
log "go build kube-apiserver, kubectl (a few minutes cold)"
go build -p 2 -tags selinux,notest -ldflags "$ldflags" -o "$WORK/kube-apiserver.tmp" ./cmd/kube-apiserver
go build -p 2 -tags selinux,notest -ldflags "$ldflags" -o "$WORK/kubectl.tmp" ./cmd/kubectl
mv -f "$WORK/kube-apiserver.tmp" "$APISERVER"
mv -f "$WORK/kubectl.tmp" "$KUBECTL"

# Keep the downloads (small) but drop the ~GBs of tree and build cache.
if [[ ${KEEP_BUILD:-0} != 1 ]]; then
  cd "$CACHE"
  rm -rf "$SRC" "$GOPATH_DIR" "${WORK:?}/gocache" "${WORK:?}/go" "${WORK:?}/bin"
fi
log "built in $(($(date +%s) - start))s"
echo "$CACHE"
