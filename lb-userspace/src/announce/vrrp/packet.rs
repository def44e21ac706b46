//! VRRPv3 advertisements for IPv4 (RFC 5798 section 5): the checksum, the encoder, and a
//! checked decoder that turns untrusted bytes into an [`Advert`] or a [`DropReason`].

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTO: u8 = 112;
/// The IPv4 multicast group of VRRP (RFC 5798 section 5.1.1.2).
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL a sender may use and a receiver accepts (section 5.1.1.3).
pub const TTL: u8 = 255;
/// VRRP version implemented here.
pub const VERSION: u8 = 3;
/// The only message type: ADVERTISEMENT.
pub const TYPE_ADVERT: u8 = 1;
/// Largest Max Advertise Interval: 12 bits of centiseconds (40.95 s).
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;
/// Fixed part of the VRRP message, before the addresses.
pub const HEADER_LEN: usize = field::ADDRS;
/// Largest number of IPv4 addresses in one advertisement (an 8-bit count).
pub const MAX_ADDRS: usize = u8::MAX as usize;

mod field {
    //! Byte offsets in the VRRP message (RFC 5798 section 5.1).
    use std::ops::Range;
    /// Version (high nibble) and type (low nibble).
    pub const VERS_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// 4 reserved bits, then 12 bits of Max Adver Int in centiseconds.
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRS: usize = 8;
}

mod ip {
    //! Byte offsets in the IPv4 header in front of what a raw socket receives.
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const MIN_LEN: usize = 20;
}

/// Why a received packet was not taken into account. Every reason has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Not a whole IPv4 packet, or its lengths disagree.
    Truncated,
    /// Not IP protocol 112 (should not reach a raw socket for 112).
    NotVrrp,
    /// TTL other than 255: the packet was routed, so it is not from this segment.
    Ttl,
    /// VRRP version other than 3.
    Version,
    /// Message type other than ADVERTISEMENT.
    Type,
    /// The VRRP length does not match the address count.
    Length,
    /// The checksum over the pseudo-header and the message is wrong.
    Checksum,
    /// Another virtual router's advertisement.
    Vrid,
    /// A Max Advertise Interval of 0 (no timer can be derived from it).
    Interval,
    /// Unicast peers are configured and the sender is not one of them.
    NotPeer,
    /// Our own advertisement (looped back).
    Own,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        Self::Truncated,
        Self::NotVrrp,
        Self::Ttl,
        Self::Version,
        Self::Type,
        Self::Length,
        Self::Checksum,
        Self::Vrid,
        Self::Interval,
        Self::NotPeer,
        Self::Own,
    ];

    /// Name used in the status document and the metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NotVrrp => "not_vrrp",
            Self::Ttl => "ttl",
            Self::Version => "version",
            Self::Type => "type",
            Self::Length => "length",
            Self::Checksum => "checksum",
            Self::Vrid => "vrid",
            Self::Interval => "interval",
            Self::NotPeer => "not_peer",
            Self::Own => "own",
        }
    }
}

/// One advertisement's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Virtual router ID, 1-255.
    pub vrid: u8,
    /// Sender's priority; 0 means the master is leaving.
    pub priority: u8,
    /// Advertisement interval of the sender, in centiseconds (12 bits).
    pub max_adver_int_cs: u16,
    /// The virtual addresses (at most [`MAX_ADDRS`]).
    pub addrs: Vec<Ipv4Addr>,
}

/// An advertisement as received, with what the IP header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub advert: Advert,
}

