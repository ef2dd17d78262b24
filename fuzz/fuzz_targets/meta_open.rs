#![no_main]
//! See `repd_fuzz::meta_open`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repd_fuzz::meta_open(data));
