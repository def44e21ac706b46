//! Who else claims the VIP, seen from the wire: ARP packets whose sender is a VIP and whose
//! sender MAC is not ours (a gratuitous ARP, a reply). VRRP alone cannot see a second owner
//! it cannot hear (filtered multicast, a partition); the ARP traffic of the segment can.
//!
//! An xvip node says who it is in the padding of its ARP frames ([`Mark`]: VRID, priority,
//! primary address), so a claimant is either **another xvip** or **a foreign host**.
//! - Another xvip that claims the VIP while this node announces it: the one with the lower
//!   (priority, primary address) yields, as a VRRP election would have decided, at once,
//!   even while VRRP stays deaf. The winner re-announces (a gratuitous round, at most one a
//!   second) so the clients' caches point to it again. The yielding node stops answering
//!   and probes the VIP every [`PROBE`]: while the winner answers, it stays out; after
//!   [`HOLD`] without a word from it, it announces again (if its election still says so).
//! - A foreign host (no mark: someone configured the VIP on a server) is never fought in an
//!   ARP war: xvip keeps answering requests as before, sends nothing more, and reports it
//!   (one log line per host, a counter, the list in `xvip status`).
//!
//! Bounded: at most [`MAX_SEEN`] claimants are remembered (the oldest is forgotten and
//! counted), one log line per claimant and at most [`LOG_BUDGET`] a minute.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::net::iface::format_mac;
use crate::wire::arp::Mark;

/// What `xvip status` shows of the claims.
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

/// How long a yield lasts without a word from the winner.
pub const HOLD: Duration = Duration::from_millis(1500);
/// How often a yielded node asks who has the VIP.
pub const PROBE: Duration = Duration::from_millis(500);
/// The least time between two gratuitous rounds a conflict makes the winner send.
pub const REASSERT_EVERY: Duration = Duration::from_secs(1);
/// Claimants remembered.
pub const MAX_SEEN: usize = 16;
/// Claimants silent this long are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Log lines a minute, all claimants together.
pub const LOG_BUDGET: u32 = 10;

/// One claimant as `xvip status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub mac: [u8; 6],
    pub vip: Ipv4Addr,
    /// `None` for a foreign host.
    pub mark: Option<Mark>,
    pub packets: u64,
    pub last: Instant,
}

/// What the daemon does about one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing (our own frame, a claim while we do not announce, a known foreign host).
    None,
    /// Another xvip outranks us: stop answering for the VIPs now.
    Yield,
    /// We outrank the other xvip: send a gratuitous round now.
    Reassert,
}

/// The claims seen, and whether this node has yielded.
#[derive(Debug, Default)]
pub struct Claims {
    seen: BTreeMap<[u8; 6], Claimant>,
    /// The winner we yielded to and when it was last heard.
    yielded: Option<([u8; 6], Instant)>,
    last_reassert: Option<Instant>,
    /// A gratuitous round owed since the last one was too recent ([`Claims::reassert_due`]).
    reassert_owed: bool,
    log_window: Option<Instant>,
    logged: u32,
    /// Counters for the status.
    pub yields: u64,
    pub forgotten: u64,
    pub logs_suppressed: u64,
}

