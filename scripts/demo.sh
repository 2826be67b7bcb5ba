#!/usr/bin/env bash
# Usage: scripts/demo.sh [--reset] [--check]
#
# Runs the local demo stack until Ctrl-C, then stops everything it started:
#   Synapse        http://127.0.0.1:8008, server_name localhost, Matrix user alice / password alice
#   lattice-irc    appservice on 127.0.0.1:29331, bridging a local ngircd on 127.0.0.1:16667
#   lattice-xmpp   appservice on 127.0.0.1:29332, the component bridge.localhost of a local
#                  Prosody (clients on 127.0.0.1:5222: alice@localhost / alice; MUCs on
#                  conference.localhost)
# Installs what it needs (scripts/install.sh synapse ircd prosody), builds the bridges in release
# mode, and keeps configs, databases and logs in demo/ (env LATTICE_DEMO_DIR), so a second run
# picks up where the first stopped. Bridge configs are the samples (bridge-*/config.sample.yaml)
# with the demo's URLs, ports, paths and networks set.
#   --reset  delete demo/ first: fresh databases, users and appservice tokens
#   --check  start everything, check it answers, then stop (no waiting for Ctrl-C)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LATTICE_ROOT"

reset=false
check=false
for arg in "$@"; do
    case $arg in
    --reset) reset=true ;;
    --check) check=true ;;
    *)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
        exit 2
        ;;
    esac
done

