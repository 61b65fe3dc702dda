//! async-std: tasks on async-std's executor, everything else on the shared
//! async-io path. async-std is discontinued upstream (its maintainers
//! recommend smol); this runtime stays for existing users and may be
//! dropped in a later release.

/// The async-std runtime (discontinued upstream; prefer [`super::SmolRuntime`]
/// for new code).
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdRuntime;

super::async_io::async_io_runtime!(AsyncStdRuntime, |task| drop(::async_std::task::spawn(task)));
