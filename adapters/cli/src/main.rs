//! The `hedgerow` binary; all of it is in the `hedgerow_cli` library. The
//! black-box tests (`hedgerow-tests`, in `tests/` at the top of the
//! workspace) build this very file as their binary under test, so keep it
//! to the one call.

fn main() -> std::process::ExitCode {
    hedgerow_cli::main()
}
