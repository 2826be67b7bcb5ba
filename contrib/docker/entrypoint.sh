#!/bin/sh
# Entry point of the Lattice container image (contrib/docker/Dockerfile): runs lattice-$BRIDGE with the given
# command (default `run`); on the first start, with no /data/config.yaml yet, writes the sample there and stops.
set -eu
if [ ! -e "$LATTICE_CONFIG" ]; then
    cp /usr/share/lattice/config.sample.yaml "$LATTICE_CONFIG"
    echo "wrote the sample config to $LATTICE_CONFIG: set homeserver.url, homeserver.server_name, the networks," >&2
    echo "appservice.bind_address: 0.0.0.0 and appservice.port: $PORT, then run generate-registration" >&2
    exit 1
fi
exec "/usr/local/bin/lattice-$BRIDGE" "$@"