/// Adds `data` as big-endian 16-bit words to a one's complement accumulator (an odd last
/// byte is padded with zero).
pub fn sum_words(mut acc: u32, data: &[u8]) -> u32 {
    let (words, rest) = data.as_chunks::<2>();
    for w in words {
        acc += u32::from(u16::from_be_bytes(*w));
    }
    if let [last] = rest {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds the carries and complements: the Internet checksum of what was summed.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The VRRPv3 checksum of `msg` (its checksum field included as it stands) with the IPv4
/// pseudo-header of RFC 5798 section 5.2.8: a message whose field is right sums to 0.
pub fn checksum(src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = PROTO;
    pseudo[10..12].copy_from_slice(&(msg.len() as u16).to_be_bytes());
    fold(sum_words(sum_words(0, &pseudo), msg))
}

impl Advert {
    /// The VRRP message (no IP header) sent from `src` to `dst`, checksum filled in.
    /// Addresses beyond [`MAX_ADDRS`] are left out.
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        let mut m = vec![0u8; HEADER_LEN + 4 * addrs.len()];
        m[field::VERS_TYPE] = VERSION << 4 | TYPE_ADVERT;
        m[field::VRID] = self.vrid;
        m[field::PRIORITY] = self.priority;
        m[field::COUNT] = addrs.len() as u8;
        m[field::MAX_ADVER_INT]
            .copy_from_slice(&(self.max_adver_int_cs & MAX_ADVER_INT_CS).to_be_bytes());
        for (slot, a) in m[field::ADDRS..]
            .as_chunks_mut::<4>()
            .0
            .iter_mut()
            .zip(addrs)
        {
            *slot = a.octets();
        }
        let c = checksum(src, dst, &m);
        m[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        m
    }

    /// Checks and parses a VRRP message received from `src` for `dst`: version, type,
    /// length against the address count, checksum. The VRID is the caller's business.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn decode(src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> Result<Self, DropReason> {
        if msg.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if msg[field::VERS_TYPE] >> 4 != VERSION {
            return Err(DropReason::Version);
        }
        if msg[field::VERS_TYPE] & 0x0f != TYPE_ADVERT {
            return Err(DropReason::Type);
        }
        let count = usize::from(msg[field::COUNT]);
        if msg.len() != HEADER_LEN + 4 * count {
            return Err(DropReason::Length);
        }
        if checksum(src, dst, msg) != 0 {
            return Err(DropReason::Checksum);
        }
        let int = u16::from_be_bytes([
            msg[field::MAX_ADVER_INT.start],
            msg[field::MAX_ADVER_INT.start + 1],
        ]);
        Ok(Self {
            vrid: msg[field::VRID],
            priority: msg[field::PRIORITY],
            max_adver_int_cs: int & MAX_ADVER_INT_CS,
            addrs: msg[field::ADDRS..]
                .as_chunks::<4>()
                .0
                .iter()
                .map(|a| Ipv4Addr::from(*a))
                .collect(),
        })
    }
}

/// Checks and parses what a raw IPv4 socket for protocol 112 received: a whole IPv4 packet
/// with TTL 255 carrying a valid VRRPv3 advertisement (RFC 5798 section 7.1, except the VRID
/// and peer checks, which need the configuration).
///
/// # Errors
/// The first check that fails.
pub fn parse_ipv4(packet: &[u8]) -> Result<Received, DropReason> {
    if packet.len() < ip::MIN_LEN || packet[ip::VER_IHL] >> 4 != 4 {
        return Err(DropReason::Truncated);
    }
    let ihl = usize::from(packet[ip::VER_IHL] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([
        packet[ip::TOTAL_LEN.start],
        packet[ip::TOTAL_LEN.start + 1],
    ]));
    if ihl < ip::MIN_LEN || total < ihl || total > packet.len() {
        return Err(DropReason::Truncated);
    }
    if packet[ip::PROTO] != PROTO {
        return Err(DropReason::NotVrrp);
    }
    if packet[ip::TTL] != TTL {
        return Err(DropReason::Ttl);
    }
    let addr = |r: std::ops::Range<usize>| {
        let b = &packet[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    };
    let (src, dst) = (addr(ip::SRC), addr(ip::DST));
    let advert = Advert::decode(src, dst, &packet[ihl..total])?;
    Ok(Received { src, dst, advert })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    /// VRID 51, priority 100, one address, 10 cs, from 192.0.2.2 to 224.0.0.18. The checksum
    /// 0x05cb was added up by hand: pseudo-header words c000 0202 e000 0012 0070 000c, message
    /// words 3133 6401 000a 0000 c000 0264, sum 0x2fa32, folded 0xfa34, complement 0x05cb.
    const ADVERT: [u8; 12] = [
        0x31, 51, 100, 1, // version 3 type 1, VRID, priority, count
        0x00, 0x0a, 0x05, 0xcb, // rsvd + max adver int 10 cs, checksum
        192, 0, 2, 100, // the VIP
    ];

    /// The same message behind the IPv4 header a raw socket delivers (TOS 0xc0, TTL 255,
    /// header checksum 0x1899 also computed independently).
    const PACKET: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0xff, 0x70, 0x18, 0x99, //
        192, 0, 2, 2, 224, 0, 0, 18, //
        0x31, 51, 100, 1, 0x00, 0x0a, 0x05, 0xcb, 192, 0, 2, 100,
    ];

    fn advert() -> Advert {
        Advert {
            vrid: 51,
            priority: 100,
            max_adver_int_cs: 10,
            addrs: vec![VIP],
        }
    }

    #[test]
    fn checksum_of_the_known_message_is_the_hand_computed_one() {
        let mut m = ADVERT;
        m[6] = 0;
        m[7] = 0;
        assert_eq!(checksum(SRC, MULTICAST, &m), 0x05cb);
        assert_eq!(checksum(SRC, MULTICAST, &ADVERT), 0);
        assert_eq!(fold(sum_words(0, &PACKET[..20])), 0, "IP header checksum");
    }

    #[test]
    fn encode_builds_the_rfc_5798_layout_byte_for_byte() {
        assert_eq!(advert().encode(SRC, MULTICAST), ADVERT);
    }

    #[test]
    fn decode_takes_apart_the_known_message() {
        assert_eq!(Advert::decode(SRC, MULTICAST, &ADVERT), Ok(advert()));
        let r = parse_ipv4(&PACKET).unwrap();
        assert_eq!((r.src, r.dst), (SRC, MULTICAST));
        assert_eq!(r.advert, advert());
    }

    #[test]
    fn unicast_priority_zero_with_two_addresses_round_trips() {
        // Checksum 0xb5a6 computed independently for 192.0.2.2 -> 192.0.2.3.
        let peer = Ipv4Addr::new(192, 0, 2, 3);
        let a = Advert {
            vrid: 7,
            priority: 0,
            max_adver_int_cs: MAX_ADVER_INT_CS,
            addrs: vec![VIP, Ipv4Addr::new(192, 0, 2, 101)],
        };
        let m = a.encode(SRC, peer);
        assert_eq!(
            m,
            [
                0x31, 7, 0, 2, 0x0f, 0xff, 0xb5, 0xa6, 192, 0, 2, 100, 192, 0, 2, 101
            ]
        );
        assert_eq!(Advert::decode(SRC, peer, &m), Ok(a));
        // The pseudo-header binds the message to its addresses.
        assert_eq!(
            Advert::decode(SRC, MULTICAST, &m),
            Err(DropReason::Checksum)
        );
    }

    #[test]
    fn reserved_bits_are_ignored_on_receive_and_zero_on_send() {
        let mut a = advert();
        a.max_adver_int_cs = 0xf00a;
        let m = a.encode(SRC, MULTICAST);
        assert_eq!(&m[4..6], &[0x00, 0x0a]);
        let mut m = ADVERT;
        m[4] |= 0xf0;
        let c = {
            m[6] = 0;
            m[7] = 0;
            checksum(SRC, MULTICAST, &m)
        };
        m[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            Advert::decode(SRC, MULTICAST, &m).unwrap().max_adver_int_cs,
            10
        );
    }

    #[test]
    fn every_malformation_has_its_reason() {
        let with = |i: usize, v: u8| {
            let mut p = PACKET;
            p[i] = v;
            p
        };
        assert_eq!(parse_ipv4(&with(8, 64)).unwrap_err(), DropReason::Ttl);
        assert_eq!(parse_ipv4(&with(9, 17)).unwrap_err(), DropReason::NotVrrp);
        assert_eq!(
            parse_ipv4(&with(20, 0x21)).unwrap_err(),
            DropReason::Version
        );
        assert_eq!(parse_ipv4(&with(20, 0x32)).unwrap_err(), DropReason::Type);
        assert_eq!(parse_ipv4(&with(23, 2)).unwrap_err(), DropReason::Length);
        assert_eq!(
            parse_ipv4(&with(22, 200)).unwrap_err(),
            DropReason::Checksum
        );
        assert_eq!(
            parse_ipv4(&with(0, 0x65)).unwrap_err(),
            DropReason::Truncated
        );
        assert_eq!(
            parse_ipv4(&with(0, 0x44)).unwrap_err(),
            DropReason::Truncated
        );
        assert_eq!(
            parse_ipv4(&with(3, 0x40)).unwrap_err(),
            DropReason::Truncated
        );
        // A shorter IP total length cuts the message: a length error, not a crash.
        assert_eq!(parse_ipv4(&with(3, 0x1c)).unwrap_err(), DropReason::Length);
    }

    #[test]
    fn impossible_lengths_never_panic() {
        for n in 0..PACKET.len() {
            assert!(parse_ipv4(&PACKET[..n]).is_err(), "{n} bytes");
        }
        for n in 0..ADVERT.len() {
            assert!(
                Advert::decode(SRC, MULTICAST, &ADVERT[..n]).is_err(),
                "{n} bytes"
            );
        }
        // Options (IHL 6) are skipped by the header length.
        let mut p = vec![0x46, 0xc0, 0x00, 0x24];
        p.extend_from_slice(&PACKET[4..20]);
        p.extend_from_slice(&[1, 1, 1, 0]);
        p.extend_from_slice(&PACKET[20..]);
        assert_eq!(parse_ipv4(&p).unwrap().advert, advert());
    }
}
