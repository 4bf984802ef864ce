fn main() {
    // Before any thread starts: SIGINT/SIGTERM clean up an output being built.
    slipway::io::signals::install();
    let code = slipway::cli::main();
    slipway::io::signals::exit(code)
}
