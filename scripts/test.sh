#!/usr/bin/env bash
# Runs every test of globaldns on a fresh machine: installs the DNS tools the tests drive when they
# are missing (dig, dnsmasq, Knot's knotd and kzonecheck, BIND's named-checkzone; Python's grpcio
# and openssl for the gRPC tests), then formatting,
# lints and the whole cargo test suite, including the Kubernetes end-to-end tests
# (tests/kube_e2e/), whose first run on a machine installs etcd and builds kube-apiserver from
# Debian's sources (scripts/kube/build-apiserver.sh, cached in ~/.cache/globaldns; about 5
# minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base) # the binary only, no system service
command -v kzonecheck >/dev/null 2>&1 || missing+=(knot-dnssecutils)
command -v named-checkzone >/dev/null 2>&1 || missing+=(bind9-utils)
# knotd (a real primary and secondary for the transfer tests) is in /usr/sbin, which a non-root
# PATH may lack: the tests find it through PATH, so it is added below.
command -v knotd >/dev/null 2>&1 || [ -x /usr/sbin/knotd ] || missing+=(knot)
# tests/grpc: Python's grpcio is the gRPC client (CoreDNS's stand-in), openssl makes the TLS CA.
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if ((${#missing[@]})); then
  echo "== installing test tools: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The tests run knotd themselves, on their own ports; the packaged service is not wanted.
  if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now knot.service >/dev/null 2>&1 || true
  fi
fi

export PATH="$PATH:/usr/sbin:/sbin"

if ! python3 -c 'import grpc' >/dev/null 2>&1; then
  echo "== installing grpcio for tests/grpc"
  # From PyPI (a wheel: nothing to compile); a system Python that refuses pip gets Debian's.
  python3 -m pip install --quiet grpcio \
    || { $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-grpcio >/dev/null; }
fi

echo "== paths named in docs and comments exist"
scripts/check-paths.py --self-test
scripts/check-paths.py
echo "== scripts parse, and every benchmark starts (--help)"
# Benchmarks are not run here (they take minutes); a broken one must still show up red.
for f in $(git ls-files '*.sh' .ci/run); do bash -n "$f"; done
python3 -m py_compile $(git ls-files '*.py')
for f in benches/*.sh; do "$f" --help >/dev/null || { echo "$f --help failed"; exit 1; }; done
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
