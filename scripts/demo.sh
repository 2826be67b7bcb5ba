#!/usr/bin/env bash
# Usage: scripts/demo.sh [--reset] [--check]
#
# Runs the local demo stack until Ctrl-C, then stops everything it started:
#   Synapse        http://127.0.0.1:8008, server_name localhost, Matrix user alice / password alice
#   lattice-irc    appservice on 127.0.0.1:29331, bridging a local InspIRCd on 127.0.0.1:16667
#                  (network "local"), linked to atheme services (NickServ, SASL) on 127.0.0.1:17000
#   lattice-xmpp   appservice on 127.0.0.1:29332, the component bridge.localhost of a local
#                  Prosody (clients on 127.0.0.1:5222: alice@localhost / alice; MUCs on
#                  conference.localhost)
# Installs what it needs (scripts/install.sh synapse ircd prosody), builds the bridges in release
# mode (the first run's build takes about 15 minutes on 2 cores, with cargo's progress shown), and
# keeps configs, databases and logs in demo/ (env LATTICE_DEMO_DIR), so a second run picks up where
# the first stopped. Bridge configs are the samples (bridge-*/config.sample.yaml) with the demo's
# URLs, ports, paths and networks set.
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
IRC_LINK_PORT=17000
IRC_NETWORK=local
IRC_LINK_PASSWORD=lattice-demo-link
# What atheme logs once it has linked and synced with InspIRCd: SASL and NickServ work from then on.
SERVICES_SYNCED="finished synching with uplink"
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

for name in synapse inspircd atheme prosody lattice-irc lattice-xmpp; do
    if is_running "$RUN/$name.pid"; then
        die "a demo already runs ($name: $RUN/$name.pid); stop it with Ctrl-C first"
    fi
done

if $reset; then
    log "deleting $DEMO"
    rm -rf "$DEMO"
fi
mkdir -p "$DEMO" "$RUN" "$LOGS"

BIN=${CARGO_TARGET_DIR:-$LATTICE_ROOT/target}/release
if [[ ! -x $BIN/lattice-irc || ! -x $BIN/lattice-xmpp ]]; then
    log "first run: installing the servers takes a few minutes, and the release build of the bridges about 15"
    log "minutes on 2 cores (later runs take seconds); cargo shows its progress below"
fi
scripts/install.sh synapse ircd prosody
log "building the bridges (release)"
# Cargo's own progress (crates compiled of crates to compile) on the terminal, so a long first build shows it moves.
cargo build --release -p lattice-bridge-irc -p lattice-bridge-xmpp
cargo build --release -p lattice-e2e --bin lattice-server-config
# The configs the tests run (tests/src/ircd.rs, tests/src/prosody.rs), with the demo's folders, ports and passwords.
server_config() { "$BIN/lattice-server-config" "$@"; }

for port in $SYNAPSE_PORT $IRC_PORT $IRC_LINK_PORT $XMPP_C2S_PORT $XMPP_COMPONENT_PORT 29331 29332; do
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
    "bridge.networks={\"$IRC_NETWORK\": {\"name\": \"Demo InspIRCd\", \"auth\": \"sasl\", \"servers\": [{\"host\": \"127.0.0.1\", \"port\": $IRC_PORT, \"tls\": false}]}}"
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

# --- InspIRCd + atheme -----------------------------------------------------------------------
# InspIRCd 3 (IRCv3, SASL) on 127.0.0.1 only, linked to atheme services (NickServ, SaslServ) on
# IRC_LINK_PORT; see /work/shared/reference/servers.md and tests/src/ircd.rs.
IRCD_DIR=$DEMO/inspircd
mkdir -p "$IRCD_DIR"
printf '%s\n' "Lattice demo: join a channel, then DM @$IRC_BOT:localhost on Matrix" \
    "Register an account: /msg NickServ REGISTER <password> <you@example.com>" >"$IRCD_DIR/motd.txt"
server_config inspircd --dir "$IRCD_DIR" --port "$IRC_PORT" --link-port "$IRC_LINK_PORT" \
    --link-password "$IRC_LINK_PASSWORD"

