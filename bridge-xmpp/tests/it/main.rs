//! End-to-end tests of `lattice-xmpp` against a real Prosody (the tests in `xmpp_server_tests!` also against
//! ejabberd) and a real Synapse, one module per area. Each test starts its own servers, users and rooms, so tests
//! run in parallel and never depend on order.

mod affiliations;
mod avatars;
mod chat_states;
mod client;
mod direct;
mod disco;
mod fixture;
mod gateway_muc;
mod history;
mod media;
mod muc;
mod self_ping;
mod subscription;
mod xeps;