impl Claims {
    /// A claim for `vip` from `mac` (not ours) with `mark` if the sender is an xvip; `ours`
    /// is our own mark (`None` without VRRP: then nobody yields), `announcing` whether our
    /// election says we hold the VIP.
    pub fn on_claim(
        &mut self,
        now: Instant,
        mac: [u8; 6],
        vip: Ipv4Addr,
        mark: Option<Mark>,
        ours: Option<Mark>,
        announcing: bool,
    ) -> Decision {
        let new = self.remember(now, mac, vip, mark);
        if !announcing {
            // A backup sees its master's announcements: nothing to decide, and a yield ends
            // with the mastership it put on hold (else it would outlive the conflict).
            self.end_yield();
            return Decision::None;
        }
        if let Some((winner, heard)) = &mut self.yielded {
            if *winner == mac {
                *heard = now;
            }
            return Decision::None;
        }
        match (mark, ours) {
            (Some(theirs), Some(ours)) if theirs > ours => {
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
                            "a host that is not xvip ({}) claims {vip}, which this node announces: remove the address from that host; xvip keeps answering requests and does not fight it with gratuitous ARP",
                            format_mac(&mac)
                        )
                    });
                }
                Decision::None
            }
        }
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
        }
    }

    /// Every claimant heard in the last [`FORGET_AFTER`], most recent first.
    pub fn claimants(&self) -> Vec<Claimant> {
        let mut v: Vec<Claimant> = self.seen.values().cloned().collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.last));
        v
    }

    /// Records the claim; returns whether the claimant is new.
    fn remember(&mut self, now: Instant, mac: [u8; 6], vip: Ipv4Addr, mark: Option<Mark>) -> bool {
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
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn mark(priority: u8, last: u8) -> Mark {
        Mark {
            priority,
            primary: Ipv4Addr::new(192, 0, 2, last),
            vrid: 51,
        }
    }

    #[test]
    fn the_lower_priority_yields_and_the_higher_reasserts_at_most_once_a_second() {
        let t = Instant::now();
        let (mut low, mut high) = (Claims::default(), Claims::default());
        assert_eq!(
            low.on_claim(t, B, VIP, Some(mark(150, 2)), Some(mark(100, 3)), true),
            Decision::Yield
        );
        assert!(low.yielded(t));
        assert_eq!(low.yielded_to(), Some(B));
        assert_eq!(
            high.on_claim(t, A, VIP, Some(mark(100, 3)), Some(mark(150, 2)), true),
            Decision::Reassert
        );
        let soon = t + Duration::from_millis(300);
        assert_eq!(
            high.on_claim(soon, A, VIP, Some(mark(100, 3)), Some(mark(150, 2)), true),
            Decision::None
        );
        // The put-off round is owed, and paid once a second has passed.
        assert!(!high.reassert_due(soon));
        assert!(high.reassert_due(t + REASSERT_EVERY));
        assert!(!high.reassert_due(t + REASSERT_EVERY * 3), "paid once");
        let later = t + REASSERT_EVERY * 3;
        assert_eq!(
            high.on_claim(later, A, VIP, Some(mark(100, 3)), Some(mark(150, 2)), true),
            Decision::Reassert
        );
    }

    #[test]
    fn equal_priorities_are_decided_by_the_primary_address() {
        let t = Instant::now();
        let mut c = Claims::default();
        assert_eq!(
            c.on_claim(t, B, VIP, Some(mark(100, 3)), Some(mark(100, 2)), true),
            Decision::Yield
        );
        let mut c = Claims::default();
        assert_eq!(
            c.on_claim(t, B, VIP, Some(mark(100, 2)), Some(mark(100, 3)), true),
            Decision::Reassert
        );
    }

    #[test]
    fn a_yield_lasts_while_the_winner_is_heard_and_ends_after_hold() {
        let t = Instant::now();
        let mut c = Claims::default();
        c.on_claim(t, B, VIP, Some(mark(150, 2)), Some(mark(100, 3)), true);
        let t1 = t + HOLD - Duration::from_millis(100);
        assert!(c.yielded(t1));
        // The winner answers a probe (this node still master by its deaf election): renewed.
        assert_eq!(
            c.on_claim(t1, B, VIP, Some(mark(150, 2)), Some(mark(100, 3)), true),
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
        c.on_claim(t, B, VIP, Some(mark(150, 2)), Some(mark(100, 3)), true);
        assert!(c.yielded(t));
        // VRRP is heard again: this node is backup; the winner's answers to its last
        // probe arrive: no renewal, the yield is over.
        assert_eq!(
            c.on_claim(t, B, VIP, Some(mark(150, 2)), Some(mark(100, 3)), false),
            Decision::None
        );
        assert!(!c.yielded(t));
        // Later elected master, it answers at once: nothing holds it back.
        assert_eq!(c.yielded_to(), None);
    }

    #[test]
    fn a_foreign_host_is_reported_never_fought_and_a_backup_decides_nothing() {
        let t = Instant::now();
        let mut c = Claims::default();
        assert_eq!(
            c.on_claim(t, B, VIP, None, Some(mark(100, 2)), true),
            Decision::None
        );
        assert!(!c.yielded(t));
        assert_eq!(c.claimants()[0].mark, None);
        // Without VRRP (no mark of ours) another xvip is reported, not obeyed.
        assert_eq!(
            c.on_claim(t, A, VIP, Some(mark(200, 9)), None, true),
            Decision::None
        );
        // A backup hears its master: nothing.
        let mut b = Claims::default();
        assert_eq!(
            b.on_claim(t, B, VIP, Some(mark(150, 2)), Some(mark(100, 3)), false),
            Decision::None
        );
        assert!(!b.yielded(t));
    }

    #[test]
    fn claimants_and_log_lines_are_bounded() {
        let t = Instant::now();
        let mut c = Claims::default();
        for i in 0..200u8 {
            let mac = [2, 0, 0, 0, 1, i];
            c.on_claim(
                t + Duration::from_millis(u64::from(i)),
                mac,
                VIP,
                None,
                None,
                true,
            );
        }
        assert_eq!(c.claimants().len(), MAX_SEEN);
        assert_eq!(c.forgotten, 200 - MAX_SEEN as u64);
        assert_eq!(c.logs_suppressed, 200 - u64::from(LOG_BUDGET));
        // Silent claimants are forgotten.
        c.on_claim(t + FORGET_AFTER * 2, A, VIP, None, None, true);
        assert_eq!(c.claimants().len(), 1);
    }
}
