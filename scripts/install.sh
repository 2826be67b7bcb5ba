#!/usr/bin/env bash
# Usage: scripts/install.sh [synapse|postgres|ircd|prosody|ejabberd|heisenbridge|packaging|all]…   (default: all)
#
# Installs the real servers the end-to-end tests and the demo run against, idempotently:
#   synapse   matrix-synapse $SYNAPSE_VERSION from PyPI in a venv at $LATTICE_CACHE/synapse-venv
#   postgres  Debian's postgresql-15
#   ircd      Debian's ngircd, inspircd and atheme-services (and openssl, which makes the test TLS certificates)
#   prosody   Debian's prosody
#   ejabberd  Debian's ejabberd (the second XMPP server of the XMPP bridge's tests; the tests run it as the
#             current user, not as the package's service)
#   heisenbridge  heisenbridge $HEISENBRIDGE_VERSION from PyPI in a venv at $LATTICE_CACHE/heisenbridge-venv
#             (a peer IRC bridge the benchmarks measure beside Lattice; not part of `all`)
#   packaging cargo-deb $CARGO_DEB_VERSION from crates.io into cargo's bin folder (~/.cargo/bin), which
#             scripts/package.sh builds the Debian packages with (about 3 minutes once per machine), and
#             Debian's systemd for systemd-analyze, which checks their units (not in `all`)
# Does nothing for what is already there (dpkg -s; the venv imports synapse at the pinned
# version), and runs `apt-get update` once, only when a Debian package is missing.
# Env: LATTICE_CACHE (default <repo>/.cache).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

want_synapse=false
want_heisenbridge=false
want_cargo_deb=false
debs=()
(($# > 0)) || set -- all
for what in "$@"; do
    case $what in
    synapse) want_synapse=true ;;
    postgres) debs+=(postgresql-15) ;;
    ircd) debs+=(ngircd inspircd atheme-services openssl) ;;
    prosody) debs+=(prosody) ;;
    ejabberd) debs+=(ejabberd) ;;
    heisenbridge) want_heisenbridge=true ;;
    packaging)
        want_cargo_deb=true
        debs+=(systemd)
        ;;
    all)
        want_synapse=true
        debs+=(postgresql-15 ngircd inspircd atheme-services openssl prosody ejabberd)
        ;;
    -h | --help) usage ;;
    *)
        log "unknown component: $what"
        usage
        ;;
    esac
done

# One install at a time: test.sh and demo.sh may run side by side.
exec 9>"$LATTICE_CACHE/install.lock"
flock 9

apt_updated=false
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]} > 0)) || return 0
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! $apt_updated; then
        apt-get update -qq
        apt_updated=true
    fi
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

# venv_ok VENV PACKAGE VERSION MODULE: true when VENV's Python imports MODULE and has PACKAGE at VERSION.
venv_ok() {
    # synapse.__version__ gets git details when run inside a git checkout: ask the package metadata.
    "$1/bin/python" -c '
import importlib, importlib.metadata, sys
importlib.import_module(sys.argv[3])
sys.exit(importlib.metadata.version(sys.argv[1]) != sys.argv[2])' "$2" "$3" "$4" 2>/dev/null
}

# install_venv VENV PACKAGE VERSION MODULE: PACKAGE==VERSION from PyPI in its own venv, unless already there.
install_venv() {
    local venv=$1 package=$2 version=$3 module=$4
    if venv_ok "$venv" "$package" "$version" "$module"; then
        return 0
    fi
    log "installing $package $version into $venv (about a minute)"
    local python=python3
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
        python=/usr/bin/python3
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$package==$version"
    venv_ok "$venv" "$package" "$version" "$module" || die "$package $version does not import from $venv"
    log "$package $version installed"
}

if ((${#debs[@]} > 0)); then
    apt_install "${debs[@]}"
fi
if $want_synapse; then
    install_venv "$SYNAPSE_VENV" matrix-synapse "$SYNAPSE_VERSION" synapse
fi
if $want_heisenbridge; then
    install_venv "$HEISENBRIDGE_VENV" heisenbridge "$HEISENBRIDGE_VERSION" heisenbridge
fi
if $want_cargo_deb && [[ $(cargo-deb --version 2>/dev/null) != *" $CARGO_DEB_VERSION" ]]; then
    log "installing cargo-deb $CARGO_DEB_VERSION (about 3 minutes)"
    # Its own build folder: the workspace's CARGO_TARGET_DIR is for the workspace.
    env -u CARGO_TARGET_DIR cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
