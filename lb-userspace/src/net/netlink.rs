//! The one request/answer helper of xvip's `NETLINK_ROUTE` requests (routes in
//! `announce::route`, next hops and neighbours in `control::nexthop`): a socket whose reads
//! and writes time out, a request sent, and a bounded read of its answer or ACK.

use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How long one netlink request may wait for its answer: the kernel answers route and
/// neighbour requests in microseconds, but a long `rtnl_lock` hold elsewhere on the node
/// (a CNI tearing namespaces down) delays them, and a lost answer must not hang the caller.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// A connected `NETLINK_ROUTE` socket; its receives and sends time out after
/// [`NETLINK_TIMEOUT`] (the caller gets `EAGAIN` as an error).
///
/// # Errors
/// The socket could not be opened, configured, bound or connected.
pub fn socket() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    let tv = libc::timeval {
        tv_sec: NETLINK_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: a plain setsockopt on a descriptor `s` owns, with a value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                opt,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

/// Sends one request with `flags` (`NLM_F_*`).
///
/// # Errors
/// The send failed (or timed out).
pub fn send(s: &Socket, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    s.send(&buf, 0)?;
    Ok(())
}

/// Reads the answers to the request just sent until `pick` takes one (returns `Some`).
/// Bounded: the answer comes in the first message, a few stray ones are skipped; each read
/// times out after [`NETLINK_TIMEOUT`].
///
/// # Errors
/// A read failed or timed out, an answer did not parse, or no answer was picked.
pub fn read_answer<T>(
    s: &Socket,
    mut pick: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> Option<std::io::Result<T>>,
) -> std::io::Result<T> {
    let mut buf = vec![0u8; 16 << 10];
    for _ in 0..16 {
        let n = s.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n])
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let len = m.header.length as usize;
            if let Some(r) = pick(m.payload) {
                return r;
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
    Err(std::io::Error::other("no netlink answer"))
}

/// An acknowledgement (`Ok`) or the error the kernel answered.
///
/// # Errors
/// The kernel's error code, as an OS error.
pub fn acked(e: &netlink_packet_core::ErrorMessage) -> std::io::Result<()> {
    match e.code {
        None => Ok(()),
        Some(c) => Err(std::io::Error::from_raw_os_error(-c.get())),
    }
}

/// Reads answers until the ACK (or error) of the request just sent.
///
/// # Errors
/// As [`read_answer`], or the kernel's refusal.
pub fn ack(s: &Socket) -> std::io::Result<()> {
    read_answer(s, |p| match p {
        NetlinkPayload::Error(e) => Some(acked(&e)),
        _ => None,
    })
}
