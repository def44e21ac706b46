//! keepalived's notify hooks for the VRRP state: `--notify-exec` run as keepalived runs its
//! `notify` script (`PATH INSTANCE NAME STATE PRIORITY`) and a `--notify-fifo` line
//! (`INSTANCE "NAME" STATE PRIORITY`, as keepalived's `notify_fifo`) per state change.
//!
//! Neither can delay the election (it runs on its own thread and never waits here): the
//! hooks run one at a time, in order, on a task of their own, each killed after
//! [`TIMEOUT`]; at most [`QUEUE`] wait, further changes are dropped and counted. A FIFO line
//! is written without blocking: with no reader, or a full pipe, it is dropped and counted.
//! The hook's output is not read (it goes to /dev/null): nothing it prints reaches xvip.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::State;

/// A hook still running after this is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// State changes waiting for the hook at most.
pub const QUEUE: usize = 16;

/// What the hooks did (`xvip status`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NotifyStatus {
    /// `--notify-exec` runs that exited 0.
    pub exec_ok: u64,
    /// Runs that exited otherwise or could not start.
    pub exec_failed: u64,
    /// Runs killed after `TIMEOUT`.
    pub exec_timed_out: u64,
    /// State changes not run: the queue was full.
    pub exec_dropped: u64,
    /// Lines written to `--notify-fifo`.
    pub fifo_lines: u64,
    /// Lines dropped: no reader, or the pipe full.
    pub fifo_dropped: u64,
}

#[derive(Debug, Default)]
struct Counts {
    exec_ok: AtomicU64,
    exec_failed: AtomicU64,
    exec_timed_out: AtomicU64,
    exec_dropped: AtomicU64,
    fifo_lines: AtomicU64,
    fifo_dropped: AtomicU64,
}

/// keepalived's name of a state in notify arguments and FIFO lines.
pub fn state_word(s: State) -> &'static str {
    match s {
        State::Master => "MASTER",
        State::Backup => "BACKUP",
        State::Fault => "FAULT",
        State::Initialize => "STOP",
    }
}

/// The FIFO line for a change (newline included).
pub fn fifo_line(instance: &str, state: State, priority: u8) -> String {
    format!("INSTANCE \"{instance}\" {} {priority}\n", state_word(state))
}

struct Change {
    instance: String,
    state: State,
    priority: u8,
}

/// The hooks of one daemon: cheap to clone, shared by both families' instances.
#[derive(Clone)]
pub struct Notifier {
    exec: Option<mpsc::Sender<Change>>,
    fifo: Option<PathBuf>,
    counts: Arc<Counts>,
}

impl Notifier {
    /// Starts the hook task (on the current tokio runtime) when `exec` is given, and
    /// creates the FIFO (mode 0600) when `fifo` is given and missing.
    ///
    /// # Errors
    /// The FIFO cannot be created.
    pub fn start(exec: Option<&Path>, fifo: Option<&Path>) -> std::io::Result<Self> {
        if let Some(f) = fifo
            && !f.exists()
        {
            let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes())
                .map_err(std::io::Error::other)?;
            // SAFETY: mkfifo with a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let counts = Arc::new(Counts::default());
        let exec = exec.map(|path| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run_hooks(path.to_path_buf(), rx, counts.clone()));
            tx
        });
        Ok(Self {
            exec,
            fifo: fifo.map(Path::to_path_buf),
            counts,
        })
    }

    /// Reports a change of `instance` to `state` at `priority`; never waits.
    pub fn changed(&self, instance: &str, state: State, priority: u8) {
        if let Some(f) = &self.fifo {
            let c = &self.counts;
            if write_line(f, &fifo_line(instance, state, priority)) {
                c.fifo_lines.fetch_add(1, Ordering::Relaxed);
            } else {
                c.fifo_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(tx) = &self.exec {
            let change = Change {
                instance: instance.into(),
                state,
                priority,
            };
            if tx.try_send(change).is_err() {
                let n = self.counts.exec_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!(
                        "--notify-exec: {n} state changes dropped so far (the hook is slow)"
                    );
                }
            }
        }
    }

    /// The counters.
    pub fn status(&self) -> NotifyStatus {
        let c = &self.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NotifyStatus {
            exec_ok: l(&c.exec_ok),
            exec_failed: l(&c.exec_failed),
            exec_timed_out: l(&c.exec_timed_out),
            exec_dropped: l(&c.exec_dropped),
            fifo_lines: l(&c.fifo_lines),
            fifo_dropped: l(&c.fifo_dropped),
        }
    }
}

/// One line to the FIFO without blocking (`O_NONBLOCK`: no reader is `ENXIO`, a full pipe
/// `EAGAIN`); a line shorter than `PIPE_BUF` is written whole or not at all.
fn write_line(path: &Path, line: &str) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .is_ok()
}

/// The hook task: one run at a time, in order, each bounded by `TIMEOUT`.
async fn run_hooks(path: PathBuf, mut rx: mpsc::Receiver<Change>, counts: Arc<Counts>) {
    while let Some(c) = rx.recv().await {
        let word = state_word(c.state);
        let child = tokio::process::Command::new(&path)
            .args(["INSTANCE", &c.instance, word, &c.priority.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(ch) => ch,
            Err(e) => {
                counts.exec_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("--notify-exec {} {word}: {e}", path.display());
                continue;
            }
        };
        match tokio::time::timeout(TIMEOUT, child.wait()).await {
            Ok(Ok(st)) if st.success() => {
                counts.exec_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                counts.exec_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("--notify-exec {} {word}: {r:?}", path.display());
            }
            Err(_) => {
                let _ = child.kill().await;
                counts.exec_timed_out.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "--notify-exec {} {word}: still running after {TIMEOUT:?}, killed",
                    path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_arguments_use_keepalived_words() {
        assert_eq!(
            fifo_line("vrid51", State::Master, 150),
            "INSTANCE \"vrid51\" MASTER 150\n"
        );
        assert_eq!(state_word(State::Backup), "BACKUP");
        assert_eq!(state_word(State::Fault), "FAULT");
        assert_eq!(state_word(State::Initialize), "STOP");
    }

    #[tokio::test]
    async fn hooks_run_in_order_a_slow_one_never_blocks_and_overflow_is_counted() {
        let dir = std::env::temp_dir().join(format!("xvip-notify-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let hook = dir.join("hook");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$1 $2 $3 $4\" >> {}\nsleep 0.2\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).unwrap();
        let fifo = dir.join("fifo");
        let n = Notifier::start(Some(&hook), Some(&fifo)).unwrap();
        let t = std::time::Instant::now();
        for s in [State::Backup, State::Master, State::Fault] {
            n.changed("vrid51", s, 150);
        }
        for _ in 0..QUEUE + 4 {
            n.changed("vrid51", State::Backup, 1);
        }
        assert!(t.elapsed() < Duration::from_millis(100), "never waits");
        let st = n.status();
        assert!(st.exec_dropped >= 3, "{st:?}");
        assert_eq!(st.fifo_lines, 0, "no reader: dropped");
        assert_eq!(st.fifo_dropped, 3 + QUEUE as u64 + 4);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while n.status().exec_ok < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lines = std::fs::read_to_string(&out).unwrap();
        let first: Vec<&str> = lines.lines().take(3).collect();
        assert_eq!(
            first,
            [
                "INSTANCE vrid51 BACKUP 150",
                "INSTANCE vrid51 MASTER 150",
                "INSTANCE vrid51 FAULT 150"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
