//! Which authenticated messages a receiver acts on: per-sender epochs and sequence numbers
//! (replays and gaps), and the dump requests it has outstanding. Pure logic with explicit
//! time, so every rule is a unit test.
//!
//! The rules: a sender's records are installed only once this node knows the sender's
//! epoch and sequence number from a dump that answered one of this node's own nonces (so a
//! recorded message replayed to a node that just started installs nothing). From then on a
//! records message must carry that epoch and a higher sequence number; a jump over missing
//! numbers is a gap: the message is still used (it is authentic and newer) and a full dump
//! is asked for. Another epoch (the sender restarted, or an old message replayed) installs
//! nothing and asks for a dump.
//!
//! Who a message is from is the sender named under its tag (`Header::sender`), never the
//! UDP source: a datagram whose signed sender is not its source, that is addressed to
//! another node, or whose time is more than 30 s from ours is dropped before any of this
//! ([`check`]). A dump request is answered once: its (sender, nonce) is remembered for as
//! long as its time is fresh. The peer table is bounded: peers not heard for
//! [`PEER_IDLE`] are forgotten, and a new peer in a full table takes the place of the one
//! heard least recently (one never synced first). Each peer's installs draw from a token
//! bucket ([`INSTALL_BURST`], [`INSTALL_RATE`] a second).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use crate::wire::sync::{Header, MAX_SKEW_MS};

/// At most one dump request per sender (or to the group) this often.
pub const REQUEST_EVERY: Duration = Duration::from_secs(1);
/// A dump request not completed within this is forgotten (its nonce no longer accepted).
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(30);
/// Senders tracked at most (only authenticated ones ever are).
pub const MAX_PEERS: usize = 64;
/// A peer not heard for this long is forgotten (heartbeats come every second).
pub const PEER_IDLE: Duration = Duration::from_secs(60);
/// A peer's records installed at once at most (a full dump of a large table)...
pub const INSTALL_BURST: f64 = 1_048_576.0;
/// ... and a second after that.
pub const INSTALL_RATE: f64 = 50_000.0;
/// Dump requests remembered (for replays) at most: each is answered once.
pub const MAX_SEEN_REQUESTS: usize = 4096;

/// Why an authenticated datagram is dropped before its content is looked at: its signed
/// sender is not its UDP source (`source_mismatch`), it is for another node
/// (`wrong_recipient`), or its time is not within [`MAX_SKEW_MS`] of ours (`stale`).
///
/// # Errors
/// The reason's name (a counter label).
pub fn check(
    h: &Header,
    from: Ipv4Addr,
    own: Ipv4Addr,
    group: Option<Ipv4Addr>,
    now_ms: u64,
) -> Result<(), &'static str> {
    if h.sender != from {
        return Err("source_mismatch");
    }
    if h.recipient != own && Some(h.recipient) != group {
        return Err("wrong_recipient");
    }
    if !h.fresh(now_ms) {
        return Err("stale");
    }
    Ok(())
}

/// What to do with an authenticated message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Install its records.
    Install,
    /// Install its records, and ask the sender for a dump (messages were lost).
    InstallAndRequest { lost: u64 },
    /// Old sequence number (or a repeated dump part): drop.
    Replay,
    /// Not synced with this sender's epoch yet: drop and ask for a dump.
    Unsynced,
    /// A dump part answering no request of ours: drop.
    UnknownNonce,
}

/// One sender as this receiver knows it.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Epoch and last sequence number accepted; `None` until a dump answered us.
    pub synced: Option<(u64, u64)>,
    /// Last message of any kind accepted from it.
    pub last_message: Option<Instant>,
    /// Messages found missing (gaps).
    pub lost: u64,
    /// Last time we asked it for a dump.
    pub requested: Option<Instant>,
    /// Last dump from it that completed, and its size.
    pub last_dump: Option<(Instant, u64)>,
    /// Last authenticated message of any kind (for expiry and eviction).
    pub heard: Option<Instant>,
    /// Installs it may still make, and when they were last refilled.
    tokens: f64,
    refilled: Option<Instant>,
}

/// An outstanding dump request of ours.
#[derive(Clone, Debug)]
struct Request {
    sent: Instant,
    /// Per answering sender: parts seen, the last part's index when it came, records.
    answers: BTreeMap<Ipv4Addr, (BTreeSet<u32>, Option<u32>, u64)>,
    /// Senders whose answer is complete: any further part from them is a replay.
    completed: BTreeSet<Ipv4Addr>,
}

