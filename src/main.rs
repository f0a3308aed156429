//! The `hoist` command line: parses arguments, shows progress, maps errors to exit codes.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
