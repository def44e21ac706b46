//! Frames for the data-path tests: built with etherparse (which computes every length and
//! checksum itself) and checked with an RFC 1071 sum written here. Neither side uses
//! `lb_common::checksum`, so a bug there cannot hide in both the program and its test.

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder, TcpHeader, VlanId,
};

pub use etherparse::{
    Icmpv4Type,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
};

/// The lab's hosts: the client, the load balancer (its SNAT address), three backends.
pub const CLIENT: [u8; 4] = [192, 0, 2, 10];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0a];
pub const LB: [u8; 4] = [192, 0, 2, 2];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
/// A fullnat VIP (TCP 6443 and UDP 53) and a DNAT VIP (TCP 6443).
pub const VIP: [u8; 4] = [192, 0, 2, 100];
pub const VIP_DNAT: [u8; 4] = [192, 0, 2, 101];
pub const BACKENDS: [[u8; 4]; 3] = [[192, 0, 2, 11], [192, 0, 2, 12], [192, 0, 2, 13]];
pub const BACKEND_MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0x03, 0x0b],
    [0x02, 0, 0, 0, 0x04, 0x0c],
    [0x02, 0, 0, 0, 0x05, 0x0d],
];
/// A router between the load balancer and the backends (reports ICMP errors).
pub const ROUTER: [u8; 4] = [198, 51, 100, 1];
/// Somebody unrelated.
pub const OTHER: [u8; 4] = [203, 0, 113, 7];

/// TCP flag bits (the byte at offset 13 of the header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The transport part of a [`Pkt`].
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    /// `checksum: false` sends 0 (no checksum).
    Udp {
        sport: u16,
        dport: u16,
        checksum: bool,
    },
    Icmp(Icmpv4Type),
}

