//! VRRP advertisements, version 3 (RFC 5798 section 5) for IPv4 and IPv6 and version 2
//! (RFC 3768 section 5, IPv4 only, as keepalived speaks it): the checksums (on `lb_common::checksum`, the one RFC 1071
//! sum of the project), the encoder,
//! and a checked decoder that turns untrusted bytes into an [`Advert`] or a [`DropReason`].
//! One message carries addresses of one family, that of the IP header around it. The
//! protocol's vocabulary (version, v2 authentication, field limits) lives here too, so the
//! settings (`config::vrrp`) and the election (`announce::vrrp`) both read it from below.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::checksum::{accumulate, fold};

/// Largest Max Advertise Interval of v3: 12 bits of centiseconds (40.95 s).
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;
/// Length of the v2 Authentication Data after the addresses (RFC 3768 section 5.3.10).
pub const AUTH_LEN: usize = 8;
/// v2 Auth Type 0: no authentication.
pub const AUTH_TYPE_NONE: u8 = 0;
/// v2 Auth Type 1: a plain-text password in the Authentication Data (keepalived `PASS`).
pub const AUTH_TYPE_PASS: u8 = 1;
/// v2 Auth Type 2: IPsec AH (keepalived `AH`; such packets are IP protocol 51, not 112).
pub const AUTH_TYPE_AH: u8 = 2;
/// The VRRP version of a message or of this router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Version {
    /// RFC 3768: whole-second intervals, auth type and data, checksum without pseudo-header.
    V2,
    /// RFC 5798: centisecond intervals, no authentication, pseudo-header checksum.
    #[default]
    V3,
}

impl Version {
    /// The number in the version nibble.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The version with number `n`, if it is 2 or 3.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }
}

/// v2 authentication: the Auth Type and the 8 bytes of Authentication Data. The data is a
/// secret: `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Auth {
    /// [`AUTH_TYPE_NONE`], [`AUTH_TYPE_PASS`] or whatever a received packet said.
    pub kind: u8,
    /// The password, zero padded (all zero without authentication).
    pub data: [u8; AUTH_LEN],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("kind", &self.kind)
            .field("data", &"<redacted>")
            .finish()
    }
}

impl Auth {
    /// No authentication.
    pub const NONE: Auth = Auth {
        kind: AUTH_TYPE_NONE,
        data: [0; AUTH_LEN],
    };

    /// PASS authentication as keepalived derives it from `auth_pass`: the first 8 bytes of
    /// the password, zero padded (keepalived `vrrp_parser.c`, `vrrp_auth_pass_handler`).
    pub fn pass(password: &[u8]) -> Self {
        let mut data = [0; AUTH_LEN];
        let n = password.len().min(AUTH_LEN);
        data[..n].copy_from_slice(&password[..n]);
        Self {
            kind: AUTH_TYPE_PASS,
            data,
        }
    }

