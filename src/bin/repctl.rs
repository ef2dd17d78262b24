fn main() {
    std::process::exit(repd::cli::repctl_main());
}
