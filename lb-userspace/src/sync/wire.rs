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
//! 40  records   count x 44 bytes
//! ..  tag       32 bytes HMAC-SHA256(key, all of the above)
//! ```

use lb_common::FlowKey;
use ring::hmac;

/// First bytes of every message (and its version).
pub const MAGIC: [u8; 4] = *b"XVS1";
/// Header bytes before the records.
pub const HEADER_LEN: usize = 40;
/// Bytes of one record.
pub const RECORD_LEN: usize = 44;
/// Bytes of the tag.
pub const TAG_LEN: usize = 32;
/// Largest datagram sent: fits a 1500-byte MTU with IPv4 and UDP headers.
pub const MAX_DATAGRAM: usize = 1400;
/// Records per datagram.
pub const MAX_RECORDS: usize = (MAX_DATAGRAM - HEADER_LEN - TAG_LEN) / RECORD_LEN;

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

/// One flow as sent between nodes. Backends are named by address and port, never by a
/// node's slot index; interface index and sequence windows are per node and not sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub event: Option<Event>,
    /// The client-side key (client -> VIP), raw as in the maps.
    pub key: FlowKey,
    /// One of `lb_common::ct_state`.
    pub state: u8,
    /// Backend address and port (raw).
    pub backend_addr: u32,
    pub backend_port: u16,
    /// Source address and port the flow is translated to (raw).
    pub snat_addr: u32,
    pub snat_port: u16,
    /// The client's MAC (replies go to it).
    pub client_mac: [u8; 6],
    /// The client's VLAN tag (`lb_common::vlan_tag`).
    pub client_vlan: u32,
    /// Milliseconds since the flow's last packet on the sender.
    pub age_ms: u32,
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.event.map_or(0, Event::byte));
        out.push(self.key.proto);
        out.push(self.state);
        out.push(0);
        out.extend_from_slice(&self.key.src_addr.to_ne_bytes());
        out.extend_from_slice(&self.key.dst_addr.to_ne_bytes());
        out.extend_from_slice(&self.key.src_port.to_ne_bytes());
        out.extend_from_slice(&self.key.dst_port.to_ne_bytes());
        out.extend_from_slice(&self.backend_addr.to_ne_bytes());
        out.extend_from_slice(&self.snat_addr.to_ne_bytes());
        out.extend_from_slice(&self.backend_port.to_ne_bytes());
        out.extend_from_slice(&self.snat_port.to_ne_bytes());
        out.extend_from_slice(&self.client_mac);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.client_vlan.to_be_bytes());
        out.extend_from_slice(&self.age_ms.to_be_bytes());
    }

    fn decode(b: &[u8; RECORD_LEN]) -> Option<Self> {
        let ne32 = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let ne16 = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            event: Some(Event::of(b[0])?),
            key: FlowKey {
                src_addr: ne32(4),
                dst_addr: ne32(8),
                src_port: ne16(12),
                dst_port: ne16(14),
                proto: b[1],
                _pad: [0; 3],
            },
            state: b[2],
            backend_addr: ne32(16),
            snat_addr: ne32(20),
            backend_port: ne16(24),
            snat_port: ne16(26),
            client_mac: [b[28], b[29], b[30], b[31], b[32], b[33]],
            client_vlan: be32(36),
            age_ms: be32(40),
        })
    }
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
    pub records: Vec<Record>,
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

/// Encodes and signs one message (at most [`MAX_RECORDS`] records).
pub fn encode(key: &SyncKey, h: &Header, records: &[Record]) -> Vec<u8> {
    assert!(
        records.len() <= MAX_RECORDS,
        "too many records for a datagram"
    );
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * RECORD_LEN + TAG_LEN);
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
    if body.len() != HEADER_LEN + count * RECORD_LEN || count > MAX_RECORDS {
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
    let records = body[HEADER_LEN..]
        .as_chunks::<RECORD_LEN>()
        .0
        .iter()
        .map(Record::decode)
        .collect::<Option<Vec<_>>>()
        .ok_or(DecodeError::Malformed)?;
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
            for n in [0, 1, MAX_RECORDS] {
                let records: Vec<Record> = (0..n as u32).map(record).collect();
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
        let b = encode(&key, &header(Kind::Records), &[record(1), record(2)]);
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
        let mut b = encode(&key, &header(Kind::Records), &[record(1)]);
        b.truncate(b.len() - TAG_LEN);
        b[7] = 5; // count says 5, one record follows
        let tag = hmac::sign(&key.0, &b);
        b.extend_from_slice(tag.as_ref());
        assert_eq!(decode(&key, &b), Err(DecodeError::Malformed));
        let mut b = encode(&key, &header(Kind::Records), &[record(1)]);
        b.truncate(b.len() - TAG_LEN);
        b[HEADER_LEN] = 9; // no such event
        let tag = hmac::sign(&key.0, &b);
        b.extend_from_slice(tag.as_ref());
        assert_eq!(decode(&key, &b), Err(DecodeError::Malformed));
    }

    #[test]
    fn the_key_is_never_printed() {
        let s = format!("{:?}", SyncKey::new(b"0123456789abcdef0123456789abcdef"));
        assert!(!s.contains("0123"), "{s}");
    }
}
