//! The sending thread: the data path's ring buffer read into records, batched every
//! [`super::BATCH_EVERY`], heartbeats, refreshes, and dumps answered to the peers that ask.

use std::{
    collections::HashMap as StdHashMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use lb_common::{
    CtEntry, CtEntry6, FlowKey, FlowKey6, SYNC_COUNT_EMITTED, SYNC_COUNT_RING_FULL, SYNC_FAMILY_V6,
    SyncEvent, SyncEvent6,
};

use super::{
    BATCH_EVERY, DUMP_ANSWER_EVERY, HEARTBEAT_EVERY, MAX_DUMPS_AT_ONCE, REFRESH_EVERY, Stats, bump,
    install,
};
use crate::wire::{
    self,
    sync::{AnyRecord, Event, Header, Kind, Record, SyncKey},
};

/// Dump datagrams sent back to back before a pause of [`DUMP_PAUSE`]: with 30 IPv4
/// records a datagram, some 11 MB/s at most (262,144 flows in about a second; IPv6 flows,
/// 14 a datagram, take about twice as long).
const DUMP_BURST: usize = 8;
const DUMP_PAUSE: Duration = Duration::from_millis(1);

pub(super) struct Sender {
    pub(super) key: SyncKey,
    pub(super) sock: Arc<UdpSocket>,
    pub(super) targets: Vec<SocketAddr>,
    /// This node's address: the sender named in its datagrams.
    pub(super) own: Ipv4Addr,
    pub(super) counter: Arc<AtomicU64>,
    pub(super) epoch: u64,
    pub(super) seq: u64,
    pub(super) events: RingBuf<MapData>,
    pub(super) counts: PerCpuArray<MapData, u64>,
    pub(super) conntrack: HashMap<MapData, FlowKey, CtEntry>,
    pub(super) conntrack6: HashMap<MapData, FlowKey6, CtEntry6>,
    pub(super) stats: Arc<Mutex<Stats>>,
    /// Dump requests (nonce, who asked) from the receiver.
    pub(super) dumps: mpsc::Receiver<(u64, SocketAddr)>,
    pub(super) last_sent: Instant,
    pub(super) master: Arc<AtomicBool>,
    /// When each requester last got a dump.
    pub(super) answered: StdHashMap<SocketAddr, Instant>,
}

impl Sender {
    pub(super) fn run(&mut self, stop: &AtomicBool) {
        let mut counted = Instant::now();
        let mut refreshed = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(BATCH_EVERY);
            self.flush();
            if let Ok((nonce, to)) = self.dumps.try_recv() {
                // One dump per requester every 5 s, a few to everyone together: no request
                // (a peer's retries, a key holder's flood) makes this node flood anyone.
                let now = Instant::now();
                self.answered
                    .retain(|_, t| now.duration_since(*t) < DUMP_ANSWER_EVERY);
                if self.answered.len() >= MAX_DUMPS_AT_ONCE {
                    bump(
                        &mut self.stats.lock().expect("poisoned").status.rejected,
                        "dump_rate",
                    );
                } else if let std::collections::hash_map::Entry::Vacant(e) = self.answered.entry(to)
                {
                    e.insert(now);
                    self.dump(Some((nonce, to)));
                }
            }
            // Only the master: a backup's copies are not seen by packets, so their ages
            // only grow.
            if refreshed.elapsed() >= REFRESH_EVERY {
                refreshed = Instant::now();
                if self.master.load(Ordering::Relaxed) {
                    self.dump(None);
                }
            }
            if self.last_sent.elapsed() >= HEARTBEAT_EVERY {
                self.send_records(&[]);
            }
            if counted.elapsed() >= Duration::from_secs(1) {
                counted = Instant::now();
                let sum = |i: u32| {
                    self.counts
                        .get(&i, 0)
                        .map(|v| v.iter().sum::<u64>())
                        .unwrap_or(0)
                };
                let (emitted, full) = (sum(SYNC_COUNT_EMITTED), sum(SYNC_COUNT_RING_FULL));
                let mut s = self.stats.lock().expect("poisoned");
                s.status.events = emitted;
                s.status.ring_full = full;
            }
        }
    }

    /// Everything in the ring buffer, sent.
    fn flush(&mut self) {
        let now = crate::net::sys::monotonic_ns();
        let mut records = Vec::new();
        while let Some(item) = self.events.next() {
            records.extend(record_of_event(&item, now));
        }
        for chunk in wire::sync::batches(&records) {
            self.send_records(chunk);
        }
    }

    fn send_records(&mut self, records: &[AnyRecord]) {
        self.seq += 1;
        let targets = self.targets.clone();
        for t in &targets {
            // Each peer its own datagram: the recipient is under the tag.
            let h = Header {
                kind: Kind::Records,
                last: false,
                epoch: self.epoch,
                seq: self.seq,
                nonce: 0,
                part: 0,
                ..stamp(self.own, t, &self.counter)
            };
            let b = wire::sync::encode(&self.key, &h, records);
            self.send(&b, *t, records.len());
        }
        self.last_sent = Instant::now();
    }

    fn send(&self, b: &[u8], to: SocketAddr, records: usize) {
        let ok = self.sock.send_to(b, to).is_ok();
        let mut s = self.stats.lock().expect("poisoned");
        if ok {
            s.status.sent_messages += 1;
            s.status.sent_records += records as u64;
            s.status.sent_bytes += b.len() as u64;
        } else {
            s.status.send_errors += 1;
        }
    }

    /// Every live confirmed flow, paced (new events keep flowing between bursts): as dump
    /// parts to whoever asked (`to`: its nonce and address), or as ordinary records to
    /// every peer (the periodic refresh).
    fn dump(&mut self, to: Option<(u64, SocketAddr)>) {
        let now = crate::net::sys::monotonic_ns();
        let mut records: Vec<AnyRecord> = self
            .conntrack
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, e)| install::record_of(Event::Confirmed, &k, &e, now))
            .map(AnyRecord::from)
            .collect();
        records.extend(
            self.conntrack6
                .iter()
                .filter_map(Result::ok)
                .filter_map(|(k, e)| install::record_of(Event::Confirmed, &k, &e, now))
                .map(AnyRecord::from),
        );
        let seq = self.seq;
        let chunks = wire::sync::batches(&records);
        for (i, chunk) in chunks.iter().enumerate() {
            if to.is_none() {
                self.send_records(chunk);
            }
            if (i + 1) % DUMP_BURST == 0 {
                std::thread::sleep(DUMP_PAUSE);
                self.flush();
            }
        }
        if let Some((nonce, addr)) = to {
            let base = Header {
                epoch: self.epoch,
                seq,
                nonce,
                ..stamp(self.own, &addr, &self.counter)
            };
            let parts = dump_parts(&self.key, &base, &self.counter, &records);
            for (i, (b, n)) in parts.iter().enumerate() {
                self.send(b, addr, *n);
                if (i + 1) % DUMP_BURST == 0 {
                    std::thread::sleep(DUMP_PAUSE);
                    self.flush();
                }
            }
        }
        match to {
            Some((_, addr)) => {
                self.stats.lock().expect("poisoned").status.dumps_sent += 1;
                log::info!("sync: sent a dump of {} flows to {addr}", records.len());
            }
            None => log::debug!("sync: refreshed {} flows", records.len()),
        }
    }
}

