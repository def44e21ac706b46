//! Who else claims a VIP, seen from the wire, for both families written once: ARP packets
//! whose sender is a VIP (a gratuitous ARP, a reply) and neighbour advertisements whose
//! target is a v6 VIP, from a MAC not ours. VRRP alone cannot see a second owner it cannot
//! hear (filtered multicast, a partition); the segment's ARP and NDP traffic can.
//!
//! An xvip node says who it is in its frames ([`Mark`]: VRID, priority, primary address;
//! in ARP's padding, in an experimental NDP option), so a claimant is either **another
//! xvip** or **a foreign host**.
//! - Another xvip that claims the VIP while this node announces it: the one with the lower
//!   (priority, primary address) yields, as a VRRP election would have decided, even while
//!   VRRP stays deaf. Before it yields it asks who has the VIP ([`Decision::Probe`], at
//!   most one a [`PROBE`]) and yields only to an outranking claimant that **answers that
//!   question** within [`PROBE`]: so a yield always leaves an owner that answers (the
//!   winner), and frames alone (unsolicited claims, however marked) never silence a node.
//!   What counts as an answer is the caller's to say ([`Claim::to_us`]): for NDP, a
//!   solicited NA to the random address the probe asked from (`announce::ndp`), which a
//!   forger must have seen the probe to know; ARP has no such field, so for ARP it is a
//!   reply to this node's address (docs/security.md).
//!   The winner re-announces (a gratuitous round, at most one a second) so the clients'
//!   caches point to it again. The yielding node goes on asking every [`PROBE`]: while the
//!   winner answers it stays out; [`HOLD`] after its last answer, it announces again (if
//!   its election still says so).
//! - A foreign host (no mark: someone configured the VIP on a server) is never fought in an
//!   ARP or NA war: xvip keeps answering requests as before, sends nothing more, and
//!   reports it (one log line per host, a counter, the list in `xvip status`).
//!
//! Bounded: claims acted on per claimant MAC and for the segment by `announce::limit`
//! ([`crate::announce::limit::Rates::CLAIMS`], the rest counted), at most [`MAX_SEEN`]
//! claimants remembered (the oldest is forgotten and counted), one log line per claimant
//! and at most [`LOG_BUDGET`] a minute.

use std::{
    collections::BTreeMap,
    fmt::Display,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::announce::limit::{Rates, ReplyLimiter};
use crate::net::iface::format_mac;
use crate::wire::mark::{Mark, Primary};

/// What `xvip status` shows of one family's claims.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClaimsStatus {
    /// The MAC of the xvip this node yielded the VIPs to, while it does.
    pub yielded_to: Option<String>,
    /// Times this node yielded.
    pub yields: u64,
    /// Claimants heard in the last 5 minutes, most recent first.
    pub claimants: Vec<ClaimantStatus>,
    /// Claimants forgotten to keep the list bounded (or silent for 5 minutes).
    pub forgotten: u64,
    /// Log lines not written (over the budget of 10 a minute).
    pub logs_suppressed: u64,
    /// Claims not acted on: over the claimant's or the segment's budget.
    #[serde(default)]
    pub rate_limited: u64,
    /// Probes sent: questions "who has the VIP" before and while yielding.
    #[serde(default)]
    pub probes: u64,
}

/// One other claimant of a VIP.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClaimantStatus {
    pub mac: String,
    pub vip: String,
    /// "xvip" or "foreign".
    pub kind: String,
    /// An xvip's priority and primary address, from its mark.
    pub priority: Option<u8>,
    pub primary: Option<String>,
    pub packets: u64,
    pub last_seen_s: f64,
}

/// How long a yield lasts after the winner's last answer to a probe.
pub const HOLD: Duration = Duration::from_millis(1500);
/// How often a yielded node asks who has the VIP; also the least time between two probes
/// that claims cause, and how long after a probe an answer counts as one.
pub const PROBE: Duration = Duration::from_millis(500);
/// The least time between two gratuitous rounds a conflict makes the winner send.
pub const REASSERT_EVERY: Duration = Duration::from_secs(1);
/// Claimants remembered.
pub const MAX_SEEN: usize = 16;
/// Claimants silent this long are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Log lines a minute, all claimants together.
pub const LOG_BUDGET: u32 = 10;

