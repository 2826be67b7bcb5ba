//! `lattice-xmpp`: the Lattice Matrix ⇄ XMPP bridge.

use std::process::ExitCode;

use lattice_bridge_xmpp::{XmppConnector, XmppSection};
use lattice_registration::AppserviceRegistration;

fn main() -> ExitCode {
    lattice_bridge_core::cli::main::<XmppSection, _, _>(|config| {
        let connector = XmppConnector::new(config.bridge.clone());
        // The registration exists once `generate-registration` ran; before that the bridge only checks its config.
        Ok(match AppserviceRegistration::load(&config.appservice.registration) {
            Ok(registration) => connector.with_appservice_token(registration.registration().as_token.clone()),
            Err(_) => connector,
        })
    })
}
