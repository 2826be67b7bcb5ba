#!/usr/bin/env bash
# Usage: scripts/test.sh [CARGO TEST ARGS…]      e.g. scripts/test.sh -p lattice-e2e -- harness
#
# The project's test command (CI runs it through .ci/run): installs the real servers (cached:
# scripts/install.sh all packaging), makes sure PostgreSQL runs (scripts/postgres.sh start), runs
# `cargo test --workspace ARGS…` (without --workspace when ARGS pick packages with -p) with the
# environment the end-to-end harness reads, then stops
# what it started and kills any test server left behind in the test state dir. Ends with a
# summary line. Exits with cargo's status.
#
# Each run has its own state dir, $LATTICE_CACHE/test-state/run-PID, so runs side by side don't
# kill each other's servers; a dead run's dir is cleaned up (and its servers killed) by the next.
# Exports: LATTICE_SYNAPSE_PYTHON, LATTICE_TEST_POSTGRES_URL, LATTICE_TEST_STATE_DIR.
# Env: LATTICE_CACHE (default <repo>/.cache); LATTICE_KEEP_TEST_STATE=1 keeps servers' state dirs;
# LATTICE_CONDUIT (default ../shared/homeservers/conduit/conduit) is the Conduit the ::conduit tests run on.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LATTICE_ROOT"

TEST_STATE_ROOT=$LATTICE_CACHE/test-state
export LATTICE_TEST_STATE_DIR=$TEST_STATE_ROOT/run-$$
export LATTICE_SYNAPSE_PYTHON=$SYNAPSE_VENV/bin/python
cargo_log=$(mktemp)
postgres_was_started=false

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
    kill_leftovers "$LATTICE_TEST_STATE_DIR"
    if [[ -z ${LATTICE_KEEP_TEST_STATE:-} ]]; then
        rm -rf "$LATTICE_TEST_STATE_DIR"
    fi
    if $postgres_was_started; then
        "$LATTICE_ROOT/scripts/postgres.sh" stop || true
    fi
    rm -f "$cargo_log"
}
trap cleanup EXIT

started=$SECONDS
"$LATTICE_ROOT/scripts/install.sh" all packaging
log "servers installed ($((SECONDS - started)) s)"
conduit=${LATTICE_CONDUIT:-$LATTICE_ROOT/../shared/homeservers/conduit/conduit}
if [[ -f $conduit ]]; then
    log "Conduit tests run on $conduit"
else
    log "no Conduit binary at $conduit (set LATTICE_CONDUIT): the ::conduit tests will say they were skipped"
fi

# Stop PostgreSQL at the end only if it was not already running for something else.
if [[ ! -f $LATTICE_CACHE/postgres.state ]]; then
    postgres_was_started=true
fi
"$LATTICE_ROOT/scripts/postgres.sh" start
LATTICE_TEST_POSTGRES_URL=$("$LATTICE_ROOT/scripts/postgres.sh" url)
export LATTICE_TEST_POSTGRES_URL

# Runs that died without cleaning up: their servers go, and their state unless kept.
for stale in "$TEST_STATE_ROOT"/run-*; do
    [[ -d $stale ]] || continue
    kill -0 "${stale##*/run-}" 2>/dev/null && continue
    kill_leftovers "$stale"
    if [[ -z ${LATTICE_KEEP_TEST_STATE:-} ]]; then
        rm -rf "$stale"
    fi
done
mkdir -p "$LATTICE_TEST_STATE_DIR"

# The whole workspace, unless the arguments pick packages; every test binary runs even after one fails, so a run
# reports all failures at once.
scope=(--workspace --no-fail-fast)
for arg in "$@"; do
    [[ $arg == -- ]] && break
    case $arg in
    -p | --package | -p?* | --package=*) scope=(--no-fail-fast) ;;
    esac
done
log "cargo test ${scope[*]:+${scope[*]} }$*"
set +e
cargo test "${scope[@]}" "$@" 2>&1 | tee "$cargo_log"
status=${PIPESTATUS[0]}
set -e

# Add up cargo's "test result: ok. 3 passed; 0 failed; 1 ignored; …" lines.
read -r passed failed ignored binaries < <(awk '
    /^test result: / {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;/) passed += $i
            if ($(i + 1) ~ /^failed;/) failed += $i
            if ($(i + 1) ~ /^ignored;/) ignored += $i
        }
        binaries++
    }
    END { printf "%d %d %d %d\n", passed, failed, ignored, binaries }' "$cargo_log")

echo
if ((binaries == 0)); then
    echo "scripts/test.sh: cargo test failed before running any test (exit $status) after $((SECONDS - started)) s"
elif ((status == 0)); then
    echo "scripts/test.sh: all tests passed in $binaries test binaries after $((SECONDS - started)) s"
else
    echo "scripts/test.sh: FAILED (cargo exit $status) after $((SECONDS - started)) s"
fi
if ((binaries > 0)); then
    if ((ignored > 0)); then
        echo "summary: $passed passed, $failed failed, $ignored skipped"
    else
        echo "summary: $passed passed, $failed failed"
    fi
fi
exit "$status"