/// One claim of a VIP heard on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim<A> {
    /// The claimant's MAC (not ours).
    pub mac: [u8; 6],
    pub vip: A,
    /// Its mark if the sender says it is an xvip.
    pub mark: Option<Mark<A>>,
    /// An answer addressed to this node (an ARP reply to our address, a solicited NA to our
    /// link-local address): what a probe asks for.
    pub to_us: bool,
}

/// One claimant as `xvip status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant<A> {
    pub mac: [u8; 6],
    pub vip: A,
    /// `None` for a foreign host.
    pub mark: Option<Mark<A>>,
    pub packets: u64,
    pub last: Instant,
}

/// What the daemon does about one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing (our own frame, a claim while we do not announce, a known foreign host, over
    /// budget).
    None,
    /// Another xvip says it outranks us: ask who has the VIP now (and call
    /// [`Claims::sent_probe`]); we yield if it answers.
    Probe,
    /// Another xvip that outranks us answered our probe: stop answering for the VIPs now.
    Yield,
    /// We outrank the other xvip: send a gratuitous round now.
    Reassert,
}

/// One family's claims seen, and whether this node has yielded (`A`: `Ipv4Addr` for ARP,
/// `Ipv6Addr` for NDP).
#[derive(Debug)]
pub struct Claims<A> {
    seen: BTreeMap<[u8; 6], Claimant<A>>,
    /// The winner we yielded to and when it last answered a probe.
    yielded: Option<([u8; 6], Instant)>,
    /// When the last probe went out.
    probed: Option<Instant>,
    last_reassert: Option<Instant>,
    /// A gratuitous round owed since the last one was too recent ([`Claims::reassert_due`]).
    reassert_owed: bool,
    log_window: Option<Instant>,
    logged: u32,
    limit: ReplyLimiter,
    /// Counters for the status.
    pub yields: u64,
    pub forgotten: u64,
    pub logs_suppressed: u64,
    pub rate_limited: u64,
    pub probes: u64,
}

impl<A> Default for Claims<A> {
    fn default() -> Self {
        Self {
            seen: BTreeMap::new(),
            yielded: None,
            probed: None,
            last_reassert: None,
            reassert_owed: false,
            log_window: None,
            logged: 0,
            limit: ReplyLimiter::new(Rates::CLAIMS),
            yields: 0,
            forgotten: 0,
            logs_suppressed: 0,
            rate_limited: 0,
            probes: 0,
        }
    }
}

