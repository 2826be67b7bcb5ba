#!/usr/bin/env bash
# Usage: scripts/fuzz.sh TARGET SECONDS [LIBFUZZER ARGS…]     e.g. scripts/fuzz.sh irc_line 600
#        scripts/fuzz.sh --minimize TARGET                   shrink fuzz/corpus/TARGET to the inputs that cover it
#        scripts/fuzz.sh --list                              the targets
#
# Runs one coverage-guided fuzz target of fuzz/ (libFuzzer through libfuzzer-sys) for SECONDS, at the lowest CPU
# priority, on the stable toolchain: the instrumentation is the stable `-C passes=sancov-module` and `-C llvm-args`
# flags that cargo-fuzz passes, without a sanitizer (AddressSanitizer needs nightly; the code is safe Rust, and
# debug assertions and overflow checks stay on). New inputs that widen coverage go to fuzz/corpus/TARGET (keep them
# small: `-max_len` is 4096 unless given); a crash is written to fuzz/artifacts/TARGET/ and fails the run.
# Ends with a summary line: executions, executions per second, corpus size, crashes.
# Env: CARGO_TARGET_DIR (the instrumented build goes to $CARGO_TARGET_DIR/fuzz, apart from normal builds).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LATTICE_ROOT/fuzz"

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^lattice-fuzz$')
if [[ ${1:-} == --list ]]; then
    echo "$targets"
    exit 0
fi
minimize=false
if [[ ${1:-} == --minimize ]]; then
    minimize=true
    shift
    set -- "${1:-}" 0
fi
[[ $# -ge 2 ]] || die "usage: scripts/fuzz.sh TARGET SECONDS [LIBFUZZER ARGS…] (targets: $(echo $targets))"
target=$1 seconds=$2
shift 2
grep -qx "$target" <<<"$targets" || die "no fuzz target $target (targets: $(echo $targets))"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$LATTICE_ROOT/target}/fuzz
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# With an explicit --target the flags reach the fuzzed code only, not build scripts and proc macros.
triple=$(rustc -vV | sed -n 's/^host: //p')
nice -n 19 cargo build --release --quiet --target "$triple" --bin "$target"

corpus=$LATTICE_ROOT/fuzz/corpus/$target artifacts=$LATTICE_ROOT/fuzz/artifacts/$target
mkdir -p "$corpus" "$artifacts"
if $minimize; then
    # libFuzzer's merge keeps the smallest set of inputs that reaches all the coverage of the corpus.
    merged=$(mktemp -d)
    nice -n 19 "$CARGO_TARGET_DIR/$triple/release/$target" -merge=1 "$merged" "$corpus" 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new' || true
    rm -rf "$corpus" && mv "$merged" "$corpus" && chmod 755 "$corpus"
    echo "summary: $target: corpus minimised to $(find "$corpus" -type f | wc -l) files"
    exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
nice -n 19 "$CARGO_TARGET_DIR/$triple/release/$target" "$corpus" -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" 2>&1 | tee "$log" | grep -E '^(#[0-9]+.*(pulse|DONE)|==|SUMMARY|stat::)'
status=${PIPESTATUS[0]}
set -e
grep -E -A12 '^(thread .* panicked|==[0-9]+== ERROR)' "$log" >&2 || true
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
crashes=$(find "$artifacts" -type f | wc -l)
echo "summary: $target: ${runs:-?} executions in $seconds s (${speed:-?}/s), corpus $(find "$corpus" -type f | wc -l) files, $crashes crash files, exit $status"
exit "$status"
