#![no_main]
//! See `repd_fuzz::config_parse`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repd_fuzz::config_parse(data));
