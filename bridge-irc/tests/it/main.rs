//! End-to-end tests of `lattice-irc` against a real Synapse and real IRC servers.

mod auth;
mod dm;
mod fixture;
mod ircv3;
mod libera;
mod lifecycle;
mod moderation;
mod plumbing;
mod portal;
mod provisioning;
mod scram;