    /// Whether `other` carries the same type and data, compared without an early exit.
    pub fn matches(&self, other: &Auth) -> bool {
        let diff = self
            .data
            .iter()
            .zip(&other.data)
            .fold(self.kind ^ other.kind, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// IP protocol number of VRRP (both versions).
pub const PROTO: u8 = 112;
/// The IPv4 multicast group of VRRP (RFC 5798 section 5.1.1.2, RFC 3768 section 5.2.2).
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP (RFC 5798 section 5.1.2.2).
pub const MULTICAST6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only TTL a sender may use and a receiver accepts (section 5.1.1.3).
pub const TTL: u8 = 255;
/// The only message type: ADVERTISEMENT.
pub const TYPE_ADVERT: u8 = 1;
/// Largest v2 Advertisement Interval: 8 bits of seconds.
pub const MAX_V2_ADVER_INT_S: u8 = u8::MAX;
/// Fixed part of the VRRP message, before the addresses (same size in both versions).
pub const HEADER_LEN: usize = field::ADDRS;
/// Largest number of addresses in one advertisement (an 8-bit count).
pub const MAX_ADDRS: usize = u8::MAX as usize;

mod field {
    //! Byte offsets in the VRRP message (RFC 5798 section 5.1, RFC 3768 section 5.1).
    use std::ops::Range;
    /// Version (high nibble) and type (low nibble).
    pub const VERS_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v3: 4 reserved bits, then 12 bits of Max Adver Int in centiseconds.
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    /// v2: Auth Type.
    pub const AUTH_TYPE: usize = 4;
    /// v2: Advertisement Interval in seconds.
    pub const ADVER_INT_S: usize = 5;
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

mod ip6 {
    //! Byte offsets in the IPv6 header in front of the message (as the socket rebuilds it).
    use std::ops::Range;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const LEN: usize = 40;
}

/// Why a received packet was not taken into account. Every reason has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Not a whole IPv4 or IPv6 packet, or its lengths disagree.
    Truncated,
    /// Not IP protocol 112 (should not reach a raw socket for 112).
    NotVrrp,
    /// TTL (hop limit) other than 255: the packet was routed, so it is not from this segment.
    Ttl,
    /// VRRP version other than 2 or 3, or version 2 over IPv6 (which has none).
    Version,
    /// Message type other than ADVERTISEMENT.
    Type,
    /// The VRRP length does not match the address count.
    Length,
    /// The checksum is wrong.
    Checksum,
    /// Another virtual router's advertisement.
    Vrid,
    /// A Max Advertise Interval of 0 (no timer can be derived from it).
    Interval,
    /// Unicast peers are configured and the sender is not one of them.
    NotPeer,
    /// Our own advertisement (looped back).
    Own,
    /// Our VRID in the other VRRP version: another router owns it (the mismatch guard).
    VersionMismatch,
    /// v2: another Auth Type than ours (e.g. PASS when we have none).
    AuthType,
    /// v2 PASS: another password than ours.
    AuthPass,
    /// v2: another Advertisement Interval than ours (RFC 3768 section 7.1 discards it).
    IntervalMismatch,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 15] = [
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
        Self::VersionMismatch,
        Self::AuthType,
        Self::AuthPass,
        Self::IntervalMismatch,
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
            Self::VersionMismatch => "version_mismatch",
            Self::AuthType => "auth_type",
            Self::AuthPass => "auth_pass",
            Self::IntervalMismatch => "interval_mismatch",
        }
    }

    /// Whether an advertisement dropped for this reason (for our VRID, from an allowed
    /// sender) means another router owns the VRID and does not hear us: the mismatch guard
    /// keeps this node from becoming master while they arrive.
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            Self::VersionMismatch | Self::AuthType | Self::AuthPass | Self::IntervalMismatch
        )
    }
}

/// One advertisement's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// VRRP version of the message.
    pub version: Version,
    /// Virtual router ID, 1-255.
    pub vrid: u8,
    /// Sender's priority; 0 means the master is leaving.
    pub priority: u8,
    /// Advertisement interval of the sender, in centiseconds: 12 bits in v3; in v2 a whole
    /// number of seconds (at most 255), so a multiple of 100 here.
    pub max_adver_int_cs: u16,
    /// The virtual addresses (at most [`MAX_ADDRS`]), all of the family of the IP header.
    pub addrs: Vec<IpAddr>,
    /// v2 authentication ([`Auth::NONE`] in v3, which has none).
    pub auth: Auth,
}

/// An advertisement as received, with what the IP header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub advert: Advert,
}

