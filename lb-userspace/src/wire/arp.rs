//! ARP for IPv4 over Ethernet as bytes (RFC 826): the frame's parser and builder, the
//! answers and gratuitous packets xvip sends, and the [`Mark`] an xvip node puts in the
//! frame's padding. Pure: the socket is `announce::arp`.

use std::net::Ipv4Addr;

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
const ETH_HLEN: usize = 14;
const ARP_LEN: usize = 28;
/// Ethernet + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = ETH_HLEN + ARP_LEN;
/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_REPLY: u16 = 2;
/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An xvip node's mark (`wire::mark`) as ARP frames carry it, after the ARP packet in the
/// padding up to the shortest Ethernet frame (hosts ignore it): read by `announce::claims`,
/// written by `announce::arp`'s socket.
pub type Mark = crate::wire::mark::Mark<Ipv4Addr>;

/// The mark's length in the padding.
pub const MARK_LEN: usize = Mark::LEN;

/// One parsed ARP packet (IPv4 over Ethernet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
    /// An xvip sender's mark after the packet (`announce::claims`); never sent from here
    /// (the socket adds its own).
    pub mark: Option<Mark>,
}

impl Arp {
    /// Parses a whole Ethernet frame; `None` when it is not IPv4-over-Ethernet ARP.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < FRAME_LEN || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_ARP {
            return None;
        }
        let a = &frame[ETH_HLEN..FRAME_LEN];
        // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
        if a[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]);
        let mac = |o: usize| <[u8; 6]>::try_from(&a[o..o + 6]).expect("6 bytes");
        Some(Self {
            op: u16::from_be_bytes([a[6], a[7]]),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
            mark: Mark::decode(&frame[FRAME_LEN..]),
        })
    }

    /// Builds the Ethernet frame carrying this ARP packet to `eth_dst`.
    pub fn to_frame(&self, eth_dst: [u8; 6]) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&eth_dst);
        f[6..12].copy_from_slice(&self.sender_mac);
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        let a = &mut f[ETH_HLEN..];
        a[0..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        a[6..8].copy_from_slice(&self.op.to_be_bytes());
        a[8..14].copy_from_slice(&self.sender_mac);
        a[14..18].copy_from_slice(&self.sender_ip.octets());
        a[18..24].copy_from_slice(&self.target_mac);
        a[24..28].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Our answer to a request for `vip`, or `None` if this is not one. An RFC 5227 probe
    /// (sender address 0.0.0.0: a host about to take the address) is answered too, as the
    /// address's owner defends it: the prober then knows the VIP is in use.
    pub fn answer_for(&self, vip: Ipv4Addr, our_mac: [u8; 6]) -> Option<(Arp, [u8; 6])> {
        (self.op == ARP_REQUEST && self.target_ip == vip && self.sender_mac != our_mac).then_some({
            (
                Arp {
                    op: ARP_REPLY,
                    sender_mac: our_mac,
                    sender_ip: vip,
                    target_mac: self.sender_mac,
                    target_ip: self.sender_ip,
                    mark: None,
                },
                self.sender_mac,
            )
        })
    }

    /// A request for `target` from us.
    pub fn request(our_mac: [u8; 6], our_ip: Ipv4Addr, target: Ipv4Addr) -> Self {
        Self {
            op: ARP_REQUEST,
            sender_mac: our_mac,
            sender_ip: our_ip,
            target_mac: [0; 6],
            target_ip: target,
            mark: None,
        }
    }

    /// Gratuitous ARP for `vip`: a request and a reply, both broadcast (RFC 5227 section 3;
    /// some hosts only update their cache from one of the two).
    pub fn gratuitous(our_mac: [u8; 6], vip: Ipv4Addr) -> [Self; 2] {
        [
            Self {
                op: ARP_REQUEST,
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: [0; 6],
                target_ip: vip,
                mark: None,
            },
            Self {
                op: ARP_REPLY,
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: BROADCAST,
                target_ip: vip,
                mark: None,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A request "who has 192.0.2.100? tell 192.0.2.10" from 02:00:00:00:00:0a, as captured.
    const REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 192, 0, 2, 10, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100,
    ];

    #[test]
    fn parses_a_request_and_rebuilds_the_same_bytes() {
        let a = Arp::parse(&REQUEST).unwrap();
        assert_eq!(a.op, ARP_REQUEST);
        assert_eq!(a.sender_ip, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(a.target_ip, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(a.to_frame(BROADCAST), REQUEST);
    }

    #[test]
    fn answers_only_requests_for_the_vip() {
        let a = Arp::parse(&REQUEST).unwrap();
        let mac = [2, 0, 0, 0, 0, 2];
        let (r, to) = a.answer_for(Ipv4Addr::new(192, 0, 2, 100), mac).unwrap();
        assert_eq!(to, [2, 0, 0, 0, 0, 0x0a]);
        assert_eq!(r.op, ARP_REPLY);
        assert_eq!(r.sender_mac, mac);
        assert_eq!(r.sender_ip, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 0, 2, 10));
        assert!(a.answer_for(Ipv4Addr::new(192, 0, 2, 101), mac).is_none());
        let reply = Arp { op: ARP_REPLY, ..a };
        assert!(
            reply
                .answer_for(Ipv4Addr::new(192, 0, 2, 100), mac)
                .is_none()
        );
    }

    #[test]
    fn an_rfc_5227_probe_for_the_vip_is_answered_and_our_own_frames_are_not() {
        let probe = Arp {
            sender_ip: Ipv4Addr::UNSPECIFIED,
            ..Arp::parse(&REQUEST).unwrap()
        };
        let mac = [2, 0, 0, 0, 0, 2];
        let (r, to) = probe
            .answer_for(Ipv4Addr::new(192, 0, 2, 100), mac)
            .unwrap();
        assert_eq!(to, probe.sender_mac);
        assert_eq!(r.target_ip, Ipv4Addr::UNSPECIFIED);
        let ours = Arp {
            sender_mac: mac,
            ..probe
        };
        assert!(
            ours.answer_for(Ipv4Addr::new(192, 0, 2, 100), mac)
                .is_none()
        );
    }

    #[test]
    fn a_marked_frame_carries_its_mark_and_a_plain_or_padded_one_none() {
        let m = Mark {
            priority: 150,
            primary: Ipv4Addr::new(192, 0, 2, 2),
            vrid: 51,
        };
        let mut marked = REQUEST.to_vec();
        marked.extend_from_slice(&m.encode());
        marked.resize(60, 0);
        assert_eq!(Arp::parse(&marked).unwrap().mark, Some(m));
        assert_eq!(Arp::parse(&REQUEST).unwrap().mark, None);
        let mut padded = REQUEST.to_vec();
        padded.resize(60, 0);
        assert_eq!(Arp::parse(&padded).unwrap().mark, None);
    }

    #[test]
    fn the_mark_survives_the_wire_and_nothing_else_decodes_as_one() {
        let m = Mark {
            priority: 150,
            primary: Ipv4Addr::new(192, 0, 2, 2),
            vrid: 51,
        };
        assert_eq!(Mark::decode(&m.encode()), Some(m));
        assert_eq!(Mark::decode(&[0; 18]), None, "ordinary padding");
        assert_eq!(Mark::decode(&m.encode()[..11]), None, "cut short");
        let mut v2 = m.encode();
        v2[4] = 2;
        assert_eq!(Mark::decode(&v2), None, "another version");
    }

    #[test]
    fn truncated_or_foreign_frames_are_not_arp() {
        assert!(Arp::parse(&REQUEST[..41]).is_none());
        let mut ipv6 = REQUEST;
        ipv6[16] = 0x86;
        assert!(Arp::parse(&ipv6).is_none());
    }

    #[test]
    fn gratuitous_arp_names_the_vip_as_sender_and_target() {
        for g in Arp::gratuitous([2; 6], Ipv4Addr::new(192, 0, 2, 100)) {
            assert_eq!(g.sender_ip, g.target_ip);
            assert_eq!(g.sender_mac, [2; 6]);
        }
    }
}

/// Bounded fuzzing of the ARP parser: whatever arrives on the packet socket.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::fuzz::Rng;

    #[test]
    fn random_mutated_and_truncated_frames_never_panic_and_parsed_ones_round_trip() {
        let valid = Arp::request(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(192, 0, 2, 100),
        )
        .to_frame(BROADCAST);
        for cut in 0..FRAME_LEN {
            assert_eq!(Arp::parse(&valid[..cut]), None, "{cut} bytes");
        }
        let mut rng = Rng::new(0xa2b);
        let mut parsed = 0;
        for case in 0..20_000 {
            let frame = match case % 3 {
                0 => rng.bytes(2 * FRAME_LEN),
                _ => rng.mutate(&valid, &[&[8, 6], &[0, 1, 8, 0, 6, 4], &[0xff; 6]]),
            };
            if let Some(a) = Arp::parse(&frame) {
                parsed += 1;
                // Whatever was accepted is exactly what the frame said.
                assert_eq!(Arp::parse(&a.to_frame(BROADCAST)), Some(a), "case {case}");
                let _ = a.answer_for(Ipv4Addr::new(192, 0, 2, 100), [2; 6]);
            }
        }
        assert!(
            parsed > 100,
            "the mutations reach the accepting path: {parsed}"
        );
    }
}
