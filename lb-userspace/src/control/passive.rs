//! Passive health (haproxy's `observe layer4`, over every flow the data path balances):
//! from each backend's handshake counters (`PASSIVE`: new flows' SYNs forwarded, first
//! answers, RSTs), read every tick, the handshakes that failed: refused (a RST answered
//! the SYN) or unanswered (no answer within `--passive-timeout`). A backend whose failures
//! in a row reach `--passive-errors` is taken out at once; the active check's rise brings
//! it back (the daemon's part). Pure: fed totals, it answers which backends to take out.
//!
//! Unanswered SYNs are not counted one by one (the kernel keeps no per-flow timer for us):
//! `U = syns sent at least the timeout ago - answered - refused` is, at any tick, at most
//! the number of those old SYNs still unanswered (answers to younger SYNs only lower it),
//! and a rise of `U` above its highest earlier value (0 at first) is that many new
//! timeouts. So a timeout is never counted twice and never invented (beyond SYNs an index
//! left unanswered before xvip followed it), only sometimes counted late or not at all
//! while younger flows are answered, which is the case where the backend works.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    time::Duration,
};

use lb_common::Passive;

/// How often the daemon reads the counters.
pub const TICK: Duration = Duration::from_millis(100);

/// One backend's handshakes as followed from tick to tick.
#[derive(Clone, Debug, Default)]
struct Track {
    /// `syns` at the last ticks, oldest first (the timeout's worth, plus this tick).
    syns: VecDeque<u64>,
    /// The totals at the last tick.
    last: Passive,
    /// The highest `U` seen (`None` until the history covers the timeout).
    mark: Option<i64>,
    /// Failed handshakes since the last tick with more answers than failures.
    streak: u64,
    refused: u64,
    unanswered: u64,
}

/// What one backend's handshakes showed, for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// SYNs answered with a RST since xvip started following the backend.
    pub refused: u64,
    /// SYNs left unanswered past the timeout.
    pub unanswered: u64,
}

/// Passive health of every backend.
#[derive(Clone, Debug)]
pub struct PassiveTracker {
    /// Failed handshakes in a row that take a backend out (0: never).
    errors: u32,
    /// Ticks a SYN may wait for its answer.
    timeout_ticks: usize,
    tracks: BTreeMap<SocketAddr, Track>,
}

impl PassiveTracker {
    /// `errors` failed handshakes in a row take a backend out (0: passive health off);
    /// a SYN unanswered for `timeout` (rounded up to whole ticks) has failed.
    pub fn new(errors: u32, timeout: Duration) -> Self {
        Self {
            errors,
            timeout_ticks: timeout.as_nanos().div_ceil(TICK.as_nanos()).max(1) as usize,
            tracks: BTreeMap::new(),
        }
    }

    /// Whether passive health is on.
    pub fn enabled(&self) -> bool {
        self.errors > 0
    }

    /// Feeds one tick's totals of every backend followed (a backend missing is forgotten;
    /// a new one starts from its current totals, so what its index counted before is not
    /// its own). `count_unanswered` false (a flood of new flows churns the data path's
    /// table of handshakes, so answers may find no entry) lets unanswered SYNs pass
    /// uncounted. Returns the backends whose failures in a row reached the limit at this
    /// tick; each one's streak starts again.
    pub fn tick(
        &mut self,
        totals: &BTreeMap<SocketAddr, Passive>,
        count_unanswered: bool,
    ) -> Vec<SocketAddr> {
        self.tracks.retain(|a, _| totals.contains_key(a));
        let mut out = Vec::new();
        for (addr, now) in totals {
            let t = self.tracks.entry(*addr).or_insert_with(|| Track {
                last: *now,
                ..Default::default()
            });
            t.syns.push_back(now.syns);
            while t.syns.len() > self.timeout_ticks + 1 {
                t.syns.pop_front();
            }
            let mut timeouts = 0;
            let done = now.answered as i64 + now.refused as i64;
            if t.syns.len() == self.timeout_ticks + 1 {
                let u = t.syns[0] as i64 - done;
                // From 0 at least: a negative `U` is younger SYNs answered, not a credit.
                let mark = *t.mark.get_or_insert(u.max(0));
                if u > mark {
                    if count_unanswered {
                        timeouts = (u - mark) as u64;
                    }
                    t.mark = Some(u);
                }
            }
            if !count_unanswered {
                // Every SYN outstanding now, the young ones too, stays uncounted later.
                let mark = t.mark.get_or_insert(0);
                *mark = (*mark).max(now.syns as i64 - done);
            }
            let refused = now.refused.saturating_sub(t.last.refused);
            let answered = now.answered.saturating_sub(t.last.answered);
            t.last = *now;
            t.refused += refused;
            t.unanswered += timeouts;
            let failed = refused + timeouts;
            if answered > failed {
                t.streak = 0;
            } else {
                t.streak += failed;
            }
            if self.errors > 0 && t.streak >= u64::from(self.errors) {
                t.streak = 0;
                out.push(*addr);
            }
        }
        out
    }