DEMO=${LATTICE_DEMO_DIR:-$LATTICE_ROOT/demo}
SYNAPSE_PORT=8008
IRC_PORT=16667
XMPP_C2S_PORT=5222
XMPP_COMPONENT_PORT=5347
HOMESERVER=http://127.0.0.1:$SYNAPSE_PORT
RUN=$DEMO/run
LOGS=$DEMO/logs
started=()

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
    local i
    trap - INT TERM
    ((${#started[@]} > 0)) || return 0
    log "stopping the demo"
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        stop_bg "$RUN/${started[i]}.pid" 10
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts NAME in the background (log: demo/logs/NAME.log) and remembers to stop it.
start() {
    local name=$1
    shift
    : >"$LOGS/$name.log"
    start_bg "$RUN/$name.pid" "$LOGS/$name.log" "$@"
    started+=("$name")
}

# Fails with NAME's last log lines unless it still runs.
must_run() {
    local name=$1
    if ! is_running "$RUN/$name.pid"; then
        tail -n 30 "$LOGS/$name.log" >&2 || true
        die "$name stopped; its log is $LOGS/$name.log"
    fi
}

# Waits until NAME accepts connections on PORT, or fails with its log.
wait_port() {
    local name=$1 port=$2 timeout=$3
    local deadline=$((SECONDS + timeout))
    until tcp_open 127.0.0.1 "$port"; do
        must_run "$name"
        ((SECONDS < deadline)) || die "$name does not listen on 127.0.0.1:$port after ${timeout}s ($LOGS/$name.log)"
        sleep 0.1
    done
}

for name in synapse ngircd prosody lattice-irc lattice-xmpp; do
    if is_running "$RUN/$name.pid"; then
        die "a demo already runs ($name: $RUN/$name.pid); stop it with Ctrl-C first"
    fi
done

if $reset; then
    log "deleting $DEMO"
    rm -rf "$DEMO"
fi
mkdir -p "$DEMO" "$RUN" "$LOGS"

scripts/install.sh synapse ircd prosody
log "building the bridges (release)"
cargo build --release --quiet -p lattice-bridge-irc -p lattice-bridge-xmpp
BIN=${CARGO_TARGET_DIR:-$LATTICE_ROOT/target}/release

for port in $SYNAPSE_PORT $IRC_PORT $XMPP_C2S_PORT $XMPP_COMPONENT_PORT 29331 29332; do
    if tcp_open 127.0.0.1 "$port"; then
        die "port $port on 127.0.0.1 is taken; the demo needs it"
    fi
done

# --- bridge configs and registrations -------------------------------------------------------
edit_yaml() { python3 "$LATTICE_ROOT/scripts/yaml-edit.py" "$@"; }

if [[ ! -f $DEMO/xmpp-component.secret ]]; then
    python3 -c 'import secrets; print(secrets.token_hex(16))' >"$DEMO/xmpp-component.secret"
fi
LATTICE_XMPP_COMPONENT_SECRET=$(cat "$DEMO/xmpp-component.secret")
export LATTICE_XMPP_COMPONENT_SECRET

for bridge in irc xmpp; do
    cp "bridge-$bridge/config.sample.yaml" "$DEMO/$bridge.yaml"
    edit_yaml "$DEMO/$bridge.yaml" set \
        "homeserver.url=$HOMESERVER" \
        homeserver.server_name=localhost \
        "appservice.registration=$DEMO/$bridge-registration.yaml" \
        "database.url=sqlite://$DEMO/$bridge.db" \
        "encryption.key_file=$DEMO/$bridge.key" \
        'permissions.admins=["@alice:localhost"]'
done
edit_yaml "$DEMO/irc.yaml" set appservice.port=29331 \
    "bridge.networks={\"local\": {\"name\": \"Demo ngircd\", \"servers\": [{\"host\": \"127.0.0.1\", \"port\": $IRC_PORT, \"tls\": false}]}}"
edit_yaml "$DEMO/xmpp.yaml" set appservice.port=29332 \
    bridge.component.domain=bridge.localhost \
    "bridge.component.server=127.0.0.1:$XMPP_COMPONENT_PORT"

for bridge in irc xmpp; do
    if [[ ! -f $DEMO/$bridge-registration.yaml ]]; then
        "$BIN/lattice-$bridge" generate-registration -c "$DEMO/$bridge.yaml" -o "$DEMO/$bridge-registration.yaml" >/dev/null
    fi
    # A warning, not a stop: the bridge itself decides at start-up whether it can run.
    if ! checked=$("$BIN/lattice-$bridge" check-config -c "$DEMO/$bridge.yaml" 2>&1); then
        log "warning: lattice-$bridge check-config: $checked"
        log "(if the registration is stale, start over with scripts/demo.sh --reset)"
    fi
done
IRC_BOT=$(edit_yaml "$DEMO/irc.yaml" get appservice.bot.localpart)
XMPP_BOT=$(edit_yaml "$DEMO/xmpp.yaml" get appservice.bot.localpart)

# --- ngircd ----------------------------------------------------------------------------------
cat >"$DEMO/ngircd.conf" <<CONF
# Written by scripts/demo.sh
[Global]
Name = irc.localhost
Info = Lattice demo IRC server
Listen = 127.0.0.1
Ports = $IRC_PORT
MotdPhrase = "Lattice demo: join a channel, then DM @$IRC_BOT:localhost on Matrix"
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
[Options]
DNS = no
Ident = no
PAM = no
CONF
start ngircd ngircd -n -f "$DEMO/ngircd.conf"

# --- Prosody ---------------------------------------------------------------------------------
mkdir -p "$DEMO/prosody/data" "$DEMO/prosody/certs"
cat >"$DEMO/prosody/prosody.cfg.lua" <<CONF
-- Written by scripts/demo.sh
run_as_root = true
pidfile = "$DEMO/prosody/prosody.pid"
data_path = "$DEMO/prosody/data"
log = { { levels = { min = "info" }, to = "console" } }
interfaces = { "127.0.0.1" }
c2s_ports = { $XMPP_C2S_PORT }
c2s_direct_tls_ports = {}
component_interfaces = { "127.0.0.1" }
component_ports = { $XMPP_COMPONENT_PORT }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "register"; "posix" }
modules_disabled = { "s2s" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"

VirtualHost "localhost"

Component "conference.localhost" "muc"
    muc_room_locking = false
    muc_room_default_public = true

Component "bridge.localhost"
    component_secret = "$LATTICE_XMPP_COMPONENT_SECRET"
CONF
start prosody prosody --config "$DEMO/prosody/prosody.cfg.lua" -F
prosodyctl --config "$DEMO/prosody/prosody.cfg.lua" register alice localhost alice >/dev/null 2>&1 ||
    log "could not register alice@localhost on Prosody (see prosodyctl)"

# --- Synapse ---------------------------------------------------------------------------------
"$SYNAPSE_VENV/bin/python" scripts/synapse-config.py "$DEMO/synapse" "$SYNAPSE_PORT" \
    "$DEMO/irc-registration.yaml" "$DEMO/xmpp-registration.yaml"
start synapse "$SYNAPSE_VENV/bin/python" -m synapse.app.homeserver -c "$DEMO/synapse/homeserver.yaml"

wait_port ngircd "$IRC_PORT" 10
wait_port prosody "$XMPP_COMPONENT_PORT" 10
log "waiting for Synapse"
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null --max-time 2 "$HOMESERVER/_matrix/client/versions" 2>/dev/null; do
    must_run synapse
    ((SECONDS < deadline)) || die "Synapse does not answer after 60 s ($LOGS/synapse.log)"
    sleep 0.2
done

registered=$("$SYNAPSE_VENV/bin/register_new_matrix_user" -u alice -p alice --no-admin \
    -c "$DEMO/synapse/homeserver.yaml" "$HOMESERVER" 2>&1) ||
    [[ $registered == *"already taken"* ]] ||
    die "registering @alice:localhost failed: $registered"

# --- the bridges -----------------------------------------------------------------------------
start lattice-irc "$BIN/lattice-irc" run -c "$DEMO/irc.yaml"
start lattice-xmpp "$BIN/lattice-xmpp" run -c "$DEMO/xmpp.yaml"
wait_port lattice-irc 29331 30
wait_port lattice-xmpp 29332 30

cat <<BANNER

Lattice demo is running. Logs: $LOGS/

  Matrix     homeserver $HOMESERVER   user @alice:localhost   password alice
             (e.g. Element: custom homeserver $HOMESERVER, sign in as alice / alice)
  IRC        DM @$IRC_BOT:localhost for the IRC bridge's commands
             its network "local" is the ngircd on 127.0.0.1:$IRC_PORT (any IRC client, no TLS)
  XMPP       DM @$XMPP_BOT:localhost for the XMPP bridge's commands
             Prosody on 127.0.0.1:$XMPP_C2S_PORT: alice@localhost / alice (plain auth, no TLS);
             group chats on conference.localhost

BANNER

if $check; then
    for name in "${started[@]}"; do
        must_run "$name"
    done
    curl -fsS --max-time 10 -o /dev/null -H 'Content-Type: application/json' \
        -d '{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "alice"}' \
        "$HOMESERVER/_matrix/client/v3/login" || die "alice / alice cannot log in to $HOMESERVER"
    log "demo check passed: everything runs; stopping"
    exit 0
fi

log "press Ctrl-C to stop"
while true; do
    for name in "${started[@]}"; do
        must_run "$name"
    done
    sleep 1
done
