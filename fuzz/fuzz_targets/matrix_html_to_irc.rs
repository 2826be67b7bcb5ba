//! Fuzz target `matrix_html_to_irc`: see `lattice_bridge_irc::fuzzing::matrix_html_to_irc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_irc::fuzzing::matrix_html_to_irc(data));
