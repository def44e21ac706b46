//! The sync protocol's datagrams: a fixed header, records, and an HMAC-SHA256 tag over
//! everything before it (`ring::hmac`, whose verification is constant-time). Big-endian
//! integers; addresses and ports as on the wire. A checked decoder: every failure is a
//! value, nothing panics on hostile input.
//!
//! ```text
//! 0   magic "XVS1"
//! 4   type      1 records, 2 dump request, 3 dump part
//! 5   flags     dump part: bit 0 = the last part
//! 6   count     u16 records
//! 8   epoch     u64 the sender's boot epoch (random at start)
//! 16  seq       u64 records: this message's number; dump part: the sender's seq when the
//!               dump began
//! 24  nonce     u64 dump request: a fresh nonce; dump part: the request's; records: 0
//! 32  part      u32 dump part index
//! 36  reserved  u32
//! 40  records   count records, each 44 bytes (IPv4) or 92 (IPv6), in any mix
//! ..  tag       32 bytes HMAC-SHA256(key, all of the above)
//! ```
//!
//! A record's fourth byte is its family: 0 for IPv4 (the byte was reserved, zero, before
//! IPv6 was synced, so IPv4 records are unchanged), 6 for IPv6, whose addresses are 16
//! bytes where IPv4's are 4. A receiver from before IPv6 finds the length not `count` x
//! 44 and rejects the datagram as malformed (counted), never reading a record of it.

use lb_common::{Addr, FlowKey, Ip6};
use ring::hmac;

/// First bytes of every message (and its version).
pub const MAGIC: [u8; 4] = *b"XVS1";
/// Header bytes before the records.
pub const HEADER_LEN: usize = 40;
/// Bytes of one IPv4 record.
pub const RECORD_LEN: usize = 44;
/// Bytes of one IPv6 record.
pub const RECORD6_LEN: usize = 92;
/// Bytes of the tag.
pub const TAG_LEN: usize = 32;
/// Largest datagram sent: fits a 1500-byte MTU with IPv4 and UDP headers.
pub const MAX_DATAGRAM: usize = 1400;
/// Record bytes a datagram holds.
pub const MAX_RECORD_BYTES: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// IPv4 records per datagram (the most records a datagram holds).
pub const MAX_RECORDS: usize = MAX_RECORD_BYTES / RECORD_LEN;
/// IPv6 records per datagram.
pub const MAX_RECORDS6: usize = MAX_RECORD_BYTES / RECORD6_LEN;

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Flows confirmed or ended since the previous message.
    Records,
    /// "Send me every flow you have" (a node that starts, or saw a gap).
    DumpRequest,
    /// One datagram of an answer to a dump request.
    DumpPart,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Records => 1,
            Kind::DumpRequest => 2,
            Kind::DumpPart => 3,
        }
    }
    fn of(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Records),
            2 => Some(Kind::DumpRequest),
            3 => Some(Kind::DumpPart),
            _ => None,
        }
    }
}

/// What happened to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Confirmed (or, in a dump, alive).
    Confirmed,
    /// Saw an in-window FIN or RST.
    Closing,
    /// Its entry was removed.
    Removed,
}

impl Event {
    fn byte(self) -> u8 {
        match self {
            Event::Confirmed => 1,
            Event::Closing => 2,
            Event::Removed => 3,
        }
    }
    fn of(b: u8) -> Option<Self> {
        match b {
            1 => Some(Event::Confirmed),
            2 => Some(Event::Closing),
            3 => Some(Event::Removed),
            _ => None,
        }
    }
    /// From a data-path `SyncEvent::kind`.
    pub fn from_datapath(kind: u32) -> Option<Self> {
        match kind {
            lb_common::SYNC_CONFIRMED => Some(Event::Confirmed),
            lb_common::SYNC_CLOSING => Some(Event::Closing),
            lb_common::SYNC_REMOVED => Some(Event::Removed),
            _ => None,
        }
    }
}

