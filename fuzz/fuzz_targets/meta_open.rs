#![no_main]
//! See `repd_fuzz::meta_open`.
repd_fuzz::fuzz_main!(repd_fuzz::meta_open);
