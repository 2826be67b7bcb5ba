#!/usr/bin/env bash
# Usage: scripts/postgres.sh start|stop|url
#
#   start  makes sure a PostgreSQL accepts connections on 127.0.0.1, as user postgres without a
#          password, and prints nothing. In order: one already answering on 127.0.0.1:5432 is
#          used as it is; else Debian's `main` cluster is started (pg_ctlcluster), when there is one
#          and it lets postgres in over TCP without a password; else a private cluster is made in
#          $LATTICE_CACHE/postgres (initdb once, trust auth, fsync off) and started on 127.0.0.1,
#          port 5432 or else 55432, whichever is free.
#   stop   stops the server only if `start` started it (as recorded in $LATTICE_CACHE/postgres.state).
#   url    prints the connection URL: postgres://postgres@127.0.0.1:PORT/postgres
#
# Needs PostgreSQL's binaries (scripts/install.sh postgres).
# Env: LATTICE_CACHE (default <repo>/.cache); LATTICE_POSTGRES_PRIVATE=1 goes straight to the
# private cluster; LATTICE_POSTGRES_CLUSTER names the Debian cluster to try (default main).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE=$LATTICE_CACHE/postgres.state
DEBIAN_CLUSTER=${LATTICE_POSTGRES_CLUSTER:-main}
PRIVATE_ROOT=$LATTICE_CACHE/postgres

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

url_for() {
    printf 'postgres://postgres@127.0.0.1:%s/postgres\n' "$1"
}

# True when postgres gets in over TCP on PORT without a password.
can_login() {
    local port=$1
    pg_isready -q -h 127.0.0.1 -p "$port" -t 2 &&
        psql -w -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1
}

# Runs a command as the postgres user (PostgreSQL refuses to run as root), without our lock's fd 9:
# a server started here must not hold the lock.
as_postgres() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@" 9>&-
    else
        "$@" 9>&-
    fi
}

pg_bindir() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [[ -z $dir ]]; then
        dir=$(dirname "$(command -v initdb 2>/dev/null || true)")
    fi
    [[ -x $dir/initdb && -x $dir/pg_ctl ]] ||
        die "no PostgreSQL server binaries found: run scripts/install.sh postgres"
    printf '%s\n' "$dir"
}

# Reads $STATE (kind, port, and what stop needs) into variables; false when there is none.
read_state() {
    kind='' port='' cluster='' datadir=''
    [[ -f $STATE ]] || return 1
    # shellcheck disable=SC1090 # written by this script only
    source "$STATE"
    [[ -n $kind && -n $port ]]
}

write_state() {
    printf 'kind=%q\nport=%q\ncluster=%q\ndatadir=%q\n' "$1" "$2" "${3:-}" "${4:-}" >"$STATE"
}

# The Debian cluster named $DEBIAN_CLUSTER of the highest version, as "VERSION PORT STATUS", if any.
debian_cluster() {
    command -v pg_lsclusters >/dev/null || return 0
    pg_lsclusters --no-header 2>/dev/null |
        awk -v name="$DEBIAN_CLUSTER" '$2 == name { print $1, $3, $4 }' | sort -V | tail -n 1
}

start_debian() {
    local ver=$1 dport=$2
    log "starting Debian's PostgreSQL cluster $ver/$DEBIAN_CLUSTER (port $dport)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$DEBIAN_CLUSTER" start 9>&-
    wait_for_tcp 127.0.0.1 "$dport" 30
    if can_login "$dport"; then
        write_state debian "$dport" "$ver/$DEBIAN_CLUSTER"
        return 0
    fi
    log "cluster $ver/$DEBIAN_CLUSTER wants a password over TCP: stopping it again, using a private cluster"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$DEBIAN_CLUSTER" stop 9>&-
    return 1
}

# The private cluster's data dir: under the cache, unless the postgres user can't reach it there
# (a checkout under /root, say); then under /tmp, named after the cache.
private_datadir() {
    if ((EUID != 0)) || runuser -u postgres -- test -x "$LATTICE_CACHE"; then
        printf '%s/data\n' "$PRIVATE_ROOT"
    else
        printf '/tmp/lattice-postgres-%s/data\n' "$(printf '%s' "$LATTICE_CACHE" | cksum | cut -d' ' -f1)"
    fi
}

start_private() {
    local bindir data root pport
    bindir=$(pg_bindir)
    data=$(private_datadir)
    root=$(dirname "$data")
    mkdir -p "$root"
    if ((EUID == 0)); then
        chown postgres: "$root"
    fi
    chmod 700 "$root"
    if [[ ! -f $data/PG_VERSION ]]; then
        log "creating a private PostgreSQL cluster in $data"
        rm -rf "$data"
        as_postgres "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            --no-sync >"$root/initdb.log" 2>&1 || {
            cat "$root/initdb.log" >&2
            die "initdb failed"
        }
        cat >>"$data/postgresql.conf" <<CONF
# Lattice's private test cluster (scripts/postgres.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$root'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    fi
    pport=''
    for candidate in 5432 55432; do
        if ! tcp_open 127.0.0.1 "$candidate"; then
            pport=$candidate
            break
        fi
    done
    [[ -n $pport ]] || die "ports 5432 and 55432 are both taken on 127.0.0.1"
    log "starting the private PostgreSQL cluster on 127.0.0.1:$pport"
    as_postgres "$bindir/pg_ctl" -D "$data" -l "$root/postgres.log" -w -t 60 -s -o "-p $pport" start ||
        {
            tail -n 20 "$root/postgres.log" >&2 || true
            die "the private PostgreSQL cluster did not start (log: $root/postgres.log)"
        }
    can_login "$pport" || die "the private cluster on port $pport does not let postgres in"
    write_state private "$pport" '' "$data"
}

cmd_start() {
    if read_state && can_login "$port"; then
        return 0
    fi
    rm -f "$STATE"
    command -v pg_isready >/dev/null || die "no PostgreSQL client tools: run scripts/install.sh postgres"
    if [[ ${LATTICE_POSTGRES_PRIVATE:-} == 1 ]]; then
        start_private
        return 0
    fi
    if pg_isready -q -h 127.0.0.1 -p 5432 -t 2; then
        if can_login 5432; then
            write_state external 5432
            return 0
        fi
        log "the PostgreSQL on 127.0.0.1:5432 wants a password: using a private cluster"
    else
        local ver dport status
        read -r ver dport status <<<"$(debian_cluster)" || true
        if [[ -n ${ver:-} && ${status:-} == down ]] && start_debian "$ver" "$dport"; then
            return 0
        fi
    fi
    start_private
}

cmd_stop() {
    read_state || return 0
    case $kind in
    private)
        log "stopping the private PostgreSQL cluster"
        as_postgres "$(pg_bindir)/pg_ctl" -D "$datadir" -m fast -w -s stop || true
        ;;
    debian)
        log "stopping Debian's PostgreSQL cluster $cluster"
        pg_ctlcluster --skip-systemctl-redirect "${cluster%%/*}" "${cluster#*/}" stop 9>&- || true
        ;;
    esac
    rm -f "$STATE"
}

cmd_url() {
    if read_state && pg_isready -q -h 127.0.0.1 -p "$port" -t 2; then
        url_for "$port"
    elif pg_isready -q -h 127.0.0.1 -p 5432 -t 2; then
        url_for 5432
    else
        die "no PostgreSQL is running: run scripts/postgres.sh start"
    fi
}

(($# == 1)) || usage
exec 9>"$LATTICE_CACHE/postgres.lock"
flock 9
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
url) cmd_url ;;
*) usage ;;
esac
