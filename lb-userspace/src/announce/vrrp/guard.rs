//! The mismatch guard's bookkeeping, as pure logic with explicit time: who advertises our
//! VRID in a way we cannot join (other version, password, v2 interval), how long each of
//! their adverts may hold this router off, and when they are consistent enough to make a
//! master step down. The table is keyed by a spoofable source, so it is bounded
//! ([`MAX_CONFLICTS`] entries, the oldest evicted, the silent pruned) and so are the log
//! lines it asks for ([`LOGS_PER_MINUTE`]); what was evicted or not logged is counted.
//!
//! The rules (docs/failover.md, "The mismatch guard"):
//! - one advert holds a backup for at most the sender's own Master_Down_Interval, capped to
//!   [`cap`] (ours, but never less than a default keepalived group's, [`FOREIGN_DOWN_FLOOR`]):
//!   what an advert claims can no longer buy minutes;
//! - a master steps down only for an *owner*: a sender whose last [`STREAK`] adverts came at
//!   the rate they claim (each within the previous one's hold, at least half an interval
//!   apart); a single packet, or a burst, never takes the VIP from a live master.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::wire::vrrp::DropReason;
use crate::wire::vrrp::Version;

/// At most this many senders are remembered; a new one evicts the one heard longest ago.
pub const MAX_CONFLICTS: usize = 16;
/// A sender silent this long is forgotten.
pub const CONFLICT_EXPIRY: Duration = Duration::from_secs(300);
/// Consecutive adverts at their claimed rate that make a sender the VRID's owner.
pub const STREAK: u32 = 3;
/// Guard log lines (a new sender, the guard released) per minute, all senders together.
pub const LOGS_PER_MINUTE: u32 = 10;
/// The hold one advert may buy is never cut below this: the Master_Down_Interval of a
/// keepalived group with its default `advert_int 1` (3 x 1 s + a skew under 1 s), so that
/// such a group holds off an xvip with 100 ms adverts between two of its adverts.
pub const FOREIGN_DOWN_FLOOR: Duration = Duration::from_secs(4);

/// The longest hold one advert can buy, for a router whose own Master_Down_Interval is
/// `own_down`.
pub fn cap(own_down: Duration) -> Duration {
    own_down.max(FOREIGN_DOWN_FLOOR)
}

/// One advert the guard heard, as the packet claims it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub src: IpAddr,
    pub reason: DropReason,
    pub version: Version,
    pub priority: u8,
    /// Its advertisement interval (not zero).
    pub interval: Duration,
}

impl Claim {
    /// The sender's Master_Down_Interval as its advert states it (RFC 5798 / 3768 6.1).
    pub fn down_interval(&self) -> Duration {
        let unit = match self.version {
            Version::V3 => self.interval,
            Version::V2 => Duration::from_secs(1),
        };
        self.interval * 3 + unit * (256 - u32::from(self.priority)) / 256
    }
}

/// What one advert does to the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// Hold off becoming master until then (at most [`cap`] from now).
    pub until: Instant,
    /// The sender has kept its claimed rate for [`STREAK`] adverts: a master steps down.
    pub owner: bool,
    /// A sender not in the table before (first heard, or again after it was forgotten).
    pub new: bool,
    /// Whether a log line about it fits the budget (counted as suppressed otherwise).
    pub log: bool,
}

/// One sender advertising our VRID in a way we cannot join.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub reason: DropReason,
    pub version: Version,
    pub adverts: u64,
    pub last: Instant,
    /// Its hold ends then unless it advertises again.
    pub until: Instant,
    /// Adverts in a row at its claimed rate.
    pub streak: u32,
    /// When the last advert that counted for the streak came.
    last_beat: Instant,
}

impl Conflict {
    /// Whether it has kept its claimed rate long enough to own the VRID.
    pub fn owner(&self) -> bool {
        self.streak >= STREAK
    }
}

/// The guard's table and counters.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    conflicts: BTreeMap<IpAddr, Conflict>,
    /// Senders dropped from the full table to make room.
    pub evicted: u64,
    /// Senders forgotten after [`CONFLICT_EXPIRY`] of silence.
    pub expired: u64,
    /// Log lines not written (over [`LOGS_PER_MINUTE`]).
    pub logs_suppressed: u64,
    log_window: Option<Instant>,
    logs_in_window: u32,
}

impl Guard {
    /// The senders remembered, by address.
    pub fn conflicts(&self) -> impl Iterator<Item = (&IpAddr, &Conflict)> {
        self.conflicts.iter()
    }

    /// How many senders are remembered.
    pub fn len(&self) -> usize {
        self.conflicts.len()
    }

    /// Whether no sender is remembered.
    pub fn is_empty(&self) -> bool {
        self.conflicts.is_empty()
    }

    /// Forgets senders silent for [`CONFLICT_EXPIRY`].
    pub fn prune(&mut self, now: Instant) {
        let before = self.conflicts.len();
        self.conflicts
            .retain(|_, c| now.saturating_duration_since(c.last) < CONFLICT_EXPIRY);
        self.expired += (before - self.conflicts.len()) as u64;
    }

    /// Takes one log line from the budget; false (and counted) when it is spent.
    pub fn may_log(&mut self, now: Instant) -> bool {
        match self.log_window {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(60) => {}
            _ => {
                self.log_window = Some(now);
                self.logs_in_window = 0;
            }
        }
        if self.logs_in_window < LOGS_PER_MINUTE {
            self.logs_in_window += 1;
            true
        } else {
            self.logs_suppressed += 1;
            false
        }
    }

