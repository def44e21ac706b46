//! Small system-call helpers shared by the modules that talk to the kernel directly.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use tokio::io::unix::AsyncFd;

/// Kernel BTF: needed by BPF tooling (bpftool's typed map dumps), not by xvip's programs.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// bpffs' filesystem type (`BPF_FS_MAGIC`, include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The filesystem type (`statfs.f_type`) of `path`, if it can be read.
pub fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// Whether `path` is on bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    fs_magic(path) == Some(BPF_FS_MAGIC)
}

/// Mounts a filesystem of type `fstype` (also used as the source name) on `target`.
///
/// # Errors
/// The `mount(2)` error.
pub fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (src, target, fstype) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram into `buf` from a non-blocking socket; returns its length.
///
/// # Errors
/// The `recv(2)` error, other than "would block".
pub async fn recv(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        // SAFETY: reading into the caller's buffer of the given size.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
        guard.clear_ready();
    }
}
