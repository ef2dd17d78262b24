#![no_main]
//! See `repd_fuzz::repl_codec`.
repd_fuzz::fuzz_main!(repd_fuzz::repl_codec);
