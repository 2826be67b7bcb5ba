# shellcheck shell=bash
# Shared helpers for Lattice's scripts. Not run directly:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Defines:
#   LATTICE_ROOT          the repository root
#   LATTICE_CACHE         cache and state dir (env LATTICE_CACHE, default $LATTICE_ROOT/.cache)
#   SYNAPSE_VERSION       the matrix-synapse version install.sh pins
#   SYNAPSE_VENV          $LATTICE_CACHE/synapse-venv
#   HEISENBRIDGE_VERSION  the heisenbridge version install.sh pins (a peer bridge for the benchmarks)
#   HEISENBRIDGE_VENV     $LATTICE_CACHE/heisenbridge-venv
#   CARGO_DEB_VERSION     the cargo-deb version install.sh pins (scripts/package.sh builds the Debian packages)
#   log MSG… / die MSG…   messages on stderr
#   wait_for_tcp HOST PORT TIMEOUT_S     until something accepts connections
#   wait_for_http URL TIMEOUT_S          until URL answers 2xx
#   tcp_open HOST PORT                   true when something accepts connections
#   start_bg PIDFILE LOGFILE CMD…        run CMD in the background, record it in PIDFILE
#   stop_bg PIDFILE [TIMEOUT_S]          stop what start_bg recorded (and nothing else)
#   is_running PIDFILE                   true when PIDFILE's process is still the one we started
#   kill_leftovers DIR                   kill what still runs with DIR/ on its command line (servers of a run)

LATTICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LATTICE_CACHE=${LATTICE_CACHE:-$LATTICE_ROOT/.cache}
mkdir -p "$LATTICE_CACHE"
LATTICE_CACHE=$(cd "$LATTICE_CACHE" && pwd)
export LATTICE_ROOT LATTICE_CACHE

# Pinned so every machine runs the same Synapse (servers.md measured 1.163; 1.163.2 is its latest fix).
SYNAPSE_VERSION=1.163.2
SYNAPSE_VENV=$LATTICE_CACHE/synapse-venv
export SYNAPSE_VERSION SYNAPSE_VENV

# The release anchors.md measured.
HEISENBRIDGE_VERSION=1.15.4
HEISENBRIDGE_VENV=$LATTICE_CACHE/heisenbridge-venv
export HEISENBRIDGE_VERSION HEISENBRIDGE_VENV

# The newest cargo-deb when the packages were first made; it builds on the workspace's Rust.
CARGO_DEB_VERSION=3.8.0
export CARGO_DEB_VERSION

log() {
    printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$(basename "$0")" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

tcp_open() {
    local host=$1 port=$2
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

wait_for_tcp() {
    local host=$1 port=$2 timeout=$3
    local deadline=$((SECONDS + timeout))
    until tcp_open "$host" "$port"; do
        if ((SECONDS >= deadline)); then
            log "nothing accepts connections on $host:$port after ${timeout}s"
            return 1
        fi
        sleep 0.1
    done
}

wait_for_http() {
    local url=$1 timeout=$2
    local deadline=$((SECONDS + timeout))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$url did not answer after ${timeout}s"
            return 1
        fi
        sleep 0.2
    done
}

# The start time of PID in clock ticks since boot (field 22 of /proc/PID/stat):
# with the PID it names one process, even after the PID is reused.
_proc_start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # The command name (field 2) may hold spaces: cut after its closing parenthesis.
    stat=${stat##*) }
    # Now field 3 (the state) is the first word, and the start time the 20th.
    # shellcheck disable=SC2086 # split on purpose
    set -- $stat
    # A zombie has ended: it only waits for its parent to collect it.
    [[ $1 != Z ]] || return 1
    printf '%s\n' "${20}"
}

is_running() {
    local pidfile=$1 pid start
    [[ -f $pidfile ]] || return 1
    read -r pid start <"$pidfile" || return 1
    [[ -n $pid && $(_proc_start_time "$pid" 2>/dev/null) == "$start" ]]
}

start_bg() {
    local pidfile=$1 logfile=$2
    shift 2
    if is_running "$pidfile"; then
        die "$1 already runs (pid $(cut -d' ' -f1 "$pidfile"), from $pidfile)"
    fi
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    # Lock fds (install.sh, postgres.sh hold fd 9) must not outlive this script in the server.
    "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    local pid=$!
    printf '%s %s\n' "$pid" "$(_proc_start_time "$pid")" >"$pidfile"
}

stop_bg() {
    local pidfile=$1 timeout=${2:-10} pid start
    [[ -f $pidfile ]] || return 0
    if is_running "$pidfile"; then
        read -r pid start <"$pidfile"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + timeout))
        while is_running "$pidfile" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if is_running "$pidfile"; then
            log "pid $pid did not stop after ${timeout}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# Kills processes whose command line mentions the state dir DIR: servers a test or benchmark started
# and did not stop (a binary that crashed or was killed).
kill_leftovers() {
    local dir=$1 pids=() proc pid cmdline
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
        [[ $cmdline == *"$dir/"* ]] && pids+=("$pid")
    done
    ((${#pids[@]} > 0)) || return 0
    log "stopping ${#pids[@]} leftover test server process(es): ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while ((SECONDS < deadline)); do
        local alive=()
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        ((${#alive[@]} > 0)) || return 0
        sleep 0.1
    done
    kill -KILL "${alive[@]}" 2>/dev/null || true
}