/// The VRRPv3 checksum of `msg` (its checksum field included as it stands) with the
/// pseudo-header of RFC 5798 section 5.2.8: IPv4's (RFC 768) or IPv6's (RFC 8200 section
/// 8.1) by the family of `src`. A message whose field is right sums to 0.
pub fn checksum(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, msg: &[u8]) -> u16 {
    let acc = match (src.into(), dst.into()) {
        (IpAddr::V6(s), d) => {
            let d = match d {
                IpAddr::V6(d) => d,
                IpAddr::V4(d) => d.to_ipv6_mapped(),
            };
            let mut pseudo = [0u8; 40];
            pseudo[0..16].copy_from_slice(&s.octets());
            pseudo[16..32].copy_from_slice(&d.octets());
            pseudo[32..36].copy_from_slice(&(msg.len() as u32).to_be_bytes());
            pseudo[39] = PROTO;
            accumulate(0, &pseudo)
        }
        (IpAddr::V4(s), d) => {
            let d = match d {
                IpAddr::V4(d) => d,
                IpAddr::V6(d) => d.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            };
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&s.octets());
            pseudo[4..8].copy_from_slice(&d.octets());
            pseudo[9] = PROTO;
            pseudo[10..12].copy_from_slice(&(msg.len() as u16).to_be_bytes());
            accumulate(0, &pseudo)
        }
    };
    !fold(accumulate(acc, msg))
}

