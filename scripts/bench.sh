#!/usr/bin/env bash
# Usage: scripts/bench.sh [p1|p2|p3|p5|p6|p7|all]… [lattice-bench flags]…      (default: all)
#
# The benchmarks of the IRC and XMPP bridges (tests/src/bin/lattice-bench): installs the real servers and
# Heisenbridge (cached: scripts/install.sh), builds both bridges and lattice-bench in release mode, and runs them.
# Figures are printed, each beside a baseline measured in the same run; nothing is asserted. Bigger runs:
#   scripts/bench.sh p1 --puppets 5000
#   scripts/bench.sh p2 --p2-senders 50 --p2-messages 50000
# Flags: --puppets N (P1, default 1000), --p2-senders N (20), --p2-messages N (20000), --p3-samples N (200),
# --p5-portals N (1000), --p5-puppets N (300),
# --p6-messages N (1000), --p6-users N (1000), --p6-stanzas N (1000), --p7-puppets N (2000).
# --irc-edge auto|on|off: the IRC bridge's bridge.edge.mode for P1, P2, P3 and P5 (default auto, an edge process
# for `lattice-irc run`; off keeps the IRC connections in the bridge's process).
#
# Each run keeps its servers' state in $LATTICE_CACHE/bench-state/run-PID and kills what is left there at the end.
# Env: LATTICE_CACHE (default <repo>/.cache); LATTICE_KEEP_TEST_STATE=1 keeps the state dirs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LATTICE_ROOT"

export LATTICE_TEST_STATE_DIR=$LATTICE_CACHE/bench-state/run-$$
export LATTICE_SYNAPSE_PYTHON=$SYNAPSE_VENV/bin/python
export LATTICE_HEISENBRIDGE_PYTHON=$HEISENBRIDGE_VENV/bin/python

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
    kill_leftovers "$LATTICE_TEST_STATE_DIR"
    if [[ -z ${LATTICE_KEEP_TEST_STATE:-} ]]; then
        rm -rf "$LATTICE_TEST_STATE_DIR"
    fi
}
trap cleanup EXIT

"$LATTICE_ROOT/scripts/install.sh" synapse ircd prosody heisenbridge
log "building the bridges and lattice-bench (release)"
cargo build --release -q -p lattice-bridge-irc -p lattice-bridge-xmpp -p lattice-e2e --bins
mkdir -p "$LATTICE_TEST_STATE_DIR"
"$LATTICE_ROOT/target/release/lattice-bench" --bin-dir "$LATTICE_ROOT/target/release" "$@"
