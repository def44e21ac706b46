//! Where an interface's pins live and whether pinned state belongs to it. Pins are keyed by
//! network namespace and interface name (`<pin-root>/<netns inode>/<ifname>`), and a pinned
//! XDP link is adopted only when the kernel says it is the one attached to this very
//! interface; a link whose interface is gone is dropped with its maps. With several
//! interfaces, the maps and every link are pinned in the first interface's directory (the
//! others' links as `link@IFNAME`).

use std::{
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use crate::net::iface::Interface;

/// File name of the pinned XDP link inside an interface's pin directory.
pub const LINK_PIN: &str = "link";
/// File name of the pinned tcx link (`--attach tc`) beside it.
pub const TC_LINK_PIN: &str = "tc";
/// `BPF_LINK_TYPE_XDP` in `bpf_link_info.type`.
const BPF_LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_TCX`: its `bpf_link_info` union starts with the ifindex, as XDP's does.
const BPF_LINK_TYPE_TCX: u32 = 11;

/// Where the program runs on the interface, once `--attach` is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// XDP.
    Xdp,
    /// tc ingress, beside whatever holds XDP.
    Tc,
}

/// Where `--attach auto` puts the program, from the XDP decision for the interface: tc
/// when a program that is not this xvip's holds XDP, else XDP. Pure.
pub fn auto_placement(decision: Decision) -> Placement {
    match decision {
        Decision::Foreign(_) => Placement::Tc,
        _ => Placement::Xdp,
    }
}
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `IFLA_XDP` and its nested attributes (`linux/if_link.h`).
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
/// With several modes attached (`XDP_ATTACHED_MULTI`), one id per mode.
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const XDP_ATTACHED_MULTI: u8 = 4;
/// Attribute type bits that are flags, not part of the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Errors about pinned state and programs already on the interface.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// Another XDP program is attached to the interface.
    #[error(
        "{interface} already has XDP program {name} (id {prog_id}) attached, not by this xvip: {how}, or run beside it with --attach auto (or tc)"
    )]
    ForeignProgram {
        interface: String,
        name: String,
        prog_id: u32,
        how: String,
    },
    /// The pinned link under this interface's key is attached to something else.
    #[error(
        "the pinned XDP link in {dir} is attached to ifindex {ifindex} (program id {prog_id}), not to {interface} (ifindex {expected}); `xvip detach --interface {interface}` removes those pins"
    )]
    Elsewhere {
        dir: String,
        interface: String,
        ifindex: u32,
        expected: u32,
        prog_id: u32,
    },
    /// The link pin exists but is not a readable XDP link.
    #[error(
        "{path} is not an XDP link xvip can use ({reason}); `xvip detach --interface {interface}` removes those pins"
    )]
    Unreadable {
        path: String,
        interface: String,
        reason: String,
    },
    /// The interface's XDP attachment could not be read.
    #[error("cannot tell which XDP program is on {interface}: {reason}")]
    Query { interface: String, reason: String },
    /// This process's network namespace could not be identified.
    #[error("cannot identify this network namespace (/proc/self/ns/net): {0}")]
    Netns(io::Error),
    /// Another xvip serves the interface and did not stop within the wait.
    #[error(
        "{interface} is served by another xvip (pid {pid}, lock {path}), which did not stop within {waited:?}: stop it first (one xvip per interface)"
    )]
    Running {
        interface: String,
        /// As written in the lock file by its holder; `unknown` while it had not written it.
        pid: String,
        path: String,
        waited: std::time::Duration,
    },
}

impl PinError {
    /// 2 for state the operator has to clear, 1 for a failed query.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Query { .. } | Self::Netns(_) => 1,
            _ => 2,
        }
    }
}

/// The inode of this process's network namespace (what `lsns -t net` shows).
///
/// # Errors
/// [`PinError::Netns`].
pub fn netns_inode() -> Result<u64, PinError> {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(PinError::Netns)
}

/// The directory under `root` holding the pins of `interface` in namespace `netns`.
pub fn pin_dir(root: &Path, netns: u64, interface: &str) -> PathBuf {
    root.join(netns.to_string()).join(pin_name(interface))
}

/// An interface name as a bpffs file name: bpffs refuses any name with a dot (reserved for
/// its own files), and a VLAN is typically `eth0.100`; `.` becomes `%2e` (and `%` itself
/// `%25`, so two names never meet). Names without either are unchanged.
pub fn pin_name(interface: &str) -> String {
    interface.replace('%', "%25").replace('.', "%2e")
}

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

/// What the kernel says about a pinned link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub id: u32,
    pub prog_id: u32,
    /// `bpf_link_info.type`.
    pub link_type: u32,
    /// The interface an XDP link is attached to; 0 once that interface is gone (defunct).
    pub ifindex: u32,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<i64> {
    // SAFETY: bpf(2) with an attribute buffer larger than every command used here.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Reads the link pinned at `path`; `None` when nothing is pinned there.
///
/// # Errors
/// The path exists but is not a link the kernel describes.
pub fn read_link(path: &Path) -> io::Result<Option<LinkState>> {
    if !path.exists() {
        return Ok(None);
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, pad, then the per-type union (xdp.ifindex).
    let mut info = [0u64; 32];
    let mut attr = [0u64; 8];
    attr[0] =
        u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32) | (size_of_val(&info) as u64) << 32;
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let words: &[u32] = bytemuck::cast_slice(&info);
    Ok(Some(LinkState {
        link_type: words[0],
        id: words[1],
        prog_id: words[2],
        ifindex: words[4],
    }))
}

/// An XDP program attached to an interface, as `RTM_GETLINK` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub prog_id: u32,
    /// `IFLA_XDP_ATTACHED`: 1 native, 2 generic, 3 offloaded, 4 several.
    pub mode: u8,
}

/// The XDP programs attached to interface `ifindex` of this namespace (one per mode).
///
/// # Errors
/// The netlink request failed, or its answer took more than a second.
pub fn attached_xdp(ifindex: u32) -> io::Result<Vec<Attached>> {
    // SAFETY: a plain netlink socket, owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd_raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // A lost answer must not hang the caller (routed mode asks every second).
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt(2) with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd_raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: sending our buffer on our socket (to the kernel: no address needed).
    if unsafe { libc::send(fd_raw, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: receiving into our buffer.
    let n = unsafe { libc::recv(fd_raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_getlink(&buf[..n as usize])
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    b.get(i..i + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]))
}

/// The payload of the first attribute of type `want` in a run of netlink attributes.
fn attrs(mut b: &[u8], want: u16) -> Option<&[u8]> {
    while b.len() >= 4 {
        let l = usize::from(u16_at(b, 0)?);
        let t = u16_at(b, 2)? & NLA_TYPE_MASK;
        if l < 4 || l > b.len() {
            return None;
        }
        if t == want {
            return Some(&b[4..l]);
        }
        b = &b[l.next_multiple_of(4).min(b.len())..];
    }
    None
}

/// The XDP attachment in one `RTM_NEWLINK` answer (or the error it carries).
fn parse_getlink(msg: &[u8]) -> io::Result<Vec<Attached>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short netlink answer");
    let len = msg
        .get(0..4)
        .map(|s| u32::from_ne_bytes(s.try_into().expect("4")) as usize)
        .ok_or_else(bad)?;
    let msg = msg.get(..len).ok_or_else(bad)?;
    let kind = u16_at(msg, 4).ok_or_else(bad)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let code = msg
            .get(16..20)
            .map(|s| i32::from_ne_bytes(s.try_into().expect("4")))
            .ok_or_else(bad)?;
        return Err(io::Error::from_raw_os_error(-code));
    }
    let Some(xdp) = msg.get(32..).and_then(|b| attrs(b, IFLA_XDP)) else {
        return Ok(Vec::new());
    };
    let mode = attrs(xdp, IFLA_XDP_ATTACHED)
        .and_then(|v| v.first().copied())
        .unwrap_or(0);
    let id = |kind: u16| {
        attrs(xdp, kind)
            .and_then(|v| v.get(..4))
            .map(|v| u32::from_ne_bytes(v.try_into().expect("4")))
            .unwrap_or(0)
    };
    let found: Vec<(u32, u8)> = match mode {
        0 => Vec::new(),
        XDP_ATTACHED_MULTI => vec![
            (id(IFLA_XDP_DRV_PROG_ID), 1),
            (id(IFLA_XDP_SKB_PROG_ID), 2),
            (id(IFLA_XDP_HW_PROG_ID), 3),
        ],
        m => vec![(id(IFLA_XDP_PROG_ID), m)],
    };
    Ok(found
        .into_iter()
        .filter(|(prog_id, _)| *prog_id != 0)
        .map(|(prog_id, mode)| Attached { prog_id, mode })
        .collect())
}

/// What to do with the pins found under this interface's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing attached, no link pinned: attach afresh (pinned maps, if any, are adopted).
    Fresh,
    /// The pinned link is the one on this interface: update it in place.
    Adopt,
    /// The pinned link's interface is gone: drop these pins, then decide again.
    DropStale,
    /// A program that is not ours is attached: refuse.
    Foreign(Attached),
    /// The pinned link is attached to another interface: refuse.
    Elsewhere(LinkState),
}

/// Decides from the pinned link (if any), the interface's index and what the kernel says
/// is attached to it (one program per mode). Pure, so every case is tested.
pub fn decide(link: Option<LinkState>, ifindex: u32, attached: &[Attached]) -> Decision {
    let ours = |a: &Attached| link.is_some_and(|l| l.prog_id == a.prog_id);
    if let Some(other) = attached.iter().find(|a| !ours(a))
        && link.is_none_or(|l| l.ifindex != 0)
    {
        // Even next to our own link (in another mode): refuse rather than run half-shadowed.
        return match link {
            Some(l) if !attached.iter().any(ours) => Decision::Elsewhere(l),
            _ => Decision::Foreign(*other),
        };
    }
    match link {
        None => Decision::Fresh,
        Some(l) if l.ifindex == 0 => Decision::DropStale,
        Some(l) if l.ifindex == ifindex && attached.iter().any(ours) => Decision::Adopt,
        Some(l) => Decision::Elsewhere(l),
    }
}

fn foreign(interface: &str, a: Attached) -> PinError {
    let name = program_name(a.prog_id);
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|l| l.program_id() == a.prog_id)
        .map(|l| l.id());
    PinError::ForeignProgram {
        interface: interface.into(),
        name,
        prog_id: a.prog_id,
        how: removal_hint(interface, a.mode, link),
    }
}

/// How an operator removes a program attached in `mode`, through BPF link `link` if any.
pub fn removal_hint(interface: &str, mode: u8, link: Option<u32>) -> String {
    match link {
        Some(id) => format!(
            "it is held by BPF link {id} (`bpftool link show id {id}`): stop the process that owns it or remove its pin"
        ),
        None => {
            let kind = match mode {
                1 => "xdpdrv",
                2 => "xdpgeneric",
                3 => "xdpoffload",
                _ => "xdp",
            };
            format!("remove it with `ip link set dev {interface} {kind} off`")
        }
    }
}

/// Removes a pin directory (the link pin first: that detaches its program) and its
/// namespace directory when that is left empty. Returns how many pins went.
///
/// # Errors
/// The directory cannot be read.
pub fn remove_dir(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    let link = dir.join(LINK_PIN);
    if std::fs::remove_file(&link).is_ok() {
        n += 1;
    }
    for entry in std::fs::read_dir(dir)? {
        if std::fs::remove_file(entry?.path()).is_ok() {
            n += 1;
        }
    }
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(n)
}

/// Pin directories under `root` whose pinned XDP link is defunct (its interface, and maybe
/// its namespace, is gone): the new layout's `<ns>/<if>` and the older `<if>`.
pub fn defunct_dirs(root: &Path) -> Vec<PathBuf> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|it| {
                it.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let defunct = |d: &Path| matches!(read_link(&d.join(LINK_PIN)), Ok(Some(l)) if l.link_type == BPF_LINK_TYPE_XDP && l.ifindex == 0);
    let mut out = Vec::new();
    for d in subdirs(root) {
        if d.join(LINK_PIN).exists() {
            // The layout before pins were keyed by namespace: `<root>/<if>`.
            if defunct(&d) {
                out.push(d);
            }
        } else {
            out.extend(subdirs(&d).into_iter().filter(|d| defunct(d)));
        }
    }
    out
}

/// Finds (and prepares) the pin directory of `iface` under `root`: drops pins whose
/// interface is gone, moves an older xvip's `<root>/<if>` pins when their link is attached to
/// this interface, and refuses when another program or another interface's link is in the
/// way. Changes nothing when it refuses.
///
/// # Errors
/// [`PinError`]: a foreign program, a link attached elsewhere, or an unreadable pin.
pub fn claim(
    root: &Path,
    iface: &Interface,
    attach: crate::config::Attach,
) -> Result<(PathBuf, Placement), PinError> {
    let dir = pin_dir(root, netns_inode()?, &iface.name);
    let attached = attached_xdp(iface.index).map_err(|e| PinError::Query {
        interface: iface.name.clone(),
        reason: e.to_string(),
    })?;
    let read = |d: &Path| {
        let unreadable = |reason: String| PinError::Unreadable {
            path: d.join(LINK_PIN).display().to_string(),
            interface: iface.name.clone(),
            reason,
        };
        match read_link(&d.join(LINK_PIN)) {
            Ok(Some(l)) if l.link_type != BPF_LINK_TYPE_XDP => {
                Err(unreadable(format!("a link of type {}", l.link_type)))
            }
            Ok(l) => Ok(l),
            Err(e) => Err(unreadable(e.to_string())),
        }
    };
    let legacy = root.join(&iface.name);
    if !dir.exists()
        && let Ok(Some(l)) = read_link(&legacy.join(LINK_PIN))
        && decide(Some(l), iface.index, &attached) == Decision::Adopt
    {
        if let Some(parent) = dir.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match std::fs::rename(&legacy, &dir) {
            Ok(()) => log::info!(
                "moved an earlier xvip's pins for {} from {} to {}",
                iface.name,
                legacy.display(),
                dir.display()
            ),
            Err(e) => log::warn!("cannot move {} to {}: {e}", legacy.display(), dir.display()),
        }
    }
    let link = read(&dir)?;
    let placement = match attach {
        crate::config::Attach::Xdp => Placement::Xdp,
        crate::config::Attach::Tc => Placement::Tc,
        crate::config::Attach::Auto => {
            let decision = decide(link, iface.index, &attached);
            let p = auto_placement(decision);
            match decision {
                Decision::Foreign(a) => log::info!(
                    "{}: --attach auto: XDP program {} (id {}) holds the interface, not this xvip: attaching at tc ingress beside it",
                    iface.name,
                    program_name(a.prog_id),
                    a.prog_id
                ),
                _ => log::info!(
                    "{}: --attach auto: no other XDP program on the interface: attaching in XDP",
                    iface.name
                ),
            }
            p
        }
    };
    // At tc, a program holding XDP is a neighbour, not in the way.
    let decide = |link: Option<LinkState>| match decide(link, iface.index, &attached) {
        Decision::Foreign(_) if placement == Placement::Tc => Decision::Fresh,
        d => d,
    };
    let mut decision = decide(link);
    if decision == Decision::DropStale {
        let n = remove_dir(&dir).unwrap_or(0);
        log::warn!(
            "{}: the pinned XDP link in {} is defunct (its interface is gone): removed its {n} pins and their tracked connections, attaching afresh",
            iface.name,
            dir.display()
        );
        decision = decide(None);
    }
    if placement == Placement::Tc {
        claim_tc(&dir, iface)?;
    }
    match decision {
        Decision::Fresh | Decision::Adopt => {}
        Decision::Foreign(a) => return Err(foreign(&iface.name, a)),
        Decision::Elsewhere(l) => {
            return Err(PinError::Elsewhere {
                dir: dir.display().to_string(),
                interface: iface.name.clone(),
                ifindex: l.ifindex,
                expected: iface.index,
                prog_id: l.prog_id,
            });
        }
        Decision::DropStale => unreachable!("decided again without a link"),
    }
    for stale in defunct_dirs(root).into_iter().filter(|d| *d != dir) {
        if let Ok(n) = remove_dir(&stale) {
            log::info!(
                "removed {n} pins in {}: their XDP link's interface is gone",
                stale.display()
            );
        }
    }
    Ok((dir, placement))
}

/// The name the kernel gives program `prog_id`, or "(unnamed)".
fn program_name(prog_id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .and_then(|p| p.name_as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "(unnamed)".into())
}

/// The pinned tcx link in `dir`, if any: adopted when it is on this interface, dropped
/// when its interface is gone, refused when it is on another one.
fn claim_tc(dir: &Path, iface: &Interface) -> Result<(), PinError> {
    let path = dir.join(TC_LINK_PIN);
    let unreadable = |reason: String| PinError::Unreadable {
        path: path.display().to_string(),
        interface: iface.name.clone(),
        reason,
    };
    match read_link(&path) {
        Ok(None) => Ok(()),
        Ok(Some(l)) if l.link_type != BPF_LINK_TYPE_TCX => {
            Err(unreadable(format!("a link of type {}", l.link_type)))
        }
        Ok(Some(l)) if l.ifindex == 0 => {
            let _ = std::fs::remove_file(&path);
            log::warn!(
                "{}: the pinned tc link {} is defunct (its interface is gone): removed, attaching afresh",
                iface.name,
                path.display()
            );
            Ok(())
        }
        Ok(Some(l)) if l.ifindex == iface.index => Ok(()),
        Ok(Some(l)) => Err(PinError::Elsewhere {
            dir: dir.display().to_string(),
            interface: iface.name.clone(),
            ifindex: l.ifindex,
            expected: iface.index,
            prog_id: l.prog_id,
        }),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// File name of the pinned XDP link of a further interface (`--interface` repeated): kept in
/// the first interface's directory with the maps they share, so one `xvip detach --interface
/// FIRST` removes them all and a restart adopts each.
pub fn extra_link_pin(interface: &str) -> String {
    format!("{LINK_PIN}@{}", pin_name(interface))
}

/// [`claim`] for a further interface whose link pin lives in the first interface's
/// directory `dir`: adopts our link attached to it, drops a defunct one, refuses a foreign
/// program or a link attached elsewhere. Changes nothing when it refuses.
///
/// # Errors
/// As [`claim`].
pub fn claim_extra(dir: &Path, iface: &Interface) -> Result<(), PinError> {
    let path = dir.join(extra_link_pin(&iface.name));
    let attached = attached_xdp(iface.index).map_err(|e| PinError::Query {
        interface: iface.name.clone(),
        reason: e.to_string(),
    })?;
    let link = match read_link(&path) {
        Ok(Some(l)) if l.link_type != BPF_LINK_TYPE_XDP => {
            return Err(PinError::Unreadable {
                path: path.display().to_string(),
                interface: iface.name.clone(),
                reason: format!("a link of type {}", l.link_type),
            });
        }
        Ok(l) => l,
        Err(e) => {
            return Err(PinError::Unreadable {
                path: path.display().to_string(),
                interface: iface.name.clone(),
                reason: e.to_string(),
            });
        }
    };
    let mut decision = decide(link, iface.index, &attached);
    if decision == Decision::DropStale {
        let _ = std::fs::remove_file(&path);
        log::warn!(
            "{}: the pinned XDP link {} is defunct (its interface is gone): removed, attaching afresh",
            iface.name,
            path.display()
        );
        decision = decide(None, iface.index, &attached);
    }
    match decision {
        Decision::Fresh | Decision::Adopt => Ok(()),
        Decision::Foreign(a) => Err(foreign(&iface.name, a)),
        Decision::Elsewhere(l) => Err(PinError::Elsewhere {
            dir: dir.display().to_string(),
            interface: iface.name.clone(),
            ifindex: l.ifindex,
            expected: iface.index,
            prog_id: l.prog_id,
        }),
        Decision::DropStale => unreachable!("decided again without a link"),
    }
}

/// Unpins (and so detaches) the further interfaces' links in `dir` that are not in `keep`:
/// an interface dropped from `--interface` since the last run. Returns their names.
pub fn drop_unlisted_links(dir: &Path, keep: &[&str]) -> Vec<String> {
    let prefix = format!("{LINK_PIN}@");
    let mut dropped = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ifname) = name.strip_prefix(&prefix)
            && !keep.iter().any(|k| extra_link_pin(k) == name)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            dropped.push(ifname.to_string());
        }
    }
    dropped
}

