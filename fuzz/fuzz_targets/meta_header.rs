#![no_main]
//! See `repd_fuzz::meta_header`.
repd_fuzz::fuzz_main!(repd_fuzz::meta_header);