/// One IPv4 frame, described field by field.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub id: u16,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub options: Vec<u8>,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub frag_offset: u16,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Pkt {
    fn new(src: [u8; 4], dst: [u8; 4], l4: L4) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: LB_MAC,
            vlan: None,
            src,
            dst,
            ttl: 64,
            id: 0x1234,
            options: Vec::new(),
            dont_fragment: true,
            more_fragments: false,
            frag_offset: 0,
            l4,
            payload: Vec::new(),
        }
    }

    /// A TCP segment from `src` to `dst` (address, port) with `flags`, from the client's
    /// MAC to the load balancer's.
    pub fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: u8) -> Self {
        Self::new(
            src.0,
            dst.0,
            L4::Tcp {
                sport: src.1,
                dport: dst.1,
                seq: 1000,
                // Acknowledges a peer whose initial sequence number was the default 1000:
                // the handshake the data path requires as proof.
                ack: if flags & tcp_flags::ACK != 0 { 1001 } else { 0 },
                flags,
            },
        )
    }

    /// A UDP datagram (with a checksum).
    pub fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Self {
        Self::new(
            src.0,
            dst.0,
            L4::Udp {
                sport: src.1,
                dport: dst.1,
                checksum: true,
            },
        )
    }

    /// An ICMP message; the payload is the rest of the message (the quoted datagram of an
    /// error, the data of an echo).
    pub fn icmp(src: [u8; 4], dst: [u8; 4], t: Icmpv4Type) -> Self {
        Self::new(src, dst, L4::Icmp(t))
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }
    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }
    /// TCP acknowledgment number (1001 unless set, with the ACK flag; 0 without).
    pub fn ack(mut self, n: u32) -> Self {
        if let L4::Tcp { ack, .. } = &mut self.l4 {
            *ack = n;
        }
        self
    }

    /// TCP sequence number (1000 unless set).
    pub fn seq(mut self, n: u32) -> Self {
        if let L4::Tcp { seq, .. } = &mut self.l4 {
            *seq = n;
        }
        self
    }
    pub fn no_udp_checksum(mut self) -> Self {
        if let L4::Udp { checksum, .. } = &mut self.l4 {
            *checksum = false;
        }
        self
    }
    pub fn fragment(mut self, more: bool, offset: u16) -> Self {
        self.more_fragments = more;
        self.frag_offset = offset;
        self.dont_fragment = false;
        self
    }
    /// Source address and port (the port is ignored for ICMP).
    pub fn src(mut self, addr: [u8; 4], port: u16) -> Self {
        self.src = addr;
        match &mut self.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
            L4::Icmp(_) => {}
        }
        self
    }
    /// Destination address and port (the port is ignored for ICMP).
    pub fn dst(mut self, addr: [u8; 4], port: u16) -> Self {
        self.dst = addr;
        match &mut self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
            L4::Icmp(_) => {}
        }
        self
    }

    /// Offset of the IPv4 header in the frame.
    pub fn l3_offset(&self) -> usize {
        14 + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// Offset of the transport header in the frame.
    pub fn l4_offset(&self) -> usize {
        self.l3_offset() + 20 + self.options.len()
    }

    /// The whole frame.
    pub fn bytes(&self) -> Vec<u8> {
        let proto = match self.l4 {
            L4::Tcp { .. } => IpNumber::TCP,
            L4::Udp { .. } => IpNumber::UDP,
            L4::Icmp(_) => IpNumber::ICMP,
        };
        let mut ip = Ipv4Header::new(0, self.ttl, proto, self.src, self.dst).expect("header");
        ip.identification = self.id;
        ip.dont_fragment = self.dont_fragment;
        ip.more_fragments = self.more_fragments;
        ip.fragment_offset = IpFragOffset::try_new(self.frag_offset).expect("offset");
        ip.options = Ipv4Options::try_from(&self.options[..]).expect("options");
        let ip = IpHeaders::Ipv4(ip, Default::default());
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let step = match self.vlan {
            Some(v) => eth.single_vlan(VlanId::try_new(v).expect("vlan id")).ip(ip),
            None => eth.ip(ip),
        };
        let mut out = Vec::new();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            } => {
                let mut t = TcpHeader::new(*sport, *dport, *seq, 64240);
                t.acknowledgment_number = *ack;
                t.fin = flags & tcp_flags::FIN != 0;
                t.syn = flags & tcp_flags::SYN != 0;
                t.rst = flags & tcp_flags::RST != 0;
                t.psh = flags & tcp_flags::PSH != 0;
                t.ack = flags & tcp_flags::ACK != 0;
                step.tcp_header(t).write(&mut out, &self.payload)
            }
            L4::Udp { sport, dport, .. } => step.udp(*sport, *dport).write(&mut out, &self.payload),
            L4::Icmp(t) => step.icmpv4(t.clone()).write(&mut out, &self.payload),
        }
        .expect("etherparse writes the frame");
        if let L4::Udp {
            checksum: false, ..
        } = self.l4
        {
            let c = self.l4_offset() + 6;
            out[c..c + 2].copy_from_slice(&[0, 0]);
        }
        out
    }

    /// The IPv4 datagram alone (what an ICMP error quotes).
    pub fn datagram(&self) -> Vec<u8> {
        self.bytes()[self.l3_offset()..].to_vec()
    }
}

