//! The sync protocol's datagrams (version 2): a fixed header naming the sender, the
//! recipient and the time, then the records, encrypted and authenticated with
//! ChaCha20-Poly1305 (`ring::aead`) under a key derived from the sync key by HKDF-SHA256
//! for this sender and epoch; the header is the associated data, so the tag covers every
//! byte. Big-endian integers; addresses and ports in records as on the wire. A checked
//! decoder: every failure is a value, nothing panics on hostile input, and nothing but the
//! magic, the epoch and the sender (the key's inputs) is read before the tag checks.
//!
//! ```text
//! 0   magic     "XVS2" (version 1, "XVS1", had an HMAC over clear records and no
//!               sender, recipient or time: refused as `old_version`)
//! 4   type      1 records, 2 dump request, 3 dump part
//! 5   flags     dump part: bit 0 = the last part
//! 6   count     u16 records
//! 8   epoch     u64 the sender's boot epoch (random at start)
//! 16  seq       u64 records: this message's number; dump part: the sender's seq when the
//!               dump began
//! 24  nonce     u64 dump request: a fresh nonce; dump part: the request's; records: 0
//! 32  part      u32 dump part index
//! 36  reserved  u32 zero
//! 40  sender    4 bytes: the sender's IPv4 address (its identity; must be the UDP source)
//! 44  recipient 4 bytes: the unicast peer it is for, or the group 224.0.0.18
//! 48  time      u64 the sender's wall clock (CLOCK_REALTIME), milliseconds since 1970
//! 56  counter   u64 the datagram's number in the sender's epoch (the AEAD nonce: unique
//!               per key, since the key is the sender's and the epoch's)
//! 64  records   count records, each 44 bytes (IPv4) or 92 (IPv6), in any mix, encrypted
//! ..  tag       16 bytes (Poly1305 over the header and the encrypted records)
//! ```
//!
//! A record's fourth byte is its family: 0 for IPv4, 6 for IPv6, whose addresses are 16
//! bytes where IPv4's are 4.

use std::net::Ipv4Addr;

use lb_common::{Addr, FlowKey, Ip6};
use ring::{aead, hkdf};

/// The shared secret, ready to derive each sender's record keys (below). Never
/// printed.
#[derive(Clone)]
pub struct SyncKey(pub(crate) hkdf::Prk);

/// HKDF salt: this protocol and version (a key shared with anything else derives others).
const KDF_SALT: &[u8] = b"xvip conntrack sync v2";

impl SyncKey {
    /// From the key file's bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(secret))
    }
}

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncKey(<secret>)")
    }
}

/// First bytes of every message (and its version).
pub const MAGIC: [u8; 4] = *b"XVS2";
/// The first bytes of a version-1 datagram (refused, counted `old_version`).
pub const MAGIC_V1: [u8; 4] = *b"XVS1";
/// Header bytes before the records.
pub const HEADER_LEN: usize = 64;
/// Bytes of one IPv4 record.
pub const RECORD_LEN: usize = 44;
/// Bytes of one IPv6 record.
pub const RECORD6_LEN: usize = 92;
/// Bytes of the tag.
pub const TAG_LEN: usize = 16;
/// A message's time may differ from the receiver's clock by this much at most (the nodes'
/// clocks are NTP-synchronised; a captured message is useless to a replay after this).
pub const MAX_SKEW_MS: u64 = 30_000;
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
    /// An address a client can have: not zero, loopback, multicast or broadcast.
    fn is_unicast_host(self) -> bool;
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
    fn is_unicast_host(self) -> bool {
        let a = Ipv4Addr::from(self.to_ne_bytes());
        !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
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
    fn is_unicast_host(self) -> bool {
        let a = std::net::Ipv6Addr::from(lb_common::ip6_octets(self));
        !(a.is_unspecified() || a.is_loopback() || a.is_multicast())
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
    /// The sender's identity: its IPv4 address (checked against the UDP source).
    pub sender: Ipv4Addr,
    /// Who it is for: a unicast peer's address, or `sync::SYNC_GROUP`.
    pub recipient: Ipv4Addr,
    /// The sender's wall clock, milliseconds since the UNIX epoch.
    pub time_ms: u64,
    /// The datagram's number in the sender's epoch (unique: the AEAD nonce).
    pub counter: u64,
}

impl Header {
    /// Whether its time is within [`MAX_SKEW_MS`] of `now_ms` (the receiver's clock).
    pub fn fresh(&self, now_ms: u64) -> bool {
        self.time_ms.abs_diff(now_ms) <= MAX_SKEW_MS
    }
}

/// `CLOCK_REALTIME` in milliseconds since the UNIX epoch (0 before it).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    /// A version-1 datagram (a node not upgraded): nothing of it is read.
    OldVersion,
}

