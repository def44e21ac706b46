//! How many ARP replies or neighbour advertisements requests can make this node send: a
//! token bucket per requester (its protocol address, hashed with a per-process key into a
//! fixed table, so spoofed senders cost no memory) and one for the whole segment (the
//! interface). Pure, with explicit time; the sockets count what it refuses. The same
//! buckets bound the claims of the VIPs this node acts on (`announce::claims`, keyed by
//! the claimant's MAC).

use std::{
    hash::{BuildHasher, Hash, RandomState},
    time::{Duration, Instant},
};

/// Replies one requester may cause, as a burst ...
pub const PER_REQUESTER_BURST: f64 = 10.0;
/// ... refilled at this rate per second (a host asks about once a second at most when it
/// resolves, and every few tens of seconds when it re-verifies).
pub const PER_REQUESTER_RATE: f64 = 5.0;
/// Replies the whole segment may cause, as a burst and per second (per interface).
pub const SEGMENT_RATE: f64 = 1000.0;
/// Requester buckets (a power of two); colliding requesters share one.
pub const REQUESTER_SLOTS: usize = 1024;

/// The budgets of one limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Per requester: a burst, then this many a second.
    pub burst: f64,
    pub rate: f64,
    /// The whole segment: as a burst and per second.
    pub segment: f64,
}

impl Rates {
    /// Answers to requests ([`PER_REQUESTER_BURST`], [`PER_REQUESTER_RATE`],
    /// [`SEGMENT_RATE`]).
    pub const REPLIES: Self = Self {
        burst: PER_REQUESTER_BURST,
        rate: PER_REQUESTER_RATE,
        segment: SEGMENT_RATE,
    };
    /// Claims of the VIPs acted on (`announce::claims`), per claimant MAC: an xvip sends a
    /// few frames per VIP a round (a takeover's burst, a reassertion, answers to probes),
    /// so 20 and 10 a second leave room for several VIPs; 200 a second from the segment
    /// bound what a flood from many MACs costs the daemon's loop.
    pub const CLAIMS: Self = Self {
        burst: 20.0,
        rate: 10.0,
        segment: 200.0,
    };
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    const fn new() -> Self {
        Self {
            tokens: 0.0,
            at: None,
        }
    }

    /// Refills to `now` and says whether a token is there (without taking it).
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens = match self.at {
            None => burst,
            Some(t) => {
                (self.tokens + now.saturating_duration_since(t).as_secs_f64() * rate).min(burst)
            }
        };
        self.at = Some(now);
        self.tokens >= 1.0
    }
}

/// The limiter of one interface.
#[derive(Debug)]
pub struct ReplyLimiter {
    rates: Rates,
    key: RandomState,
    slots: Box<[Bucket]>,
    segment: Bucket,
}

impl Default for ReplyLimiter {
    fn default() -> Self {
        Self::new(Rates::REPLIES)
    }
}

impl ReplyLimiter {
    /// A limiter with budgets `rates` (the default: [`Rates::REPLIES`]).
    pub fn new(rates: Rates) -> Self {
        Self {
            rates,
            key: RandomState::new(),
            slots: vec![Bucket::new(); REQUESTER_SLOTS].into_boxed_slice(),
            segment: Bucket::new(),
        }
    }
}

impl ReplyLimiter {
    fn slot(&self, requester: impl Hash) -> usize {
        (self.key.hash_one(requester) as usize) & (REQUESTER_SLOTS - 1)
    }

    /// Whether a reply to `requester` (its address, or any key naming it) may go out at
    /// `now` (and if so, it is counted).
    pub fn allow(&mut self, now: Instant, requester: impl Hash) -> bool {
        let i = self.slot(requester);
        let r = self.rates;
        let mine = self.slots[i].refill(now, r.rate, r.burst);
        let all = self.segment.refill(now, r.segment, r.segment);
        if mine && all {
            self.slots[i].tokens -= 1.0;
            self.segment.tokens -= 1.0;
        }
        mine && all
    }

    /// The most replies `window` can see after a quiet time, from any number of requesters.
    pub fn segment_bound(window: Duration) -> f64 {
        SEGMENT_RATE + SEGMENT_RATE * window.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i))
    }

    #[test]
    fn one_requester_gets_its_burst_then_its_rate() {
        let mut l = ReplyLimiter::default();
        let t0 = Instant::now();
        let ok = (0..1000).filter(|_| l.allow(t0, ip(10))).count();
        assert_eq!(ok as f64, PER_REQUESTER_BURST);
        // Another requester (in another slot) is not affected.
        let other = (11..20)
            .map(ip)
            .find(|a| l.slot(*a) != l.slot(ip(10)))
            .unwrap();
        assert!(l.allow(t0, other));
        // One second later: the rate's worth again, not more.
        let t1 = t0 + Duration::from_secs(1);
        let ok = (0..1000).filter(|_| l.allow(t1, ip(10))).count();
        assert_eq!(ok as f64, PER_REQUESTER_RATE);
    }

    #[test]
    fn spoofed_requesters_are_bounded_by_the_segment_budget() {
        let mut l = ReplyLimiter::default();
        let t0 = Instant::now();
        // 100,000 requests from 100,000 sources over one second.
        let mut ok = 0;
        for i in 0..100_000u32 {
            let t = t0 + Duration::from_micros(u64::from(i) * 10);
            if l.allow(t, ip(i)) {
                ok += 1;
            }
        }
        let bound = ReplyLimiter::segment_bound(Duration::from_secs(1));
        assert!(f64::from(ok) <= bound, "{ok} > {bound}");
        assert!(f64::from(ok) >= SEGMENT_RATE, "{ok}");
    }

    #[test]
    fn a_quiet_requester_is_always_answered() {
        let mut l = ReplyLimiter::default();
        let t0 = Instant::now();
        for s in 0..100u32 {
            assert!(l.allow(t0 + Duration::from_secs(s.into()), ip(1)));
        }
    }
}
