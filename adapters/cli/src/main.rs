//! The `hedgerow` binary; all of it is in the `hedgerow_cli` library, so
//! that tests can drive exactly this code. Keep this file to the one call.

fn main() -> std::process::ExitCode {
    hedgerow_cli::main()
}
