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
//!
//! Every SYN counted here is a client's, and a client decides whether a backend can answer
//! it (a bad checksum, a source the backend answers around the data path): a few packets
//! must not take a working backend out. So failures count against a backend only while
//! its handshakes fail alone: any answer of its own in a tick ends its streak (haproxy's
//! consecutive errors), and it is taken out only if another backend answered a handshake
//! while its streak lasted (when every backend fails at once, the path or the clients are
//! at fault, and the active check decides). Unanswered SYNs are not counted while the new flows of
//! the last [`FLOOD_WINDOW`] could have churned the data path's handshake table, judged
//! from these same counters at every tick (not only from the unconfirmed-table count the
//! daemon refreshes every 2 s). The daemon never takes out the last healthy backend.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    time::Duration,
};

use lb_common::Passive;

/// How often the daemon reads the counters.
pub const TICK: Duration = Duration::from_millis(25);

/// New flows are summed over this long (an unconfirmed flow's idle lifetime) to judge
/// whether they could have churned the handshake table.
pub const FLOOD_WINDOW: Duration = Duration::from_nanos(lb_common::TCP_SYN_TIMEOUT_NS);

/// Ticks in `d` (at least one).
fn ticks(d: Duration) -> usize {
    d.as_nanos().div_ceil(TICK.as_nanos()).max(1) as usize
}

/// One backend's handshakes as followed from tick to tick.
#[derive(Clone, Debug, Default)]
struct Track {
    /// `syns` at the last ticks, oldest first (the timeout's worth, plus this tick).
    syns: VecDeque<u64>,
    /// The totals at the last tick.
    last: Passive,
    /// The highest `U` seen (`None` until the history covers the timeout).
    mark: Option<i64>,
    /// Failed handshakes since the last tick with an answer.
    streak: u64,
    /// The tick at which the backend last answered a handshake.
    answered_at: Option<u64>,
    /// The tick of the streak's first failure.
    streak_since: u64,
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
    /// Ticks fed so far.
    now: u64,
    /// New flows (SYNs of every backend) of each of the last `FLOOD_WINDOW`'s ticks.
    recent_syns: VecDeque<u64>,
}