    /// An advert `claim` at `now`, for a router whose own Master_Down_Interval is
    /// `own_down`.
    pub fn heard(&mut self, now: Instant, claim: &Claim, own_down: Duration) -> Heard {
        self.prune(now);
        let cap = cap(own_down);
        let hold = claim.down_interval().min(cap);
        // Adverts closer than half an interval (capped) are counted but do not advance the
        // streak: a burst is one beat.
        let beat = claim.interval.min(cap) / 2;
        let new = !self.conflicts.contains_key(&claim.src);
        if new && self.conflicts.len() >= MAX_CONFLICTS {
            let oldest = self
                .conflicts
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.conflicts.remove(&a);
                self.evicted += 1;
            }
        }
        let c = self.conflicts.entry(claim.src).or_insert(Conflict {
            reason: claim.reason,
            version: claim.version,
            adverts: 0,
            last: now,
            until: now,
            streak: 0,
            last_beat: now,
        });
        if c.streak == 0 || now > c.until {
            // First advert, or the previous one's hold ran out: a new streak.
            c.streak = 1;
            c.last_beat = now;
        } else if now.saturating_duration_since(c.last_beat) >= beat {
            c.streak = c.streak.saturating_add(1);
            c.last_beat = now;
        }
        c.reason = claim.reason;
        c.version = claim.version;
        c.adverts += 1;
        c.last = now;
        c.until = now + hold;
        let (until, owner) = (c.until, c.owner());
        let log = new && self.may_log(now);
        Heard {
            until,
            owner,
            new,
            log,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// A v3 xvip at 100 ms, priority 100.
    const OWN_DOWN: Duration = Duration::from_nanos(360_937_500);

    fn claim(src: u8, interval_s: u64) -> Claim {
        Claim {
            src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, src)),
            reason: DropReason::VersionMismatch,
            version: Version::V2,
            priority: 100,
            interval: Duration::from_secs(interval_s),
        }
    }

    #[test]
    fn one_advert_claiming_255_s_buys_at_most_the_cap_and_no_ownership() {
        let mut g = Guard::default();
        let t0 = Instant::now();
        let h = g.heard(t0, &claim(9, 255), OWN_DOWN);
        // Before: 3 x 255 s + skew, ~766 s (and 920 s with the old skew rule).
        assert_eq!(h.until, t0 + FOREIGN_DOWN_FLOOR);
        assert!(!h.owner && h.new && h.log);
        // A burst is one beat: still no owner.
        for i in 1..50 {
            assert!(!g.heard(t0 + MS * i, &claim(9, 255), OWN_DOWN).owner);
        }
        // A router with a longer down interval of its own is held for that, not more.
        let long = Duration::from_secs(30);
        let mut g = Guard::default();
        assert_eq!(g.heard(t0, &claim(9, 255), long).until, t0 + long);
    }

    #[test]
    fn a_default_keepalived_group_becomes_owner_on_its_third_advert_and_holds_between_them() {
        let mut g = Guard::default();
        let t0 = Instant::now();
        let c = claim(2, 1);
        let down = c.down_interval(); // 3 s + 156/256 s
        assert_eq!(down, Duration::from_nanos(3_609_375_000));
        for i in 0..10u32 {
            let t = t0 + Duration::from_secs(1) * i;
            let h = g.heard(t, &c, OWN_DOWN);
            assert_eq!(h.until, t + down, "its own down interval, under the cap");
            assert_eq!(h.owner, i >= 2, "advert {i}");
            assert_eq!(h.new, i == 0);
        }
    }

    #[test]
    fn a_gap_longer_than_the_hold_starts_the_streak_again() {
        let mut g = Guard::default();
        let t0 = Instant::now();
        let c = claim(2, 255);
        // At the capped rate (every 2 s: at least half the capped interval, within the hold).
        let mut t = t0;
        for i in 0..3 {
            t = t0 + Duration::from_secs(2) * i;
            g.heard(t, &c, OWN_DOWN);
        }
        assert!(g.conflicts().next().unwrap().1.owner());
        // Silent past the hold: the next advert is a first one again.
        let h = g.heard(t + FOREIGN_DOWN_FLOOR + MS, &c, OWN_DOWN);
        assert!(!h.owner && !h.new);
    }

    #[test]
    fn the_table_stays_bounded_evicts_the_oldest_and_expires_the_silent() {
        let mut g = Guard::default();
        let t0 = Instant::now();
        let mut logged = 0;
        for i in 0..200u32 {
            let c = Claim {
                src: IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)),
                ..claim(0, 1)
            };
            if g.heard(t0 + MS * i, &c, OWN_DOWN).log {
                logged += 1;
            }
            assert!(g.len() <= MAX_CONFLICTS);
        }
        assert_eq!(g.len(), MAX_CONFLICTS);
        assert_eq!(g.evicted, 200 - MAX_CONFLICTS as u64);
        assert_eq!(logged, LOGS_PER_MINUTE);
        assert_eq!(g.logs_suppressed, 200 - u64::from(LOGS_PER_MINUTE));
        // The 16 most recent are kept.
        let first_kept = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + 200 - 16));
        assert_eq!(g.conflicts().map(|(a, _)| *a).min(), Some(first_kept));
        // A minute later the log budget is back.
        assert!(g.may_log(t0 + Duration::from_secs(61)));
        // Silence expires them all.
        g.prune(t0 + CONFLICT_EXPIRY + Duration::from_secs(1));
        assert!(g.is_empty());
        assert_eq!(g.expired, MAX_CONFLICTS as u64);
    }
}
