//! The servers an IRC benchmark runs against: ngircd with every flood limit off, a Synapse that loads the bridge's
//! registration (and any other given), and `lattice-irc` as its own process with flood control off.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lattice_e2e::{MatrixUser, StateDir, Synapse, ircd::Ircd};

use crate::{
    appservice::Pusher,
    bridge::{BridgeProcess, BridgeSetup, Flavour},
    tap::Tap,
};

/// The network ID in the benchmarks' config.
pub(crate) const NET: &str = "bench";

/// ngircd, Synapse and the IRC bridge.
pub(crate) struct IrcRig {
    // Field order is drop order: the bridge quits before the servers stop.
    pub(crate) bridge: BridgeProcess,
    pub(crate) synapse: Synapse,
    pub(crate) ircd: Ircd,
    pub(crate) pusher: Pusher,
    /// With [`IrcOptions::tap_marker`]: relays noting marked bodies on their way into and out of the bridge, on its
    /// Synapse side and on its IRC side.
    pub(crate) taps: Option<BridgeEdges>,
    _dir: StateDir,
}

/// Taps at the bridge's edges: towards the homeserver, and towards the IRC server.
pub(crate) struct BridgeEdges {
    /// Between Synapse and the bridge's appservice endpoint.
    pub(crate) into_bridge: Tap,
    /// Between the bridge and Synapse's client-server API.
    pub(crate) out_of_bridge: Tap,
    /// Between the bridge's IRC connections and ngircd.
    pub(crate) irc: Tap,
}

/// How the bridge is configured for a run.
pub(crate) struct IrcOptions {
    /// `reconnect.max_concurrent`: connections of the network registering at once.
    pub(crate) max_concurrent: usize,
    /// More registrations for Synapse to load (a stub appservice, Heisenbridge).
    pub(crate) extra_registrations: Vec<PathBuf>,
    /// Channel portals written into the store before the bridge starts (P5).
    pub(crate) seed_portals: usize,
    /// Puts taps on the bridge's edges noting bodies that start with this (P3).
    pub(crate) tap_marker: Option<&'static str>,
    /// The network's `privacy` setting: `kick` (the default, Libera.Chat's rule) or `off`.
    pub(crate) privacy: &'static str,
    /// Where the bridge holds its IRC connections.
    pub(crate) edge: IrcEdge,
}

/// `bridge.edge.mode` of the IRC bridge: its IRC connections in an edge process of their own (`on`; `auto` means the
/// same for `lattice-irc run`) or in the bridge's process (`off`), so a run can measure the bridge without the edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum IrcEdge {
    #[default]
    Auto,
    On,
    Off,
}

impl IrcEdge {
    /// Reads `auto`, `on` or `off`.
    pub(crate) fn parse(value: &str) -> anyhow::Result<Self> {
        match value {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => anyhow::bail!("--irc-edge {other}: not auto, on or off"),
        }
    }

    /// The value of `bridge.edge.mode`.
    pub(crate) fn mode(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

impl IrcRig {
    /// Starts ngircd, Synapse and the bridge.
    pub(crate) async fn start(bin_dir: &Path, options: IrcOptions) -> anyhow::Result<Self> {
        let ircd = Ircd::ngircd().await?;
        let dir = StateDir::new("bench-irc-")?;
        let irc_tap = match options.tap_marker {
            Some(marker) => Some(Tap::start(format!("127.0.0.1:{}", ircd.port()), marker).await?),
            None => None,
        };
        let irc_port = irc_tap.as_ref().map_or(ircd.port(), |tap| tap.port);
        let setup = BridgeSetup::new(bin_dir, dir.path(), irc_flavour(irc_port, &options))?;
        let into_bridge = match options.tap_marker {
            Some(marker) => {
                let tap = Tap::start(host_port(&setup.url).to_owned(), marker).await?;
                // Synapse reaches the bridge through the tap.
                let registration = std::fs::read_to_string(&setup.registration)?;
                std::fs::write(&setup.registration, registration.replace(&setup.url, &tap.url))?;
                Some(tap)
            }
            None => None,
        };
        let mut registrations = vec![setup.registration.clone()];
        registrations.extend(options.extra_registrations);
        let synapse = Synapse::start(&registrations).await?;
        if options.seed_portals > 0 {
            let url = format!("sqlite://{}", dir.join("bridge.db").display());
            crate::p5::seed(&url, &dir.join("bridge.key"), options.seed_portals).await?;
        }
        let taps = match (into_bridge, irc_tap, options.tap_marker) {
            (Some(into_bridge), Some(irc), Some(marker)) => {
                let out_of_bridge = Tap::start(host_port(synapse.url()).to_owned(), marker).await?;
                Some(BridgeEdges { into_bridge, out_of_bridge, irc })
            }
            _ => None,
        };
        let homeserver_url = taps.as_ref().map_or(synapse.url(), |taps| taps.out_of_bridge.url.as_str());
        let bridge = setup.start(homeserver_url).await?;
        let pusher = Pusher::new(&setup.url, &setup.hs_token)?;
        Ok(Self { bridge, synapse, ircd, pusher, taps, _dir: dir })
    }

    /// A Matrix user joins the portal of `channel` (its alias makes the bridge create it) and the room ID.
    pub(crate) async fn portal(&self, user: &MatrixUser, channel: &str) -> anyhow::Result<String> {
        user.join(&format!("#irc_{NET}_{channel}:localhost"))
            .await
            .with_context(|| format!("joining the portal of {channel}"))
    }
}

/// `host:port` of an `http://host:port` URL.
fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// The `lattice-irc` config: one network on the local ngircd, flood control off (a line bucket of a million, refilled
/// a million per second), nicks up to 30 characters, quick reconnects, the privacy rule as `options` ask.
pub(crate) fn irc_flavour(port: u16, options: &IrcOptions) -> Flavour<'static> {
    let IrcOptions { max_concurrent, privacy, edge, .. } = options;
    Flavour {
        binary: "lattice-irc",
        edge_mode: Some(edge.mode()),
        id: "lattice-irc-bench",
        bot_localpart: "ircbot",
        section: format!(
            "  networks:\n    {NET}:\n      name: Bench\n      servers:\n        - host: 127.0.0.1\n          port: {port}\n          \
             tls: false\n      bot_nick: latticebot\n      max_nick_length: 30\n      auth: none\n      \
             privacy: {privacy}\n      \
             flood:\n        burst: 1000000\n        lines_per_second: 1000000.0\n      \
             reconnect:\n        initial_delay_ms: 200\n        max_delay_secs: 5\n        max_concurrent: {max_concurrent}\n"
        ),
    }
}
