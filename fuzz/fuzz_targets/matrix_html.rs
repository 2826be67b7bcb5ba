//! Fuzz target `matrix_html`: see `lattice_bridge_core::fuzzing::matrix_html`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_core::fuzzing::matrix_html(data));
