//! TCP frames (IPv4 and IPv6) for the generator and the per-packet cost runs, with valid
//! checksums.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::checksum::{accumulate, checksum, fold};

/// TCP flag bits.
pub const TCP_SYN: u8 = 0x02;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;
/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length (no options).
pub const IP_LEN: usize = 20;
/// TCP header length (no options).
pub const TCP_LEN: usize = 20;
/// Offset of the IPv4 checksum in the frame.
pub const IP_CHECK: usize = ETH_LEN + 10;
/// Offset of the TCP checksum in the frame.
pub const TCP_CHECK: usize = ETH_LEN + IP_LEN + 16;

/// What goes into a frame.
#[derive(Clone, Copy, Debug)]
pub struct TcpFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub ttl: u8,
    /// Payload bytes (zeros).
    pub payload: usize,
}

impl TcpFrame {
    /// The frame's bytes, checksums filled in.
    pub fn build(&self) -> Vec<u8> {
        let tcp_total = TCP_LEN + self.payload;
        let mut f = Vec::with_capacity(ETH_LEN + IP_LEN + tcp_total);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let ip_start = f.len();
        f.push(0x45);
        f.push(0);
        f.extend_from_slice(&((IP_LEN + tcp_total) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
        f.push(self.ttl);
        f.push(lb_common::IPPROTO_TCP);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        let ip_sum = checksum(&f[ip_start..]);
        f[IP_CHECK..IP_CHECK + 2].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_start = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes()); // seq
        f.extend_from_slice(&1u32.to_be_bytes()); // ack
        f.push(((TCP_LEN / 4) as u8) << 4);
        f.push(self.flags);
        f.extend_from_slice(&u16::MAX.to_be_bytes()); // window
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        f.resize(tcp_start + tcp_total, 0);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, lb_common::IPPROTO_TCP]);
        pseudo.extend_from_slice(&(tcp_total as u16).to_be_bytes());
        let sum = accumulate(accumulate(0, &pseudo), &f[tcp_start..]);
        f[TCP_CHECK..TCP_CHECK + 2].copy_from_slice(&(!fold(sum)).to_be_bytes());
        f
    }
}

/// The frame a backend would answer `fwd` (a translated frame) with: addresses, ports and
/// MACs swapped, checksums still valid (a swap keeps every one's-complement sum).
pub fn reply_to(fwd: &[u8]) -> Vec<u8> {
    let mut r = fwd.to_vec();
    let (ip, tcp) = (ETH_LEN, ETH_LEN + IP_LEN);
    for (a, b, n) in [(0, 6, 6), (ip + 12, ip + 16, 4), (tcp, tcp + 2, 2)] {
        for i in 0..n {
            r.swap(a + i, b + i);
        }
    }
    r[ip + 8] = 64; // a fresh TTL, as the backend would send
    let mut h = r[ip..ip + IP_LEN].to_vec();
    h[10] = 0;
    h[11] = 0;
    r[IP_CHECK..IP_CHECK + 2].copy_from_slice(&checksum(&h).to_be_bytes());
    r
}

/// IPv6 header length (no extension headers).
pub const IP6_LEN: usize = 40;

/// What goes into an IPv6 frame.
#[derive(Clone, Copy, Debug)]
pub struct TcpFrame6 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub hop_limit: u8,
    /// Payload bytes (zeros).
    pub payload: usize,
}

impl TcpFrame6 {
    /// The frame's bytes, the TCP checksum (over the IPv6 pseudo-header) filled in.
    pub fn build(&self) -> Vec<u8> {
        let tcp_total = TCP_LEN + self.payload;
        let mut f = Vec::with_capacity(ETH_LEN + IP6_LEN + tcp_total);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp_total as u16).to_be_bytes());
        f.push(lb_common::IPPROTO_TCP);
        f.push(self.hop_limit);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        let tcp_start = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes()); // seq
        f.extend_from_slice(&1u32.to_be_bytes()); // ack
        f.push(((TCP_LEN / 4) as u8) << 4);
        f.push(self.flags);
        f.extend_from_slice(&u16::MAX.to_be_bytes()); // window
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        f.resize(tcp_start + tcp_total, 0);
        let sum = accumulate(pseudo6(&f), &f[tcp_start..]);
        let at = tcp_start + 16;
        f[at..at + 2].copy_from_slice(&(!fold(sum)).to_be_bytes());
        f
    }
}

/// The one's-complement sum of the IPv6 pseudo-header of the TCP frame `f`.
fn pseudo6(f: &[u8]) -> u32 {
    let ip = ETH_LEN;
    let len = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) as u32;
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&f[ip + 8..ip + 40]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, lb_common::IPPROTO_TCP]);
    accumulate(0, &p)
}

/// [`reply_to`] for an IPv6 frame: addresses, ports and MACs swapped (checksum still valid),
/// a fresh hop limit.
pub fn reply_to6(fwd: &[u8]) -> Vec<u8> {
    let mut r = fwd.to_vec();
    let (ip, tcp) = (ETH_LEN, ETH_LEN + IP6_LEN);
    for (a, b, n) in [(0, 6, 6), (ip + 8, ip + 24, 16), (tcp, tcp + 2, 2)] {
        for i in 0..n {
            r.swap(a + i, b + i);
        }
    }
    r[ip + 7] = 64;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> TcpFrame {
        TcpFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(203, 0, 113, 1),
            dst: Ipv4Addr::new(192, 0, 2, 100),
            sport: 10000,
            dport: 6443,
            flags: TCP_ACK,
            ttl: 64,
            payload: 10,
        }
    }

    #[test]
    fn built_frame_checksums_verify() {
        let f = frame().build();
        assert_eq!(f.len(), 64);
        assert_eq!(checksum(&f[ETH_LEN..ETH_LEN + IP_LEN]), 0);
        let mut pseudo = vec![203, 0, 113, 1, 192, 0, 2, 100, 0, 6, 0, 30];
        pseudo.extend_from_slice(&f[ETH_LEN + IP_LEN..]);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn built_v6_frame_checksum_verifies_and_its_reply_too() {
        let f = TcpFrame6 {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "2001:db8::7".parse().unwrap(),
            dst: "2001:db8::100".parse().unwrap(),
            sport: 10000,
            dport: 6443,
            flags: TCP_ACK,
            hop_limit: 64,
            payload: 10,
        }
        .build();
        assert_eq!(f.len(), ETH_LEN + IP6_LEN + TCP_LEN + 10);
        let tcp = ETH_LEN + IP6_LEN;
        assert_eq!(fold(accumulate(pseudo6(&f), &f[tcp..])), 0xffff);
        let r = reply_to6(&f);
        assert_eq!(
            &r[ETH_LEN + 8..ETH_LEN + 24],
            &f[ETH_LEN + 24..ETH_LEN + 40]
        );
        assert_eq!(fold(accumulate(pseudo6(&r), &r[tcp..])), 0xffff);
    }

    #[test]
    fn reply_swaps_endpoints() {
        let f = frame().build();
        let r = reply_to(&f);
        assert_eq!(&r[ETH_LEN + 12..ETH_LEN + 16], &[192, 0, 2, 100]);
        assert_eq!(&r[ETH_LEN + 16..ETH_LEN + 20], &[203, 0, 113, 1]);
        assert_eq!(checksum(&r[ETH_LEN..ETH_LEN + IP_LEN]), 0);
    }
}
