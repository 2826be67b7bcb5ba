#!/usr/bin/env python3
"""Write a Synapse config for tests and the demo: the one template both use.

Usage: scripts/synapse-config.py [--server-name NAME] [--shared-secret SECRET] DIR PORT [REGISTRATION.yaml ...]

Writes DIR/homeserver.yaml (SQLite in DIR, one plain-HTTP listener on 127.0.0.1:PORT, open
registration, every rate limit off, no federation, no stats) listing the given appservice
registration files, and DIR/signing.key when it is missing (so Synapse needs no slow
--generate-keys). The registration shared secret is SECRET, or random when not given; read it
back from homeserver.yaml (`registration_shared_secret`). Standard library only: any python3 runs it.
The file is JSON, which YAML parsers read as YAML.
"""

import argparse
import base64
import json
import os
import secrets
import sys

# Every rc_* key Synapse 1.163 reads (shared/reference/servers.md), set far above any test's load.
UNLIMITED = {"per_second": 10000, "burst_count": 100000}
RATE_LIMITS = {
    "rc_message": UNLIMITED,
    "rc_registration": UNLIMITED,
    "rc_registration_token_validity": UNLIMITED,
    "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
    "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
    "rc_joins_per_room": UNLIMITED,
    "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
    "rc_3pid_validation": UNLIMITED,
    "rc_admin_redaction": UNLIMITED,
    "rc_room_creation": UNLIMITED,
    "rc_profile": UNLIMITED,
    "rc_presence": {"per_user": UNLIMITED},
    "rc_media_create": UNLIMITED,
    "rc_key_requests": UNLIMITED,
    "rc_delayed_event_mgmt": UNLIMITED,
    "rc_reports": UNLIMITED,
    "rc_user_directory": UNLIMITED,
    "rc_third_party_invite": UNLIMITED,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--shared-secret", default=None)
    parser.add_argument("dir")
    parser.add_argument("port", type=int)
    parser.add_argument("registrations", nargs="*")
    args = parser.parse_args()

    directory = os.path.abspath(args.dir)
    os.makedirs(os.path.join(directory, "media_store"), exist_ok=True)

    signing_key = os.path.join(directory, "signing.key")
    if not os.path.exists(signing_key):
        seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        with open(signing_key, "w") as f:
            f.write(f"ed25519 a_{secrets.token_hex(2)} {seed}\n")

    config = {
        "server_name": args.server_name,
        "public_baseurl": f"http://127.0.0.1:{args.port}/",
        "pid_file": os.path.join(directory, "homeserver.pid"),
        "listeners": [
            {
                "port": args.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {
            "name": "sqlite3",
            "args": {"database": os.path.join(directory, "homeserver.db")},
        },
        "media_store_path": os.path.join(directory, "media_store"),
        "signing_key_path": signing_key,
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "registration_shared_secret": args.shared_secret or secrets.token_hex(32),
        # Cheap password hashing: registering a user takes 0.4 s at the default 12 rounds.
        "bcrypt_rounds": 4,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "presence": {"enabled": False},
        # Anyone may publish a room in the directory (Synapse's default lets nobody), as on open homeservers.
        "room_list_publication_rules": [{"action": "allow"}],
        "app_service_config_files": [os.path.abspath(r) for r in args.registrations],
        **RATE_LIMITS,
    }
    path = os.path.join(directory, "homeserver.yaml")
    with open(path, "w") as f:
        f.write("# Written by scripts/synapse-config.py (JSON is YAML).\n")
        json.dump(config, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