/// An address family as records carry it: its family byte and its raw addresses' bytes
/// (as in the maps, wire order).
pub trait WireAddr: Addr + std::hash::Hash {
    /// The record's family byte.
    const FAMILY: u8;
    /// Bytes of one record of the family.
    const RECORD_LEN: usize;
    fn put(self, out: &mut Vec<u8>);
    /// From the address's bytes at the start of `b` (long enough: checked by the caller).
    fn get(b: &[u8]) -> Self;
}

impl WireAddr for u32 {
    const FAMILY: u8 = 0;
    const RECORD_LEN: usize = RECORD_LEN;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_ne_bytes());
    }
    fn get(b: &[u8]) -> Self {
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl WireAddr for Ip6 {
    const FAMILY: u8 = 6;
    const RECORD_LEN: usize = RECORD6_LEN;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&lb_common::ip6_octets(self));
    }
    fn get(b: &[u8]) -> Self {
        lb_common::ip6_raw(b[..16].try_into().expect("16 bytes"))
    }
}

/// One flow as sent between nodes. Backends are named by address and port, never by a
/// node's slot index; interface index and sequence windows are per node and not sent.
/// `A`: the family's raw address (`u32`, `Ip6`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record<A = u32> {
    pub event: Option<Event>,
    /// The client-side key (client -> VIP), raw as in the maps.
    pub key: FlowKey<A>,
    /// One of `lb_common::ct_state`.
    pub state: u8,
    /// Backend address and port (raw).
    pub backend_addr: A,
    pub backend_port: u16,
    /// Source address and port the flow is translated to (raw).
    pub snat_addr: A,
    pub snat_port: u16,
    /// The client's MAC (replies go to it).
    pub client_mac: [u8; 6],
    /// The client's VLAN tag (`lb_common::vlan_tag`).
    pub client_vlan: u32,
    /// Milliseconds since the flow's last packet on the sender.
    pub age_ms: u32,
}

/// An IPv6 flow's record.
pub type Record6 = Record<Ip6>;

impl<A: WireAddr> Record<A> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.event.map_or(0, Event::byte));
        out.push(self.key.proto);
        out.push(self.state);
        out.push(A::FAMILY);
        self.key.src_addr.put(out);
        self.key.dst_addr.put(out);
        out.extend_from_slice(&self.key.src_port.to_ne_bytes());
        out.extend_from_slice(&self.key.dst_port.to_ne_bytes());
        self.backend_addr.put(out);
        self.snat_addr.put(out);
        out.extend_from_slice(&self.backend_port.to_ne_bytes());
        out.extend_from_slice(&self.snat_port.to_ne_bytes());
        out.extend_from_slice(&self.client_mac);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.client_vlan.to_be_bytes());
        out.extend_from_slice(&self.age_ms.to_be_bytes());
    }

    /// From exactly `A::RECORD_LEN` bytes.
    fn decode(b: &[u8]) -> Option<Self> {
        debug_assert_eq!(b.len(), A::RECORD_LEN);
        let n = size_of::<A>();
        let ne16 = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let ports = 4 + 2 * n;
        let addrs2 = ports + 4;
        let rest = addrs2 + 2 * n;
        Some(Self {
            event: Some(Event::of(b[0])?),
            key: FlowKey {
                src_addr: A::get(&b[4..]),
                dst_addr: A::get(&b[4 + n..]),
                src_port: ne16(ports),
                dst_port: ne16(ports + 2),
                proto: b[1],
                _pad: [0; 3],
            },
            state: b[2],
            backend_addr: A::get(&b[addrs2..]),
            snat_addr: A::get(&b[addrs2 + n..]),
            backend_port: ne16(rest),
            snat_port: ne16(rest + 2),
            client_mac: b[rest + 4..rest + 10].try_into().expect("6 bytes"),
            client_vlan: be32(rest + 12),
            age_ms: be32(rest + 16),
        })
    }
}

/// A record of either family, as messages carry them (in any mix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnyRecord {
    V4(Record),
    V6(Record6),
}