/// Bytes of one address of the family of `a`.
fn addr_len(a: IpAddr) -> usize {
    match a {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

/// The VRRPv2 checksum of `msg`: the whole message from the version field, authentication
/// data included, no pseudo-header (RFC 3768 section 5.3.8).
pub fn checksum_v2(msg: &[u8]) -> u16 {
    lb_common::checksum::checksum(msg)
}

impl Advert {
    /// The VRRP message (no IP header) sent from `src` to `dst`, checksum filled in.
    /// Addresses of the other family than `src` and beyond [`MAX_ADDRS`] are left out; a v2
    /// interval is rounded down to whole seconds (at least 1, at most 255).
    pub fn encode(&self, src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Vec<u8> {
        let (src, dst) = (src.into(), dst.into());
        let alen = addr_len(src);
        let addrs: Vec<IpAddr> = self
            .addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == src.is_ipv4())
            .take(MAX_ADDRS)
            .collect();
        let auth_len = match self.version {
            Version::V2 => AUTH_LEN,
            Version::V3 => 0,
        };
        let mut m = vec![0u8; HEADER_LEN + alen * addrs.len() + auth_len];
        m[field::VERS_TYPE] = self.version.number() << 4 | TYPE_ADVERT;
        m[field::VRID] = self.vrid;
        m[field::PRIORITY] = self.priority;
        m[field::COUNT] = addrs.len() as u8;
        let addr_end = field::ADDRS + alen * addrs.len();
        for (slot, a) in m[field::ADDRS..addr_end].chunks_exact_mut(alen).zip(&addrs) {
            match a {
                IpAddr::V4(a) => slot.copy_from_slice(&a.octets()),
                IpAddr::V6(a) => slot.copy_from_slice(&a.octets()),
            }
        }
        let c = match self.version {
            Version::V3 => {
                m[field::MAX_ADVER_INT]
                    .copy_from_slice(&(self.max_adver_int_cs & MAX_ADVER_INT_CS).to_be_bytes());
                checksum(src, dst, &m)
            }
            Version::V2 => {
                m[field::AUTH_TYPE] = self.auth.kind;
                m[field::ADVER_INT_S] =
                    (self.max_adver_int_cs / 100).clamp(1, u16::from(MAX_V2_ADVER_INT_S)) as u8;
                m[addr_end..].copy_from_slice(&self.auth.data);
                checksum_v2(&m)
            }
        };
        m[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        m
    }

    /// Checks and parses a VRRP message of either version received from `src` for `dst`:
    /// version (v2 only over IPv4), type, length against the address count (4 or 16 bytes
    /// each, by the family of `src`), checksum. The VRID, the version, the authentication
    /// and the interval are the caller's business.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn decode(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        msg: &[u8],
    ) -> Result<Self, DropReason> {
        let (src, dst) = (src.into(), dst.into());
        let alen = addr_len(src);
        if msg.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let version =
            Version::from_number(msg[field::VERS_TYPE] >> 4).ok_or(DropReason::Version)?;
        if version == Version::V2 && src.is_ipv6() {
            return Err(DropReason::Version);
        }
        if msg[field::VERS_TYPE] & 0x0f != TYPE_ADVERT {
            return Err(DropReason::Type);
        }
        let count = usize::from(msg[field::COUNT]);
        let addr_end = HEADER_LEN + alen * count;
        let auth_len = match version {
            Version::V2 => AUTH_LEN,
            Version::V3 => 0,
        };
        if msg.len() != addr_end + auth_len {
            return Err(DropReason::Length);
        }
        let sum_ok = match version {
            Version::V3 => checksum(src, dst, msg) == 0,
            Version::V2 => checksum_v2(msg) == 0,
        };
        if !sum_ok {
            return Err(DropReason::Checksum);
        }
        let (max_adver_int_cs, auth) = match version {
            Version::V3 => {
                let int = u16::from_be_bytes([
                    msg[field::MAX_ADVER_INT.start],
                    msg[field::MAX_ADVER_INT.start + 1],
                ]);
                (int & MAX_ADVER_INT_CS, Auth::NONE)
            }
            Version::V2 => {
                let mut data = [0; AUTH_LEN];
                data.copy_from_slice(&msg[addr_end..]);
                (
                    u16::from(msg[field::ADVER_INT_S]) * 100,
                    Auth {
                        kind: msg[field::AUTH_TYPE],
                        data,
                    },
                )
            }
        };
        Ok(Self {
            version,
            vrid: msg[field::VRID],
            priority: msg[field::PRIORITY],
            max_adver_int_cs,
            addrs: msg[field::ADDRS..addr_end]
                .chunks_exact(alen)
                .map(|a| match src {
                    IpAddr::V4(_) => IpAddr::from(<[u8; 4]>::try_from(a).expect("4 bytes")),
                    IpAddr::V6(_) => IpAddr::from(<[u8; 16]>::try_from(a).expect("16 bytes")),
                })
                .collect(),
            auth,
        })
    }
}

/// Checks and parses what a raw IPv4 socket for protocol 112 received: a whole IPv4 packet
/// with TTL 255 carrying a valid VRRP advertisement of either version (RFC 5798 section 7.1,
/// RFC 3768 section 7.1, except the VRID, version, authentication and peer checks, which
/// need the configuration).
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
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let (src, dst) = (addr(ip::SRC), addr(ip::DST));
    let advert = Advert::decode(src, dst, &packet[ihl..total])?;
    Ok(Received { src, dst, advert })
}

/// Checks and parses an IPv6 packet carrying VRRPv3: a 40-byte header (next header 112,
/// no extension headers: the IPv6 socket rebuilds this header from what the kernel reports),
/// hop limit 255, a valid advertisement (RFC 5798 section 7.1, as [`parse_ipv4`]).
///
/// # Errors
/// The first check that fails.
pub fn parse_ipv6(packet: &[u8]) -> Result<Received, DropReason> {
    if packet.len() < ip6::LEN || packet[0] >> 4 != 6 {
        return Err(DropReason::Truncated);
    }
    let payload = usize::from(u16::from_be_bytes([
        packet[ip6::PAYLOAD_LEN.start],
        packet[ip6::PAYLOAD_LEN.start + 1],
    ]));
    if ip6::LEN + payload > packet.len() {
        return Err(DropReason::Truncated);
    }
    if packet[ip6::NEXT_HEADER] != PROTO {
        return Err(DropReason::NotVrrp);
    }
    if packet[ip6::HOP_LIMIT] != TTL {
        return Err(DropReason::Ttl);
    }
    let addr = |r: std::ops::Range<usize>| {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&packet[r]).expect("16 bytes"),
        ))
    };
    let (src, dst) = (addr(ip6::SRC), addr(ip6::DST));
    let advert = Advert::decode(src, dst, &packet[ip6::LEN..ip6::LEN + payload])?;
    Ok(Received { src, dst, advert })
}

