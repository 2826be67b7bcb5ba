//! The Lattice Matrix ⇄ IRC bridge: IRC networks as Matrix portals, IRC people as Matrix ghosts.
//!
//! This crate holds the IRC connector ([`IrcConnector`]) and its config section ([`IrcSection`]); the binary
//! `lattice-irc` runs it on bridge-core's runtime.
#![warn(missing_docs, unreachable_pub)]

mod commands;
pub mod config;
mod conn;
pub mod connector;
mod delivery;
pub mod edge;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod ghosts;
mod ident;
mod ids;
mod ircv3;
mod line;
mod message_id;
mod mirc;
mod network;
mod plumbing;
mod privacy;
mod provisioning;
mod receipt;
mod spam;
mod style;

pub use self::{config::IrcSection, connector::IrcConnector};
