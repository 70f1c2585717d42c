#!/usr/bin/env bash
# Builds ecshard (release) and runs the main job in the foreground; Ctrl-C stops it.
#
#   scripts/run.sh [ARG...]
#
# The main job is ecshardd, the host that runs the sample servers from configuration,
# when it is built (build/samples/ecshardd/ecshardd); ARGs go to it (--config FILE,
# --shards N, --set KEY=VALUE, --print-config). Until then it is the echo sample,
# build/samples/echo/ecshard-echo: it serves 127.0.0.1:7007 with one shard per CPU.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/deps.sh
scripts/build.sh release

build=${ECSHARD_BUILD_ROOT:-$root}/build
for job in "$build/samples/ecshardd/ecshardd" "$build/samples/echo/ecshard-echo"; do
  if [ -x "$job" ]; then
    echo "== run.sh: $job $*"
    exec "$job" "$@"
  fi
done
echo "run.sh: the build produced no main job (looked for samples/ecshardd/ecshardd and" \
  "samples/echo/ecshard-echo under $build)" >&2
exit 1
