//! Fuzz target `stanza`: see `lattice_bridge_xmpp::fuzzing::stanza`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_xmpp::fuzzing::stanza(data));
