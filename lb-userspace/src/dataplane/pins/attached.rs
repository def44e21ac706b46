//! What the kernel says is attached: a pinned link's program, type and interface
//! (`BPF_OBJ_GET`, `BPF_OBJ_GET_INFO_BY_FD`), and the XDP programs on an interface in each
//! mode (`RTM_GETLINK`'s `IFLA_XDP`).

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
