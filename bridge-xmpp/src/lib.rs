//! The Lattice Matrix ⇄ XMPP bridge: an XEP-0114 component gateway that carries XMPP MUCs into Matrix and Matrix
//! rooms into XMPP.
//!
//! This crate holds the XMPP connector ([`XmppConnector`]) and its config section ([`XmppSection`]); the binary
//! `lattice-xmpp` runs it on bridge-core's runtime.
#![warn(missing_docs, unreachable_pub)]

pub mod addressing;
mod affiliations;
pub mod config;
pub mod connector;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod gateway;
mod styling;
#[cfg(test)]
mod testing;
mod xep;
mod xhtml;

pub use self::{config::XmppSection, connector::XmppConnector};
