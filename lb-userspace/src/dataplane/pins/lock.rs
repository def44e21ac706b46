//! One xvip per interface: an advisory lock file per interface under [`LOCK_ROOT`], held
//! until the process exits, waited for up to [`LOCK_WAIT`] while another xvip stops.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{PinError, netns_inode, pin_name};

/// Where the instance locks live: `<LOCK_ROOT>/<netns inode>/<if>.lock`, beside the
/// status records (`/run` is a tmpfs: nothing survives a reboot).
pub const LOCK_ROOT: &str = "/run/xvip";
/// How long `xvip run` waits for another xvip on its interface to finish stopping (a
/// graceful stop takes at most routed mode's 2 s of forwarding, or VRRP's handover grace
/// of at most 1 s, plus the detach).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The lock file of `interface` in namespace `netns` under `root`.
pub fn lock_path(root: &Path, netns: u64, interface: &str) -> PathBuf {
    root.join(netns.to_string())
        .join(format!("{}.lock", pin_name(interface)))
}

/// One xvip per interface: `flock`s on `<root>/<netns>/<if>.lock`, one per interface, held
/// until the process exits (the kernel drops a lock with its last descriptor, so a crash
/// never leaves a stale one). The files are never removed: unlinking a lock file lets a
/// waiter and a newcomer lock two different files.
#[derive(Debug)]
pub struct InstanceLock {
    _files: Vec<std::fs::File>,
}

impl InstanceLock {
    /// Keeps the locks until the process exits, whatever happens to this value's owner.
    pub fn hold_until_exit(self) {
        std::mem::forget(self);
    }
}

/// Takes the instance lock of every interface in `interfaces` (in name order, so two
/// runs never wait on each other crosswise), waiting up to `wait` for a stopping xvip to
/// release one, and writes this process's pid into each. Touches nothing else: called
/// before pins, maps or attachments. A lock file that cannot be created (a read-only
/// `/run`, e.g. a container started from an older manifest without the `/run/xvip`
/// mount) is one warning, not a failure: the lock is a guard, and refusing to start
/// would take the VIP down on an image upgrade.
///
/// # Errors
/// [`PinError::Running`] naming the holder's pid when a lock is still held after `wait`;
/// [`PinError::Netns`].
pub fn lock_interfaces(
    root: &Path,
    interfaces: &[&str],
    wait: std::time::Duration,
) -> Result<InstanceLock, PinError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    let netns = netns_inode()?;
    let mut names = interfaces.to_vec();
    names.sort_unstable();
    names.dedup();
    let deadline = std::time::Instant::now() + wait;
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = lock_path(root, netns, name);
        let unguarded = |e: io::Error| {
            log::warn!(
                "{name}: cannot take the instance lock {}: {e}; a second xvip on {name} is not refused (mount a writable /run/xvip)",
                path.display()
            );
        };
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
            });
        let mut file = match opened {
            Ok(f) => f,
            Err(e) => {
                unguarded(e);
                continue;
            }
        };
        let mut logged = false;
        let locked = loop {
            // SAFETY: flock(2) on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break true;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                unguarded(e);
                break false;
            }
            let mut pid = String::new();
            let _ = file.rewind();
            let _ = (&file).take(32).read_to_string(&mut pid);
            let pid = match pid.trim() {
                p if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.to_string(),
                _ => "unknown".into(),
            };
            if std::time::Instant::now() >= deadline {
                return Err(PinError::Running {
                    interface: name.to_string(),
                    pid,
                    path: path.display().to_string(),
                    waited: wait,
                });
            }
            if !logged {
                log::info!(
                    "{name}: another xvip (pid {pid}) holds {}; waiting up to {wait:?} for it to stop",
                    path.display()
                );
                logged = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if !locked {
            continue;
        }
        // The pid is for the message of the next one; the lock itself is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        files.push(file);
    }
    Ok(InstanceLock { _files: files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_an_interface_waits_then_names_the_holders_pid() {
        let root = std::env::temp_dir().join(format!("xvip-lock-{}", std::process::id()));
        let short = std::time::Duration::from_millis(150);
        let first = lock_interfaces(&root, &["eth0", "eth1"], short).unwrap();
        let t = std::time::Instant::now();
        let err = lock_interfaces(&root, &["eth1"], short).unwrap_err();
        assert!(t.elapsed() >= short, "did not wait");
        match &err {
            PinError::Running { interface, pid, .. } => {
                assert_eq!(interface, "eth1");
                assert_eq!(*pid, std::process::id().to_string());
            }
            e => panic!("{e}"),
        }
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        // Another interface is free; the held one is free again once the holder is gone.
        let other = lock_interfaces(&root, &["eth2"], short).unwrap();
        drop(first);
        let again = lock_interfaces(&root, &["eth0", "eth1"], short).unwrap();
        drop((other, again));
        let _ = std::fs::remove_dir_all(&root);
        // A lock root that cannot be created: a warning, and the start goes on.
        assert!(lock_interfaces(Path::new("/proc/xvip-nowhere"), &["eth0"], short).is_ok());
    }
}
