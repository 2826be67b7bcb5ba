//! Fuzz target `mirc`: see `lattice_bridge_irc::fuzzing::mirc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_irc::fuzzing::mirc(data));
