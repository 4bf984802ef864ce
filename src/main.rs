fn main() {
    // Before any thread starts: SIGINT/SIGTERM clean up an output being built.
    slipway::io::signals::install();
    std::process::exit(slipway::cli::main());
}
