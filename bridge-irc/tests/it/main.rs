//! End-to-end tests of `lattice-irc` against a real Synapse and real IRC servers.

mod dm;
mod fixture;
mod portal;
