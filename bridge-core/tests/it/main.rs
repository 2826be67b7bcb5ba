//! bridge-core's integration tests: the appservice HTTP API served by a real runtime over a real store, and the
//! store itself on SQLite and PostgreSQL. No homeserver is needed; see the workspace `tests/` crate for those.

mod appservice_api;
mod copy_database;
mod disk_full;
mod hostile_input;
mod permissions;
mod store;
mod support;
