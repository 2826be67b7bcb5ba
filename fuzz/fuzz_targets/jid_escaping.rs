//! Fuzz target `jid_escaping`: see `lattice_bridge_xmpp::fuzzing::jid_escaping`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_xmpp::fuzzing::jid_escaping(data));
