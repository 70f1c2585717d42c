# shellcheck shell=bash
# perf/bench-lib.sh - helpers shared by perf/run-mailbox.sh and perf/run-pingpong.sh.
# Sourced, not executed.

BL_PERF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BL_ROOT="$(dirname "$BL_PERF")"
BUILD="${BUILD:-$BL_ROOT/build}"
RUNS="${RUNS:-5}"
RUN_TIMEOUT="${RUN_TIMEOUT:-60}" # seconds, per benchmark process
RESULTS="${RESULTS:-$BL_PERF/results}"

bl_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
bl_die() {
  echo "error: $*" >&2
  exit 1
}

# Configures $BUILD as a Release tree if it has no cache yet, warns about slow trees, and
# builds the given targets (targets the tree does not define, e.g. a peer whose library
# is not installed, are skipped with a note).
bl_build() {
  local t have=() type san
  if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    bl_log "configuring $BUILD (Release)"
    cmake -S "$BL_ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2 || bl_die "cmake configure failed"
  fi
  type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
  san=$(sed -n 's/^ECSHARD_SANITIZE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
  case "$type" in
  Release | RelWithDebInfo) ;;
  *) bl_log "warning: $BUILD is a '$type' build; numbers will not be representative" ;;
  esac
  [[ -z "$san" ]] || bl_log "warning: $BUILD is a sanitizer build ($san)"
  local help
  help=$(cmake --build "$BUILD" --target help 2>/dev/null)
  for t in "$@"; do
    if grep -qw -- "$t" <<<"$help"; then have+=("$t"); else bl_log "note: target $t not configured (library not found?), skipped"; fi
  done
  ((${#have[@]})) || bl_die "nothing to build"
  cmake --build "$BUILD" -j"$(nproc)" --target "${have[@]}" >&2 || bl_die "build failed"
}

# Path of a built benchmark, or empty.
bl_bin() {
  local p="$BUILD/perf/$1"
  [[ -x "$p" ]] && echo "$p"
}

# One JSON line describing the machine and the run, first in every results file.
bl_meta() {
  local bench="$1" cpu kernel commit
  # Quotes and backslashes are dropped: the value goes into JSON as is.
  # shellcheck disable=SC1003 # a backslash inside single quotes, on purpose
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1 | tr -d '"\\')
  kernel=$(uname -r)
  commit=$(git -C "$BL_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
  printf '{"bench":"meta","of":"%s","date":"%s","nproc":%s,"cpu":"%s","kernel":"%s","commit":"%s","runs":%s,"build":"%s","loadavg":"%s"}\n' \
    "$bench" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$cpu" "$kernel" "$commit" "$RUNS" "$BUILD" "$(bl_loadavg)"
}

# The 1, 5 and 15 minute load averages: on a shared machine, read the figures with them.
bl_loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Prints the load before and after a suite (the "after" line is also appended to $1) and
# removes the runs' stderr file if they printed nothing.
bl_load_note() {
  [[ -s "$1.stderr" ]] || rm -f "$1.stderr"
  printf '{"bench":"meta","of":"end","date":"%s","loadavg":"%s"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(bl_loadavg)" >>"$1"
  echo "load average (1/5/15 min) at start: $(sed -n 's/.*"loadavg":"\([^"]*\)".*/\1/p' "$1" | head -1), at end: $(bl_loadavg) on $(nproc) CPUs"
}

# Runs one benchmark process with a time limit; appends its JSON line to $2, or a
# failure line if it produced none.
bl_run() {
  local name="$1" out="$2" line rc
  shift 2
  line=$(timeout "$RUN_TIMEOUT" "$@" --json 2>>"$out.stderr")
  rc=$?
  if [[ -z "$line" ]]; then
    line=$(printf '{"bench":"failed","impl":"%s","rc":%d,"cmd":"%s"}' "$name" "$rc" "$*")
    bl_log "FAILED ($rc): $*"
  elif [[ $rc -ne 0 ]]; then
    bl_log "check failed ($rc): $*"
  fi
  echo "$line" >>"$out"
}

# A loopback TCP port that is free now, chosen by the kernel (bind to port 0). A random
# "high" port can collide with the ephemeral source ports of the thousands of client
# connections the load and idle tests make (and linger in TIME_WAIT).
bl_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --set arguments that switch off every listener of ecshardd's embedded default except
# those named after the binary: their fixed ports would collide with other runs.
bl_only_listeners() {
  local bin=$1 l
  shift
  while read -r l; do
    [[ -n "$l" ]] || continue
    [[ " $* " == *" $l "* ]] && continue
    printf -- '--set\nlistener.%s.enabled=false\n' "$l"
  done < <("$bin" --print-config 2>/dev/null | awk '/^listener = \{/ {inl = 1; next} inl && /^};/ {exit} inl && /^  [A-Za-z0-9_]+ = \{/ {print $1}')
}
