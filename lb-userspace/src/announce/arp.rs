//! ARP for the VIPs from a packet socket: answering requests for the VIPs (the VIPs are not
//! interface addresses), and gratuitous ARP when serving starts and at a refresh interval.
//! The backends' next hops are not resolved here: the kernel does it (`control::nexthop`).

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::{
    net::iface::{IfaceError, Interface},
    wire::arp::{ARP_REPLY, Arp, BROADCAST, ETH_P_ARP, FRAME_LEN, MARK_LEN, Mark},
};

/// The ARP sockets' answers (all attached interfaces together).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ArpStatus {
    /// Requests for our addresses answered.
    pub answered: u64,
    /// Requests for our addresses not answered: over the requester's or the segment's
    /// budget.
    pub rate_limited: u64,
    /// Unicast replies telling a known client the new owner after a takeover
    /// (`announce::clients`).
    #[serde(default)]
    pub takeover_notices: u64,
}

/// Errors about the interface or the socket.
#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    /// The interface is missing or unusable.
    #[error(transparent)]
    Interface(#[from] IfaceError),
    /// A socket call failed.
    #[error("ARP socket on {name}: {source}")]
    Socket { name: String, source: io::Error },
}

/// A packet socket for ARP on one interface.
pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    /// Bounds the replies requests can cause (`announce::limit`).
    limit: Mutex<crate::announce::limit::ReplyLimiter>,
    answered: AtomicU64,
    rate_limited: AtomicU64,
    send_errors: AtomicU64,
    takeover_notices: AtomicU64,
    /// The mark sent after every packet (`announce::claims`).
    mark: Mutex<Option<Mark>>,
}

/// The shortest Ethernet frame (without its FCS): a marked frame is padded to it.
const MIN_FRAME: usize = 60;

impl ArpSocket {
    /// Opens and binds the socket (needs CAP_NET_RAW).
    ///
    /// # Errors
    /// [`ArpError::Socket`].
    pub fn open(iface: &Interface) -> Result<Self, ArpError> {
        let err = |source| ArpError::Socket {
            name: iface.name.clone(),
            source,
        };
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                (ETH_P_ARP.to_be()) as i32,
            )
        };
        if raw < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = iface.index as i32;
        // SAFETY: binding with a correctly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: we own `fd` and hand it over; it is deregistered when `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| err(e.into()))?;
        Ok(Self {
            fd,
            ifindex: iface.index,
            limit: Mutex::default(),
            answered: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            takeover_notices: AtomicU64::new(0),
            mark: Mutex::new(None),
        })
    }

    /// The mark this node's frames carry from now on (`None`: none; without VRRP).
    pub fn set_mark(&self, mark: Option<Mark>) {
        if let Ok(mut m) = self.mark.lock() {
            *m = mark;
        }
    }

    /// Sends `reply` (an answer to a request from `requester`) unless the requester or the
    /// segment has spent its budget (`announce::limit`); returns whether it went out.
    /// Refused replies are counted, never logged; failed sends are counted and logged at
    /// the 1st, 2nd, 4th, 8th ... failure.
    pub fn answer(&self, reply: &Arp, eth_dst: [u8; 6], requester: Ipv4Addr) -> bool {
        let ok = self
            .limit
            .lock()
            .map(|mut l| l.allow(Instant::now(), requester))
            .unwrap_or(false);
        if !ok {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.send(reply, eth_dst) {
            Ok(()) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = self.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!("ARP reply: {e} ({n} failed so far)");
                }
                false
            }
        }
    }

    /// Requests answered, and answers refused by the rate limit.
    pub fn status(&self) -> ArpStatus {
        ArpStatus {
            answered: self.answered.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            takeover_notices: self.takeover_notices.load(Ordering::Relaxed),
        }
    }

    /// Receives the next ARP packet (other frames are skipped).
    pub async fn recv(&self) -> io::Result<Arp> {
        let mut buf = [0u8; 256];
        loop {
            let n = crate::net::sys::recv(&self.fd, &mut buf).await?;
            if let Some(a) = Arp::parse(&buf[..n]) {
                return Ok(a);
            }
        }
    }

    /// Sends one ARP packet to `eth_dst`.
    pub fn send(&self, arp: &Arp, eth_dst: [u8; 6]) -> io::Result<()> {
        let mut frame = [0u8; MIN_FRAME];
        frame[..FRAME_LEN].copy_from_slice(&arp.to_frame(eth_dst));
        let mark = self.mark.lock().ok().and_then(|m| *m);
        let frame = match mark {
            Some(m) => {
                frame[FRAME_LEN..FRAME_LEN + MARK_LEN].copy_from_slice(&m.encode());
                &frame[..]
            }
            None => &frame[..FRAME_LEN],
        };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&eth_dst);
        // SAFETY: sending a local buffer to a correctly sized address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Tells `client` (its MAC and address) that `vip` is at `our_mac` now: a unicast
    /// reply, as if it had asked (`announce::clients`). Counted; returns whether it went out.
    pub fn tell(&self, our_mac: [u8; 6], vip: Ipv4Addr, mac: [u8; 6], addr: Ipv4Addr) -> bool {
        let reply = Arp {
            op: ARP_REPLY,
            sender_mac: our_mac,
            sender_ip: vip,
            target_mac: mac,
            target_ip: addr,
            mark: None,
        };
        let ok = self.send(&reply, mac).is_ok();
        if ok {
            self.takeover_notices.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Sends gratuitous ARP (request and reply) for each VIP.
    pub fn announce(&self, our_mac: [u8; 6], vips: &[Ipv4Addr]) -> io::Result<()> {
        for vip in vips {
            for a in Arp::gratuitous(our_mac, *vip) {
                self.send(&a, BROADCAST)?;
            }
        }
        Ok(())
    }
}
