//! The witness check (`--vrrp-track-ip ADDR`, e.g. the gateway): an ICMP echo to it every
//! [`EVERY`]; after `fall` probes in a row without an answer the node's advertised priority
//! is lowered by the configured weight, so a node that has lost its uplink hands the VIP to
//! one that has not (keepalived does this with a `track_script` running ping and a
//! weight); one answer lifts it. The codec and the counting are pure; the socket is the
//! daemon's (`daemon::track`).

use std::{net::Ipv4Addr, time::Duration};

/// One probe per second; an answer counts until the next probe is sent.
pub const EVERY: Duration = Duration::from_secs(1);
/// Packets read per tick at most (anything can arrive on a raw ICMP socket).
pub const MAX_READ: usize = 64;
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_LEN: usize = 8;
const IPPROTO_ICMP: u8 = 1;

/// An ICMP echo request (header only) with `id` and `seq`, checksum filled in.
pub fn echo_request(id: u16, seq: u16) -> [u8; ICMP_ECHO_LEN] {
    let mut b = [0u8; ICMP_ECHO_LEN];
    b[0] = ECHO_REQUEST;
    b[4..6].copy_from_slice(&id.to_be_bytes());
    b[6..8].copy_from_slice(&seq.to_be_bytes());
    let c = lb_common::checksum::checksum(&b);
    b[2..4].copy_from_slice(&c.to_be_bytes());
    b
}

/// The sequence number of an echo reply from `from` with our `id`, in `pkt` as a raw ICMP
/// socket gives it (the IPv4 header first, its length from the IHL); `None` for anything
/// else (other sources, types, ids, bad checksums, short packets).
pub fn reply_seq(pkt: &[u8], from: Ipv4Addr, id: u16) -> Option<u16> {
    let first = *pkt.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || *pkt.get(9)? != IPPROTO_ICMP {
        return None;
    }
    let s: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    let src = Ipv4Addr::from(s);
    let icmp = pkt.get(ihl..)?;
    if src != from || icmp.len() < ICMP_ECHO_LEN || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
        return None;
    }
    if lb_common::checksum::checksum(icmp) != 0 {
        return None;
    }
    (u16::from_be_bytes([icmp[4], icmp[5]]) == id).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// Consecutive probes without an answer, and whether the witness counts as lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Witness {
    missed: u32,
    lost: bool,
}

impl Witness {
    /// The last probe was answered (`true`) or not; returns the new "lost" when it changed.
    pub fn probed(&mut self, answered: bool, fall: u32) -> Option<bool> {
        self.missed = if answered {
            0
        } else {
            self.missed.saturating_add(1)
        };
        let lost = self.missed >= fall.max(1);
        (lost != self.lost).then(|| {
            self.lost = lost;
            lost
        })
    }

    pub fn lost(&self) -> bool {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// An echo reply as the kernel hands it to a raw socket: 20-byte IPv4 header + ICMP.
    fn reply(src: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
        let mut icmp = echo_request(id, seq);
        icmp[0] = ECHO_REPLY;
        icmp[2..4].copy_from_slice(&[0, 0]);
        let c = lb_common::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, IPPROTO_ICMP, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[192, 0, 2, 2]);
        p.extend_from_slice(&icmp);
        p
    }

    #[test]
    fn a_request_carries_its_id_and_seq_and_a_valid_checksum() {
        let r = echo_request(0x1234, 7);
        assert_eq!(r[0], ECHO_REQUEST);
        assert_eq!(lb_common::checksum::checksum(&r), 0);
        assert_eq!(&r[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn only_our_witness_s_reply_with_our_id_counts() {
        assert_eq!(reply_seq(&reply(GW, 9, 3), GW, 9), Some(3));
        assert_eq!(reply_seq(&reply(GW, 9, 3), GW, 10), None, "another id");
        let other = Ipv4Addr::new(192, 0, 2, 66);
        assert_eq!(
            reply_seq(&reply(other, 9, 3), GW, 9),
            None,
            "another source"
        );
        let mut bad = reply(GW, 9, 3);
        bad[27] ^= 1;
        assert_eq!(reply_seq(&bad, GW, 9), None, "bad checksum");
        let mut req = reply(GW, 9, 3);
        req[20] = ECHO_REQUEST;
        assert_eq!(reply_seq(&req, GW, 9), None, "a request");
        let p = reply(GW, 9, 3);
        for cut in 0..p.len() {
            assert_eq!(reply_seq(&p[..cut], GW, 9), None, "{cut} bytes");
        }
        let mut ihl = reply(GW, 9, 3);
        ihl[0] = 0x4f;
        assert_eq!(reply_seq(&ihl, GW, 9), None, "IHL past the end");
    }

    #[test]
    fn lost_after_fall_misses_in_a_row_back_after_one_answer() {
        let mut w = Witness::default();
        assert_eq!(w.probed(false, 3), None);
        assert_eq!(w.probed(false, 3), None);
        assert_eq!(w.probed(true, 3), None, "an answer resets the count");
        assert_eq!(w.probed(false, 3), None);
        assert_eq!(w.probed(false, 3), None);
        assert_eq!(w.probed(false, 3), Some(true));
        assert!(w.lost());
        assert_eq!(w.probed(false, 3), None);
        assert_eq!(w.probed(true, 3), Some(false));
    }
}