    /// What `addr`'s handshakes showed so far.
    pub fn stats(&self, addr: &SocketAddr) -> HandshakeStats {
        self.tracks
            .get(addr)
            .map(|t| HandshakeStats {
                refused: t.refused,
                unanswered: t.unanswered,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> SocketAddr {
        "192.0.2.11:6443".parse().unwrap()
    }

    fn totals(syns: u64, answered: u64, refused: u64) -> BTreeMap<SocketAddr, Passive> {
        [(
            a(),
            Passive {
                syns,
                answered,
                refused,
            },
        )]
        .into()
    }

    /// A tracker with a 300 ms timeout (3 ticks) and 3 errors in a row.
    fn tracker() -> PassiveTracker {
        PassiveTracker::new(3, Duration::from_millis(300))
    }

    #[test]
    fn a_backend_answering_every_syn_is_never_taken_out() {
        let mut p = tracker();
        // 5 new flows a tick, each answered within the tick, for 5 s.
        for i in 0..50 {
            assert!(p.tick(&totals(5 * i, 5 * i, 0), true).is_empty());
        }
        // Answers lagging a tick (younger SYNs outstanding at every read) do not count.
        for i in 50..100 {
            assert!(p.tick(&totals(5 * i, 5 * (i - 1), 0), true).is_empty());
        }
        assert_eq!(p.stats(&a()), HandshakeStats::default());
    }

    #[test]
    fn refused_handshakes_in_a_row_take_a_backend_out_at_the_tick_they_reach_the_limit() {
        let mut p = tracker();
        p.tick(&totals(10, 10, 0), true);
        assert!(p.tick(&totals(12, 10, 2), true).is_empty());
        assert_eq!(p.tick(&totals(13, 10, 3), true), vec![a()]);
        assert_eq!(
            p.stats(&a()),
            HandshakeStats {
                refused: 3,
                unanswered: 0
            }
        );
        // The streak starts again: two more refusals are not enough.
        assert!(p.tick(&totals(15, 10, 5), true).is_empty());
    }

    #[test]
    fn a_tick_with_more_answers_than_failures_ends_the_streak() {
        let mut p = tracker();
        p.tick(&totals(0, 0, 0), true);
        p.tick(&totals(2, 0, 2), true);
        p.tick(&totals(7, 5, 2), true); // 5 answers, no failure: streak over
        assert!(p.tick(&totals(9, 5, 4), true).is_empty());
        assert_eq!(p.tick(&totals(10, 5, 5), true), vec![a()]);
    }

    #[test]
    fn syns_left_unanswered_past_the_timeout_count_once_each() {
        let mut p = tracker();
        // History fills (3 ticks + this one) with everything answered.
        for _ in 0..4 {
            p.tick(&totals(10, 10, 0), true);
        }
        // A blackhole: one SYN a tick, none answered. Each fails 3 ticks after it left.
        let mut out_at = None;
        for i in 1..=10 {
            if !p.tick(&totals(10 + i, 10, 0), true).is_empty() {
                out_at = Some(i);
                break;
            }
        }
        // SYNs of ticks 1, 2, 3 time out at ticks 4, 5, 6.
        assert_eq!(out_at, Some(6));
        assert_eq!(p.stats(&a()).unanswered, 3);
        // The backend answers again (late answers to the old SYNs included): no more.
        for i in 7..20 {
            assert!(p.tick(&totals(10 + i, 10 + i, 0), true).is_empty());
        }
        assert_eq!(p.stats(&a()).unanswered, 3);
    }

    #[test]
    fn under_a_flood_unanswered_syns_are_not_counted_then_or_later() {
        let mut p = tracker();
        for _ in 0..4 {
            p.tick(&totals(0, 0, 0), true);
        }
        for i in 1..=10 {
            assert!(p.tick(&totals(100 * i, 0, 0), false).is_empty());
        }
        // The flood ends; its unanswered SYNs stay uncounted.
        for _ in 0..5 {
            assert!(p.tick(&totals(1000, 0, 0), true).is_empty());
        }
        assert_eq!(p.stats(&a()).unanswered, 0);
        // RSTs still count under a flood.
        p.tick(&totals(1003, 0, 3), false);
        assert_eq!(p.stats(&a()).refused, 3);
    }

    #[test]
    fn off_never_takes_out_and_a_new_backend_starts_from_its_current_totals() {
        let mut p = PassiveTracker::new(0, Duration::from_millis(300));
        assert!(!p.enabled());
        p.tick(&totals(0, 0, 0), true);
        assert!(p.tick(&totals(50, 0, 50), true).is_empty());
        // A reused index: the totals an earlier backend left are not this one's.
        let mut p = tracker();
        assert!(p.tick(&totals(500, 0, 500), true).is_empty());
        assert_eq!(p.stats(&a()), HandshakeStats::default());
        // Forgotten when it is no longer fed.
        p.tick(&BTreeMap::new(), true);
        assert_eq!(p.tick(&totals(503, 0, 503), true), Vec::<SocketAddr>::new());
    }
}
