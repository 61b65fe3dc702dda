//! smol: tasks on smol's global executor, everything else on the shared
//! async-io path.

/// The smol runtime (its global executor; `SMOL_THREADS` sets its size).
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

super::async_io::async_io_runtime!(SmolRuntime, |task| ::smol::spawn(task).detach());