/// The record of one `SYNC_EVENTS` item (`SyncEvent` or `SyncEvent6` by its family), or
/// none (too short, an unknown kind, an expired entry).
pub fn record_of_event(item: &[u8], now_ns: u64) -> Option<AnyRecord> {
    fn read<A: Copy + Default>(ev: &lb_common::SyncEvent<A>, now_ns: u64) -> Option<Record<A>> {
        let event = Event::from_datapath(ev.kind)?;
        match event {
            Event::Confirmed => install::record_of(event, &ev.key, &ev.entry, now_ns),
            _ => Some(install::bare(event, &ev.key)),
        }
    }
    let family = u32::from_ne_bytes(item.get(4..8)?.try_into().ok()?);
    if family == SYNC_FAMILY_V6 {
        let ev: SyncEvent6 = bytemuck::pod_read_unaligned(item.get(..size_of::<SyncEvent6>())?);
        read(&ev, now_ns).map(AnyRecord::V6)
    } else {
        let ev: SyncEvent = bytemuck::pod_read_unaligned(item.get(..size_of::<SyncEvent>())?);
        read(&ev, now_ns).map(AnyRecord::V4)
    }
}

/// A header from `own` to `to` (its address; the group for multicast), stamped with the
/// wall clock and the epoch's next datagram number; the caller sets the rest.
pub(super) fn stamp(own: Ipv4Addr, to: &SocketAddr, counter: &AtomicU64) -> Header {
    let recipient = match to {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    Header {
        kind: Kind::Records,
        last: false,
        epoch: 0,
        seq: 0,
        nonce: 0,
        part: 0,
        sender: own,
        recipient,
        time_ms: wire::sync::wall_ms(),
        counter: counter.fetch_add(1, Ordering::Relaxed),
    }
}

/// A dump as signed datagrams with their record counts: parts numbered from 0, the last
/// one flagged, each carrying `base`'s sender, recipient, the requester's nonce and the
/// sender's epoch and sequence number when the dump began, and a datagram number of its
/// own from `counter`. An empty dump is one empty last part.
pub fn dump_parts(
    key: &SyncKey,
    base: &Header,
    counter: &AtomicU64,
    records: &[AnyRecord],
) -> Vec<(Vec<u8>, usize)> {
    let chunks: Vec<&[AnyRecord]> = if records.is_empty() {
        vec![&[]]
    } else {
        wire::sync::batches(records)
    };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let h = Header {
                kind: Kind::DumpPart,
                last: i + 1 == n,
                part: i as u32,
                time_ms: wire::sync::wall_ms().max(base.time_ms),
                counter: if i == 0 {
                    base.counter
                } else {
                    counter.fetch_add(1, Ordering::Relaxed)
                },
                ..*base
            };
            (wire::sync::encode(key, &h, chunk), chunk.len())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use lb_common::ct_state;

    use super::*;
    use crate::sync::peer::{Peers, Verdict};

    #[test]
    fn a_dump_is_every_record_in_numbered_parts_ending_with_the_last() {
        let key = SyncKey::new(&[1; 32]);
        let rec = |i: u32| Record::<u32> {
            event: Some(Event::Confirmed),
            key: FlowKey {
                src_port: i as u16,
                proto: 6,
                ..FlowKey::default()
            },
            state: ct_state::TCP_ESTABLISHED,
            ..Record::default()
        };
        let rec6 = |i: u32| wire::sync::Record6 {
            event: Some(Event::Confirmed),
            key: FlowKey6 {
                src_addr: [0x20010db8u32.to_be(), 0, 0, i],
                src_port: i as u16,
                proto: 6,
                ..FlowKey6::default()
            },
            state: ct_state::TCP_ESTABLISHED,
            ..wire::sync::Record6::default()
        };
        // IPv4 only (30 a datagram), IPv6 only (14), and a mix (one in three IPv6).
        let v4 = |n: usize| {
            (0..n as u32)
                .map(|i| rec(i).into())
                .collect::<Vec<AnyRecord>>()
        };
        let v6 = |n: usize| {
            (0..n as u32)
                .map(|i| rec6(i).into())
                .collect::<Vec<AnyRecord>>()
        };
        let mix = |n: usize| {
            (0..n as u32)
                .map(|i| {
                    if i % 3 == 0 {
                        AnyRecord::from(rec6(i))
                    } else {
                        rec(i).into()
                    }
                })
                .collect::<Vec<_>>()
        };
        let m = wire::sync::MAX_RECORDS;
        let m6 = wire::sync::MAX_RECORDS6;
        for (records, want_parts) in [
            (v4(0), 1),
            (v4(1), 1),
            (v4(m), 1),
            (v4(m + 1), 2),
            (v4(1000), 1000usize.div_ceil(m)),
            (v6(m6), 1),
            (v6(m6 + 1), 2),
            (v6(1000), 1000usize.div_ceil(m6)),
            (mix(1000), wire::sync::batches(&mix(1000)).len()),
        ] {
            let n = records.len();
            let from = Ipv4Addr::new(192, 0, 2, 2);
            let base = Header {
                kind: Kind::DumpPart,
                last: false,
                epoch: 9,
                seq: 77,
                nonce: 5,
                part: 0,
                sender: from,
                recipient: Ipv4Addr::new(192, 0, 2, 3),
                time_ms: wire::sync::wall_ms(),
                counter: 100,
            };
            let counter = AtomicU64::new(101);
            let parts = dump_parts(&key, &base, &counter, &records);
            assert_eq!(parts.len(), want_parts, "{n} records");
            let mut back = Vec::new();
            let mut peers = Peers::default();
            let now = Instant::now();
            peers.requested(5, None, now);
            let mut done = None;
            let mut counters = std::collections::BTreeSet::new();
            for (i, (b, count)) in parts.iter().enumerate() {
                let m = wire::sync::decode(&key, b).expect("decodes");
                assert_eq!(m.header.kind, Kind::DumpPart);
                assert_eq!((m.header.part, m.header.nonce), (i as u32, 5));
                assert_eq!((m.header.epoch, m.header.seq), (9, 77));
                assert_eq!(
                    (m.header.sender, m.header.recipient),
                    (from, base.recipient)
                );
                assert!(counters.insert(m.header.counter), "a datagram number once");
                assert_eq!(m.header.last, i + 1 == parts.len());
                assert_eq!(m.records.len(), *count);
                assert!(b.len() <= wire::sync::MAX_DATAGRAM);
                let (v, d, _) = peers.dump_part(from, &m.header, *count as u64, now);
                assert_eq!(v, Verdict::Install);
                done = done.or(d);
                back.extend(m.records);
            }
            assert_eq!(back, records, "{n} records");
            assert_eq!(
                done.map(|d| d.records),
                Some(n as u64),
                "the receiver sees it complete"
            );
            // Synced at the dump's sequence number: the next message is 78.
            let h = Header {
                kind: Kind::Records,
                last: false,
                epoch: 9,
                seq: 78,
                ..base
            };
            assert_eq!(peers.records(from, &h, now), Verdict::Install);
        }
    }

    #[test]
    fn ring_items_of_both_families_become_their_records() {
        let now = 10_000_000_000;
        let mut e4 = SyncEvent {
            kind: lb_common::SYNC_CONFIRMED,
            family: lb_common::SYNC_FAMILY_V4,
            ..SyncEvent::default()
        };
        e4.key.src_port = 7;
        e4.entry.state = ct_state::TCP_ESTABLISHED;
        e4.entry.last_seen_ns = now - 3_000_000;
        let mut e6 = SyncEvent6 {
            kind: lb_common::SYNC_CLOSING,
            family: SYNC_FAMILY_V6,
            ..SyncEvent6::default()
        };
        e6.key.src_addr = [1, 2, 3, 4];
        match record_of_event(bytemuck::bytes_of(&e4), now) {
            Some(AnyRecord::V4(r)) => {
                assert_eq!(
                    (r.event, r.key, r.age_ms),
                    (Some(Event::Confirmed), e4.key, 3)
                );
            }
            r => panic!("{r:?}"),
        }
        match record_of_event(bytemuck::bytes_of(&e6), now) {
            Some(AnyRecord::V6(r)) => assert_eq!((r.event, r.key), (Some(Event::Closing), e6.key)),
            r => panic!("{r:?}"),
        }
        // Cut short, or an unknown kind: nothing.
        assert_eq!(record_of_event(&bytemuck::bytes_of(&e6)[..72], now), None);
        assert_eq!(record_of_event(&[0; 7], now), None);
        e4.kind = 9;
        assert_eq!(record_of_event(bytemuck::bytes_of(&e4), now), None);
    }
}
