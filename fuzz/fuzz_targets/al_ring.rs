#![no_main]
//! See `repd_fuzz::al_ring`.
repd_fuzz::fuzz_main!(repd_fuzz::al_ring);
