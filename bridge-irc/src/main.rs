//! `lattice-irc`: the Lattice Matrix ⇄ IRC bridge. `lattice-irc edge` is the process that holds its IRC
//! connections, which `lattice-irc run` starts itself.

use std::process::ExitCode;

use lattice_bridge_irc::{IrcConnector, IrcSection};

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|command| command == "edge") {
        let program = args.next().unwrap_or_default();
        return lattice_bridge_irc::edge::main(std::iter::once(program).chain(args.skip(1)));
    }
    lattice_bridge_core::cli::main::<IrcSection, _, _>(|config| {
        Ok(IrcConnector::new(config.bridge.clone()).with_edge_binary(config))
    })
}
