#!/usr/bin/env bash
# Installs the Debian 12 packages ecshard needs, as root, and only those that are missing.
#
#   scripts/deps.sh [GROUP...]
#
# Always: what the build, the tests (release, ASan+UBSan, TSan), the conformance kit and the
# format check need. GROUP adds more:
#   perf   load generators, peer servers and tools for perf/ (wrk, nginx, h2o, postfix, ...)
# Fast and silent when everything is present; run it as often as you like.
set -euo pipefail

base=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev clang-format # sanitizer builds use clang; CI checks the format
  clang-tidy cppcheck # scripts/lint.sh: static analysis in CI
  libssl-dev openssl libjemalloc-dev libck-dev libcunit1-dev libconfig-dev
  libcurl4-openssl-dev # io_wrapper's HTTP(S) client
  liburing-dev # the uring poller (shard/poll_uring.c)
  libevent-dev libuv1-dev # perf/: the libevent and libuv peers of the benchmarks
  curl python3 procps iproute2
  haproxy # test/integration/haproxy.py: a real load balancer sending PROXY v2
  libhttp-parser-dev # test_http_diff: the oracle of the http parser's differential test
  slowhttptest # test/integration/http_slow.py: slow-client attacks on the http module
  swaks libnet-ssleay-perl postfix # test/integration/smtp*.py: swaks (with TLS), smtp-source
)
# gnuplot-nox rather than gnuplot: the latter pulls in Qt and X11.
perf=(wrk nginx-light h2o strace valgrind linux-perf gnuplot-nox)

wanted=("${base[@]}")
with_postfix=1 # postfix is in base (smtp-source for the SMTP crash test)
for group in "$@"; do
  case $group in
    perf)
      wanted+=("${perf[@]}")
      ;;
    *)
      echo "deps.sh: unknown package group '$group' (known: perf)" >&2
      exit 2
      ;;
  esac
done

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: this script installs Debian packages (apt-get, dpkg-query); install by hand:" >&2
  echo "  ${wanted[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]}" >&2
  echo "deps.sh: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing ${missing[*]}"

# Keep the daemons that the perf group installs (nginx, h2o, postfix) from starting on
# their default ports: perf/ starts its own instances. policy-rc.d is Debian's switch for
# that; an existing one is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi

if [ $with_postfix -eq 1 ]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi

apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
