//! A traffic generator that needs no `BPF_PROG_TEST_RUN`: TCP/IPv4 frames written by user
//! space and sent from an `AF_PACKET` socket bound to one interface, in `sendmmsg` batches,
//! with the same flow sequence as the XDP generator `lab_gen` (flow `n`: source
//! `src_base + (n % flows) / port_span`, port `first_port + (n % flows) % port_span`).
//!
//! Kernels may refuse the live-frames mode of `BPF_PROG_TEST_RUN` (`lab_gen`'s) outright:
//! the 6.18 lab kernel answers every live-frames run with `EPERM`, whatever the program
//! (a two-instruction `XDP_DROP` included), the namespace, the batch or the context, while
//! ordinary test runs work. This generator is slower but goes through the ordinary
//! transmit path, so it works wherever a raw socket does.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Result, bail};
use lb_common::checksum::{accumulate, checksum, fold};

use super::{
    frame::{ETH_LEN, IP_CHECK, IP_LEN, TCP_CHECK},
    xdp_lab::GenSpec,
};

/// Frames per `sendmmsg` call.
pub const RAW_BATCH: usize = 64;

const IP_SRC: usize = ETH_LEN + 12;
const TCP_SPORT: usize = ETH_LEN + IP_LEN;

/// An `AF_PACKET` socket bound to one interface of the calling thread's namespace, and the
/// flow sequence it sends.
pub struct RawGen {
    fd: OwnedFd,
    spec: GenSpec,
    template: Vec<u8>,
    bad_checksum: bool,
    /// Frames generated so far (the next flow's sequence number).
    seq: u64,
    bufs: Vec<Vec<u8>>,
}

impl RawGen {
    /// Opens a raw socket on `ifname` (in the calling thread's network namespace) that
    /// sends `template` (a TCP/IPv4 frame without IP options, as `TcpFrame::build` makes)
    /// rewritten for each flow of `spec`; every TCP checksum wrong with `bad_checksum`.
    pub fn open(
        ifname: &str,
        spec: GenSpec,
        template: Vec<u8>,
        bad_checksum: bool,
    ) -> Result<Self> {
        if template.len() < ETH_LEN + IP_LEN + 20 || template[ETH_LEN] != 0x45 {
            bail!(
                "not a TCP/IPv4 frame without options: {} bytes",
                template.len()
            );
        }
        let name = CString::new(ifname)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
        }
        // Protocol 0: this socket receives nothing.
        // SAFETY: plain syscall.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_ll is valid; bind with its size.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            if libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                bail!("binding to {ifname}: {}", std::io::Error::last_os_error());
            }
            // Best effort: room for several batches in flight.
            let sndbuf: libc::c_int = 4 << 20;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&raw const sndbuf).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        let bufs = vec![template.clone(); RAW_BATCH];
        Ok(Self {
            fd,
            spec,
            template,
            bad_checksum,
            seq: 0,
            bufs,
        })
    }

    /// Writes flow `n`'s source address and port into `f` (from the template), with both
    /// checksums recomputed.
    fn write_flow(&self, f: &mut [u8], n: u64) {
        let flows = u64::from(self.spec.flows.max(1));
        let span = u32::from(self.spec.port_span.max(1));
        let flow = (n % flows) as u32;
        let src = u32::from(self.spec.src_base).wrapping_add(flow / span);
        let sport = (u32::from(self.spec.first_port).wrapping_add(flow % span)) as u16;
        f.copy_from_slice(&self.template);
        f[IP_SRC..IP_SRC + 4].copy_from_slice(&src.to_be_bytes());
        f[TCP_SPORT..TCP_SPORT + 2].copy_from_slice(&sport.to_be_bytes());
        f[IP_CHECK..IP_CHECK + 2].fill(0);
        let ip_sum = checksum(&f[ETH_LEN..ETH_LEN + IP_LEN]);
        f[IP_CHECK..IP_CHECK + 2].copy_from_slice(&ip_sum.to_be_bytes());
        f[TCP_CHECK..TCP_CHECK + 2].fill(0);
        let tcp = &f[ETH_LEN + IP_LEN..];
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&f[IP_SRC..IP_SRC + 8]);
        pseudo[9] = lb_common::IPPROTO_TCP;
        pseudo[10..].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
        let mut sum = !fold(accumulate(accumulate(0, &pseudo), tcp));
        if self.bad_checksum {
            sum ^= 0x5a5a;
        }
        f[TCP_CHECK..TCP_CHECK + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// Sends the next `n` frames of the sequence (at most [`RAW_BATCH`]); returns how many
    /// the kernel took. A full transmit path (`ENOBUFS`, `EAGAIN`) takes none: those
    /// frames are skipped, not sent later, as a NIC's full ring would drop them.
    pub fn send(&mut self, n: usize) -> Result<usize> {
        let n = n.min(RAW_BATCH);
        let mut bufs = std::mem::take(&mut self.bufs);
        for (i, b) in bufs.iter_mut().take(n).enumerate() {
            self.write_flow(b, self.seq + i as u64);
        }
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .take(n)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: a zeroed mmsghdr is valid (no name, no control data).
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` points at `iov`, which points at `bufs`, all alive for the call.
        let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        self.bufs = bufs;
        // Sent or skipped, the sequence moves on (no flow is sent twice).
        self.seq += n as u64;
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => Ok(0),
                _ => Err(anyhow::Error::new(e).context("sendmmsg on the AF_PACKET socket")),
            };
        }
        Ok(r as usize)
    }
}
