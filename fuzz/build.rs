//! Links libFuzzer into the fuzz binaries: the clang runtime's
//! `libclang_rt.fuzzer` (it brings `main`; Debian: libclang-rt-19-dev,
//! installed by tools/install-deps). `tools/fuzz` finds it and passes its
//! path; a build without it stops here and says so.
fn main() {
    println!("cargo:rerun-if-env-changed=REPD_FUZZ_LIBFUZZER");
    let Some(lib) = std::env::var_os("REPD_FUZZ_LIBFUZZER").filter(|s| !s.is_empty()) else {
        panic!("REPD_FUZZ_LIBFUZZER is not set: build the fuzz targets with tools/fuzz build");
    };
    let lib = std::path::PathBuf::from(lib);
    assert!(lib.is_file(), "libFuzzer runtime {} is missing: run tools/install-deps", lib.display());
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-arg-bins={}", lib.display());
    // libFuzzer is C++ and Debian builds it against libstdc++.
    println!("cargo:rustc-link-arg-bins=-lstdc++");
}