/// A dump that completed (every part from 0 to the last one arrived).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpDone {
    pub from: Ipv4Addr,
    pub records: u64,
}

/// The receiver's view of all senders.
#[derive(Debug, Default)]
pub struct Peers {
    pub peers: BTreeMap<Ipv4Addr, Peer>,
    requests: BTreeMap<u64, Request>,
    /// Last group-wide request (at start).
    group_requested: Option<Instant>,
    /// Dump requests answered: (sender, nonce) -> the request's time (ms), kept while fresh.
    seen_requests: std::collections::HashMap<(Ipv4Addr, u64), u64>,
    /// Peers dropped from a full table.
    pub evicted: u64,
}

impl Peers {
    /// Notes a dump request sent with `nonce` (to one sender or the group).
    pub fn requested(&mut self, nonce: u64, to: Option<Ipv4Addr>, now: Instant) {
        self.requests.insert(
            nonce,
            Request {
                sent: now,
                answers: BTreeMap::new(),
                completed: BTreeSet::new(),
            },
        );
        match to {
            Some(a) => {
                if let Some(p) = self.peer(a) {
                    p.requested = Some(now);
                }
            }
            None => self.group_requested = Some(now),
        }
    }

    /// Whether a dump request to `to` (None: the group) may be sent now.
    pub fn may_request(&self, to: Option<Ipv4Addr>, now: Instant) -> bool {
        let last = match to {
            Some(a) => self.peers.get(&a).and_then(|p| p.requested),
            None => self.group_requested,
        };
        last.is_none_or(|t| now.duration_since(t) >= REQUEST_EVERY)
    }

    /// The peer `a`, added when new: a full table first loses the peer heard least
    /// recently, one never synced before a synced one.
    fn peer(&mut self, a: Ipv4Addr) -> Option<&mut Peer> {
        if !self.peers.contains_key(&a) && self.peers.len() >= MAX_PEERS {
            let victim = self
                .peers
                .iter()
                .min_by_key(|(_, p)| (p.synced.is_some(), p.heard))
                .map(|(a, _)| *a)?;
            self.peers.remove(&victim);
            self.evicted += 1;
        }
        Some(self.peers.entry(a).or_insert_with(|| Peer {
            tokens: INSTALL_BURST,
            ..Peer::default()
        }))
    }

    /// Notes an authenticated message from `a` (adding it when new).
    pub fn heard(&mut self, a: Ipv4Addr, now: Instant) {
        if let Some(p) = self.peer(a) {
            p.heard = Some(now);
        }
    }

    /// Drops requests older than [`REQUEST_LIFETIME`], peers not heard for [`PEER_IDLE`],
    /// and remembered dump requests no longer fresh at `now_ms`.
    pub fn expire(&mut self, now: Instant, now_ms: u64) {
        self.requests
            .retain(|_, r| now.duration_since(r.sent) < REQUEST_LIFETIME);
        self.peers.retain(|_, p| {
            p.heard
                .or(p.requested)
                .is_some_and(|t| now.duration_since(t) < PEER_IDLE)
        });
        self.seen_requests
            .retain(|_, t| t.abs_diff(now_ms) <= MAX_SKEW_MS);
    }

    /// Whether a dump request (already checked fresh by [`check`]) is answered: once per
    /// (sender, nonce), and not when too many are remembered (a key holder's flood).
    pub fn dump_request(&mut self, h: &Header) -> Verdict {
        if self.seen_requests.contains_key(&(h.sender, h.nonce)) {
            return Verdict::Replay;
        }
        if self.seen_requests.len() >= MAX_SEEN_REQUESTS {
            return Verdict::Unsynced;
        }
        self.seen_requests.insert((h.sender, h.nonce), h.time_ms);
        Verdict::Install
    }

    /// How many of `n` records from `a` may be installed now (its token bucket).
    pub fn allow_installs(&mut self, a: Ipv4Addr, n: u64, now: Instant) -> u64 {
        let Some(p) = self.peers.get_mut(&a) else {
            return 0;
        };
        if let Some(t) = p.refilled {
            let add = now.duration_since(t).as_secs_f64() * INSTALL_RATE;
            p.tokens = (p.tokens + add).min(INSTALL_BURST);
        }
        p.refilled = Some(now);
        let ok = (n as f64).min(p.tokens.floor()).max(0.0);
        p.tokens -= ok;
        ok as u64
    }

