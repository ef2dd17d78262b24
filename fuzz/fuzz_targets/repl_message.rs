#![no_main]
//! See `repd_fuzz::repl_message`.
repd_fuzz::fuzz_main!(repd_fuzz::repl_message);
