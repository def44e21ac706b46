//! The VRRP state machine of RFC 5798 section 6.4 (and RFC 3768 section 6.4, the same
//! machine with v2 timers) (Initialize, Backup, Master) as pure logic: every input carries
//! the time it happens at, every output is an [`Action`] for the caller to carry out, and
//! [`Machine::next_deadline`] says when to call [`Machine::poll`]. On top of the RFCs, a
//! hold (the mismatch guard): while another router owns the VRID in a way that cannot hear
//! us (other version, other password), this router does not become master; how long one
//! advert holds, and when a master steps down, is `guard`'s business.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::wire::vrrp::Version;

/// The least time a router listens after start-up before it may become master: three
/// intervals of 1 s, the v2 default (keepalived's `advert_int 1`), so that a group speaking
/// the other version or another password is heard (and held off by the guard) before this
/// router could answer ARP, even when it advertises every 100 ms itself.
pub const STARTUP_LISTEN: Duration = Duration::from_secs(3);

/// A learnt Master_Adver_Interval is capped to our own interval or this, whichever is
/// longer: one valid advert claiming 40.95 s would otherwise leave the VIP without an owner
/// for two minutes (3 x 40.95 s) after the master yields to it. 1 s is keepalived's
/// default, so a keepalived master at `advert_int 1` is waited for in full.
pub const LEARNT_INTERVAL_FLOOR: Duration = Duration::from_secs(1);

/// A virtual router's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not participating (before start-up and after shut-down).
    Initialize,
    /// Watching the master; silent on ARP.
    Backup,
    /// Advertising and answering ARP for the VIPs.
    Master,
    /// A tracked interface is down (keepalived's FAULT): silent, never master, until
    /// [`Machine::recover`].
    Fault,
}

impl State {
    /// Lower-case name for status and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Backup => "backup",
            Self::Master => "master",
            Self::Fault => "fault",
        }
    }
}

/// What the caller must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send one advertisement with this priority (0 when resigning).
    Send { priority: u8 },
    /// The state changed; `why` is for the log.
    Transition {
        from: State,
        to: State,
        why: &'static str,
    },
}

/// The fixed parameters of one virtual router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Priority advertised while healthy, 1-254.
    pub priority: u8,
    /// Advertisement_Interval: our advertising period as master.
    pub advert_interval: Duration,
    /// Preempt_Mode: whether a higher-priority backup takes over from a live master.
    pub preempt: bool,
    /// Our primary address, the tie-break between equal priorities.
    pub primary: IpAddr,
    /// VRRP version: v2 has a Skew_Time in seconds, independent of the interval.
    pub version: Version,
    /// The first Master_Down_Timer after start-up is at least this long.
    pub startup_listen: Duration,
}

/// One virtual router.
#[derive(Clone, Debug)]
pub struct Machine {
    params: Params,
    /// The priority we advertise now (lowered by the health penalty).
    priority: u8,
    state: State,
    master_adver_interval: Duration,
    /// Master_Down_Timer (Backup only).
    master_down_at: Option<Instant>,
    /// Adver_Timer (Master only).
    adver_at: Option<Instant>,
    /// Who we believe is master.
    master: Option<IpAddr>,
    /// The mismatch guard: no transition to Master before this.
    hold_until: Option<Instant>,
    /// When a master was last heard that this backup preempts (its lower priority
    /// discarded) or that resigned (priority 0): a takeover soon after is a handover from a
    /// live master, not from a silent one ([`Machine::took_over_from_silence`]).
    handover_heard: Option<Instant>,
    /// Whether the last transition to Master followed a master that fell silent.
    from_silence: bool,
    transitions: u64,
}

