#![no_main]
//! See `repd_fuzz::meta_header`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repd_fuzz::meta_header(data));
