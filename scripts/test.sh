#!/usr/bin/env bash
# Runs every test: installs what is missing (scripts/deps.sh), checks the format of every
# tracked C file, then for each build flavour builds it (scripts/build.sh) and runs ctest:
# the unit suites, the integration and stress tests and the seed conformance kit.
#
#   scripts/test.sh
#
# Environment:
#   ECSHARD_TEST_BUILDS   flavours to run, in order (default "release asan tsan")
#   ECSHARD_TEST_SCALE    iteration scale in percent for the stress tests (test/unit.h);
#                         sanitizer builds default to 20, release to 100
#   ECSHARD_BUILD_ROOT    where the build directories go (default: the repository root)
#   ECSHARD_CTEST_ARGS    extra ctest arguments, e.g. "-R test_mailbox"
#
# Ends with one line per step and "summary: N passed, M failed", where N and M count ctest
# tests and a failed build or format check counts as one failure. Exits non-zero if
# anything failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
broot=${ECSHARD_BUILD_ROOT:-$root}
builds=${ECSHARD_TEST_BUILDS:-release asan tsan}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ecshard-test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

for b in $builds; do
  case $b in
    release | asan | tsan) ;;
    *)
      echo "test.sh: unknown build '$b' in ECSHARD_TEST_BUILDS (release, asan, tsan)" >&2
      exit 2
      ;;
  esac
done

scripts/deps.sh || {
  echo "test.sh: scripts/deps.sh failed" >&2
  exit 1
}

summary=()
passed=0
failed=0
status=0

note() { # STEP OK|FAIL TEXT
  summary+=("$(printf '%-8s %-4s %s' "$1:" "$2" "$3")")
  [ "$2" = ok ] || status=1
}