/// RFC 1071 sum of `data` (odd last byte padded), folded, not inverted.
pub fn ones_sum(data: &[u8], mut acc: u64) -> u16 {
    for c in data.chunks(2) {
        acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The data covered by a checksum sums to 0xffff when the checksum is right.
fn sums_ok(data: &[u8], acc: u64) -> bool {
    ones_sum(data, acc) == 0xffff
}

/// Checksum verdicts for one frame, recomputed from its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// The IPv4 header's.
    pub ipv4: bool,
    /// TCP or UDP (a UDP checksum of 0 counts as right), or ICMP.
    pub l4: bool,
    /// For ICMP errors: the quoted IPv4 header's (true when there is none).
    pub inner_ipv4: bool,
    /// For ICMP errors quoting a whole UDP datagram or at least a TCP header: whether the
    /// quoted L4 checksum is right for the quoted addresses (None when not in the quote).
    pub inner_l4: Option<bool>,
}

/// Recomputes every checksum of an Ethernet/[VLAN]/IPv4 frame. None when the frame is not
/// a well-formed IPv4 frame (too short, bad IHL or lengths).
pub fn checks(frame: &[u8]) -> Option<Checks> {
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et == 0x8100 || et == 0x88a8 {
        et = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        l3 = 18;
    }
    if et != 0x0800 {
        return None;
    }
    let ip = frame.get(l3..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if ip[0] >> 4 != 4 || ihl < 20 || tot < ihl || tot > ip.len() {
        return None;
    }
    let ip = &ip[..tot];
    let mut c = Checks {
        ipv4: sums_ok(&ip[..ihl], 0),
        inner_ipv4: true,
        ..Default::default()
    };
    let seg = &ip[ihl..];
    c.l4 = match ip[9] {
        6 | 17 => {
            if ip[9] == 17 && seg.len() >= 8 && seg[6..8] == [0, 0] {
                true
            } else {
                l4_ok(&ip[12..16], &ip[16..20], ip[9], seg)
            }
        }
        1 => {
            if seg.len() >= 8 && (seg[0] == 3 || seg[0] == 11 || seg[0] == 12) {
                let inner = &seg[8..];
                if inner.len() >= 20 {
                    let iihl = usize::from(inner[0] & 0x0f) * 4;
                    if iihl >= 20 && inner.len() >= iihl {
                        c.inner_ipv4 = sums_ok(&inner[..iihl], 0);
                        let itot = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
                        let iseg = &inner[iihl..];
                        c.inner_l4 = match inner[9] {
                            17 if iseg.len() >= 8 && itot == inner.len() => Some(
                                iseg[6..8] == [0, 0]
                                    || l4_ok(&inner[12..16], &inner[16..20], 17, iseg),
                            ),
                            6 if itot == inner.len() && iseg.len() >= 20 => {
                                Some(l4_ok(&inner[12..16], &inner[16..20], 6, iseg))
                            }
                            _ => None,
                        };
                    }
                }
            }
            sums_ok(seg, 0)
        }
        _ => true,
    };
    Some(c)
}

/// TCP/UDP checksum with the IPv4 pseudo-header.
fn l4_ok(src: &[u8], dst: &[u8], proto: u8, seg: &[u8]) -> bool {
    let mut acc = u64::from(ones_sum(src, 0)) + u64::from(ones_sum(dst, 0));
    acc += u64::from(proto) + seg.len() as u64;
    sums_ok(seg, acc)
}

/// Sets every checksum of a frame right (IPv4 header, TCP/UDP with pseudo-header, ICMP),
/// as far as the frame's own lengths allow; used to make mutated frames valid again.
pub fn fix_checksums(frame: &mut [u8]) {
    let mut l3 = 14;
    if frame.len() < 14 {
        return;
    }
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    if et == 0x8100 {
        l3 = 18;
    }
    if frame.len() < l3 + 20 {
        return;
    }
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
    if ihl < 20 || tot < ihl || l3 + tot > frame.len() {
        return;
    }
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = !ones_sum(&frame[l3..l3 + ihl], 0);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    let proto = frame[l3 + 9];
    let (s, e) = (l3 + ihl, l3 + tot);
    let off = match proto {
        6 if e - s >= 20 => 16,
        17 if e - s >= 8 => 6,
        1 if e - s >= 4 => 2,
        _ => return,
    };
    if proto == 17 && frame[s + 6..s + 8] == [0, 0] {
        return;
    }
    frame[s + off..s + off + 2].copy_from_slice(&[0, 0]);
    let acc = if proto == 1 {
        0
    } else {
        u64::from(ones_sum(&frame[l3 + 12..l3 + 20], 0)) + u64::from(proto) + (e - s) as u64
    };
    let mut c = !ones_sum(&frame[s..e], acc);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[s + off..s + off + 2].copy_from_slice(&c.to_be_bytes());
}
