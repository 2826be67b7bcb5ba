//! The Lattice Matrix ⇄ XMPP bridge: an XEP-0114 component gateway that carries XMPP MUCs into Matrix and Matrix
//! rooms into XMPP.
//!
//! This crate holds the XMPP connector ([`XmppConnector`]) and its config section ([`XmppSection`]); the binary
//! `lattice-xmpp` runs it on bridge-core's runtime.
#![warn(missing_docs, unreachable_pub)]

pub mod addressing;
pub mod affiliations;
pub mod component;
pub mod config;
pub mod connector;
pub mod delivery;
pub mod direct;
pub mod disco;
pub mod history;
pub mod hosted;
pub mod lanes;
pub mod media;
pub mod messages;
pub mod muc;
pub mod requests;
pub mod self_ping;
pub mod skim;
pub mod styling;
pub mod subscription;
pub mod xep;
pub mod xhtml;

pub use self::{config::XmppSection, connector::XmppConnector};