# atheme refuses root: it runs as nobody, in a data dir (database, log, pid) that nobody owns.
ATHEME_DIR=$DEMO/atheme
mkdir -p "$ATHEME_DIR"
server_config atheme --dir "$ATHEME_DIR" --link-port "$IRC_LINK_PORT" --link-password "$IRC_LINK_PASSWORD"
chown -R nobody: "$ATHEME_DIR"

start inspircd inspircd --config="$IRCD_DIR/inspircd.conf" --nofork --runasroot
wait_port inspircd "$IRC_PORT" 20
start atheme runuser -u nobody -- atheme-services -n -c "$ATHEME_DIR/atheme.conf" \
    -l "$ATHEME_DIR/atheme-services.log" -p "$ATHEME_DIR/atheme.pid" -D "$ATHEME_DIR"
log "waiting for atheme to link to InspIRCd"
deadline=$((SECONDS + 20))
until grep -qF "$SERVICES_SYNCED" "$LOGS/atheme.log"; do
    must_run inspircd
    must_run atheme
    ((SECONDS < deadline)) || die "atheme did not link to InspIRCd after 20 s ($LOGS/atheme.log)"
    sleep 0.1
done

# --- Prosody ---------------------------------------------------------------------------------
server_config prosody --dir "$DEMO/prosody" --c2s-port "$XMPP_C2S_PORT" --component-port "$XMPP_COMPONENT_PORT" \
    --component bridge.localhost --secret "$LATTICE_XMPP_COMPONENT_SECRET"
start prosody prosody --config "$DEMO/prosody/prosody.cfg.lua" -F
prosodyctl --config "$DEMO/prosody/prosody.cfg.lua" register alice localhost alice >/dev/null 2>&1 ||
    log "could not register alice@localhost on Prosody (see prosodyctl)"

# --- Synapse ---------------------------------------------------------------------------------
"$SYNAPSE_VENV/bin/python" scripts/synapse-config.py "$DEMO/synapse" "$SYNAPSE_PORT" \
    "$DEMO/irc-registration.yaml" "$DEMO/xmpp-registration.yaml"
start synapse "$SYNAPSE_VENV/bin/python" -m synapse.app.homeserver -c "$DEMO/synapse/homeserver.yaml"

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

IRC_PORTAL="#irc_${IRC_NETWORK}_#lattice:localhost"
cat <<BANNER

Lattice demo is running. Logs: $LOGS/

  Matrix     homeserver $HOMESERVER   user @alice:localhost   password alice
             (e.g. Element: custom homeserver $HOMESERVER, sign in as alice / alice)
  IRC        InspIRCd + atheme on 127.0.0.1:$IRC_PORT (any IRC client, no TLS; SASL PLAIN once you
             /msg NickServ REGISTER <password> <you@example.com>), the bridge's network "$IRC_NETWORK"
             DM @$IRC_BOT:localhost for the IRC bridge's commands
  XMPP       DM @$XMPP_BOT:localhost for the XMPP bridge's commands
             Prosody on 127.0.0.1:$XMPP_C2S_PORT: alice@localhost / alice (plain auth, no TLS);
             group chats on conference.localhost

  A first portal: on Matrix, join $IRC_PORTAL
                  on IRC, connect to 127.0.0.1:$IRC_PORT and /join #lattice
                  and talk across.

BANNER

if $check; then
    for name in "${started[@]}"; do
        must_run "$name"
    done
    curl -fsS --max-time 10 -o /dev/null -H 'Content-Type: application/json' \
        -d '{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "alice"}' \
        "$HOMESERVER/_matrix/client/v3/login" || die "alice / alice cannot log in to $HOMESERVER"
    # Each bridge logs this once the homeserver has reached it (the appservice ping).
    deadline=$((SECONDS + 30))
    for name in lattice-irc lattice-xmpp; do
        until grep -qF "appservice ping succeeded" "$LOGS/$name.log"; do
            must_run "$name"
            ((SECONDS < deadline)) || die "$name logged no successful homeserver ping after 30 s ($LOGS/$name.log)"
            sleep 0.2
        done
    done
    log "demo check passed: everything runs and both bridges pinged the homeserver; stopping"
    exit 0
fi

log "press Ctrl-C to stop"
while true; do
    for name in "${started[@]}"; do
        must_run "$name"
    done
    sleep 1
done