# ---- format ------------------------------------------------------------------------------
check_format() {
  local files=() bad=() f
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files -- '*.c' '*.h')
  fi
  if [ ${#files[@]} -eq 0 ]; then
    # Not a git checkout, or nothing committed yet: every C file outside build trees.
    mapfile -t files < <(find . \( -path './build*' -o -path './.git' \) -prune -o \
      -type f \( -name '*.c' -o -name '*.h' \) -print | sed 's#^\./##' | sort)
  fi
  echo "== format: clang-format --dry-run -Werror on ${#files[@]} files"
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [ ${#bad[@]} -eq 0 ]; then
    note format ok "${#files[@]} files formatted"
  else
    printf '   not formatted: %s\n' "${bad[@]}"
    echo "   fix with: clang-format -i ${bad[*]}"
    note format FAIL "${#bad[@]} of ${#files[@]} files not formatted (clang-format -i FILE)"
    failed=$((failed + 1))
  fi
}

# ---- TSan and this kernel ----------------------------------------------------------------
# TSan of clang 14 knows a fixed set of address-space layouts; with many ASLR bits
# (vm.mmap_rnd_bits > 28, common on newer kernels) it dies at start with "unexpected memory
# mapping". A trivial program tells; setarch -R (no randomization) or fewer bits fixes it.
tsan_runner=()
tsan_probe() {
  local out
  printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n' >"$tmp/tsan.c"
  if ! clang -fsanitize=thread -o "$tmp/tsan" "$tmp/tsan.c" >"$tmp/tsan.log" 2>&1; then
    echo "test.sh: cannot build a TSan program:" >&2
    cat "$tmp/tsan.log" >&2
    return 1
  fi
  out=$("$tmp/tsan" 2>&1 </dev/null) && return 0
  if ! grep -q 'unexpected memory mapping' <<<"$out"; then
    echo "test.sh: a trivial TSan program fails: $out" >&2
    return 1
  fi
  if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R "$tmp/tsan" >/dev/null 2>&1 </dev/null; then
    echo "== tsan: this kernel's ASLR defeats TSan; running ctest under setarch -R"
    tsan_runner=(setarch "$(uname -m)" -R)
    return 0
  fi
  if [ "$(id -u)" -eq 0 ] && sysctl -w vm.mmap_rnd_bits=28 >/dev/null 2>&1 &&
    "$tmp/tsan" >/dev/null 2>&1 </dev/null; then
    echo "== tsan: this kernel's ASLR defeats TSan; set vm.mmap_rnd_bits=28"
    return 0
  fi
  echo "test.sh: TSan cannot run here (unexpected memory mapping; no setarch -R, and" \
    "vm.mmap_rnd_bits could not be lowered)" >&2
  return 1
}

# ---- one build flavour -------------------------------------------------------------------
run_build() {
  local type=$1 dir start rc n_pass n_fail line
  local env=() runner=() ctest_args=()
  case $type in
    release) dir=$broot/build ;;
    *) dir=$broot/build-$type ;;
  esac
  start=$SECONDS

  if ! scripts/build.sh "$type" </dev/null; then
    note "$type" FAIL "build failed ($dir)"
    failed=$((failed + 1))
    return
  fi

  case $type in
    release)
      env=(ECSHARD_TEST_SCALE="${ECSHARD_TEST_SCALE:-100}")
      ;;
    asan)
      # The conformance kit builds its programs against this build: they need the same
      # sanitizer runtime.
      env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        ECSHARD_TEST_SCALE="${ECSHARD_TEST_SCALE:-20}"
        CC="clang -fsanitize=address,undefined")
      ;;
    tsan)
      if ! tsan_probe; then
        note tsan FAIL "TSan does not run on this machine (see above)"
        failed=$((failed + 1))
        return
      fi
      runner=("${tsan_runner[@]}")
      env=(TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/test/tsan.supp
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        ECSHARD_TEST_SCALE="${ECSHARD_TEST_SCALE:-20}"
        CC="clang -fsanitize=thread")
      ;;
  esac

  read -r -a ctest_args <<<"${ECSHARD_CTEST_ARGS:-}"
  echo "== ctest $type: ${env[*]}"
  env "${env[@]}" "${runner[@]}" ctest --test-dir "$dir" --output-on-failure --no-tests=error \
    -j2 "${ctest_args[@]}" </dev/null 2>&1 | tee "$tmp/ctest-$type.log"
  rc=${PIPESTATUS[0]}

  # "95% tests passed, 1 tests failed out of 20"
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$tmp/ctest-$type.log" | tail -n 1)
  if [[ $line =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
    n_fail=${BASH_REMATCH[1]}
    n_pass=$((BASH_REMATCH[2] - n_fail))
  else
    n_fail=0
    n_pass=0
  fi
  if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
    n_fail=1 # ctest failed without a count: no tests, or ctest itself broke
  fi
  passed=$((passed + n_pass))
  failed=$((failed + n_fail))
  if [ "$rc" -eq 0 ]; then
    note "$type" ok "$n_pass tests passed ($((SECONDS - start)) s)"
  else
    note "$type" FAIL "$n_fail failed, $n_pass passed, ctest exit $rc ($((SECONDS - start)) s)"
  fi
}

if command -v clang-format >/dev/null 2>&1; then
  check_format
else
  note format FAIL "clang-format not found"
  failed=$((failed + 1))
fi
for b in $builds; do
  run_build "$b"
done

# Static analysis (scripts/lint.sh: clang-tidy and cppcheck) on the release build's
# compile_commands.json. ECSHARD_LINT=0 skips it.
if [ "${ECSHARD_LINT:-1}" != 0 ]; then
  start=$SECONDS
  if "$root/scripts/lint.sh" >"$tmp/lint.log" 2>&1; then
    note lint ok "clang-tidy and cppcheck clean ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    cat "$tmp/lint.log"
    note lint FAIL "static analysis findings above ($((SECONDS - start)) s)"
    failed=$((failed + 1))
    status=1
  fi
fi

echo
echo "== test.sh summary"
printf '%s\n' "${summary[@]}"
echo "summary: $passed passed, $failed failed"
exit $status