impl AnyRecord {
    /// Its bytes in a datagram.
    pub fn wire_len(&self) -> usize {
        match self {
            AnyRecord::V4(_) => RECORD_LEN,
            AnyRecord::V6(_) => RECORD6_LEN,
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AnyRecord::V4(r) => r.encode(out),
            AnyRecord::V6(r) => r.encode(out),
        }
    }
}

impl From<Record> for AnyRecord {
    fn from(r: Record) -> Self {
        AnyRecord::V4(r)
    }
}

impl From<Record6> for AnyRecord {
    fn from(r: Record6) -> Self {
        AnyRecord::V6(r)
    }
}

/// `records` cut into runs that each fit one datagram, in order (none for no records).
pub fn batches(records: &[AnyRecord]) -> Vec<&[AnyRecord]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        if bytes + r.wire_len() > MAX_RECORD_BYTES {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += r.wire_len();
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// A message's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Dump part: the last one of its dump.
    pub last: bool,
    pub epoch: u64,
    pub seq: u64,
    pub nonce: u64,
    pub part: u32,
}

/// A decoded, authenticated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub records: Vec<AnyRecord>,
}

/// Why a datagram was rejected before anything in it was looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header and a tag, or a length that does not match the count.
    Malformed,
    /// The tag does not match (another key, or altered on the way).
    BadTag,
}

/// The shared secret, ready to sign and verify. Never printed.
#[derive(Clone)]
pub struct SyncKey(hmac::Key);

impl SyncKey {
    /// From the key file's bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncKey(<secret>)")
    }
}

