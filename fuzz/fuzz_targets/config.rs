//! Fuzz target `config`: see `lattice_bridge_irc::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_irc::fuzzing::config(data));
