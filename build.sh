#!/usr/bin/env bash
# edgeagent build and test driver. Usage:
#   ./build.sh                                   dist/edgeagent.pyz for this machine
#   ./build.sh --python 3.8                      ... for this platform and Python 3.8
#   ./build.sh --platform linux-aarch64 --python 3.8   ... for a Jetson, from aarch64 wheels
#   ./build.sh deb [--platform P] [--python X.Y] [-o FILE.deb] [--pyz FILE] [--revision N]
#                                                dist/edgeagent_<version>-<N>_<arch>.deb from the pyz
#   ./build.sh test                              the whole suite, current Python and 3.8
#   ./build.sh bench [NAME] [ARGS]               bench/bench_NAME.py (agent, exporter, deviceplugin,
#                                                labels, peers, footprint, protobuf, dra_prepare,
#                                                dra_slices), on demand
#   ./build.sh protos                            regenerate the betterproto code from protos/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
caller=$PWD
cd "$here"
state="$here/.build"
mkdir -p "$state" dist

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 2; }

# An interpreter of Python X.Y: pyenv's, else pythonX.Y on PATH.
python_for() {
  local want=$1 p
  if command -v pyenv >/dev/null 2>&1; then
    p=$(pyenv prefix "$want" 2>/dev/null | head -1 || true)
    if [ -n "$p" ] && [ -x "$p/bin/python$want" ]; then echo "$p/bin/python$want"; return 0; fi
    p=$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)
    if [ -n "$p" ]; then echo "$(pyenv root)/versions/$p/bin/python$want"; return 0; fi
  fi
  command -v "python$want" 2>/dev/null && return 0
  return 1
}

# A private virtualenv (created once, refreshed when pyproject.toml changes).
venv() {
  local name=$1 py=$2 extras=$3 dir="$state/$1"
  local stamp; stamp=$(cat pyproject.toml "$py" 2>/dev/null | cksum | cut -d' ' -f1)-$extras
  if [ ! -f "$dir/.stamp" ] || [ "$(cat "$dir/.stamp")" != "$stamp" ]; then
    say "virtualenv $name ($("$py" --version 2>&1))"
    rm -rf "$dir"
    "$py" -m venv "$dir"
    # pip's output goes to stderr: this function's stdout is the venv path its callers capture.
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip setuptools \
      wheel >&2
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]" >&2
    echo "$stamp" > "$dir/.stamp"
  fi
  echo "$dir"
}

# Debian packages the tests use (real peers). Installed when missing and we may; in CI a
# missing tool fails its tests instead of skipping them (see tests/tools.py).
test_tools() {
  local missing=()
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
  command -v dtc >/dev/null 2>&1 || missing+=(device-tree-compiler)
  command -v lintian >/dev/null 2>&1 || missing+=(lintian)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} (Debian packages the tests use)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
      || say "could not install ${missing[*]}; their tests will skip (or fail in CI)"
  else
    say "missing ${missing[*]}; their tests will skip (or fail in CI)"
  fi
}

