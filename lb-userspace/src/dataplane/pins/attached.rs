//! What the kernel says is attached: a pinned link's program, type and interface
//! (`BPF_OBJ_GET`, `BPF_OBJ_GET_INFO_BY_FD`), and the XDP programs on an interface in each
//! mode (`RTM_GETLINK`'s `IFLA_XDP`).

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

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

/// What the kernel says about a pinned program (`bpf_prog_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgState {
    pub id: u32,
    /// The kernel's tag (hash of the instructions, map references left out), as a number.
    pub tag: u64,
    /// The program's name (at most 15 bytes).
    pub name: String,
    /// The maps it uses.
    pub map_ids: Vec<u32>,
}

/// Most maps one program may use (`MAX_USED_MAPS`).
const MAX_USED_MAPS: usize = 64;

/// Reads the program pinned at `path` through its pin alone (`BPF_OBJ_GET`, then
/// `BPF_OBJ_GET_INFO_BY_FD` with room for its map ids): unlike aya's `ProgramInfo::map_ids`,
/// which reopens the program by id, this needs no `CAP_SYS_ADMIN`.
///
/// # Errors
/// Nothing pinned there, or not a program the kernel describes.
pub fn read_prog(path: &Path) -> io::Result<ProgState> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_prog_info: type, id, tag[8], jited/xlated lengths and pointers, load_time,
    // created_by_uid, nr_map_ids (byte 52), map_ids (56), name[16] (64).
    let mut ids = [0u32; MAX_USED_MAPS];
    let mut info = [0u64; 32];
    info[6] = (MAX_USED_MAPS as u64) << 32;
    info[7] = ids.as_mut_ptr() as u64;
    let mut attr = [0u64; 8];
    attr[0] =
        u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32) | (size_of_val(&info) as u64) << 32;
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let bytes: &[u8] = bytemuck::cast_slice(&info);
    let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let n = word(52) as usize;
    if n > MAX_USED_MAPS {
        return Err(io::Error::other(format!(
            "{n} maps, more than {MAX_USED_MAPS}"
        )));
    }
    let name = &bytes[64..80];
    let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(16)];
    Ok(ProgState {
        id: word(4),
        tag: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
        name: String::from_utf8_lossy(name).into_owned(),
        map_ids: ids[..n].to_vec(),
    })
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
/// The netlink request failed, or its answer took longer than
/// [`crate::net::netlink::NETLINK_TIMEOUT`].
pub fn attached_xdp(ifindex: u32) -> io::Result<Vec<Attached>> {
    let s = crate::net::netlink::socket()?;
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    crate::net::netlink::send(&s, RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST)?;
    crate::net::netlink::read_answer(&s, getlink_answer)
}

/// The XDP attachment in the answer to `RTM_GETLINK` (or the kernel's refusal); `None` for
/// any other message.
fn getlink_answer(p: NetlinkPayload<RouteNetlinkMessage>) -> Option<io::Result<Vec<Attached>>> {
    match p {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Some(Ok(xdp_of(&l))),
        NetlinkPayload::Error(e) => Some(crate::net::netlink::acked(&e).map(|()| Vec::new())),
        _ => None,
    }
}

/// The programs an `IFLA_XDP` attribute names: one, or with several modes attached
/// (`XDP_ATTACHED_MULTI`) one id per mode.
fn xdp_of(link: &LinkMessage) -> Vec<Attached> {
    let Some(xdp) = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    }) else {
        return Vec::new();
    };
    let (mut mode, mut one, mut drv, mut skb, mut hw) = (0u8, 0, 0, 0, 0);
    for x in xdp {
        match x {
            LinkXdp::Attached(a) => {
                mode = match a {
                    XdpAttached::None => 0,
                    XdpAttached::Driver => 1,
                    XdpAttached::SocketBuffer => 2,
                    XdpAttached::Hardware => 3,
                    XdpAttached::Multiple => 4,
                    XdpAttached::Other(m) => *m,
                    _ => 0,
                }
            }
            LinkXdp::ProgId(id) => one = *id,
            LinkXdp::DrvProgId(id) => drv = *id,
            LinkXdp::SkbProgId(id) => skb = *id,
            LinkXdp::HwProgId(id) => hw = *id,
            _ => {}
        }
    }
    let found: Vec<(u32, u8)> = match mode {
        0 => Vec::new(),
        4 => vec![(drv, 1), (skb, 2), (hw, 3)],
        m => vec![(one, m)],
    };
    found
        .into_iter()
        .filter(|(prog_id, _)| *prog_id != 0)
        .map(|(prog_id, mode)| Attached { prog_id, mode })
        .collect()
}

/// [`getlink_answer`] of one raw answer (the tests build them byte by byte).
#[cfg(test)]
fn parse_getlink(msg: &[u8]) -> io::Result<Vec<Attached>> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let m = netlink_packet_core::NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg)
        .map_err(|e| bad(e.to_string()))?;
    getlink_answer(m.payload).unwrap_or_else(|| Err(bad("not a link answer".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `IFLA_XDP` and its nested attributes (`linux/if_link.h`), for raw answers.
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const XDP_ATTACHED_MULTI: u8 = 4;

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
