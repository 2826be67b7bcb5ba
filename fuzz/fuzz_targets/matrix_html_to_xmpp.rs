//! Fuzz target `matrix_html_to_xmpp`: see `lattice_bridge_xmpp::fuzzing::matrix_html_to_xmpp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_xmpp::fuzzing::matrix_html_to_xmpp(data));
