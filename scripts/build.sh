#!/usr/bin/env bash
# Configures and builds one flavour of ecshard.
#
#   scripts/build.sh [TYPE] [CMAKE_OPTION...]
#
# TYPE       directory     compiler   CMAKE_BUILD_TYPE  sanitizers
# release    build/        cc         RelWithDebInfo    none (default)
# asan       build-asan/   clang      Debug             ASan + UBSan (+ LSan)
# tsan       build-tsan/   clang      Debug             TSan
#
# Extra arguments go to the cmake configure step (e.g. -DECSHARD_BUILD_PERF=OFF).
# ECSHARD_BUILD_ROOT puts the build directories somewhere other than the repository root.
# Dependencies: scripts/deps.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
type=${1:-release}
[ $# -gt 0 ] && shift
broot=${ECSHARD_BUILD_ROOT:-$root}

case $type in
  release)
    dir=$broot/build
    cfg=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DECSHARD_SANITIZE=)
    ;;
  asan)
    dir=$broot/build-asan
    cfg=(-DCMAKE_BUILD_TYPE=Debug -DECSHARD_SANITIZE=address)
    export CC=clang
    ;;
  tsan)
    dir=$broot/build-tsan
    cfg=(-DCMAKE_BUILD_TYPE=Debug -DECSHARD_SANITIZE=thread)
    export CC=clang
    ;;
  -h | --help)
    sed -n '2,13s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
  *)
    echo "build.sh: unknown build type '$type' (release, asan or tsan)" >&2
    exit 2
    ;;
esac

echo "== build.sh $type: $dir"
cmake -S "$root" -B "$dir" "${cfg[@]}" "$@"
cmake --build "$dir" -j"$(nproc)"