impl<A: Primary + Display> Claims<A> {
    /// A claim heard at `now`; `ours` is our own mark (`None` without VRRP: then nobody
    /// yields), `announcing` whether our election says we hold the VIP.
    pub fn on_claim(
        &mut self,
        now: Instant,
        claim: Claim<A>,
        ours: Option<Mark<A>>,
        announcing: bool,
    ) -> Decision {
        if !self.limit.allow(now, claim.mac) {
            self.rate_limited += 1;
            return Decision::None;
        }
        let Claim { mac, vip, mark, .. } = claim;
        let new = self.remember(now, mac, vip, mark);
        if !announcing {
            // A backup sees its master's announcements: nothing to decide, and a yield ends
            // with the mastership it put on hold (else it would outlive the conflict).
            self.end_yield();
            return Decision::None;
        }
        // Only an answer to our own recent question counts: frames anyone may send
        // unasked never silence this node.
        let answered = claim.to_us && self.probed.is_some_and(|t| now.duration_since(t) < PROBE);
        if let Some((winner, heard)) = &mut self.yielded {
            if *winner == mac && answered {
                *heard = now;
            }
            return Decision::None;
        }
        match (mark, ours) {
            (Some(theirs), Some(ours)) if theirs > ours && answered => {
                // Also the first announcement of a preempting master, which can arrive before
                // its advert: a warning, not an error.
                self.log(now, log::Level::Warn, || {
                    format!(
                        "another xvip ({}, {}, priority {}, VRID {}) answers for {vip} while this node does: it outranks this node, which stops answering until it is gone (a preempting master's first announcement; if it repeats, VRRP between the two is not heard)",
                        format_mac(&mac),
                        theirs.primary,
                        theirs.priority,
                        theirs.vrid
                    )
                });
                self.yielded = Some((mac, now));
                self.yields += 1;
                Decision::Yield
            }
            (Some(theirs), Some(ours)) if theirs > ours => {
                if new {
                    self.log(now, log::Level::Warn, || {
                        format!(
                            "another xvip ({}, {}, priority {}, VRID {}) claims {vip} while this node answers for it, and outranks this node: asking who has {vip}; this node stops answering only if it answers",
                            format_mac(&mac),
                            theirs.primary,
                            theirs.priority,
                            theirs.vrid
                        )
                    });
                }
                if self.probed.is_none_or(|t| now.duration_since(t) >= PROBE) {
                    Decision::Probe
                } else {
                    Decision::None
                }
            }
            (Some(theirs), Some(_)) => {
                if new {
                    self.log(now, log::Level::Warn, || {
                        format!(
                            "another xvip ({}, {}, priority {}) answers for {vip} while this node does: this node outranks it and keeps the VIP (if it repeats, VRRP between the two is not heard)",
                            format_mac(&mac),
                            theirs.primary,
                            theirs.priority
                        )
                    });
                }
                if self
                    .last_reassert
                    .is_none_or(|t| now.duration_since(t) >= REASSERT_EVERY)
                {
                    self.last_reassert = Some(now);
                    Decision::Reassert
                } else {
                    // The clients must end up pointing here: the round is only put off.
                    self.reassert_owed = true;
                    Decision::None
                }
            }
            _ => {
                if new {
                    self.log(now, log::Level::Error, || {
                        format!(
                            "a host that is not xvip ({}) claims {vip}, which this node announces: remove the address from that host; xvip keeps answering requests and does not fight it with gratuitous announcements",
                            format_mac(&mac)
                        )
                    });
                }
                Decision::None
            }
        }
    }

    /// Records that a probe ("who has the VIP") went out at `now`: answers count for
    /// [`PROBE`] after it.
    pub fn sent_probe(&mut self, now: Instant) {
        self.probed = Some(now);
        self.probes += 1;
    }

    /// Whether this node stays out now; a yield the winner has not renewed for [`HOLD`]
    /// ends here (the caller announces again if its election still says so).
    pub fn yielded(&mut self, now: Instant) -> bool {
        match self.yielded {
            Some((_, heard)) if now.duration_since(heard) < HOLD => true,
            Some((mac, _)) => {
                self.yielded = None;
                self.log(now, log::Level::Info, || {
                    format!(
                        "the xvip this node yielded the VIP to ({}) no longer answers: answering again",
                        format_mac(&mac)
                    )
                });
                false
            }
            None => false,
        }
    }

    /// Whether a gratuitous round put off by [`REASSERT_EVERY`] is due now (asked on the
    /// daemon's claims tick).
    pub fn reassert_due(&mut self, now: Instant) -> bool {
        let due = self.reassert_owed
            && self
                .last_reassert
                .is_none_or(|t| now.duration_since(t) >= REASSERT_EVERY);
        if due {
            self.reassert_owed = false;
            self.last_reassert = Some(now);
        }
        due
    }

    /// Ends a yield: the election says this node no longer holds the VIP (it heard the
    /// other node's VRRP again and became backup), so there is nothing left to yield.
    pub fn end_yield(&mut self) {
        self.yielded = None;
    }

    /// The winner's MAC while yielded.
    pub fn yielded_to(&self) -> Option<[u8; 6]> {
        self.yielded.map(|(m, _)| m)
    }

