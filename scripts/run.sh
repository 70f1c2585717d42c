#!/usr/bin/env bash
# Builds ecshard (release) and runs the main job in the foreground; Ctrl-C stops it.
#
#   scripts/run.sh [ARG...]
#
# The main job is ecshardd, the host that serves the sample protocol modules from its
# embedded default configuration (echo on 127.0.0.1:7007, one shard per CPU, ...). ARGs go
# to it: --config FILE, --shards N, --set KEY=VALUE, --print-config.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/deps.sh
scripts/build.sh release

job=${ECSHARD_BUILD_ROOT:-$root}/build/samples/ecshardd/ecshardd
if [ ! -x "$job" ]; then
  echo "run.sh: the build produced no $job" >&2
  exit 1
fi
echo "== run.sh: $job $*"
exec "$job" "$@"