/// The record keys are the protocol's: derived here, from the key `config::sync` loads.
impl SyncKey {
    /// The AEAD key of one sender's epoch.
    fn aead(&self, sender: Ipv4Addr, epoch: u64) -> aead::LessSafeKey {
        let (ip, ep) = (sender.octets(), epoch.to_be_bytes());
        let info: [&[u8]; 3] = [b"records", &ip, &ep];
        let okm = self
            .0
            .expand(&info, &aead::CHACHA20_POLY1305)
            .expect("32 bytes is a valid HKDF length");
        aead::LessSafeKey::new(aead::UnboundKey::from(okm))
    }
}

fn aead_nonce(counter: u64) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

/// Encodes, encrypts and signs one message (records of at most [`MAX_RECORD_BYTES`]: a
/// batch of [`batches`]). `h.counter` must never repeat within `h.epoch`.
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
    out.extend_from_slice(&h.sender.octets());
    out.extend_from_slice(&h.recipient.octets());
    out.extend_from_slice(&h.time_ms.to_be_bytes());
    out.extend_from_slice(&h.counter.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    let mut body = Vec::with_capacity(bytes + TAG_LEN);
    for r in records {
        r.encode(&mut body);
    }
    key.aead(h.sender, h.epoch)
        .seal_in_place_append_tag(
            aead_nonce(h.counter),
            aead::Aad::from(&out[..HEADER_LEN]),
            &mut body,
        )
        .expect("a datagram is far below ChaCha20-Poly1305's limit");
    out.extend_from_slice(&body);
    out
}