build_pyz() {
  local platform=$1 pyver=$2 out=$3 py tag pipargs=()
  # A build for a named Python runs under that Python: JetPack 4's python3 is 3.6, so a 3.8
  # build must not start with it (`sudo ./edgeagent.pyz install` would die before our code).
  local shebang='/usr/bin/env python3'
  [ -n "$pyver" ] && shebang="/usr/bin/env python$pyver"
  # The platform is checked before any slow step (a virtualenv, a download).
  if [ "$platform" != native ]; then
    case "$platform" in
      # manylinux2014 = glibc 2.17: JetPack 4.6's Ubuntu 18.04 has glibc 2.27, so these wheels
      # run on every JetPack from 4.6 to 7.
      linux-aarch64) tag=(manylinux2014_aarch64 manylinux_2_17_aarch64 linux_aarch64) ;;
      linux-x86_64) tag=(manylinux2014_x86_64 manylinux_2_17_x86_64 linux_x86_64) ;;
      linux-armv7l) tag=(manylinux2014_armv7l manylinux_2_17_armv7l linux_armv7l) ;;
      *) die "unknown platform $platform (linux-aarch64, linux-x86_64, linux-armv7l)" ;;
    esac
    for t in "${tag[@]}"; do pipargs+=(--platform "$t"); done
  fi
  if [ -n "$pyver" ]; then
    py=$(python_for "$pyver") || die "no Python $pyver found (pyenv install $pyver, or put python$pyver on PATH)"
  else
    py=$(command -v python3) || die "python3 not found"
    pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  fi
  # pip evaluates environment markers on the interpreter that runs it: resolve each target with
  # an interpreter of the target's Python minor version.
  local v; v=$(venv "build-py$pyver" "$py" dev)
  local epoch; epoch=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
  export SOURCE_DATE_EPOCH=$epoch
  if [ "$platform" != native ]; then
    # Binary wheels only: an sdist would compile its C extension for this machine, not the
    # target, and aiohttp's pure-Python fallback lacks fixes its C parser has.
    pipargs+=(--python-version "$pyver" --implementation cp --only-binary=:all:)
  fi
  local wheels="$state/wheels-$platform-$pyver"
  rm -rf "$wheels" && mkdir -p "$wheels"
  # setuptools builds in-tree and packs whatever build/lib holds, stale files of an older
  # checkout included: start from nothing.
  rm -rf build edgeagent.egg-info
  "$v/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" . >/dev/null
  rm -rf build
  say "building $out for $platform, Python $pyver"
  # --compile-pyc: the first start byte-compiles what it unpacks. Without it every start
  # compiles all ~500 modules from source wherever .pyc files cannot be written (read-only
  # cache, PYTHONDONTWRITEBYTECODE): 1.8 s instead of 0.6 s to READY=1 and +10 MiB peak RSS
  # (bench/bench_agent.py on x86-64).
  # No --no-modify: it hashes every unpacked .py on every start (24 ms of a 88 ms
  # `edgeagent tegrastats` on Debian's 3.11, bench/bench_peers.py) and guards nothing the cache's
  # owner could not get round (the .pyc beside each file is what runs, and is not checked).
  "$v/bin/shiv" --compressed --reproducible --compile-pyc -p "$shebang" \
    -e edgeagent.cli:main -o "$out" ${pipargs[@]+"${pipargs[@]}"} "$wheels"/edgeagent-*.whl \
    >/dev/null
  # Our __main__.py: a warm start skips shiv's _bootstrap and its imports (packaging/pyz_main.py).
  "$v/bin/python" packaging/pyz_main.py "$out"
  say "$(du -h "$out" | cut -f1) $out"
}

run_tests() {
  test_tools
  local py pys=() seen=""
  pys+=("${EDGEAGENT_TEST_PYTHON:-$(command -v python3)}")
  py38=$(python_for 3.8 || true)
  [ -n "$py38" ] && pys+=("$py38")
  # The end-to-end tests run the real one-file build.
  build_pyz native "" dist/edgeagent.pyz
  export EDGEAGENT_PYZ="$here/dist/edgeagent.pyz"
  [ "${CI:-}" = true ] && export EDGEAGENT_REQUIRE_TOOLS=1
  local failed=0 only=()
  for py in "${pys[@]}"; do
    local ver; ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    case " $seen " in *" $ver "*) continue ;; esac
    seen="$seen $ver"
    local v; v=$(venv "test-py$ver" "$py" "test,dev")
    say "tests on Python $ver${only[*]:+ (the artifact tests ran under the first Python)}"
    "$v/bin/python" -m pytest -q -p no:cacheprovider ${only[@]+"${only[@]}"} "$@" || failed=1
    # The pyz and the .deb run under the system's python3 whatever runs pytest: testing them
    # again under the next interpreter would repeat the same runs (pyproject.toml: artifact).
    only=(-m "not artifact")
  done
  return $failed
}

