#![no_main]
//! See `repd_fuzz::nbd_handshake`.
repd_fuzz::fuzz_main!(repd_fuzz::nbd_handshake);