impl Machine {
    /// A router in Initialize.
    pub fn new(params: Params) -> Self {
        Self {
            priority: params.priority,
            params,
            state: State::Initialize,
            master_adver_interval: params.advert_interval,
            master_down_at: None,
            adver_at: None,
            master: None,
            hold_until: None,
            handover_heard: None,
            from_silence: false,
            transitions: 0,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The priority advertised now.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The master as far as we know: ourselves in Master, the last accepted sender in Backup.
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// Whether this router became master because the master fell silent (its adverts not
    /// heard for the down interval: dead, or alive but not heard here), not by preempting a
    /// lower-priority master or after a resignation. Only then may another node still
    /// answer for the VIP (`daemon::announcing::TAKEOVER_PROBE`).
    pub fn took_over_from_silence(&self) -> bool {
        self.from_silence
    }

    /// State changes so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Master_Adver_Interval: learnt from the master's advertisements.
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time = ((256 - Priority) x Master_Adver_Interval) / 256 (RFC 5798); in v2
    /// (256 - Priority) / 256 seconds (RFC 3768 section 6.1).
    pub fn skew_time(&self) -> Duration {
        let unit = match self.params.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => Duration::from_secs(1),
        };
        unit * (256 - u32::from(self.priority)) / 256
    }

    /// Whether the mismatch guard holds at `now`.
    pub fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| t > now)
    }

    /// The mismatch guard: another router advertises this VRID and cannot hear us; do not
    /// become master before `until` (the caller bounds it: `guard::cap`). A master steps
    /// down only when `owner` (the sender kept its claimed rate for several adverts, see
    /// `guard`): a single advert never takes the VIP from a live master, it only holds the
    /// backups.
    pub fn hold(&mut self, now: Instant, until: Instant, owner: bool) -> Vec<Action> {
        self.hold_until = Some(self.hold_until.map_or(until, |t| t.max(until)));
        // After the hold, Skew_Time more: every node is held until about the same instant,
        // and the skew lets the best priority take over first instead of all at once.
        let after = until + self.skew_time();
        let mut out = Vec::new();
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                self.master_down_at = Some(self.master_down_at.map_or(after, |t| t.max(after)));
            }
            State::Master if owner => {
                self.adver_at = None;
                self.master_down_at = Some(after.max(now));
                self.master = None;
                out.push(self.go(
                    State::Backup,
                    "another router owns this VRID (other version or password)",
                ));
            }
            State::Master => {}
        }
        out
    }

    /// Our own Master_Down_Interval, from the configured interval and priority (what the
    /// guard caps a foreign advert's hold to; never learnt from a packet).
    pub fn own_master_down_interval(&self) -> Duration {
        let i = self.params.advert_interval;
        let unit = match self.params.version {
            Version::V3 => i,
            Version::V2 => Duration::from_secs(1),
        };
        i * 3 + unit * (256 - u32::from(self.priority)) / 256
    }

    /// Master_Down_Interval = 3 x Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// When [`poll`](Self::poll) has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Initialize | State::Fault => None,
            State::Backup => self.master_down_at,
            State::Master => self.adver_at,
        }
    }

    /// Sets the advertised priority (clamped to 1-254); it counts from the next
    /// advertisement sent or received.
    pub fn set_priority(&mut self, priority: u8) {
        self.priority = priority.clamp(1, 254);
    }

    /// Startup event: Initialize -> Backup with a full Master_Down_Timer (priority 255,
    /// the address owner, is never used: the VIP is not an interface address).
    pub fn startup(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        self.master_adver_interval = self.params.advert_interval;
        self.master_down_at =
            Some(now + self.master_down_interval().max(self.params.startup_listen));
        self.master = None;
        vec![self.go(State::Backup, "startup")]
    }

    /// Shutdown event: a master resigns with a priority 0 advertisement.
    pub fn shutdown(&mut self, _now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Initialize => return out,
            State::Master => out.push(Action::Send { priority: 0 }),
            State::Backup | State::Fault => {}
        }
        self.master_down_at = None;
        self.adver_at = None;
        self.master = None;
        out.push(self.go(State::Initialize, "shutdown"));
        out
    }

    /// A tracked interface went down (keepalived's `track_interface`): a master resigns
    /// with a priority 0 advertisement, as at shutdown, so a backup takes over after its
    /// Skew_Time; a backup stops its timer. Nothing more happens until [`recover`](Self::recover).
    pub fn fault(&mut self, _now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Initialize | State::Fault => return out,
            State::Master => out.push(Action::Send { priority: 0 }),
            State::Backup => {}
        }
        self.master_down_at = None;
        self.adver_at = None;
        self.master = None;
        out.push(self.go(State::Fault, "a tracked interface is down"));
        out
    }

    /// Every tracked interface is up again: back to Backup with a full Master_Down_Timer
    /// (the live master, if any, is heard before it expires).
    pub fn recover(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Fault {
            return Vec::new();
        }
        self.master_adver_interval = self.params.advert_interval;
        self.master_down_at = Some(now + self.master_down_interval());
        self.master = None;
        vec![self.go(State::Backup, "the tracked interfaces are up")]
    }

    /// Fires the timers that are due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Backup if self.master_down_at.is_some_and(|t| t <= now) => {
                if let Some(until) = self.hold_until.filter(|t| *t > now) {
                    self.master_down_at = Some(until + self.skew_time());
                    return out;
                }
                out.push(Action::Send {
                    priority: self.priority,
                });
                let handover = self.handover_heard.is_some_and(|t| {
                    now.saturating_duration_since(t) < self.master_down_interval()
                });
                self.from_silence = !handover;
                self.become_master(now);
                out.push(self.go(
                    State::Master,
                    if handover {
                        "preempting a lower-priority master, or after a resignation"
                    } else {
                        "master down timer expired"
                    },
                ));
            }
            State::Master if self.adver_at.is_some_and(|t| t <= now) => {
                out.push(Action::Send {
                    priority: self.priority,
                });
                self.adver_at = Some(now + self.params.advert_interval);
            }
            _ => {}
        }
        out
    }

    /// An advertisement that passed every check, from `src` with `priority` and a
    /// Max Advertise Interval of `interval` (not zero).
    pub fn on_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        priority: u8,
        interval: Duration,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                if priority == 0 {
                    // The master resigned: take over after Skew_Time only.
                    self.master_down_at = Some(now + self.skew_time());
                    self.master = None;
                    self.handover_heard = Some(now);
                } else if !self.params.preempt || priority >= self.priority {
                    self.master_adver_interval = self.learnt(interval);
                    self.master_down_at = Some(now + self.master_down_interval());
                    self.master = Some(src);
                    self.handover_heard = None;
                } else {
                    // A lower-priority master we preempt; its advert is discarded.
                    self.handover_heard = Some(now);
                }
            }
            State::Master => {
                if priority == 0 {
                    // Another router resigned: assert ourselves at once.
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    self.adver_at = Some(now + self.params.advert_interval);
                } else if priority > self.priority
                    || (priority == self.priority && src > self.params.primary)
                {
                    self.adver_at = None;
                    self.master_adver_interval = self.learnt(interval);
                    self.master_down_at = Some(now + self.master_down_interval());
                    self.master = Some(src);
                    out.push(self.go(State::Backup, "advertisement from a better master"));
                }
            }
        }
        out
    }

    /// `interval` as Master_Adver_Interval: at most ours or [`LEARNT_INTERVAL_FLOOR`].
    fn learnt(&self, interval: Duration) -> Duration {
        interval.min(self.params.advert_interval.max(LEARNT_INTERVAL_FLOOR))
    }

    fn become_master(&mut self, now: Instant) {
        self.master_down_at = None;
        self.adver_at = Some(now + self.params.advert_interval);
        self.master_adver_interval = self.params.advert_interval;
        self.master = Some(self.params.primary);
    }

    fn go(&mut self, to: State, why: &'static str) -> Action {
        let from = self.state;
        self.state = to;
        self.transitions += 1;
        Action::Transition { from, to, why }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const LOWER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const HIGHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
    const INT: Duration = Duration::from_millis(100);

    fn machine(priority: u8, preempt: bool) -> (Machine, Instant) {
        let m = Machine::new(Params {
            priority,
            advert_interval: INT,
            preempt,
            primary: ME,
            version: Version::V3,
            startup_listen: Duration::ZERO,
        });
        (m, Instant::now())
    }

    fn became(actions: &[Action]) -> Option<State> {
        actions.iter().find_map(|a| match a {
            Action::Transition { to, .. } => Some(*to),
            _ => None,
        })
    }

    fn sent(actions: &[Action]) -> Option<u8> {
        actions.iter().find_map(|a| match a {
            Action::Send { priority } => Some(*priority),
            _ => None,
        })
    }

    #[test]
    fn timers_follow_the_rfc_formulas() {
        let (m, _) = machine(100, true);
        // Skew = (256 - 100) * 100 ms / 256 = 60.9375 ms; down = 300 ms + skew.
        assert_eq!(m.skew_time(), Duration::from_nanos(60_937_500));
        assert_eq!(m.master_down_interval(), Duration::from_nanos(360_937_500));
        let (m, _) = machine(254, true);
        assert_eq!(m.skew_time(), Duration::from_nanos(781_250));
    }

    #[test]
    fn startup_goes_to_backup_and_becomes_master_when_nobody_advertises() {
        let (mut m, t0) = machine(100, true);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(became(&m.startup(t0)), Some(State::Backup));
        let down = m.next_deadline().unwrap();
        assert_eq!(down, t0 + m.master_down_interval());
        assert!(m.poll(down - MS).is_empty());
        let a = m.poll(down);
        assert_eq!(sent(&a), Some(100));
        assert_eq!(became(&a), Some(State::Master));
        assert_eq!(m.master(), Some(ME));
        assert_eq!(m.transitions(), 2);
        // Then one advertisement per interval.
        assert_eq!(m.next_deadline(), Some(down + INT));
        assert!(m.poll(down + INT - MS).is_empty());
        assert_eq!(sent(&m.poll(down + INT)), Some(100));
        assert_eq!(m.next_deadline(), Some(down + 2 * INT));
    }

    /// A takeover says whether the old master fell silent (it may still answer for the VIP
    /// where its adverts are not heard: the daemon asks before announcing) or handed over
    /// (preempted while advertising a lower priority, or resigned with priority 0).
    #[test]
    fn a_takeover_tells_a_silent_master_from_a_handover() {
        // Silent: heard, then nothing for the down interval.
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        m.on_advert(t0, HIGHER_IP, 150, INT);
        let a = m.poll(t0 + m.master_down_interval());
        assert_eq!(became(&a), Some(State::Master));
        assert!(m.took_over_from_silence());
        // Preempting: the lower-priority master keeps advertising until the end.
        let (mut m, t0) = machine(200, true);
        m.startup(t0);
        let down = m.master_down_interval();
        let mut t = t0;
        while t < t0 + down {
            m.on_advert(t, LOWER_IP, 150, INT);
            t += INT;
        }
        assert_eq!(became(&m.poll(t0 + down)), Some(State::Master));
        assert!(!m.took_over_from_silence());
        // Resigned: priority 0, then Skew_Time.
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        m.on_advert(t0, HIGHER_IP, 150, INT);
        m.on_advert(t0 + INT, HIGHER_IP, 0, INT);
        assert_eq!(
            became(&m.poll(t0 + INT + m.skew_time())),
            Some(State::Master)
        );
        assert!(!m.took_over_from_silence());
    }

    /// keepalived's `track_interface`: a master whose tracked interface goes down enters
    /// FAULT and resigns with priority 0; in FAULT nothing makes it master (no timer, adverts
    /// ignored); once the interface is back it is a backup with a full Master_Down_Timer.
    #[test]
    fn a_fault_resigns_with_priority_0_and_stays_silent_until_recovered() {
        let (mut m, t0) = machine(150, true);
        m.startup(t0);
        let down = m.next_deadline().unwrap();
        assert_eq!(became(&m.poll(down)), Some(State::Master));
        let a = m.fault(down + MS);
        assert_eq!(sent(&a), Some(0), "priority 0, as at shutdown");
        assert_eq!(became(&a), Some(State::Fault));
        assert_eq!(m.next_deadline(), None);
        assert!(m.fault(down + 2 * MS).is_empty(), "already in fault");
        assert!(m.on_advert(down + 3 * MS, HIGHER_IP, 0, INT).is_empty());
        assert!(m.poll(down + Duration::from_secs(10)).is_empty());
        assert_eq!(m.state(), State::Fault);
        let t = down + Duration::from_secs(11);
        assert_eq!(became(&m.recover(t)), Some(State::Backup));
        assert_eq!(m.next_deadline(), Some(t + m.master_down_interval()));
        assert!(m.recover(t).is_empty(), "recovered once");
        // A backup in fault just stops its timer; shutdown from fault sends nothing.
        let (mut b, t0) = machine(100, true);
        b.startup(t0);
        let a = b.fault(t0);
        assert_eq!((sent(&a), became(&a)), (None, Some(State::Fault)));
        let a = b.shutdown(t0);
        assert_eq!((sent(&a), became(&a)), (None, Some(State::Initialize)));
    }

    #[test]
    fn a_backup_stays_backup_while_the_master_advertises() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        for i in 1..50 {
            let t = t0 + INT * i;
            assert!(m.on_advert(t, HIGHER_IP, 150, INT).is_empty());
            assert!(m.poll(t + 3 * INT).is_empty(), "tick {i}");
        }
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master(), Some(HIGHER_IP));
    }

    #[test]
    fn a_backup_learns_the_masters_interval() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        let theirs = Duration::from_secs(1);
        m.on_advert(t0, HIGHER_IP, 200, theirs);
        assert_eq!(m.master_adver_interval(), theirs);
        assert_eq!(m.master_down_interval(), theirs * 3 + theirs * 156 / 256);
        assert!(m.poll(t0 + Duration::from_millis(3500)).is_empty());
        assert_eq!(
            became(&m.poll(t0 + m.master_down_interval())),
            Some(State::Master)
        );
        // As master it advertises at its own interval again.
        assert_eq!(m.master_adver_interval(), INT);
    }

    #[test]
    fn a_learnt_interval_is_capped_to_ours_or_one_second() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        m.on_advert(t0, HIGHER_IP, 254, Duration::from_millis(40_950));
        assert_eq!(m.master_adver_interval(), LEARNT_INTERVAL_FLOOR);
        // 3 x 1 s + skew, not 3 x 40.95 s: the VIP is owned again within ~3.6 s.
        let down = LEARNT_INTERVAL_FLOOR * 3 + LEARNT_INTERVAL_FLOOR * 156 / 256;
        assert_eq!(m.next_deadline(), Some(t0 + down));
        assert_eq!(became(&m.poll(t0 + down)), Some(State::Master));
        // A master that yields learns the capped interval too.
        let a = m.on_advert(t0 + down, HIGHER_IP, 254, Duration::from_millis(40_950));
        assert_eq!(became(&a), Some(State::Backup));
        assert_eq!(m.master_adver_interval(), LEARNT_INTERVAL_FLOOR);
        // A router with a longer interval of its own waits that long.
        let mut m = Machine::new(Params {
            advert_interval: Duration::from_secs(5),
            ..m.params
        });
        m.startup(t0);
        m.on_advert(t0, HIGHER_IP, 254, Duration::from_millis(40_950));
        assert_eq!(m.master_adver_interval(), Duration::from_secs(5));
    }

    #[test]
    fn priority_zero_makes_a_backup_take_over_after_skew_time() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        m.on_advert(t0, HIGHER_IP, 200, INT);
        let t1 = t0 + 50 * MS;
        assert!(m.on_advert(t1, HIGHER_IP, 0, INT).is_empty());
        assert_eq!(m.master(), None);
        assert_eq!(m.next_deadline(), Some(t1 + m.skew_time()));
        assert!(m.skew_time() < 3 * INT);
        assert_eq!(became(&m.poll(t1 + m.skew_time())), Some(State::Master));
    }

    #[test]
    fn with_preempt_a_higher_priority_backup_ignores_a_lower_master_and_takes_over() {
        let (mut m, t0) = machine(200, true);
        m.startup(t0);
        m.on_advert(t0, LOWER_IP, 100, INT);
        assert_eq!(m.master(), None, "the lower master's advert is discarded");
        // Its adverts do not reset the timer: master down fires on schedule.
        m.on_advert(t0 + INT, LOWER_IP, 100, INT);
        let down = t0 + m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(down));
        assert_eq!(became(&m.poll(down)), Some(State::Master));
        // The old master then sees our higher priority and steps down (other side below).
    }

    #[test]
    fn without_preempt_a_higher_priority_backup_leaves_a_live_master_alone() {
        let (mut m, t0) = machine(200, false);
        m.startup(t0);
        for i in 0..20 {
            m.on_advert(t0 + INT * i, LOWER_IP, 100, INT);
            assert!(m.poll(t0 + INT * i + 2 * INT).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master(), Some(LOWER_IP));
        // ... but takes over when it dies.
        let last = t0 + INT * 19;
        assert_eq!(
            became(&m.poll(last + m.master_down_interval())),
            Some(State::Master)
        );
    }

    #[test]
    fn a_master_steps_down_for_a_higher_priority() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        let t1 = t0 + m.master_down_interval();
        m.poll(t1);
        let a = m.on_advert(t1 + MS, LOWER_IP, 101, INT);
        assert_eq!(became(&a), Some(State::Backup));
        assert_eq!(sent(&a), None);
        assert_eq!(m.master(), Some(LOWER_IP));
        assert_eq!(m.next_deadline(), Some(t1 + MS + m.master_down_interval()));
    }

    /// A reload's new priority (keepalived's SIGHUP): a backup raised above the live master
    /// with preempt stops taking its adverts and takes over at its Master_Down_Timer; a
    /// master lowered below a backup advertises the lower priority and steps down when the
    /// preempting backup's first advert reaches it.
    #[test]
    fn a_priority_changed_at_run_time_hands_the_vip_over_through_preemption() {
        // Raised: 100 -> 200 while a master at 150 advertises.
        let (mut b, t0) = machine(100, true);
        b.startup(t0);
        b.on_advert(t0, LOWER_IP, 150, INT);
        assert_eq!(b.master(), Some(LOWER_IP));
        b.set_priority(200);
        let t1 = t0 + INT;
        assert!(b.on_advert(t1, LOWER_IP, 150, INT).is_empty());
        // The advert at t1 did not reset the timer armed at t0.
        let down = b.next_deadline().expect("master down armed");
        assert!(down <= t0 + b.master_down_interval() + INT, "{down:?}");
        let a = b.poll(down);
        assert_eq!((became(&a), sent(&a)), (Some(State::Master), Some(200)));

        // Lowered: a master at 150 goes to 50; it advertises 50 and yields to 100.
        let (mut m, t0) = machine(150, true);
        m.startup(t0);
        let t1 = t0 + m.master_down_interval();
        m.poll(t1);
        m.set_priority(50);
        assert_eq!(sent(&m.poll(t1 + INT)), Some(50));
        let a = m.on_advert(t1 + INT + MS, LOWER_IP, 100, INT);
        assert_eq!(became(&a), Some(State::Backup));
        // Raising it again without anyone advertising changes nothing by itself.
        m.set_priority(254);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.priority(), 254);
        // 255 (the address owner) is never taken: clamped as at start.
        m.set_priority(255);
        assert_eq!(m.priority(), 254);
    }

    #[test]
    fn split_brain_converges_on_priority_then_on_the_higher_address() {
        // Two masters that see each other: the one with lower priority yields ...
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        let t1 = t0 + m.master_down_interval();
        m.poll(t1);
        assert!(m.on_advert(t1, HIGHER_IP, 99, INT).is_empty());
        assert_eq!(m.state(), State::Master);
        // ... and with equal priorities the higher primary address wins.
        assert!(m.on_advert(t1, LOWER_IP, 100, INT).is_empty());
        assert_eq!(m.state(), State::Master);
        assert_eq!(
            became(&m.on_advert(t1, HIGHER_IP, 100, INT)),
            Some(State::Backup)
        );
    }

    #[test]
    fn ipv6_ties_are_broken_by_the_higher_link_local_address() {
        let me = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
        let (lower, higher) = (
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3)),
        );
        let mut m = Machine::new(Params {
            priority: 100,
            advert_interval: INT,
            preempt: true,
            primary: me,
            version: Version::V3,
            startup_listen: Duration::ZERO,
        });
        let t0 = Instant::now();
        m.startup(t0);
        m.poll(t0 + INT * 4);
        assert_eq!(m.state(), State::Master);
        assert!(m.on_advert(t0 + INT * 4, lower, 100, INT).is_empty());
        assert_eq!(
            became(&m.on_advert(t0 + INT * 4, higher, 100, INT)),
            Some(State::Backup)
        );
        assert_eq!(m.master(), Some(higher));
    }

    #[test]
    fn two_simulated_routers_elect_one_master_and_fail_over() {
        // A tiny segment: each advertisement is delivered to the other router at once.
        let ips = [ME, HIGHER_IP];
        let mut r: Vec<Machine> = [150u8, 100]
            .iter()
            .zip(ips)
            .map(|(p, ip)| {
                Machine::new(Params {
                    priority: *p,
                    advert_interval: INT,
                    preempt: true,
                    primary: ip,
                    version: Version::V3,
                    startup_listen: Duration::ZERO,
                })
            })
            .collect();
        let t0 = Instant::now();
        for m in &mut r {
            m.startup(t0);
        }
        let mut alive = [true, true];
        let mut t = t0;
        let mut masters_at = Vec::new();
        while t < t0 + Duration::from_secs(3) {
            t += 5 * MS;
            if t >= t0 + Duration::from_secs(1) && alive[0] {
                alive[0] = false; // the first master dies silently
            }
            for i in 0..2 {
                if !alive[i] {
                    continue;
                }
                let acts = r[i].poll(t);
                if let Some(p) = sent(&acts) {
                    let j = 1 - i;
                    if alive[j] {
                        r[j].on_advert(t, ips[i], p, INT);
                    }
                }
            }
            let masters: Vec<usize> = (0..2)
                .filter(|i| alive[*i] && r[*i].state() == State::Master)
                .collect();
            masters_at.push((t - t0, masters));
        }
        let at = |d: Duration| {
            masters_at
                .iter()
                .find(|(x, _)| *x >= d)
                .map(|(_, m)| m.clone())
                .unwrap()
        };
        assert_eq!(at(Duration::from_millis(800)), vec![0]);
        assert_eq!(at(Duration::from_millis(1500)), vec![1]);
        // Never two masters at once.
        assert!(masters_at.iter().all(|(_, m)| m.len() <= 1));
    }

    #[test]
    fn shutdown_sends_priority_zero_only_from_master() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        let a = m.shutdown(t0);
        assert_eq!(sent(&a), None);
        assert_eq!(became(&a), Some(State::Initialize));
        m.startup(t0);
        m.poll(t0 + Duration::from_secs(1));
        assert_eq!(m.state(), State::Master);
        let a = m.shutdown(t0 + Duration::from_secs(1));
        assert_eq!(sent(&a), Some(0));
        assert_eq!(m.next_deadline(), None);
        assert!(m.on_advert(t0, HIGHER_IP, 200, INT).is_empty());
    }

    #[test]
    fn a_master_answers_a_resignation_with_an_advert() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        let t1 = t0 + Duration::from_secs(1);
        m.poll(t1);
        let a = m.on_advert(t1 + MS, HIGHER_IP, 0, INT);
        assert_eq!(sent(&a), Some(100));
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.next_deadline(), Some(t1 + MS + INT));
    }

    #[test]
    fn the_health_penalty_lowers_the_advertised_priority_and_the_skew() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        m.poll(t0 + Duration::from_secs(1));
        m.set_priority(50);
        assert_eq!(sent(&m.poll(t0 + Duration::from_secs(2))), Some(50));
        // A healthy peer at 100 now wins ...
        assert_eq!(
            became(&m.on_advert(t0 + Duration::from_secs(2), LOWER_IP, 100, INT)),
            Some(State::Backup)
        );
        // ... and the priority stays in 1-254.
        m.set_priority(0);
        assert_eq!(m.priority(), 1);
        m.set_priority(255);
        assert_eq!(m.priority(), 254);
    }

    fn v2_machine(priority: u8) -> (Machine, Instant) {
        let m = Machine::new(Params {
            priority,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            primary: ME,
            version: Version::V2,
            startup_listen: STARTUP_LISTEN,
        });
        (m, Instant::now())
    }

    #[test]
    fn v2_timers_follow_rfc_3768() {
        // Skew_Time = (256 - 100) / 256 s = 609.375 ms; down = 3 x 1 s + skew.
        let (m, _) = v2_machine(100);
        assert_eq!(m.skew_time(), Duration::from_nanos(609_375_000));
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(3_609_375_000)
        );
        // The skew does not scale with the interval in v2 (it does in v3).
        let mut m = Machine::new(Params {
            advert_interval: Duration::from_secs(2),
            ..m.params
        });
        m.startup(Instant::now());
        assert_eq!(m.skew_time(), Duration::from_nanos(609_375_000));
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(6_609_375_000)
        );
    }

    #[test]
    fn startup_listens_at_least_startup_listen_before_becoming_master() {
        let m = Machine::new(Params {
            priority: 100,
            advert_interval: INT,
            preempt: true,
            primary: ME,
            version: Version::V3,
            startup_listen: STARTUP_LISTEN,
        });
        let (mut m, t0) = (m, Instant::now());
        m.startup(t0);
        assert_eq!(m.next_deadline(), Some(t0 + STARTUP_LISTEN));
        assert!(m.poll(t0 + STARTUP_LISTEN - MS).is_empty());
        assert_eq!(became(&m.poll(t0 + STARTUP_LISTEN)), Some(State::Master));
        // A v2 router's own Master_Down_Interval is already longer.
        let (mut m, t0) = v2_machine(100);
        m.startup(t0);
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
    }

    #[test]
    fn the_guard_keeps_a_backup_from_becoming_master_while_it_holds() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        let mut t = t0;
        // A foreign group advertises every second for 10 s: each advert renews the hold.
        for _ in 0..10 {
            t += Duration::from_secs(1);
            assert!(m.hold(t, t + Duration::from_secs(3), true).is_empty());
            assert!(m.held(t));
            assert!(m.poll(t + Duration::from_millis(999)).is_empty());
            assert_eq!(m.state(), State::Backup);
        }
        // A same-version peer resigning (priority 0) does not cut the hold short.
        assert!(m.on_advert(t, HIGHER_IP, 0, INT).is_empty());
        assert!(m.poll(t + m.skew_time()).is_empty());
        assert_eq!(m.state(), State::Backup);
        // They stop: the hold runs out, then after Skew_Time the router takes over.
        let end = t + Duration::from_secs(3) + m.skew_time();
        assert_eq!(m.next_deadline(), Some(end));
        assert!(m.poll(end - MS).is_empty());
        assert!(!m.held(end - m.skew_time()));
        assert_eq!(became(&m.poll(end)), Some(State::Master));
    }

    #[test]
    fn the_guard_makes_a_master_step_down_for_an_owner_only_and_silently() {
        let (mut m, t0) = machine(200, true);
        m.startup(t0);
        let t1 = t0 + m.master_down_interval();
        m.poll(t1);
        assert_eq!(m.state(), State::Master);
        // One advert (not yet an owner): the master keeps the VIP and keeps advertising.
        assert!(
            m.hold(t1 + MS, t1 + Duration::from_secs(3), false)
                .is_empty()
        );
        assert_eq!(m.state(), State::Master);
        assert_eq!(sent(&m.poll(t1 + INT)), Some(200));
        // An owner: it steps down at once.
        let a = m.hold(t1 + INT, t1 + Duration::from_secs(3), true);
        assert_eq!(became(&a), Some(State::Backup));
        assert_eq!(sent(&a), None, "no priority 0: we never owned it alone");
        assert_eq!(m.master(), None);
        assert_eq!(
            m.next_deadline(),
            Some(t1 + Duration::from_secs(3) + m.skew_time())
        );
        // Even a lower same-version router's adverts cannot bring us back during the hold.
        assert!(m.on_advert(t1 + 2 * INT, LOWER_IP, 100, INT).is_empty());
        assert!(m.poll(t1 + Duration::from_secs(2)).is_empty());
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn own_master_down_interval_ignores_what_was_learnt() {
        let (mut m, t0) = machine(100, true);
        m.startup(t0);
        m.on_advert(t0, HIGHER_IP, 200, Duration::from_secs(40));
        assert_eq!(
            m.own_master_down_interval(),
            Duration::from_nanos(360_937_500)
        );
        let (m, _) = v2_machine(100);
        assert_eq!(
            m.own_master_down_interval(),
            Duration::from_nanos(3_609_375_000)
        );
    }
}
