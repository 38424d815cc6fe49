fn main() {
    std::process::exit(trapline::cli::main());
}
