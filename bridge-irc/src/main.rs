//! `lattice-irc`: the Lattice Matrix ⇄ IRC bridge.

use std::process::ExitCode;

use lattice_bridge_irc::{IrcConnector, IrcSection};

fn main() -> ExitCode {
    lattice_bridge_core::cli::main::<IrcSection, _, _>(|config| Ok(IrcConnector::new(config.bridge.clone())))
}