impl PassiveTracker {
    /// `errors` failed handshakes in a row take a backend out (0: passive health off);
    /// a SYN unanswered for `timeout` (rounded up to whole ticks) has failed.
    pub fn new(errors: u32, timeout: Duration) -> Self {
        Self {
            errors,
            timeout_ticks: ticks(timeout),
            tracks: BTreeMap::new(),
            now: 0,
            recent_syns: VecDeque::new(),
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
        self.now += 1;
        let tick = self.now;
        // New flows this tick, of backends followed since the last one.
        let new_syns: u64 = totals
            .iter()
            .filter_map(|(a, now)| {
                let t = self.tracks.get(a)?;
                Some(now.syns.saturating_sub(t.last.syns))
            })
            .sum();
        self.recent_syns.push_back(new_syns);
        while self.recent_syns.len() > ticks(FLOOD_WINDOW) {
            self.recent_syns.pop_front();
        }
        let churn = self.recent_syns.iter().sum::<u64>()
            >= u64::from(lb_common::UNCONFIRMED_FLOOD_THRESHOLD);
        let count_unanswered = count_unanswered && !churn;
        let mut failing: Vec<(SocketAddr, u64)> = Vec::new();
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
            if answered > 0 {
                t.streak = 0;
                t.answered_at = Some(tick);
            } else if refused + timeouts > 0 {
                if t.streak == 0 {
                    t.streak_since = tick;
                }
                t.streak += refused + timeouts;
            }
            if self.errors > 0 && t.streak >= u64::from(self.errors) {
                // Judged now, either way: failures no other backend's answers stood
                // beside are no evidence later.
                t.streak = 0;
                failing.push((*addr, t.streak_since));
            }
        }
        // Out only if another backend answered while the streak lasted: the path and the
        // clients worked, this backend did not.
        failing
            .into_iter()
            .filter(|(addr, since)| {
                self.tracks
                    .iter()
                    .any(|(a, t)| a != addr && t.answered_at.is_some_and(|at| at >= *since))
            })
            .map(|(addr, _)| addr)
            .collect()
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

    fn b() -> SocketAddr {
        "192.0.2.12:6443".parse().unwrap()
    }

    fn pv(syns: u64, answered: u64, refused: u64) -> Passive {
        Passive {
            syns,
            answered,
            refused,
        }
    }

    /// A tracker (300 ms timeout: 3 ticks; 3 errors in a row) fed backend `a`'s totals
    /// beside backend `b`, which answers one new flow a tick (the witness).
    struct Feed {
        p: PassiveTracker,
        b: u64,
    }

    impl Feed {
        fn new() -> Self {
            Self {
                p: PassiveTracker::new(3, TICK * 3),
                b: 0,
            }
        }

        fn tick(&mut self, syns: u64, answered: u64, refused: u64) -> Vec<SocketAddr> {
            self.tick_with(syns, answered, refused, true)
        }

        fn tick_with(
            &mut self,
            syns: u64,
            answered: u64,
            refused: u64,
            count_unanswered: bool,
        ) -> Vec<SocketAddr> {
            self.b += 1;
            let totals = [
                (a(), pv(syns, answered, refused)),
                (b(), pv(self.b, self.b, 0)),
            ];
            self.p.tick(&totals.into(), count_unanswered)
        }
    }

    #[test]
    fn a_backend_answering_every_syn_is_never_taken_out() {
        let mut f = Feed::new();
        // 5 new flows a tick, each answered within the tick, for 5 s.
        for i in 0..50 {
            assert!(f.tick(5 * i, 5 * i, 0).is_empty());
        }
        // Answers lagging a tick (younger SYNs outstanding at every read) do not count.
        for i in 50..100 {
            assert!(f.tick(5 * i, 5 * (i - 1), 0).is_empty());
        }
        assert_eq!(f.p.stats(&a()), HandshakeStats::default());
    }

    #[test]
    fn refused_handshakes_in_a_row_take_a_backend_out_at_the_tick_they_reach_the_limit() {
        let mut f = Feed::new();
        f.tick(10, 10, 0);
        assert!(f.tick(12, 10, 2).is_empty());
        assert_eq!(f.tick(13, 10, 3), vec![a()]);
        assert_eq!(
            f.p.stats(&a()),
            HandshakeStats {
                refused: 3,
                unanswered: 0
            }
        );
        // The streak starts again: two more refusals are not enough.
        assert!(f.tick(15, 10, 5).is_empty());
    }

    #[test]
    fn any_answer_of_its_own_ends_a_backends_streak() {
        let mut f = Feed::new();
        f.tick(0, 0, 0);
        f.tick(2, 0, 2);
        // One answer beside more refusals: the backend works, the streak is over
        // (a client's packets must not outvote it).
        f.tick(8, 1, 6);
        assert!(f.tick(10, 1, 8).is_empty());
        assert_eq!(f.tick(11, 1, 9), vec![a()]);
    }

    #[test]
    fn syns_left_unanswered_past_the_timeout_count_once_each() {
        let mut f = Feed::new();
        // History fills (3 ticks + this one) with everything answered.
        for _ in 0..4 {
            f.tick(10, 10, 0);
        }
        // A blackhole: one SYN a tick, none answered. Each fails 3 ticks after it left.
        let mut out_at = None;
        for i in 1..=10 {
            if !f.tick(10 + i, 10, 0).is_empty() {
                out_at = Some(i);
                break;
            }
        }
        // SYNs of ticks 1, 2, 3 time out at ticks 4, 5, 6.
        assert_eq!(out_at, Some(6));
        assert_eq!(f.p.stats(&a()).unanswered, 3);
        // The backend answers again (late answers to the old SYNs included): no more.
        for i in 7..20 {
            assert!(f.tick(10 + i, 10 + i, 0).is_empty());
        }
        assert_eq!(f.p.stats(&a()).unanswered, 3);
    }

    #[test]
    fn under_a_flood_unanswered_syns_are_not_counted_then_or_later() {
        let mut f = Feed::new();
        for _ in 0..4 {
            f.tick(0, 0, 0);
        }
        for i in 1..=10 {
            assert!(f.tick_with(100 * i, 0, 0, false).is_empty());
        }
        // The daemon's flag drops; the flood's unanswered SYNs stay uncounted.
        for _ in 0..5 {
            assert!(f.tick(1000, 0, 0).is_empty());
        }
        assert_eq!(f.p.stats(&a()).unanswered, 0);
        // RSTs still count under a flood.
        f.tick_with(1003, 0, 3, false);
        assert_eq!(f.p.stats(&a()).refused, 3);
    }

    #[test]
    fn new_flows_enough_to_churn_the_table_suspend_unanswered_at_once() {
        let mut f = Feed::new();
        for _ in 0..4 {
            f.tick(0, 0, 0);
        }
        // A spoofed flood the daemon's 2 s count has not seen yet: 5,000 SYNs a tick
        // (50,000/s), answers lost in the churn.
        let mut total = 0;
        for _ in 0..20 {
            total += 5000;
            assert!(f.tick(total, 0, 0).is_empty());
        }
        assert_eq!(f.p.stats(&a()).unanswered, 0);
    }

    #[test]
    fn when_every_backend_fails_at_once_none_is_taken_out() {
        let mut p = PassiveTracker::new(3, Duration::from_millis(300));
        let both = |s: u64, r: u64| -> BTreeMap<SocketAddr, Passive> {
            [(a(), pv(s, 0, r)), (b(), pv(s, 0, r))].into()
        };
        for i in 0..30 {
            assert!(p.tick(&both(2 * i, 2 * i), true).is_empty(), "tick {i}");
        }
        // Both were refused 58 times: counted, not acted on.
        assert_eq!(p.stats(&a()).refused, 58);
        // A lone backend is never taken out on its own clients' word either.
        let mut p = PassiveTracker::new(3, Duration::from_millis(300));
        for i in 0..30 {
            assert!(p.tick(&[(a(), p_(i))].into(), true).is_empty());
        }
        fn p_(i: u64) -> Passive {
            Passive {
                syns: 5 * i,
                answered: 0,
                refused: 5 * i,
            }
        }
    }

    #[test]
    fn failures_no_other_backend_answered_beside_are_not_held_against_it() {
        let mut p = PassiveTracker::new(3, Duration::from_millis(300));
        let t = |ra: u64, nb: u64| -> BTreeMap<SocketAddr, Passive> {
            [(a(), pv(ra, 0, ra)), (b(), pv(nb, nb, 0))].into()
        };
        // `b` answered before `a`'s streak began, not during it.
        p.tick(&t(0, 0), true);
        p.tick(&t(0, 1), true);
        p.tick(&t(0, 1), true);
        assert!(p.tick(&t(3, 1), true).is_empty());
        // `b` answers again: `a`'s old refusals do not take it out now.
        assert!(p.tick(&t(3, 2), true).is_empty());
        // New ones, with `b` answering beside them, do.
        p.tick(&t(5, 3), true);
        assert_eq!(p.tick(&t(6, 4), true), vec![a()]);
    }

    #[test]
    fn a_spread_attack_with_no_answers_anywhere_takes_no_backend_out_one_by_one() {
        // Three backends answered earlier; then each fails in turn, nobody answers.
        let c: SocketAddr = "192.0.2.13:6443".parse().unwrap();
        let mut p = PassiveTracker::new(3, Duration::from_millis(300));
        let t = |ra: u64, rb: u64, rc: u64| -> BTreeMap<SocketAddr, Passive> {
            [
                (a(), pv(10 + ra, 10, ra)),
                (b(), pv(10 + rb, 10, rb)),
                (c, pv(10 + rc, 10, rc)),
            ]
            .into()
        };
        p.tick(&t(0, 0, 0), true);
        let mut out = Vec::new();
        for i in 1..=10 {
            out.extend(p.tick(&t(3 * i, 0, 0), true));
            out.extend(p.tick(&t(3 * i, 3 * i, 0), true));
            out.extend(p.tick(&t(3 * i, 3 * i, 3 * i), true));
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn off_never_takes_out_and_a_new_backend_starts_from_its_current_totals() {
        let mut off = PassiveTracker::new(0, Duration::from_millis(300));
        assert!(!off.enabled());
        let t = |ra: u64, nb: u64| -> BTreeMap<SocketAddr, Passive> {
            [(a(), pv(ra, 0, ra)), (b(), pv(nb, nb, 0))].into()
        };
        off.tick(&t(0, 0), true);
        assert!(off.tick(&t(50, 1), true).is_empty());
        // A reused index: the totals an earlier backend left are not this one's.
        let mut f = Feed::new();
        assert!(f.tick(500, 0, 500).is_empty());
        assert_eq!(f.p.stats(&a()), HandshakeStats::default());
        // Forgotten when it is no longer fed.
        f.p.tick(&BTreeMap::new(), true);
        assert!(f.tick(503, 0, 503).is_empty());
    }
}
