//! The `qkernels` command-line tool (see `qkernels --help` and the README).

mod cli;

use clap::Parser;

fn main() {
    // A bug must still end in one readable line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {info}");
    }));
    let args = cli::Cli::parse();
    if let Err(msg) = cli::main(args) {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