    /// The status document's part.
    pub fn status(&self, now: Instant) -> ClaimsStatus {
        ClaimsStatus {
            yielded_to: self.yielded.map(|(m, _)| format_mac(&m)),
            yields: self.yields,
            claimants: self
                .claimants()
                .into_iter()
                .map(|c| ClaimantStatus {
                    mac: format_mac(&c.mac),
                    vip: c.vip.to_string(),
                    kind: if c.mark.is_some() { "xvip" } else { "foreign" }.into(),
                    priority: c.mark.map(|m| m.priority),
                    primary: c.mark.map(|m| m.primary.to_string()),
                    packets: c.packets,
                    last_seen_s: now.duration_since(c.last).as_secs_f64(),
                })
                .collect(),
            forgotten: self.forgotten,
            logs_suppressed: self.logs_suppressed,
            rate_limited: self.rate_limited,
            probes: self.probes,
        }
    }

    /// Every claimant heard in the last [`FORGET_AFTER`], most recent first.
    pub fn claimants(&self) -> Vec<Claimant<A>> {
        let mut v: Vec<Claimant<A>> = self.seen.values().cloned().collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.last));
        v
    }

    /// Records the claim; returns whether the claimant is new.
    fn remember(&mut self, now: Instant, mac: [u8; 6], vip: A, mark: Option<Mark<A>>) -> bool {
        let before = self.seen.len();
        self.seen
            .retain(|_, c| now.duration_since(c.last) < FORGET_AFTER);
        self.forgotten += (before - self.seen.len()) as u64;
        if let Some(c) = self.seen.get_mut(&mac) {
            c.packets += 1;
            c.last = now;
            c.mark = mark;
            c.vip = vip;
            return false;
        }
        if self.seen.len() >= MAX_SEEN
            && let Some(oldest) = self.seen.values().min_by_key(|c| c.last).map(|c| c.mac)
        {
            self.seen.remove(&oldest);
            self.forgotten += 1;
        }
        self.seen.insert(
            mac,
            Claimant {
                mac,
                vip,
                mark,
                packets: 1,
                last: now,
            },
        );
        true
    }

    fn log(&mut self, now: Instant, level: log::Level, line: impl FnOnce() -> String) {
        if self
            .log_window
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.log_window = Some(now);
            self.logged = 0;
        }
        if self.logged < LOG_BUDGET {
            self.logged += 1;
            log::log!(level, "VIP claim: {}", line());
        } else {
            self.logs_suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn mark(priority: u8, last: u8) -> Mark<Ipv4Addr> {
        Mark {
            priority,
            primary: Ipv4Addr::new(192, 0, 2, last),
            vrid: 51,
        }
    }

    /// A claim from `mac` with `m`, unasked (`to_us` false) or an answer to us.
    fn claim(mac: [u8; 6], m: Option<Mark<Ipv4Addr>>, to_us: bool) -> Claim<Ipv4Addr> {
        Claim {
            mac,
            vip: VIP,
            mark: m,
            to_us,
        }
    }

    /// `c` yields to `mac` with `theirs` over `ours` at `t`: an unasked claim makes it
    /// probe, the answer makes it yield.
    fn yield_to<A: Primary + Display>(c: &mut Claims<A>, t: Instant, cl: Claim<A>, ours: Mark<A>) {
        let unasked = Claim { to_us: false, ..cl };
        assert_eq!(c.on_claim(t, unasked, Some(ours), true), Decision::Probe);
        c.sent_probe(t);
        let answer = Claim { to_us: true, ..cl };
        let t1 = t + Duration::from_millis(5);
        assert_eq!(c.on_claim(t1, answer, Some(ours), true), Decision::Yield);
        assert!(c.yielded(t1));
        assert_eq!(c.yielded_to(), Some(cl.mac));
    }

    #[test]
    fn the_lower_priority_asks_then_yields_and_the_higher_reasserts_at_most_once_a_second() {
        let t = Instant::now();
        let (mut low, mut high) = (Claims::default(), Claims::default());
        yield_to(
            &mut low,
            t,
            claim(B, Some(mark(150, 2)), false),
            mark(100, 3),
        );
        assert_eq!(low.yields, 1);
        assert_eq!(
            high.on_claim(
                t,
                claim(A, Some(mark(100, 3)), false),
                Some(mark(150, 2)),
                true
            ),
            Decision::Reassert
        );
        let soon = t + Duration::from_millis(300);
        assert_eq!(
            high.on_claim(
                soon,
                claim(A, Some(mark(100, 3)), false),
                Some(mark(150, 2)),
                true
            ),
            Decision::None
        );
        // The put-off round is owed, and paid once a second has passed.
        assert!(!high.reassert_due(soon));
        assert!(high.reassert_due(t + REASSERT_EVERY));
        assert!(!high.reassert_due(t + REASSERT_EVERY * 3), "paid once");
        let later = t + REASSERT_EVERY * 3;
        assert_eq!(
            high.on_claim(
                later,
                claim(A, Some(mark(100, 3)), false),
                Some(mark(150, 2)),
                true
            ),
            Decision::Reassert
        );
    }

    #[test]
    fn equal_priorities_are_decided_by_the_primary_address() {
        let t = Instant::now();
        let mut c = Claims::default();
        yield_to(&mut c, t, claim(B, Some(mark(100, 3)), false), mark(100, 2));
        let mut c = Claims::default();
        assert_eq!(
            c.on_claim(
                t,
                claim(B, Some(mark(100, 2)), true),
                Some(mark(100, 3)),
                true
            ),
            Decision::Reassert
        );
    }

    /// The rule that keeps a forger from silencing a node: marked frames alone, however
    /// many and from however many MACs, only make it ask (at most once a PROBE); an
    /// "answer" nobody asked for, or one that comes too late, counts for nothing.
    #[test]
    fn unasked_claims_and_unasked_answers_never_make_a_node_yield() {
        let t = Instant::now();
        let mut c = Claims::default();
        let ours = Some(mark(100, 3));
        let mut probes = 0;
        for i in 0..1000u32 {
            let now = t + Duration::from_millis(u64::from(i) * 5);
            let mac = [2, 0, 0, 1, (i >> 8) as u8, i as u8];
            match c.on_claim(now, claim(mac, Some(mark(255, 9)), false), ours, true) {
                Decision::Probe => {
                    probes += 1;
                    c.sent_probe(now);
                }
                Decision::None => {}
                d => panic!("{d:?} at {i}"),
            }
            assert!(!c.yielded(now), "claim {i}");
        }
        // 5 s of claims: at most one probe a PROBE.
        assert!((2..=11).contains(&probes), "{probes} probes");
        // Answers nobody asked for, and one after its probe's time: no yield either.
        let mut c = Claims::default();
        for i in 0..100u64 {
            let d = c.on_claim(
                t + Duration::from_millis(i),
                claim(B, Some(mark(255, 9)), true),
                ours,
                true,
            );
            assert_ne!(d, Decision::Yield, "unasked answer {i}");
        }
        c.sent_probe(t);
        assert_eq!(
            c.on_claim(t + PROBE, claim(B, Some(mark(255, 9)), true), ours, true),
            Decision::Probe
        );
        assert!(!c.yielded(t + PROBE));
    }

    #[test]
    fn a_yield_lasts_while_the_winner_answers_and_ends_after_hold() {
        let t = Instant::now();
        let mut c = Claims::default();
        let ours = Some(mark(100, 3));
        yield_to(&mut c, t, claim(B, Some(mark(150, 2)), false), mark(100, 3));
        let t1 = t + HOLD - Duration::from_millis(100);
        assert!(c.yielded(t1));
        // Unasked frames from the winner (or its forger) do not renew the yield ...
        assert_eq!(
            c.on_claim(t1, claim(B, Some(mark(150, 2)), true), ours, true),
            Decision::None
        );
        // ... an answer to a probe does.
        c.sent_probe(t1);
        assert_eq!(
            c.on_claim(t1, claim(B, Some(mark(150, 2)), true), ours, true),
            Decision::None
        );
        assert!(c.yielded(t1 + HOLD - Duration::from_millis(1)));
        assert!(!c.yielded(t1 + HOLD));
        assert_eq!(c.yielded_to(), None);
    }

    #[test]
    fn a_yield_ends_when_the_node_is_no_longer_master_and_probes_do_not_renew_it() {
        let t = Instant::now();
        let mut c = Claims::default();
        yield_to(&mut c, t, claim(B, Some(mark(150, 2)), false), mark(100, 3));
        // VRRP is heard again: this node is backup; the winner's answers to its last
        // probe arrive: no renewal, the yield is over.
        assert_eq!(
            c.on_claim(
                t,
                claim(B, Some(mark(150, 2)), true),
                Some(mark(100, 3)),
                false
            ),
            Decision::None
        );
        assert!(!c.yielded(t));
        assert_eq!(c.yielded_to(), None);
    }

    #[test]
    fn a_foreign_host_is_reported_never_fought_and_a_backup_decides_nothing() {
        let t = Instant::now();
        let mut c = Claims::default();
        c.sent_probe(t);
        assert_eq!(
            c.on_claim(t, claim(B, None, true), Some(mark(100, 2)), true),
            Decision::None
        );
        assert!(!c.yielded(t));
        assert_eq!(c.claimants()[0].mark, None);
        // Without VRRP (no mark of ours) another xvip is reported, not obeyed.
        assert_eq!(
            c.on_claim(t, claim(A, Some(mark(200, 9)), true), None, true),
            Decision::None
        );
        // A backup hears its master: nothing.
        let mut b = Claims::default();
        assert_eq!(
            b.on_claim(
                t,
                claim(B, Some(mark(150, 2)), false),
                Some(mark(100, 3)),
                false
            ),
            Decision::None
        );
        assert!(!b.yielded(t));
    }

    #[test]
    fn claimants_log_lines_and_the_claims_acted_on_are_bounded() {
        let t = Instant::now();
        let mut c = Claims::default();
        for i in 0..200u8 {
            let mac = [2, 0, 0, 0, 1, i];
            c.on_claim(
                t + Duration::from_millis(u64::from(i)),
                claim(mac, None, false),
                None,
                true,
            );
        }
        assert_eq!(c.claimants().len(), MAX_SEEN);
        assert_eq!(c.forgotten, 200 - MAX_SEEN as u64);
        assert_eq!(c.logs_suppressed, 200 - u64::from(LOG_BUDGET));
        // Silent claimants are forgotten.
        let later = t + FORGET_AFTER * 2;
        c.on_claim(later, claim(A, None, false), None, true);
        assert_eq!(c.claimants().len(), 1);
        // One claimant flooding: its burst, then its rate; the rest counted, not acted on.
        let before = c.rate_limited;
        for _ in 0..1000 {
            c.on_claim(later, claim(B, None, false), None, true);
        }
        let acted = 1000 - (c.rate_limited - before);
        assert_eq!(acted as f64, Rates::CLAIMS.burst);
        let b = c.claimants().into_iter().find(|x| x.mac == B).expect("B");
        assert_eq!(b.packets, acted);
    }

    /// The same type decides for IPv6 (primary: the link-local address VRRP advertises from).
    #[test]
    fn ipv6_claims_follow_the_same_rule() {
        let t = Instant::now();
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let m6 = |priority, ll: &str| Mark {
            priority,
            primary: ll.parse::<Ipv6Addr>().unwrap(),
            vrid: 51,
        };
        let cl = |mark, to_us| Claim {
            mac: B,
            vip,
            mark: Some(mark),
            to_us,
        };
        let mut low = Claims::default();
        yield_to(
            &mut low,
            t,
            cl(m6(100, "fe80::3"), false),
            m6(100, "fe80::2"),
        );
        let mut high = Claims::default();
        assert_eq!(
            high.on_claim(
                t,
                cl(m6(100, "fe80::2"), false),
                Some(m6(100, "fe80::3")),
                true
            ),
            Decision::Reassert
        );
        let st = low.status(t);
        assert_eq!(st.claimants[0].primary.as_deref(), Some("fe80::3"));
        assert_eq!(st.claimants[0].vip, "2001:db8::100");
        assert_eq!((st.yields, st.probes), (1, 1));
    }
}
