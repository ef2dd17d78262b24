fn main() {
    std::process::exit(repd::cli::repd_main());
}