/// The IPv6 header in front of `msg` as received (what [`parse_ipv6`] reads): the socket
/// gets the addresses and hop limit from `recvmsg`, not from the packet.
pub fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, payload_len: u16) -> [u8; 40] {
    let mut h = [0u8; ip6::LEN];
    h[0] = 0x60;
    h[ip6::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
    h[ip6::NEXT_HEADER] = PROTO;
    h[ip6::HOP_LIMIT] = hop_limit;
    h[ip6::SRC].copy_from_slice(&src.octets());
    h[ip6::DST].copy_from_slice(&dst.octets());
    h
}

/// [`parse_ipv4`] or [`parse_ipv6`] by the version nibble.
///
/// # Errors
/// The first check that fails.
pub fn parse_ip(packet: &[u8]) -> Result<Received, DropReason> {
    match packet.first().map(|b| b >> 4) {
        Some(6) => parse_ipv6(packet),
        _ => parse_ipv4(packet),
    }
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
            version: Version::V3,
            vrid: 51,
            priority: 100,
            max_adver_int_cs: 10,
            addrs: vec![VIP.into()],
            auth: Auth::NONE,
        }
    }

    #[test]
    fn checksum_of_the_known_message_is_the_hand_computed_one() {
        let mut m = ADVERT;
        m[6] = 0;
        m[7] = 0;
        assert_eq!(checksum(SRC, MULTICAST, &m), 0x05cb);
        assert_eq!(checksum(SRC, MULTICAST, &ADVERT), 0);
        assert_eq!(
            lb_common::checksum::checksum(&PACKET[..20]),
            0,
            "IP header checksum"
        );
    }

    #[test]
    fn encode_builds_the_rfc_5798_layout_byte_for_byte() {
        assert_eq!(advert().encode(SRC, MULTICAST), ADVERT);
    }

    #[test]
    fn decode_takes_apart_the_known_message() {
        assert_eq!(Advert::decode(SRC, MULTICAST, &ADVERT), Ok(advert()));
        let r = parse_ipv4(&PACKET).unwrap();
        assert_eq!((r.src, r.dst), (SRC.into(), MULTICAST.into()));
        assert_eq!(r.advert, advert());
    }

    #[test]
    fn unicast_priority_zero_with_two_addresses_round_trips() {
        // Checksum 0xb5a6 computed independently for 192.0.2.2 -> 192.0.2.3.
        let peer = Ipv4Addr::new(192, 0, 2, 3);
        let a = Advert {
            version: Version::V3,
            vrid: 7,
            priority: 0,
            max_adver_int_cs: MAX_ADVER_INT_CS,
            addrs: vec![VIP.into(), Ipv4Addr::new(192, 0, 2, 101).into()],
            auth: Auth::NONE,
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
            parse_ipv4(&with(20, 0x41)).unwrap_err(),
            DropReason::Version
        );
        // A v3 message relabelled v2 lacks the 8 bytes of authentication data.
        assert_eq!(parse_ipv4(&with(20, 0x21)).unwrap_err(), DropReason::Length);
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

    /// What keepalived 2.2.7 sent with the kubeadm guide's configuration (no
    /// `vrrp_version`, so v2; `auth_type PASS`, `auth_pass 42`, `advert_int` 1 by default,
    /// VRID 51, priority 101, one VIP), captured from a raw socket in a namespace next to
    /// it: IPv4 header (TOS 0xc0, TTL 255, to 224.0.0.18), then the 20-byte v2 message.
    /// Its checksum 0x8233 also by hand: words 2133 6501 0101 c000 0264 3432 (the rest
    /// zero) sum to 0x17dcb, folded 0x7dcc, complement 0x8233.
    const KEEPALIVED_V2: [u8; 40] = [
        0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x18, 0x90, //
        192, 0, 2, 2, 224, 0, 0, 18, //
        0x21, 51, 101, 1, // version 2 type 1, VRID, priority, count
        0x01, 0x01, 0x82, 0x33, // auth type PASS, adver int 1 s, checksum
        192, 0, 2, 100, // the VIP
        b'4', b'2', 0, 0, 0, 0, 0, 0, // auth_pass "42", zero padded to 8 bytes
    ];

    fn keepalived_v2() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 101,
            max_adver_int_cs: 100,
            addrs: vec![VIP.into()],
            auth: Auth::pass(b"42"),
        }
    }

    #[test]
    fn v2_decode_takes_apart_what_keepalived_sent() {
        let r = parse_ipv4(&KEEPALIVED_V2).unwrap();
        assert_eq!((r.src, r.dst), (SRC.into(), MULTICAST.into()));
        assert_eq!(r.advert, keepalived_v2());
        assert_eq!(checksum_v2(&KEEPALIVED_V2[20..]), 0);
    }

    #[test]
    fn v2_encode_builds_the_rfc_3768_layout_keepalived_sends_byte_for_byte() {
        assert_eq!(keepalived_v2().encode(SRC, MULTICAST), KEEPALIVED_V2[20..]);
        // No pseudo-header in v2: the same bytes to any destination.
        assert_eq!(
            keepalived_v2().encode(SRC, Ipv4Addr::new(192, 0, 2, 3)),
            KEEPALIVED_V2[20..]
        );
    }

    #[test]
    fn v2_checksum_covers_the_authentication_data() {
        let mut p = KEEPALIVED_V2;
        p[39] = b'x';
        assert_eq!(parse_ipv4(&p).unwrap_err(), DropReason::Checksum);
        // Cut the auth data off: the length no longer fits a v2 message.
        let mut short = KEEPALIVED_V2[..32].to_vec();
        short[3] = 32;
        assert_eq!(parse_ipv4(&short).unwrap_err(), DropReason::Length);
    }

    #[test]
    fn pass_uses_the_first_8_bytes_zero_padded_like_keepalived() {
        assert_eq!(Auth::pass(b"42").data, *b"42\0\0\0\0\0\0");
        assert_eq!(Auth::pass(b"12345678").data, *b"12345678");
        // keepalived truncates a longer auth_pass to 8 bytes: the 9th byte does not count.
        assert!(Auth::pass(b"123456789").matches(&Auth::pass(b"12345678")));
        assert!(!Auth::pass(b"42").matches(&Auth::pass(b"43")));
        assert!(!Auth::pass(b"").matches(&Auth::NONE), "type differs");
        assert!(Auth::NONE.matches(&Auth::default()));
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let a = keepalived_v2();
        let dbg = format!("{a:?} {:?}", Auth::pass(b"sekrit"));
        assert!(!dbg.contains("sekrit") && !dbg.contains("52, 50"), "{dbg}");
        assert!(dbg.contains("redacted"), "{dbg}");
    }

    #[test]
    fn v2_intervals_are_whole_seconds_on_the_wire() {
        let mut a = keepalived_v2();
        a.max_adver_int_cs = 250; // 2.5 s is sent as 2 s
        assert_eq!(a.encode(SRC, MULTICAST)[5], 2);
        a.max_adver_int_cs = 50; // never 0
        assert_eq!(a.encode(SRC, MULTICAST)[5], 1);
        a.max_adver_int_cs = MAX_ADVER_INT_CS;
        assert_eq!(a.encode(SRC, MULTICAST)[5], 40);
    }

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    /// VRRPv3 over IPv6: VRID 51, priority 100, 10 cs, one address 2001:db8::100, from
    /// fe80::2 to ff02::12. Checksum 0x3de8 computed independently (Python, RFC 1071 over
    /// the RFC 8200 pseudo-header: addresses, 32-bit length 24, next header 112).
    const ADVERT6: [u8; 24] = [
        0x31, 51, 100, 1, 0x00, 0x0a, 0x3d, 0xe8, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    fn advert6() -> Advert {
        Advert {
            addrs: vec![VIP6.into()],
            ..advert()
        }
    }

    #[test]
    fn v6_encode_and_decode_are_the_known_bytes() {
        assert_eq!(advert6().encode(LL, MULTICAST6), ADVERT6);
        assert_eq!(checksum(LL, MULTICAST6, &ADVERT6), 0);
        assert_eq!(Advert::decode(LL, MULTICAST6, &ADVERT6), Ok(advert6()));
        // The other family's addresses are not put in a v6 message.
        let mut mixed = advert6();
        mixed.addrs.push(VIP.into());
        assert_eq!(mixed.encode(LL, MULTICAST6), ADVERT6);
        // Read as IPv4 (4-byte addresses), the length does not fit the count.
        assert_eq!(
            Advert::decode(SRC, MULTICAST, &ADVERT6),
            Err(DropReason::Length)
        );
    }

    #[test]
    fn v6_packets_are_checked_for_hop_limit_protocol_and_length() {
        let mut p = ipv6_header(LL, MULTICAST6, TTL, ADVERT6.len() as u16).to_vec();
        p.extend_from_slice(&ADVERT6);
        let r = parse_ip(&p).unwrap();
        assert_eq!((r.src, r.dst), (LL.into(), MULTICAST6.into()));
        assert_eq!(r.advert, advert6());
        let with = |i: usize, v: u8| {
            let mut q = p.clone();
            q[i] = v;
            q
        };
        assert_eq!(parse_ipv6(&with(7, 64)), Err(DropReason::Ttl));
        assert_eq!(parse_ipv6(&with(6, 17)), Err(DropReason::NotVrrp));
        assert_eq!(parse_ipv6(&with(5, 25)), Err(DropReason::Truncated));
        assert_eq!(parse_ipv6(&with(23, 3)), Err(DropReason::Checksum));
        // VRRPv2 does not exist over IPv6.
        assert_eq!(parse_ipv6(&with(40, 0x21)), Err(DropReason::Version));
        for n in 0..p.len() {
            assert!(parse_ipv6(&p[..n]).is_err(), "{n} bytes");
        }
        // An IPv4 packet is not taken for IPv6 and the other way round.
        assert_eq!(parse_ipv6(&PACKET), Err(DropReason::Truncated));
        assert_eq!(parse_ipv4(&p), Err(DropReason::Truncated));
    }

    /// What keepalived 2.2.7 sent from its IPv6 VRRPv3 instance (`vrrp_version 3`, VRID 51,
    /// priority 150, `advert_int 0.1`, `virtual_ipaddress { 2001:db8::100/128 }`), captured
    /// with a raw socket in a namespace next to it: from its link-local address to ff02::12,
    /// hop limit 255 (from `IPV6_RECVHOPLIMIT`). Its checksum 0x0be8 also summed to zero
    /// independently (Python, over the RFC 8200 pseudo-header).
    const KEEPALIVED_V6: [u8; 24] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0x0b, 0xe8, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];
    const KEEPALIVED_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 0x102);

    #[test]
    fn v6_decode_takes_apart_what_keepalived_sent_and_encode_rebuilds_it() {
        let want = Advert {
            priority: 150,
            ..advert6()
        };
        let mut p = ipv6_header(KEEPALIVED_LL, MULTICAST6, TTL, 24).to_vec();
        p.extend_from_slice(&KEEPALIVED_V6);
        let r = parse_ipv6(&p).unwrap();
        assert_eq!(r.src, IpAddr::V6(KEEPALIVED_LL));
        assert_eq!(r.advert, want);
        assert_eq!(want.encode(KEEPALIVED_LL, MULTICAST6), KEEPALIVED_V6);
    }

    #[test]
    fn property_v6_decode_of_encode_is_the_identity() {
        let mut r = Rng(0x5eed_0006);
        for i in 0..1000 {
            let n = r.below(20) as usize;
            let addrs = (0..n)
                .map(|_| {
                    IpAddr::V6(Ipv6Addr::from(
                        u128::from(r.next()) << 64 | u128::from(r.next()),
                    ))
                })
                .collect();
            let a = Advert {
                version: Version::V3,
                vrid: r.byte(),
                priority: r.byte(),
                max_adver_int_cs: r.below(u64::from(MAX_ADVER_INT_CS) + 1) as u16,
                addrs,
                auth: Auth::NONE,
            };
            let m = a.encode(LL, MULTICAST6);
            assert_eq!(Advert::decode(LL, MULTICAST6, &m), Ok(a), "case {i}");
            // The pseudo-header binds the message to its addresses.
            assert_eq!(
                Advert::decode(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3), MULTICAST6, &m),
                Err(DropReason::Checksum)
            );
        }
    }

    /// xorshift64*: deterministic pseudo-random bytes, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 56) as u8
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_advert(r: &mut Rng) -> Advert {
        let version = if r.below(2) == 0 {
            Version::V2
        } else {
            Version::V3
        };
        let most = if r.below(8) == 0 { 256 } else { 4 };
        let n = r.below(most) as usize;
        let addrs = (0..n)
            .map(|_| IpAddr::V4(Ipv4Addr::from(r.next() as u32)))
            .collect();
        let (max_adver_int_cs, auth) = match version {
            Version::V3 => (r.below(u64::from(MAX_ADVER_INT_CS) + 1) as u16, Auth::NONE),
            Version::V2 => {
                let mut data = [0; AUTH_LEN];
                data.iter_mut().for_each(|b| *b = r.byte());
                (
                    r.below(256) as u16 * 100,
                    Auth {
                        kind: r.byte(),
                        data,
                    },
                )
            }
        };
        Advert {
            version,
            vrid: r.byte(),
            priority: r.byte(),
            max_adver_int_cs,
            addrs,
            auth,
        }
    }

    #[test]
    fn property_decode_of_encode_is_the_identity_for_v2_and_v3() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            let a = random_advert(&mut r);
            let (src, dst) = (Ipv4Addr::from(r.next() as u32), MULTICAST);
            let m = a.encode(src, dst);
            let mut want = a.clone();
            if want.version == Version::V2 && want.max_adver_int_cs == 0 {
                want.max_adver_int_cs = 100; // 0 s is never sent
            }
            assert_eq!(Advert::decode(src, dst, &m), Ok(want), "case {i}: {m:02x?}");
        }
    }

    #[test]
    fn property_random_and_truncated_bytes_never_panic() {
        let mut r = Rng(0x0123_4567_89ab_cdef);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let n = r.below(96) as usize;
            let mut p: Vec<u8> = (0..n).map(|_| r.byte()).collect();
            // Half of them look like IPv4/VRRP so the deeper checks are reached too.
            if r.below(2) == 0 && p.len() >= 28 {
                p[0] = 0x45;
                let len = (p.len() as u16).to_be_bytes();
                p[2..4].copy_from_slice(&len);
                p[8] = TTL;
                p[9] = PROTO;
                p[20] = if r.below(2) == 0 { 0x21 } else { 0x31 };
            }
            accepted += usize::from(parse_ipv4(&p).is_ok());
            let _ = Advert::decode(SRC, MULTICAST, &p);
        }
        // Valid messages, truncated at every length and with every byte flipped.
        for a in [advert(), keepalived_v2()] {
            let m = a.encode(SRC, MULTICAST);
            for n in 0..m.len() {
                assert!(Advert::decode(SRC, MULTICAST, &m[..n]).is_err(), "{n}");
            }
            for i in 0..m.len() {
                for bit in 0..8 {
                    let mut x = m.clone();
                    x[i] ^= 1 << bit;
                    // One flipped bit always breaks the checksum, or an earlier check.
                    assert!(Advert::decode(SRC, MULTICAST, &x).is_err(), "{i}.{bit}");
                }
            }
        }
        assert!(accepted < 10, "random bytes rarely pass: {accepted}");
    }
}