run_bench() {
  local name=${1:-agent}
  [ $# -gt 0 ] && shift
  if [ ! -f "bench/bench_$name.py" ]; then
    local names; names=$(cd bench && ls bench_*.py | sed 's/^bench_//; s/\.py$//' | paste -sd, - | sed 's/,/, /g')
    die "no benchmark $name (bench/bench_*.py: $names)"
  fi
  # The benchmarks use the test peers (grpcio kubelet, HTTPS API server) and the one-file build.
  build_pyz native "" dist/edgeagent.pyz
  local py; py=$(command -v python3)
  local ver; ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  local v; v=$(venv "test-py$ver" "$py" "test,dev")
  EDGEAGENT_PYZ="$here/dist/edgeagent.pyz" "$v/bin/python" "bench/bench_$name.py" "$@"
}

# The Debian package: the pyz (built here, or --pyz), staged by packaging/stage_deb.py (which reads
# the version, Python and architecture from the pyz), packed by dpkg-deb without debhelper.
build_deb() {
  local platform=native pyver="" out="" pyz="" revision=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --platform) platform=${2:?--platform needs a value}; shift 2 ;;
      --python) pyver=${2:?--python needs X.Y}; shift 2 ;;
      --pyz) pyz=${2:?--pyz needs a file}; shift 2
        case "$pyz" in /*) ;; *) pyz="$caller/$pyz" ;; esac ;;
      --revision) revision=${2:?--revision needs a number}; shift 2 ;;
      -o|--output) out=${2:?-o needs a file}; shift 2
        case "$out" in /*) ;; *) out="$caller/$out" ;; esac ;;
      *) die "deb: unknown argument $1 (see ./build.sh --help)" ;;
    esac
  done
  command -v dpkg-deb >/dev/null 2>&1 || die "deb: dpkg-deb not found (apt-get install dpkg)"
  if [ -z "$pyz" ]; then
    pyz="$state/deb/edgeagent.pyz"
    mkdir -p "$state/deb"
    build_pyz "$platform" "$pyver" "$pyz"
  else
    [ -f "$pyz" ] || die "deb: --pyz $pyz: no such file"
  fi
  local epoch; epoch=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
  export SOURCE_DATE_EPOCH=$epoch
  # The staging script needs only the standard library and edgeagent's pure install/ modules.
  local py; py=$(command -v python3) || die "python3 not found"
  local tree; tree=$(mktemp -d "$state/deb-tree.XXXXXX")
  local name
  name=$("$py" packaging/stage_deb.py --pyz "$pyz" --tree "$tree/root" \
    --revision "$revision" --epoch "$epoch") || { rm -rf "$tree"; exit 2; }
  [ -n "$out" ] || out="$here/dist/$name"
  mkdir -p "$(dirname "$out")"
  # --root-owner-group: root:root inside without fakeroot; -Zxz: every dpkg since 1.15 reads it
  # (zstd, Ubuntu's default since 21.10, is unknown to Ubuntu 18.04's dpkg).
  dpkg-deb --root-owner-group -Zxz --build "$tree/root" "$out" >/dev/null \
    || { rm -rf "$tree"; die "deb: dpkg-deb failed"; }
  rm -rf "$tree"
  say "$(du -h "$out" | cut -f1) $out"
}

gen_protos() {
  local v; v=$(venv "build-py$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$(command -v python3)" dev)
  "$v/bin/python" -m edgeagent.genprotos
}

platform=native pyver="" out=""
case "${1:-}" in
  test) shift; run_tests "$@"; exit $? ;;
  bench) shift; run_bench "$@"; exit $? ;;
  protos) shift; gen_protos; exit $? ;;
  deb) shift; build_deb "$@"; exit $? ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --platform) platform=${2:?--platform needs a value}; shift 2 ;;
    --python) pyver=${2:?--python needs X.Y}; shift 2 ;;
    -o|--output) out=${2:?-o needs a file}; shift 2
      case "$out" in /*) ;; *) out="$caller/$out" ;; esac ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see ./build.sh --help)" ;;
  esac
done
if [ -z "$out" ]; then
  if [ "$platform" = native ] && [ -z "$pyver" ]; then out=dist/edgeagent.pyz
  else out="dist/edgeagent-${platform/native/$(uname -s | tr A-Z a-z)-$(uname -m)}-py${pyver:-3}.pyz"; fi
fi
build_pyz "$platform" "$pyver" "$out"
