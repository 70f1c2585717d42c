#!/usr/bin/env bash
# Runs the libFuzzer targets for longer than the bounded ctest run.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 600 s each, every target
#
# Builds the ASan+UBSan tree (scripts/build.sh asan, clang) and fuzzes each target from its
# committed seeds (test/fuzz/corpus/NAME) plus the scratch corpus kept in
# build-asan/test/fuzz/corpus-NAME, so that a later run continues where this one stopped.
# Crashes and leaks are written to build-asan/test/fuzz/crash-NAME-*; reproduce one with
#   build-asan/test/fuzz/NAME FILE
# and, once fixed, add the input to test/fuzz/corpus/NAME so the ctest run keeps checking it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-600}
[ $# -gt 0 ] && shift
"$root/scripts/build.sh" asan >/dev/null
dir=$root/build-asan/test/fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/test/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
status=0
for t in "${targets[@]}"; do
  echo "== $t: $secs s"
  mkdir -p "$dir/corpus-$t"
  dict=()
  [ -f "$root/test/fuzz/$t.dict" ] && dict=("-dict=$root/test/fuzz/$t.dict")
  if ! LSAN_OPTIONS=suppressions=$root/test/fuzz/lsan.supp "$dir/$t" -max_total_time="$secs" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$dir/crash-$t-" \
    "${dict[@]}" "$dir/corpus-$t" "$root/test/fuzz/corpus/$t"; then
    status=1
  fi
done
exit $status
