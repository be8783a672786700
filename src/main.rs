//! The `qkernels` command-line tool (see `qkernels --help`).

fn main() {
    println!(
        "qkernels {} — ISA in use: {}",
        qkernels::VERSION,
        qkernels::active_isa()
    );
}
