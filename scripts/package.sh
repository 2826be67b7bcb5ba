#!/usr/bin/env bash
# Usage: scripts/package.sh [--profile release|dev] [--no-build] [irc|xmpp]…   (default: release, both bridges)
#
# Builds the Debian packages lattice-irc and lattice-xmpp with cargo-deb ([package.metadata.deb] in
# bridge-irc/Cargo.toml and bridge-xmpp/Cargo.toml) and prints their paths, one a line, on stdout:
#   /usr/bin/lattice-irc                   the binary
#   /etc/lattice-irc/config.yaml           the sample config (a conffile), its files in /var/lib/lattice-irc
#   /usr/lib/systemd/system/lattice-irc.service  a hardened unit (packaging/debian/lattice.service.in)
#   /usr/share/doc/lattice-irc/            README, the commented sample, (IRC) the ident port 113 drop-in
# and the same for lattice-xmpp. The postinst makes the system user; the unit is neither enabled nor started.
# The packages land in $CARGO_TARGET_DIR/debian (default target/debian).
#   --profile dev  package the debug build (what the end-to-end tests build anyway; not for operators)
#   --no-build     package the binaries already built for that profile
# Installs cargo-deb first if missing (scripts/install.sh packaging).
# Env: LATTICE_CACHE (default <repo>/.cache), CARGO_TARGET_DIR.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LATTICE_ROOT"

profile=release
build=true
bridges=()
while (($# > 0)); do
    case $1 in
    --profile)
        profile=${2:?--profile needs a value}
        shift
        ;;
    --no-build) build=false ;;
    irc | xmpp) bridges+=("$1") ;;
    *)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
        exit 2
        ;;
    esac
    shift
done
((${#bridges[@]} > 0)) || bridges=(irc xmpp)

"$LATTICE_ROOT/scripts/install.sh" packaging

# The files cargo-deb takes from packaging/build/NAME (Cargo.toml's maintainer-scripts and unit-scripts): the unit
# made from the template, the maintainer scripts, and the sample config with its files moved to /var/lib/NAME.
render() {
    local bridge=$1 title=$2 ident_note=$3 service_extra=$4
    shift 4
    local name=lattice-$bridge dir=$LATTICE_ROOT/packaging/build/lattice-$bridge
    rm -rf "$dir"
    mkdir -p "$dir"
    sed -e "s|@NAME@|$name|g" -e "s|@TITLE@|$title|g" -e "s|@IDENT_NOTE@|$ident_note|" \
        -e "s|@SERVICE_EXTRA@|$service_extra|" -e '/^@DROP@$/d' packaging/debian/lattice.service.in >"$dir/$name.service"
    cp packaging/debian/postinst packaging/debian/postrm "$dir/"
    cp "bridge-$bridge/config.sample.yaml" "$dir/config.yaml"
    python3 scripts/yaml-edit.py "$dir/config.yaml" set \
        "appservice.registration=/var/lib/$name/registration.yaml" \
        "database.url=sqlite:///var/lib/$name/$name.db" \
        "encryption.key_file=/var/lib/$name/$name.key" \
        "logging.format=pretty" "$@"
}

args=(--profile "$profile")
# Stripped like a release (a debug build's symbols take minutes to compress), and compressed for speed.
[[ $profile == release ]] || args+=(--fast)
$build || args+=(--no-build)
for bridge in "${bridges[@]}"; do
    case $bridge in
    irc)
        render irc IRC "# The ident server's port 113 needs CAP_NET_BIND_SERVICE, which this unit does not grant:\n# /usr/share/doc/lattice-irc/ident-port-113.conf is the drop-in that does." \
            "# The IRC edge (lattice-irc edge) holds the IRC connections and outlives restarts of the bridge: stopping\n# the unit stops the bridge process only, and the edge's socket in /run/lattice-irc is kept across restarts.\n# Stop the edge too (its IRC connections quit): kill \$(cat /run/lattice-irc/edge.pid)\nKillMode=process\nRuntimeDirectory=lattice-irc\nRuntimeDirectoryPreserve=yes" \
            "bridge.edge.socket=/run/lattice-irc/edge.sock"
        ;;
    xmpp) render xmpp XMPP "@DROP@" "@DROP@" ;;
    esac
    log "packaging lattice-$bridge ($profile build)"
    # cargo-deb prints the package's path as its last line.
    cargo-deb -p "lattice-bridge-$bridge" "${args[@]}" | tail -1
done
