//! `lattice-bench`: the performance figures of issue 4 (IRC: P1 memory per idle puppet, P2 Matrix → IRC
//! throughput, P3 latency, P5 cold start, P7 the edge: its memory, an upgrade's pause, a cold start after it dies)
//! and issue 6 (XMPP: P6), each measured against real servers (Synapse, ngircd, Prosody)
//! beside a baseline measured in the same run. It prints figures and asserts nothing.
//!
//! ```text
//! lattice-bench [--bin-dir DIR] [--irc-edge auto|on|off] [--puppets N] [--p2-senders N] [--p2-messages N]
//!               [--p3-samples N] [--p5-portals N] [--p5-puppets N]
//!               [--p6-messages N] [--p6-users N] [--p6-stanzas N] [--p7-puppets N] [p1|p2|p3|p5|p6|p7|all]…
//! ```
//!
//! `--irc-edge` sets the IRC bridge's `bridge.edge.mode` for P1, P2, P3 and P5 (default `auto`: `lattice-irc run`
//! holds its IRC connections in an edge process); `off` keeps them in the bridge's process, as builds before the edge
//! did. P7 measures the edge and always runs with it.
//!
//! The bridges run as their own processes from `--bin-dir` (default `target/release`): build them with
//! `cargo build --release -p lattice-bridge-irc -p lattice-bridge-xmpp`, or run `scripts/bench.sh`, which does.

mod appservice;
mod arrivals;
mod bridge;
mod heisenbridge;
mod irc;
mod p1;
mod p2;
mod p3;
mod p5;
mod p6;
mod p7;
mod rig;
mod stats;
mod tap;
mod xmpp;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use rig::IrcEdge;

const USAGE: &str = "usage: lattice-bench [--bin-dir DIR] [--irc-edge auto|on|off] [--puppets N] [--p2-senders N] \
                     [--p2-messages N] [--p3-samples N] [--p5-portals N] [--p5-puppets N] [--p6-messages N] \
                     [--p6-users N] [--p6-stanzas N] [--p7-puppets N] [p1|p2|p3|p5|p6|p7|all]…";

struct Args {
    bin_dir: PathBuf,
    irc_edge: IrcEdge,
    which: Vec<String>,
    puppets: usize,
    p2: p2::P2,
    p3_samples: usize,
    p5: p5::P5,
    p6: p6::P6,
    p7: p7::P7,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut parsed = Self {
            bin_dir: lattice_e2e::workspace_root().join("target/release"),
            irc_edge: IrcEdge::default(),
            which: Vec::new(),
            puppets: 1000,
            p2: p2::P2 { senders: 20, messages: 20_000 },
            p3_samples: 200,
            p5: p5::P5 { portals: 1000, puppets: 300 },
            p6: p6::P6 { messages: 1000, users: 1000, stanzas: 1000 },
            p7: p7::P7 { puppets: 2000 },
        };
        while let Some(arg) = args.next() {
            let mut number = |flag: &str| -> anyhow::Result<usize> {
                let value = args.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
                value.parse().with_context(|| format!("{flag} {value}: not a count"))
            };
            match arg.as_str() {
                "--bin-dir" => parsed.bin_dir = args.next().context(USAGE)?.into(),
                "--irc-edge" => parsed.irc_edge = IrcEdge::parse(&args.next().context(USAGE)?)?,
                "--puppets" => parsed.puppets = number(&arg)?,
                "--p2-senders" => parsed.p2.senders = number(&arg)?.max(1),
                "--p2-messages" => parsed.p2.messages = number(&arg)?,
                "--p3-samples" => parsed.p3_samples = number(&arg)?,
                "--p5-portals" => parsed.p5.portals = number(&arg)?.max(1),
                "--p5-puppets" => parsed.p5.puppets = number(&arg)?,
                "--p6-messages" => parsed.p6.messages = number(&arg)?,
                "--p6-users" => parsed.p6.users = number(&arg)?,
                "--p6-stanzas" => parsed.p6.stanzas = number(&arg)?.max(1),
                "--p7-puppets" => parsed.p7.puppets = number(&arg)?.max(1),
                "p1" | "p2" | "p3" | "p5" | "p6" | "p7" => parsed.which.push(arg),
                "all" => parsed.which.extend(["p2", "p1", "p3", "p5", "p6", "p7"].map(String::from)),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                _ => bail!("unknown argument {arg:?}\n{USAGE}"),
            }
        }
        if parsed.which.is_empty() {
            parsed.which.extend(["p2", "p1", "p3", "p5", "p6"].map(String::from));
        }
        if parsed.irc_edge == IrcEdge::Off && parsed.which.iter().any(|which| which == "p7") {
            bail!("P7 measures the IRC edge: it cannot run with --irc-edge off");
        }
        Ok(parsed)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("raw-idle") {
        // The child process of P1 that measures bare connections.
        let [_, port, count] = argv.as_slice() else { bail!("usage: lattice-bench raw-idle PORT COUNT") };
        return p1::raw_idle(port.parse()?, count.parse()?).await;
    }
    let args = Args::parse(argv.into_iter())?;
    println!("# lattice-bench: bridges from {}, IRC edge {}", args.bin_dir.display(), args.irc_edge.mode());
    for which in &args.which {
        match which.as_str() {
            "p1" => p1::run(&args.bin_dir, args.puppets, args.irc_edge).await?,
            "p2" => p2::run(&args.bin_dir, &args.p2, args.irc_edge).await?,
            "p3" => p3::run(&args.bin_dir, args.p3_samples, args.irc_edge).await?,
            "p5" => p5::run(&args.bin_dir, &args.p5, args.irc_edge).await?,
            "p6" => p6::run(&args.bin_dir, &args.p6).await?,
            "p7" => p7::run(&args.bin_dir, &args.p7).await?,
            other => println!("\n## {other}: not built yet"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        Args::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn the_irc_edge_is_auto_unless_asked() -> anyhow::Result<()> {
        assert_eq!(parse(&["p3"])?.irc_edge, IrcEdge::Auto);
        assert_eq!(parse(&["--irc-edge", "off", "p3", "p6"])?.irc_edge, IrcEdge::Off);
        assert_eq!(parse(&["p7", "--irc-edge", "on"])?.irc_edge, IrcEdge::On);
        Ok(())
    }

    #[test]
    fn a_bad_irc_edge_is_refused() {
        assert!(parse(&["--irc-edge", "no", "p3"]).is_err());
        assert!(parse(&["--irc-edge"]).is_err());
        // P7 measures the edge, whichever order the flags come in.
        assert!(parse(&["p7", "--irc-edge", "off"]).is_err());
        assert!(parse(&["--irc-edge", "off", "all"]).is_err());
    }
}