    /// Decides about a records message from `from`.
    pub fn records(&mut self, from: Ipv4Addr, h: &Header, now: Instant) -> Verdict {
        let Some(p) = self.peer(from) else {
            return Verdict::Unsynced;
        };
        match p.synced {
            Some((epoch, seq)) if epoch == h.epoch => {
                if h.seq <= seq {
                    return Verdict::Replay;
                }
                p.synced = Some((epoch, h.seq));
                p.last_message = Some(now);
                if h.seq == seq + 1 {
                    Verdict::Install
                } else {
                    let lost = h.seq - seq - 1;
                    p.lost += lost;
                    Verdict::InstallAndRequest { lost }
                }
            }
            _ => Verdict::Unsynced,
        }
    }

    /// Decides about a dump part from `from`; the second value is set when it completed a
    /// dump, the third when parts of the dump were found missing (ask again).
    pub fn dump_part(
        &mut self,
        from: Ipv4Addr,
        h: &Header,
        records: u64,
        now: Instant,
    ) -> (Verdict, Option<DumpDone>, bool) {
        let Some(req) = self.requests.get_mut(&h.nonce) else {
            return (Verdict::UnknownNonce, None, false);
        };
        if req.completed.contains(&from) {
            return (Verdict::Replay, None, false);
        }
        let answer = req.answers.entry(from).or_default();
        if !answer.0.insert(h.part) {
            return (Verdict::Replay, None, false);
        }
        answer.2 += records;
        if h.last {
            answer.1 = Some(h.part);
        }
        let (parts, last, total) = (answer.0.len() as u64, answer.1, answer.2);
        let Some(p) = self.peer(from) else {
            return (Verdict::Unsynced, None, false);
        };
        p.last_message = Some(now);
        // A dump answers a nonce of ours, so it is fresh: it sets the sender's epoch, and
        // its records are newer than any of its messages numbered up to `seq`.
        p.synced = match p.synced {
            Some((e, s)) if e == h.epoch => Some((e, s.max(h.seq))),
            _ => Some((h.epoch, h.seq)),
        };
        let mut done = None;
        let mut incomplete = false;
        if let Some(last) = last {
            if parts == u64::from(last) + 1 {
                p.last_dump = Some((now, total));
                done = Some(DumpDone {
                    from,
                    records: total,
                });
                if let Some(r) = self.requests.get_mut(&h.nonce) {
                    r.answers.remove(&from);
                    r.completed.insert(from);
                }
            } else if h.last {
                incomplete = true;
            }
        }
        (Verdict::Install, done, incomplete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sync::Kind;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

    fn rec(epoch: u64, seq: u64) -> Header {
        Header {
            kind: Kind::Records,
            last: false,
            epoch,
            seq,
            nonce: 0,
            part: 0,
            sender: A,
            recipient: B,
            time_ms: 0,
            counter: 0,
        }
    }

    fn part(epoch: u64, seq: u64, nonce: u64, part: u32, last: bool) -> Header {
        Header {
            kind: Kind::DumpPart,
            last,
            epoch,
            seq,
            nonce,
            part,
            sender: A,
            recipient: B,
            time_ms: 0,
            counter: 0,
        }
    }

    #[test]
    fn records_before_a_dump_are_not_installed() {
        let now = Instant::now();
        let mut p = Peers::default();
        assert_eq!(p.records(A, &rec(1, 1), now), Verdict::Unsynced);
        assert_eq!(p.records(A, &rec(1, 2), now), Verdict::Unsynced);
    }

    #[test]
    fn a_dump_syncs_and_then_sequence_numbers_rule() {
        let now = Instant::now();
        let mut p = Peers::default();
        p.requested(77, None, now);
        let (v, done, inc) = p.dump_part(A, &part(5, 10, 77, 0, true), 3, now);
        assert_eq!(v, Verdict::Install);
        assert_eq!(
            done,
            Some(DumpDone {
                from: A,
                records: 3
            })
        );
        assert!(!inc);
        // Older or equal sequence numbers are replays; the next one installs.
        assert_eq!(p.records(A, &rec(5, 9), now), Verdict::Replay);
        assert_eq!(p.records(A, &rec(5, 10), now), Verdict::Replay);
        assert_eq!(p.records(A, &rec(5, 11), now), Verdict::Install);
        assert_eq!(p.records(A, &rec(5, 11), now), Verdict::Replay);
        // A gap: used, and a dump is asked for.
        assert_eq!(
            p.records(A, &rec(5, 15), now),
            Verdict::InstallAndRequest { lost: 3 }
        );
        assert_eq!(p.peers[&A].lost, 3);
        // Another epoch (a restart, or an old message replayed): nothing installed.
        assert_eq!(p.records(A, &rec(4, 100), now), Verdict::Unsynced);
        assert_eq!(p.records(A, &rec(6, 1), now), Verdict::Unsynced);
        // Another sender is its own story.
        assert_eq!(p.records(B, &rec(5, 16), now), Verdict::Unsynced);
    }

    #[test]
    fn dump_parts_need_our_nonce_and_count_once() {
        let now = Instant::now();
        let mut p = Peers::default();
        assert_eq!(
            p.dump_part(A, &part(5, 1, 9, 0, true), 1, now).0,
            Verdict::UnknownNonce
        );
        p.requested(9, Some(A), now);
        assert_eq!(
            p.dump_part(A, &part(5, 1, 9, 0, false), 30, now),
            (Verdict::Install, None, false)
        );
        assert_eq!(
            p.dump_part(A, &part(5, 1, 9, 0, false), 30, now).0,
            Verdict::Replay
        );
        // Part 1 lost: the last part (2) shows the dump incomplete.
        let (v, done, incomplete) = p.dump_part(A, &part(5, 1, 9, 2, true), 4, now);
        assert_eq!((v, done, incomplete), (Verdict::Install, None, true));
        let (_, done, _) = p.dump_part(A, &part(5, 1, 9, 1, false), 30, now);
        assert_eq!(
            done,
            Some(DumpDone {
                from: A,
                records: 64
            })
        );
        // A part of the completed dump replayed: nothing installed.
        for i in 0..3 {
            assert_eq!(
                p.dump_part(A, &part(5, 1, 9, i, i == 2), 30, now).0,
                Verdict::Replay
            );
        }
        // Another sender may still answer the same (group) request.
        assert_eq!(
            p.dump_part(B, &part(6, 1, 9, 0, true), 0, now).0,
            Verdict::Install
        );
        // Expired requests no longer accept parts.
        p.requested(10, Some(A), now);
        p.expire(now + REQUEST_LIFETIME, 0);
        assert_eq!(
            p.dump_part(A, &part(5, 1, 10, 0, true), 1, now).0,
            Verdict::UnknownNonce
        );
    }

    #[test]
    fn a_dump_from_a_restarted_sender_moves_to_its_new_epoch() {
        let now = Instant::now();
        let mut p = Peers::default();
        p.requested(1, None, now);
        p.dump_part(A, &part(5, 10, 1, 0, true), 0, now);
        assert_eq!(p.records(A, &rec(8, 3), now), Verdict::Unsynced);
        p.requested(2, Some(A), now);
        p.dump_part(A, &part(8, 3, 2, 0, true), 0, now);
        assert_eq!(p.records(A, &rec(8, 3), now), Verdict::Replay);
        assert_eq!(p.records(A, &rec(8, 4), now), Verdict::Install);
    }

    #[test]
    fn requests_are_rate_limited_per_target() {
        let now = Instant::now();
        let mut p = Peers::default();
        assert!(p.may_request(None, now));
        p.requested(1, None, now);
        assert!(!p.may_request(None, now + Duration::from_millis(10)));
        assert!(p.may_request(Some(A), now));
        p.requested(2, Some(A), now);
        assert!(!p.may_request(Some(A), now + Duration::from_millis(999)));
        assert!(p.may_request(Some(A), now + REQUEST_EVERY));
    }

    const T: u64 = 1_796_000_000_000;

    fn request(sender: Ipv4Addr, nonce: u64, time_ms: u64) -> Header {
        Header {
            kind: Kind::DumpRequest,
            sender,
            recipient: crate::sync::SYNC_GROUP,
            nonce,
            time_ms,
            ..rec(0, 0)
        }
    }

    #[test]
    fn the_signed_sender_recipient_and_time_decide_before_anything_else() {
        let g = Some(crate::sync::SYNC_GROUP);
        let own = B;
        let h = Header {
            recipient: own,
            time_ms: T,
            ..request(A, 1, T)
        };
        assert_eq!(check(&h, A, own, None, T), Ok(()));
        // Replayed with a spoofed source (a victim's, the attacker's own).
        assert_eq!(
            check(&h, Ipv4Addr::new(192, 0, 2, 66), own, g, T),
            Err("source_mismatch")
        );
        // Sent to B, replayed to C.
        assert_eq!(
            check(&h, A, Ipv4Addr::new(192, 0, 2, 4), g, T),
            Err("wrong_recipient")
        );
        // To the group: only where the group is ours (multicast mode).
        let to_group = request(A, 1, T);
        assert_eq!(check(&to_group, A, own, g, T), Ok(()));
        assert_eq!(check(&to_group, A, own, None, T), Err("wrong_recipient"));
        // Stale either way.
        assert_eq!(check(&h, A, own, g, T + 30_001), Err("stale"));
        assert_eq!(check(&h, A, own, g, T - 30_001), Err("stale"));
        assert_eq!(check(&h, A, own, g, T + 30_000), Ok(()));
    }

    #[test]
    fn a_dump_request_is_answered_once_and_forgotten_when_stale() {
        let mut p = Peers::default();
        let now = Instant::now();
        assert_eq!(p.dump_request(&request(A, 1, T)), Verdict::Install);
        assert_eq!(p.dump_request(&request(A, 1, T)), Verdict::Replay);
        assert_eq!(p.dump_request(&request(A, 2, T)), Verdict::Install);
        assert_eq!(p.dump_request(&request(B, 1, T)), Verdict::Install);
        // Remembered while fresh; once stale it is refused by `check` anyway.
        p.expire(now, T + 30_000);
        assert_eq!(p.dump_request(&request(A, 1, T)), Verdict::Replay);
        p.expire(now, T + 30_001);
        assert_eq!(p.seen_requests.len(), 0);
        // Bounded: past MAX_SEEN_REQUESTS new ones are refused, not remembered.
        for n in 0..MAX_SEEN_REQUESTS as u64 {
            p.dump_request(&request(A, 100 + n, T));
        }
        assert_eq!(p.dump_request(&request(B, 9, T)), Verdict::Unsynced);
        assert_eq!(p.seen_requests.len(), MAX_SEEN_REQUESTS);
    }

    #[test]
    fn the_peer_table_is_bounded_evicts_the_least_recent_unsynced_and_expires_idle_ones() {
        let now = Instant::now();
        let mut p = Peers::default();
        // A synced peer, heard first (least recently).
        p.requested(1, None, now);
        p.dump_part(A, &part(5, 1, 1, 0, true), 0, now);
        p.heard(A, now);
        for i in 0..(MAX_PEERS as u32 + 36) {
            let a = Ipv4Addr::from(0xc633_6400 + i); // 198.51.100.x and on
            p.heard(a, now + Duration::from_millis(u64::from(i) + 1));
            assert!(p.peers.len() <= MAX_PEERS);
        }
        assert_eq!(p.peers.len(), MAX_PEERS);
        assert!(
            p.peers.contains_key(&A),
            "a synced peer outlives unsynced ones"
        );
        assert_eq!(p.evicted, 37);
        // A later real node still gets in, and can sync.
        p.heard(B, now + Duration::from_secs(1));
        p.requested(2, Some(B), now);
        let (v, done, _) = p.dump_part(B, &part(6, 1, 2, 0, true), 0, now);
        assert_eq!(v, Verdict::Install);
        assert!(done.is_some());
        // Idle peers go.
        p.heard(A, now + Duration::from_secs(30));
        p.expire(now + PEER_IDLE + Duration::from_secs(1), 0);
        assert_eq!(p.peers.keys().copied().collect::<Vec<_>>(), vec![A]);
    }

    #[test]
    fn installs_draw_from_a_per_peer_bucket() {
        let now = Instant::now();
        let mut p = Peers::default();
        assert_eq!(p.allow_installs(A, 10, now), 0, "not a peer: nothing");
        p.heard(A, now);
        let burst = INSTALL_BURST as u64;
        assert_eq!(p.allow_installs(A, burst - 5, now), burst - 5);
        assert_eq!(p.allow_installs(A, 30, now), 5);
        assert_eq!(p.allow_installs(A, 30, now), 0);
        let later = now + Duration::from_millis(10);
        let refilled = p.allow_installs(A, 10_000, later);
        assert!(
            (499..=500).contains(&refilled),
            "{refilled}: 10 ms of 50,000/s"
        );
        // Another peer's bucket is its own.
        p.heard(B, now);
        assert_eq!(p.allow_installs(B, 30, later), 30);
    }
}
