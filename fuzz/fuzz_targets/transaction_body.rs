//! Fuzz target `transaction_body`: see `lattice_bridge_core::fuzzing::transaction_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lattice_bridge_core::fuzzing::transaction_body(data));
