//! End-to-end tests of Lattice against real servers, one module per area.

mod binaries;
mod bot_once;
mod bridge;
mod crash_tally;
mod dashboard;
mod durability;
mod harness;
mod homeserver_outage;
mod irc_continuity;
mod irc_crash;
mod packages;
mod secrets_in_logs;
mod xmpp_crash;