/// The pin directories `xvip detach --interface IF` removes in this namespace: this
/// namespace's `<ns>/<if>`, and an older xvip's `<if>` when its link is attached to this
/// namespace's interface of that name or is defunct.
///
/// # Errors
/// [`PinError::Netns`].
pub fn detach_dirs(root: &Path, interface: &str) -> Result<Vec<PathBuf>, PinError> {
    let mut out = Vec::new();
    let dir = pin_dir(root, netns_inode()?, interface);
    if dir.is_dir() {
        out.push(dir);
    }
    let legacy = root.join(interface);
    if let Ok(Some(l)) = read_link(&legacy.join(LINK_PIN)) {
        let ours = Interface::lookup(interface).ok().is_some_and(|i| {
            attached_xdp(i.index).is_ok_and(|a| a.iter().any(|a| a.prog_id == l.prog_id))
                && l.ifindex == i.index
        });
        if ours || l.ifindex == 0 {
            out.push(legacy);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn auto_goes_to_tc_only_beside_a_foreign_program() {
        let a = Attached {
            prog_id: 42,
            mode: 1,
        };
        assert_eq!(auto_placement(decide(None, 3, &[a])), Placement::Tc);
        assert_eq!(auto_placement(decide(None, 3, &[])), Placement::Xdp);
        let ours = LinkState {
            id: 7,
            prog_id: 42,
            link_type: BPF_LINK_TYPE_XDP,
            ifindex: 3,
        };
        // Our own pinned program (a restart): XDP again.
        assert_eq!(auto_placement(decide(Some(ours), 3, &[a])), Placement::Xdp);
    }

    use super::*;

    fn link(ifindex: u32, prog_id: u32) -> Option<LinkState> {
        Some(LinkState {
            id: 9,
            prog_id,
            link_type: BPF_LINK_TYPE_XDP,
            ifindex,
        })
    }
    fn att(prog_id: u32) -> Vec<Attached> {
        vec![Attached { prog_id, mode: 2 }]
    }

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

    #[test]
    fn further_interfaces_links_have_names_bpffs_accepts() {
        assert_eq!(extra_link_pin("eth1"), "link@eth1");
        assert_eq!(extra_link_pin("eth0.100"), "link@eth0%2e100");
        assert_eq!(extra_link_pin("a%b"), "link@a%25b");
        assert!(!extra_link_pin("bond0.7.3").contains('.'));
    }

    #[test]
    fn a_vlan_interfaces_pin_directory_has_no_dot() {
        let d = pin_dir(Path::new("/sys/fs/bpf/xvip"), 7, "eth0.100");
        assert_eq!(d, Path::new("/sys/fs/bpf/xvip/7/eth0%2e100"));
        assert_eq!(pin_dir(Path::new("/r"), 7, "eth0"), Path::new("/r/7/eth0"));
        assert_ne!(pin_name("a.b"), pin_name("a%2eb"));
    }

    #[test]
    fn only_the_link_attached_to_this_interface_is_adopted() {
        assert_eq!(decide(link(3, 40), 3, &att(40)), Decision::Adopt);
        // Same ifindex in another namespace: our interface runs another program.
        assert!(matches!(
            decide(link(3, 40), 3, &att(41)),
            Decision::Elsewhere(_)
        ));
        assert!(matches!(
            decide(link(3, 40), 3, &[]),
            Decision::Elsewhere(_)
        ));
        assert!(matches!(
            decide(link(5, 40), 3, &att(40)),
            Decision::Elsewhere(_)
        ));
    }

    #[test]
    fn a_defunct_link_is_dropped_whatever_is_attached() {
        assert_eq!(decide(link(0, 40), 3, &[]), Decision::DropStale);
        assert_eq!(decide(link(0, 40), 3, &att(7)), Decision::DropStale);
    }

    #[test]
    fn without_a_pinned_link_any_attached_program_is_foreign() {
        assert_eq!(decide(None, 3, &[]), Decision::Fresh);
        assert_eq!(decide(None, 3, &att(7)), Decision::Foreign(att(7)[0]));
    }

    #[test]
    fn a_foreign_program_in_another_mode_next_to_our_link_is_refused() {
        let both = [
            Attached {
                prog_id: 40,
                mode: 2,
            },
            Attached {
                prog_id: 7,
                mode: 1,
            },
        ];
        assert_eq!(decide(link(3, 40), 3, &both), Decision::Foreign(both[1]));
        assert_eq!(decide(link(3, 40), 3, &both[..1]), Decision::Adopt);
    }

    #[test]
    fn the_removal_hint_names_the_mode_or_the_link() {
        assert!(removal_hint("eth0", 2, None).contains("ip link set dev eth0 xdpgeneric off"));
        assert!(removal_hint("eth0", 1, None).contains("xdpdrv off"));
        assert!(removal_hint("eth0", 2, Some(12)).contains("bpftool link show id 12"));
    }

    #[test]
    fn pins_are_keyed_by_namespace_then_interface() {
        assert_eq!(
            pin_dir(Path::new("/sys/fs/bpf/xvip"), 4026531840, "eth0"),
            PathBuf::from("/sys/fs/bpf/xvip/4026531840/eth0")
        );
    }

    fn nlattr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    fn newlink(attrs: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 32];
        m.extend_from_slice(attrs);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        m
    }

    #[test]
    fn the_netlink_answer_gives_the_attached_program() {
        let mut xdp = nlattr(IFLA_XDP_ATTACHED, &[2]);
        xdp.extend(nlattr(IFLA_XDP_PROG_ID, &77u32.to_ne_bytes()));
        let mut attrs = nlattr(3, b"eth0\0");
        attrs.extend(nlattr(IFLA_XDP | 0x8000, &xdp));
        assert_eq!(
            parse_getlink(&newlink(&attrs)).unwrap(),
            [Attached {
                prog_id: 77,
                mode: 2
            }]
        );
        let none = nlattr(IFLA_XDP, &nlattr(IFLA_XDP_ATTACHED, &[0]));
        assert_eq!(parse_getlink(&newlink(&none)).unwrap(), []);
        assert_eq!(parse_getlink(&newlink(&[])).unwrap(), []);
        let mut multi = nlattr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_MULTI]);
        multi.extend(nlattr(IFLA_XDP_DRV_PROG_ID, &5u32.to_ne_bytes()));
        multi.extend(nlattr(IFLA_XDP_SKB_PROG_ID, &6u32.to_ne_bytes()));
        assert_eq!(
            parse_getlink(&newlink(&nlattr(IFLA_XDP, &multi))).unwrap(),
            [
                Attached {
                    prog_id: 5,
                    mode: 1
                },
                Attached {
                    prog_id: 6,
                    mode: 2
                }
            ]
        );
        // Truncated and garbage answers are errors or nothing, never a panic.
        let full = newlink(&attrs);
        for cut in 0..full.len() {
            let _ = parse_getlink(&full[..cut]);
        }
    }
}
