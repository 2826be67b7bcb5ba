//! `lattice-xmpp`: the Lattice Matrix ⇄ XMPP bridge.

use std::process::ExitCode;

use lattice_bridge_xmpp::{XmppConnector, XmppSection};

fn main() -> ExitCode {
    lattice_bridge_core::cli::main::<XmppSection, _, _>(|config| Ok(XmppConnector::new(config.bridge.clone())))
}
