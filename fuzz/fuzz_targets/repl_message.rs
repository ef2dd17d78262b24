#![no_main]
//! See `repd_fuzz::repl_message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repd_fuzz::repl_message(data));