/// Encodes and signs one message (records of at most [`MAX_RECORD_BYTES`]: a batch of
/// [`batches`]).
pub fn encode(key: &SyncKey, h: &Header, records: &[AnyRecord]) -> Vec<u8> {
    let bytes: usize = records.iter().map(AnyRecord::wire_len).sum();
    assert!(bytes <= MAX_RECORD_BYTES, "too many records for a datagram");
    let mut out = Vec::with_capacity(HEADER_LEN + bytes + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(h.kind.byte());
    out.push(u8::from(h.last));
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&h.epoch.to_be_bytes());
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.nonce.to_be_bytes());
    out.extend_from_slice(&h.part.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for r in records {
        r.encode(&mut out);
    }
    let tag = hmac::sign(&key.0, &out);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Checks the tag first (nothing unauthenticated is parsed further), then decodes.
///
/// # Errors
/// [`DecodeError`].
pub fn decode(key: &SyncKey, b: &[u8]) -> Result<Message, DecodeError> {
    if b.len() < HEADER_LEN + TAG_LEN {
        return Err(DecodeError::Malformed);
    }
    let (body, tag) = b.split_at(b.len() - TAG_LEN);
    hmac::verify(&key.0, body, tag).map_err(|_| DecodeError::BadTag)?;
    if body[..4] != MAGIC {
        return Err(DecodeError::Malformed);
    }
    let kind = Kind::of(body[4]).ok_or(DecodeError::Malformed)?;
    let count = u16::from_be_bytes([body[6], body[7]]) as usize;
    if count > MAX_RECORDS || body.len() > HEADER_LEN + MAX_RECORD_BYTES {
        return Err(DecodeError::Malformed);
    }
    let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let header = Header {
        kind,
        last: body[5] & 1 != 0,
        epoch: u64_at(8),
        seq: u64_at(16),
        nonce: u64_at(24),
        part: u32::from_be_bytes(body[32..36].try_into().expect("4 bytes")),
    };
    let mut rest = &body[HEADER_LEN..];
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, family) = match rest.get(3) {
            Some(&u32::FAMILY) => (RECORD_LEN, u32::FAMILY),
            Some(&Ip6::FAMILY) => (RECORD6_LEN, Ip6::FAMILY),
            _ => return Err(DecodeError::Malformed),
        };
        let (b, tail) = rest.split_at_checked(len).ok_or(DecodeError::Malformed)?;
        let r = if family == Ip6::FAMILY {
            Record6::decode(b).map(AnyRecord::V6)
        } else {
            Record::decode(b).map(AnyRecord::V4)
        };
        records.push(r.ok_or(DecodeError::Malformed)?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(Message { header, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{ip_raw, port_raw};

    fn record(i: u32) -> Record {
        Record {
            event: Some(Event::Confirmed),
            key: FlowKey {
                src_addr: ip_raw([192, 0, 2, 10]),
                dst_addr: ip_raw([192, 0, 2, 100]),
                src_port: port_raw(40000 + i as u16),
                dst_port: port_raw(6443),
                proto: 6,
                _pad: [0; 3],
            },
            state: lb_common::ct_state::TCP_ESTABLISHED,
            backend_addr: ip_raw([192, 0, 2, 11]),
            backend_port: port_raw(6443),
            snat_addr: ip_raw([192, 0, 2, 100]),
            snat_port: port_raw(20000 + i as u16),
            client_mac: [2, 0, 0, 0, 0, i as u8],
            client_vlan: lb_common::vlan_tag(0x8100, 7),
            age_ms: i * 1000,
        }
    }

    fn record6(i: u32) -> Record6 {
        let a = |last: u8| {
            let mut o = [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
            ];
            o[13] = i as u8; // every address byte position carries something
            lb_common::ip6_raw(o)
        };
        let r = record(i);
        Record6 {
            event: r.event,
            key: FlowKey {
                src_addr: a(10),
                dst_addr: a(100),
                src_port: r.key.src_port,
                dst_port: r.key.dst_port,
                proto: 6,
                _pad: [0; 3],
            },
            state: r.state,
            backend_addr: a(11),
            backend_port: r.backend_port,
            snat_addr: a(2),
            snat_port: r.snat_port,
            client_mac: r.client_mac,
            client_vlan: r.client_vlan,
            age_ms: r.age_ms,
        }
    }

    fn v4s(n: u32) -> Vec<AnyRecord> {
        (0..n).map(|i| record(i).into()).collect()
    }

    fn v6s(n: u32) -> Vec<AnyRecord> {
        (0..n).map(|i| record6(i).into()).collect()
    }

    /// Every other record IPv6.
    fn mixed(n: u32) -> Vec<AnyRecord> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    record(i).into()
                } else {
                    record6(i).into()
                }
            })
            .collect()
    }

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            last: kind == Kind::DumpPart,
            epoch: 0x0123_4567_89ab_cdef,
            seq: 42,
            nonce: 7,
            part: 3,
        }
    }

    #[test]
    fn decode_of_encode_is_the_message() {
        let key = SyncKey::new(&[9; 32]);
        for kind in [Kind::Records, Kind::DumpRequest, Kind::DumpPart] {
            for records in [
                v4s(0),
                v4s(1),
                v4s(MAX_RECORDS as u32),
                v6s(1),
                v6s(MAX_RECORDS6 as u32),
                mixed(2),
                mixed(19),
            ] {
                let b = encode(&key, &header(kind), &records);
                assert!(b.len() <= MAX_DATAGRAM);
                let m = decode(&key, &b).expect("decodes");
                assert_eq!(m.header, header(kind));
                assert_eq!(m.records, records);
            }
        }
    }

    #[test]
    fn another_key_or_any_flipped_bit_is_rejected() {
        let key = SyncKey::new(&[9; 32]);
        let b = encode(&key, &header(Kind::Records), &mixed(3));
        assert_eq!(
            decode(&SyncKey::new(&[8; 32]), &b),
            Err(DecodeError::BadTag)
        );
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode(&key, &c), Err(DecodeError::BadTag), "bit {i}");
        }
        for len in 0..b.len() {
            assert!(decode(&key, &b[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn a_signed_but_inconsistent_message_is_malformed_not_a_panic() {
        let key = SyncKey::new(&[9; 32]);
        let resign = |mut b: Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
            b.truncate(b.len() - TAG_LEN);
            edit(&mut b);
            let tag = hmac::sign(&key.0, &b);
            b.extend_from_slice(tag.as_ref());
            b
        };
        let one = encode(&key, &header(Kind::Records), &v4s(1));
        let one6 = encode(&key, &header(Kind::Records), &v6s(1));
        type Edit<'a> = (&'a Vec<u8>, &'a dyn Fn(&mut Vec<u8>), &'a str);
        let edits: [Edit; 7] = [
            (&one, &|b| b[7] = 5, "count says 5, one record follows"),
            (&one, &|b| b[7] = 0, "count says 0, one record follows"),
            (&one, &|b| b[HEADER_LEN] = 9, "no such event"),
            (&one, &|b| b[HEADER_LEN + 3] = 5, "no such family"),
            (
                &one,
                &|b| b[HEADER_LEN + 3] = 6,
                "an IPv4 record's bytes tagged IPv6",
            ),
            (
                &one6,
                &|b| b[HEADER_LEN + 3] = 0,
                "an IPv6 record tagged IPv4",
            ),
            (
                &one6,
                &|b| b.truncate(b.len() - 1),
                "an IPv6 record cut short",
            ),
        ];
        for (b, edit, what) in edits {
            let b = resign(b.clone(), edit);
            assert_eq!(decode(&key, &b), Err(DecodeError::Malformed), "{what}");
        }
    }

    /// What a receiver from before IPv6 checked: the length is the header, `count` x 44
    /// bytes and the tag, or the datagram is malformed (and counted so).
    fn old_receiver_accepts(b: &[u8]) -> bool {
        let count = u16::from_be_bytes([b[6], b[7]]) as usize;
        b.len() == HEADER_LEN + count * RECORD_LEN + TAG_LEN
    }

    #[test]
    fn ipv4_only_messages_are_what_they_were_and_any_ipv6_one_is_refused_by_an_old_receiver() {
        let key = SyncKey::new(&[9; 32]);
        let b = encode(&key, &header(Kind::Records), &v4s(3));
        assert!(old_receiver_accepts(&b));
        assert!(
            b[HEADER_LEN..]
                .chunks(RECORD_LEN)
                .take(3)
                .all(|r| r[3] == 0),
            "the family byte of IPv4 is the old reserved zero"
        );
        for records in [v6s(1), mixed(2), mixed(3), v6s(MAX_RECORDS6 as u32)] {
            let b = encode(&key, &header(Kind::Records), &records);
            assert!(!old_receiver_accepts(&b), "{} records", records.len());
        }
    }

    #[test]
    fn batches_fill_datagrams_in_order_and_each_one_encodes() {
        let key = SyncKey::new(&[9; 32]);
        assert!(batches(&[]).is_empty());
        for records in [v4s(61), v6s(29), mixed(100)] {
            let cut = batches(&records);
            assert_eq!(cut.concat(), records, "every record once, in order");
            for (i, b) in cut.iter().enumerate() {
                let bytes: usize = b.iter().map(AnyRecord::wire_len).sum();
                assert!(bytes <= MAX_RECORD_BYTES);
                if let Some(next) = cut.get(i + 1) {
                    assert!(
                        bytes + next[0].wire_len() > MAX_RECORD_BYTES,
                        "no batch short"
                    );
                }
                let d = encode(&key, &header(Kind::Records), b);
                assert!(d.len() <= MAX_DATAGRAM);
                assert_eq!(decode(&key, &d).unwrap().records, *b);
            }
        }
        assert_eq!(batches(&v4s(61)).len(), 3);
        assert_eq!(batches(&v6s(29)).len(), 29usize.div_ceil(MAX_RECORDS6));
    }

    #[test]
    fn the_key_is_never_printed() {
        let s = format!("{:?}", SyncKey::new(b"0123456789abcdef0123456789abcdef"));
        assert!(!s.contains("0123"), "{s}");
    }
}
