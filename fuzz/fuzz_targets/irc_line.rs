//! Fuzz target `irc_line`: see `lattice_bridge_irc::fuzzing::irc_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_irc::fuzzing::irc_line(data));
