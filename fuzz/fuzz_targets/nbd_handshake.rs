#![no_main]
//! See `repd_fuzz::nbd_handshake`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repd_fuzz::nbd_handshake(data));
