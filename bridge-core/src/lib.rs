//! The Matrix application-service runtime the Lattice bridges share.
//!
//! Data flows one way in each direction: homeserver → [`appservice`] (HTTP in) → per-room queue → [`Connector`] →
//! remote network, and remote network → connector → [`BridgeHandle::push`] → per-portal queue → [`matrix`] client
//! (HTTP out). Both queues live in the [`store`], so an acknowledged transaction or a pushed event survives a crash,
//! and each is drained in order per room by its own worker ([`dispatch`]).
//!
//! This crate knows no IRC or XMPP word: protocol crates implement [`Connector`].
#![warn(missing_docs, unreachable_pub)]

pub mod appservice;
mod bot;
pub mod bridge_info;
pub mod cli;
pub mod commands;
pub mod connector;
mod dispatch;
mod error;
pub mod event;
pub mod formatting;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod handle;
pub mod matrix;
pub mod metrics;
mod runtime;
mod self_check;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use self::{
    connector::{Connector, ConnectorError},
    error::{Error, Result},
    handle::BridgeHandle,
    runtime::{Bridge, RuntimeSettings, ShutdownTrigger},
};