/// Checks the tag first (nothing unauthenticated is parsed further), then decodes.
///
/// # Errors
/// [`DecodeError`].
pub fn decode(key: &SyncKey, b: &[u8]) -> Result<Message, DecodeError> {
    if b.get(..4) == Some(&MAGIC_V1[..]) {
        return Err(DecodeError::OldVersion);
    }
    if b.len() < HEADER_LEN + TAG_LEN || b.len() > MAX_DATAGRAM || b[..4] != MAGIC {
        return Err(DecodeError::Malformed);
    }
    let (head, sealed) = b.split_at(HEADER_LEN);
    let u64_at = |i: usize| u64::from_be_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let ip_at = |i: usize| Ipv4Addr::new(head[i], head[i + 1], head[i + 2], head[i + 3]);
    let header = Header {
        kind: Kind::Records, // set below, once authenticated
        last: head[5] & 1 != 0,
        epoch: u64_at(8),
        seq: u64_at(16),
        nonce: u64_at(24),
        part: u32::from_be_bytes(head[32..36].try_into().expect("4 bytes")),
        sender: ip_at(40),
        recipient: ip_at(44),
        time_ms: u64_at(48),
        counter: u64_at(56),
    };
    let mut body = sealed.to_vec();
    let plain = key
        .aead(header.sender, header.epoch)
        .open_in_place(aead_nonce(header.counter), aead::Aad::from(head), &mut body)
        .map_err(|_| DecodeError::BadTag)?;
    let kind = Kind::of(head[4]).ok_or(DecodeError::Malformed)?;
    let header = Header { kind, ..header };
    let count = u16::from_be_bytes([head[6], head[7]]) as usize;
    if count > MAX_RECORDS || plain.len() > MAX_RECORD_BYTES || head[36..40] != [0; 4] {
        return Err(DecodeError::Malformed);
    }
    let mut rest = &plain[..];
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
            sender: Ipv4Addr::new(192, 0, 2, 2),
            recipient: Ipv4Addr::new(192, 0, 2, 3),
            time_ms: 1_796_000_000_000,
            counter: 11,
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
        // The magic is checked first; every other bit (header included: the sender, the
        // recipient, the time, the counter) is under the tag.
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            let want = if i < 32 {
                DecodeError::Malformed
            } else {
                DecodeError::BadTag
            };
            assert_eq!(decode(&key, &c), Err(want), "bit {i}");
        }
        for len in 0..b.len() {
            assert!(decode(&key, &b[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn another_sender_or_epoch_or_counter_is_another_key_or_nonce() {
        let key = SyncKey::new(&[9; 32]);
        let h = header(Kind::Records);
        let b = encode(&key, &h, &v4s(2));
        // A sender's datagram re-labelled as another sender's (its tag recomputed is
        // impossible without the key; the header edit alone is caught).
        let edits: [&dyn Fn(&mut Header); 5] = [
            &|h| h.sender = Ipv4Addr::new(192, 0, 2, 66),
            &|h| h.epoch ^= 1,
            &|h| h.counter += 1,
            &|h| h.recipient = Ipv4Addr::new(192, 0, 2, 4),
            &|h| h.time_ms += 60_000,
        ];
        for edit in edits {
            let mut h2 = h;
            edit(&mut h2);
            let mut c = encode(&key, &h2, &[]);
            c.truncate(HEADER_LEN);
            c.extend_from_slice(&b[HEADER_LEN..]);
            assert_eq!(decode(&key, &c), Err(DecodeError::BadTag), "{h2:?}");
        }
        // The same records under two counters are two different ciphertexts.
        let b2 = encode(&key, &Header { counter: 12, ..h }, &v4s(2));
        assert_ne!(b[HEADER_LEN..], b2[HEADER_LEN..]);
    }

    #[test]
    fn records_are_not_readable_on_the_wire() {
        let key = SyncKey::new(&[9; 32]);
        let r = record(1);
        let b = encode(&key, &header(Kind::Records), &[r.into()]);
        let find = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        assert!(!find(&r.key.src_addr.to_ne_bytes()), "the client's address");
        assert!(!find(&r.client_mac), "the client's MAC");
        assert_eq!(decode(&key, &b).unwrap().records, vec![r.into()]);
    }

    #[test]
    fn a_version_1_datagram_is_old_version_and_never_read() {
        let key = SyncKey::new(&[9; 32]);
        let mut v1 = b"XVS1".to_vec();
        v1.extend_from_slice(&[1, 0, 0, 0]);
        v1.resize(40 + 32, 0);
        assert_eq!(decode(&key, &v1), Err(DecodeError::OldVersion));
        assert_eq!(decode(&key, b"XVS1"), Err(DecodeError::OldVersion));
        assert_eq!(decode(&key, b"XVS"), Err(DecodeError::Malformed));
    }

    #[test]
    fn freshness_is_thirty_seconds_either_way() {
        let h = header(Kind::DumpRequest);
        assert!(h.fresh(h.time_ms));
        assert!(h.fresh(h.time_ms + MAX_SKEW_MS));
        assert!(h.fresh(h.time_ms - MAX_SKEW_MS));
        assert!(!h.fresh(h.time_ms + MAX_SKEW_MS + 1));
        assert!(!h.fresh(h.time_ms - MAX_SKEW_MS - 1));
        assert!(!h.fresh(0));
    }

    #[test]
    fn a_signed_but_inconsistent_message_is_malformed_not_a_panic() {
        let key = SyncKey::new(&[9; 32]);
        // Decrypts, edits the header and the plain records, seals again (as a key holder
        // could).
        let reseal = |b: &[u8], edit: &dyn Fn(&mut Vec<u8>, &mut Vec<u8>)| {
            let h = decode_header(b);
            let mut plain = b[HEADER_LEN..].to_vec();
            let n = key
                .aead(h.sender, h.epoch)
                .open_in_place(
                    aead_nonce(h.counter),
                    aead::Aad::from(&b[..HEADER_LEN]),
                    &mut plain,
                )
                .unwrap()
                .len();
            plain.truncate(n);
            let mut head = b[..HEADER_LEN].to_vec();
            edit(&mut head, &mut plain);
            key.aead(h.sender, h.epoch)
                .seal_in_place_append_tag(
                    aead_nonce(h.counter),
                    aead::Aad::from(&head[..]),
                    &mut plain,
                )
                .unwrap();
            head.extend_from_slice(&plain);
            head
        };
        let one = encode(&key, &header(Kind::Records), &v4s(1));
        let one6 = encode(&key, &header(Kind::Records), &v6s(1));
        type Edit<'a> = (&'a Vec<u8>, &'a dyn Fn(&mut Vec<u8>, &mut Vec<u8>), &'a str);
        let edits: [Edit; 9] = [
            (&one, &|h, _| h[7] = 5, "count says 5, one record follows"),
            (&one, &|h, _| h[7] = 0, "count says 0, one record follows"),
            (&one, &|h, _| h[4] = 9, "no such type"),
            (&one, &|h, _| h[37] = 1, "reserved not zero"),
            (&one, &|_, p| p[0] = 9, "no such event"),
            (&one, &|_, p| p[3] = 5, "no such family"),
            (&one, &|_, p| p[3] = 6, "an IPv4 record's bytes tagged IPv6"),
            (&one6, &|_, p| p[3] = 0, "an IPv6 record tagged IPv4"),
            (
                &one6,
                &|_, p| p.truncate(p.len() - 1),
                "an IPv6 record cut short",
            ),
        ];
        for (b, edit, what) in edits {
            let b = reseal(b, edit);
            assert_eq!(decode(&key, &b), Err(DecodeError::Malformed), "{what}");
        }
    }

    /// The header fields of an encoded datagram (test helper: no authentication).
    fn decode_header(b: &[u8]) -> Header {
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        Header {
            kind: Kind::of(b[4]).unwrap(),
            last: b[5] & 1 != 0,
            epoch: u64_at(8),
            seq: u64_at(16),
            nonce: u64_at(24),
            part: 0,
            sender: Ipv4Addr::new(b[40], b[41], b[42], b[43]),
            recipient: Ipv4Addr::new(b[44], b[45], b[46], b[47]),
            time_ms: u64_at(48),
            counter: u64_at(56),
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
}
