#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and summarises.
#
#   scripts/fuzz.sh                         # every target, 20 s each
#   FUZZ_SECONDS=5 scripts/fuzz.sh          # CI smoke run
#   FUZZ_SECONDS=600 scripts/fuzz.sh        # a long run (10 min per target)
#   FUZZ_RUNS=1000000 scripts/fuzz.sh       # the release run: 1 M executions each
#   scripts/fuzz.sh gs1_codes config        # only these targets
#
# Environment:
#   FUZZ_SECONDS    seconds per target (libFuzzer -max_total_time), default 20
#   FUZZ_RUNS       executions per target (libFuzzer -runs); when set, the
#                   run stops at this count instead of at FUZZ_SECONDS
#   FUZZ_JOBS       parallel libFuzzer workers per target (-fork=N), default 1
#   FUZZ_SANITIZER  cargo fuzz --sanitizer (address, none, ...), default address
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-max_len=4096"
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The toolchain is
# stable; cargo-fuzz's nightly flags are enabled with RUSTC_BOOTSTRAP=1.
#
# Each target runs over fuzz/corpus/<target> (grown, git-ignored), plus the
# checked-in fuzz/seeds/<target> and fuzz/regressions/<target> (read only, so
# every past crash is re-run first). A crash leaves its input in
# fuzz/artifacts/<target>/; see fuzz/README.md for turning it into a
# regression. Exit status: 0 if no target crashed (or failed to build/run),
# 1 otherwise.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
RUNS="${FUZZ_RUNS:-}"
JOBS="${FUZZ_JOBS:-1}"
SANITIZER="${FUZZ_SANITIZER:-address}"
EXTRA_ARGS="${FUZZ_ARGS:-}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

cd "$FUZZ_DIR"
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

# One build for all targets (a per-target `cargo fuzz run` would only check).
echo "== building ${#TARGETS[@]} fuzz targets (sanitizer: $SANITIZER)"
if ! cargo fuzz build --sanitizer "$SANITIZER"; then
    echo "fuzz.sh: build failed" >&2
    exit 1
fi

LOG_DIR="$FUZZ_DIR/target/fuzz-logs"
mkdir -p "$LOG_DIR"
declare -a ROWS=()
FAILED=0

for t in "${TARGETS[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus"
    dirs=("$corpus")
    for extra in "seeds/$t" "regressions/$t"; do
        [ -d "$extra" ] && dirs+=("$extra")
    done
    log="$LOG_DIR/$t.log"
    fork=()
    [ "$JOBS" -gt 1 ] && fork=("-fork=$JOBS")
    if [ -n "$RUNS" ]; then
        budget=(-runs="$RUNS")
        echo "== $t: $RUNS executions (log: $log)"
    else
        budget=(-max_total_time="$SECONDS_PER_TARGET")
        echo "== $t: ${SECONDS_PER_TARGET}s (log: $log)"
    fi
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    cargo fuzz run --sanitizer "$SANITIZER" "$t" "${dirs[@]}" -- \
        "${budget[@]}" \
        -print_final_stats=1 \
        -timeout=10 \
        "${fork[@]}" $EXTRA_ARGS >"$log" 2>&1
    rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n1 | grep -o '[0-9]*$')"
    if [ -z "$execs" ]; then
        # Fork mode and crashes may not print final stats: take the last "#N".
        execs="$(grep -o '^#[0-9]*' "$log" | tail -n1 | tr -d '#')"
    fi
    execs="${execs:-0}"
    if [ "$rc" -eq 0 ]; then
        result="ok"
    else
        FAILED=1
        artifact="$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n1 | sed 's/Test unit written to //')"
        if grep -q 'Test unit written to' "$log"; then
            result="CRASH ${artifact}"
        else
            result="FAILED (exit $rc)"
        fi
        echo "---- $t: last lines of $log"
        grep -v '^#' "$log" | tail -n 30
    fi
    echo "   $t: $execs executions, $result"
    ROWS+=("$(printf '%-16s %12s  %s' "$t" "$execs" "$result")")
done

echo
printf '%-16s %12s  %s\n' "target" "executions" "result"
printf '%s\n' "${ROWS[@]}"
exit "$FAILED"
