//! Fuzz target `skimmer`: see `lattice_bridge_xmpp::fuzzing::skimmer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_xmpp::fuzzing::skimmer(data));
