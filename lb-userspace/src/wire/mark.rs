//! The mark an xvip node puts in the frames it sends for a VIP, so that another xvip can
//! tell it from a foreign host (`announce::claims`): the VRID, the election's priority now
//! and the primary address the election breaks ties with. One layout for both families:
//! `XVIP`, version 1, VRID, priority, 0, then the primary address (4 bytes in ARP's
//! Ethernet padding, `wire::arp`; 16 bytes in an experimental NDP option, `wire::ndp`).
//! Not authenticated: anyone on the segment can write one (docs/security.md).

use std::net::{Ipv4Addr, Ipv6Addr};

/// What an xvip node says about itself. Ordered as a VRRP election decides: the higher
/// priority first, then the higher primary address (RFC 5798 section 6.4.3), the VRID last
/// (a tie-break that keeps the order total).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark<A> {
    pub priority: u8,
    pub primary: A,
    pub vrid: u8,
}

/// The bytes before the address: magic, version, VRID, priority, reserved.
pub const HEADER_LEN: usize = 8;
const MAGIC: [u8; 4] = *b"XVIP";
const VERSION: u8 = 1;

/// A primary address as the mark carries it.
pub trait Primary: Copy + Ord {
    /// Its length in the mark.
    const LEN: usize;
    /// Its bytes, network order.
    fn write(&self, out: &mut [u8]);
    /// From exactly [`Primary::LEN`] bytes.
    fn read(b: &[u8]) -> Self;
}

impl Primary for Ipv4Addr {
    const LEN: usize = 4;
    fn write(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.octets());
    }
    fn read(b: &[u8]) -> Self {
        Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4 bytes"))
    }
}

impl Primary for Ipv6Addr {
    const LEN: usize = 16;
    fn write(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.octets());
    }
    fn read(b: &[u8]) -> Self {
        Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))
    }
}

impl<A: Primary> Mark<A> {
    /// The mark's length in bytes: 12 for IPv4, 24 for IPv6.
    pub const LEN: usize = HEADER_LEN + A::LEN;

    /// The mark's bytes ([`Mark::LEN`] of them).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.vrid;
        b[6] = self.priority;
        self.primary.write(&mut b[HEADER_LEN..]);
        b
    }

    /// The mark at the start of `b`, if one is there (magic and version match, long enough).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b = b.get(..Self::LEN)?;
        (b[..4] == MAGIC && b[4] == VERSION).then(|| Self {
            vrid: b[5],
            priority: b[6],
            primary: A::read(&b[HEADER_LEN..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_round_trip_and_nothing_else_decodes() {
        let m4 = Mark {
            priority: 150,
            primary: Ipv4Addr::new(192, 0, 2, 2),
            vrid: 51,
        };
        assert_eq!(
            m4.encode(),
            [b'X', b'V', b'I', b'P', 1, 51, 150, 0, 192, 0, 2, 2]
        );
        assert_eq!(Mark::decode(&m4.encode()), Some(m4));
        let m6 = Mark {
            priority: 100,
            primary: "fe80::2".parse::<Ipv6Addr>().unwrap(),
            vrid: 51,
        };
        let b = m6.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[8..10], &[0xfe, 0x80]);
        assert_eq!(Mark::<Ipv6Addr>::decode(&b), Some(m6));
        assert_eq!(Mark::<Ipv6Addr>::decode(&b[..23]), None, "cut short");
        let mut v2 = b.clone();
        v2[4] = 2;
        assert_eq!(Mark::<Ipv6Addr>::decode(&v2), None, "another version");
        assert_eq!(Mark::<Ipv6Addr>::decode(&[0; 24]), None, "zeros");
    }

    #[test]
    fn the_order_is_the_elections() {
        let m = |priority, last| Mark {
            priority,
            primary: Ipv4Addr::new(192, 0, 2, last),
            vrid: 51,
        };
        assert!(m(150, 2) > m(100, 3));
        assert!(m(100, 3) > m(100, 2));
    }
}
