//! The Lattice Matrix ⇄ IRC bridge: IRC networks as Matrix portals, IRC people as Matrix ghosts.
//!
//! This crate holds the IRC connector ([`IrcConnector`]) and its config section ([`IrcSection`]); the binary
//! `lattice-irc` runs it on bridge-core's runtime.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod connector;

pub use self::{config::IrcSection, connector::IrcConnector};
