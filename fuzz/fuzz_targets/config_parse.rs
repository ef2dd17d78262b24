#![no_main]
//! See `repd_fuzz::config_parse`.
repd_fuzz::fuzz_main!(repd_fuzz::config_parse);
