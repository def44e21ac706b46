//! What every part of the bench needs: the object, run counts and lengths, where to write,
//! and the stop flag the signal handlers set.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Result, bail};

/// Set by SIGINT and SIGTERM: the running part stops at its next check and the report is
/// written with what was measured.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// What every part needs.
pub struct Ctx {
    /// The daemon's XDP object (`XVIP_EBPF_OBJ`).
    pub obj: Vec<u8>,
    /// Runs per figure.
    pub runs: usize,
    /// Length of one run.
    pub run: Duration,
    /// `--quick`: fewer and shorter runs.
    pub quick: bool,
    /// CPUs the XDP generator uses.
    pub gen_cpus: u32,
    /// Prefix of this process's namespaces and pins.
    pub prefix: String,
    /// Scratch directory, removed at the end.
    pub tmp: PathBuf,
    /// Where the report and the logs of started programs go.
    pub out: PathBuf,
}

impl Ctx {
    /// Fails once a signal asked the bench to stop.
    ///
    /// # Errors
    /// `interrupted` after SIGINT or SIGTERM.
    pub fn check_stop(&self) -> Result<()> {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}
