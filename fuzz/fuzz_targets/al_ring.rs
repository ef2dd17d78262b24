#![no_main]
//! See `repd_fuzz::al_ring`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repd_fuzz::al_ring(data));
