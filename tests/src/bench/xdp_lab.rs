//! The packet-rate lab: two namespaces joined by one veth pair. The generator namespace
//! sends with `lab_gen` (`BPF_PROG_TEST_RUN`, live frames) out of `g0` and counts what
//! comes back with `lab_count` on the same `g0`; the LB namespace runs the program under
//! test natively on `l0` and answers with `XDP_TX`, one-armed, as xvip is deployed.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::lab::{GenConfig, RedirectConfig};
use xvip::{
    config::XdpAttachMode,
    dataplane::{Dataplane, pins::Placement},
};

use super::{
    frame::{TCP_ACK, TcpFrame},
    stats::{CpuUse, cpu_times, cpu_use},
};
use crate::lab::{Netns, lab_object, sh};

/// The two-arm shape's second veth pair (`add_second_arm`): the generator's `g1`, where the
/// masters' side is counted, and the LB's `l1`.
pub const GEN1_DEV: &str = "g1";
/// LB side of the second pair.
pub const LB1_DEV: &str = "l1";
/// MAC of `g1` (every backend's next hop in the two-arm shape).
pub const GEN1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbf, 0x01];
/// MAC of `l1`.
pub const LB1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbf, 0x02];

/// MAC of the generator's veth `g0` (also every backend's next hop: answers come back here).
pub const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbe, 0x01];
/// MAC of the LB's veth `l0`.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbe, 0x02];
/// Address of `g0`.
pub const GEN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// Address of `l0`.
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The VIP under test.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The VIP's port.
pub const VIP_PORT: u16 = 6443;
/// Generator-side veth.
pub const GEN_DEV: &str = "g0";
/// LB-side veth.
pub const LB_DEV: &str = "l0";
/// Frames per `BPF_PROG_TEST_RUN` call of the generator (about 10 ms of traffic).
pub const GEN_REPEAT: u32 = 32_768;
/// Live-frames batch: below the veth ring (256) so a batch never overflows it.
pub const GEN_BATCH: u32 = 64;
/// Length of the generated frames (64-byte minimum Ethernet frame without FCS).
pub const FRAME_PAYLOAD: usize = 10;

/// Runs `f` on a thread that has entered network namespace `name`; unlike
/// [`crate::lab::in_netns`] it may borrow.
pub fn with_netns<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            enter_netns(name)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in {name} panicked"))?
    })
}

/// Moves the calling thread into network namespace `name`.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on this thread only, with a valid namespace file.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Formats a MAC for `ip`.
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Sets a sysctl inside a namespace.
pub fn sysctl(ns: &Netns, kv: &str) -> Result<()> {
    sh(ns.cmd("sysctl").args(["-qw", kv]))?;
    Ok(())
}

/// The traffic a run of the generator sends.
#[derive(Clone, Copy, Debug)]
pub struct GenSpec {
    /// Distinct flows, cycled through in order.
    pub flows: u32,
    /// First client address.
    pub src_base: Ipv4Addr,
    pub first_port: u16,
    /// Client ports per client address.
    pub port_span: u16,
    /// TCP flags of every frame.
    pub flags: u8,
    /// Destination (the VIP, or another address for the non-VIP class).
    pub dst: Ipv4Addr,
}

impl GenSpec {
    /// `flows` established-looking (ACK) flows from 203.0.113.0/24 to the VIP.
    pub fn established(flows: u32) -> Self {
        Self {
            flows,
            src_base: Ipv4Addr::new(203, 0, 113, 1),
            first_port: 10_000,
            port_span: 50_000,
            flags: TCP_ACK,
            dst: VIP,
        }
    }

    /// A SYN flood: every client address of 203.0.113.0/24 with 60000 ports each (15.4 M
    /// flows, so a run of a few seconds never repeats one).
    pub fn syn_flood() -> Self {
        Self {
            flows: 256 * 60_000,
            src_base: Ipv4Addr::new(203, 0, 113, 0),
            first_port: 2_000,
            port_span: 60_000,
            flags: super::frame::TCP_SYN,
            dst: VIP,
        }
    }

    /// The template frame (flow 0).
    pub fn frame(&self) -> TcpFrame {
        TcpFrame {
            src_mac: GEN_MAC,
            dst_mac: LB_MAC,
            src: self.src_base,
            dst: self.dst,
            sport: self.first_port,
            dport: VIP_PORT,
            flags: self.flags,
            ttl: 64,
            payload: FRAME_PAYLOAD,
        }
    }
}

/// The generator's configuration for `spec` with template `t` (its addresses, MACs and
/// TTL), sending out of `ifindex` from `cpus` CPUs; and the template frame to feed it.
pub fn gen_config(spec: &GenSpec, t: &TcpFrame, ifindex: u32, cpus: u32) -> (GenConfig, Vec<u8>) {
    let frame = t.build();
    let word = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let cfg = GenConfig {
        ifindex,
        flows: spec.flows.max(1),
        cpus,
        src_base: u32::from(spec.src_base),
        tmpl_src: u32::from_ne_bytes(spec.src_base.octets()),
        dst_addr: u32::from_ne_bytes(spec.dst.octets()),
        first_port: spec.first_port,
        port_span: spec.port_span.max(1),
        tmpl_sport: spec.first_port.to_be(),
        dport: t.dport.to_be(),
        ip_check: word(super::frame::IP_CHECK),
        tcp_check: word(super::frame::TCP_CHECK),
        dst_mac: t.dst_mac,
        src_mac: t.src_mac,
        ttl: t.ttl,
        _pad: [0; 3],
    };
    (cfg, frame)
}

/// One measured run of the generator.
#[derive(Clone, Debug, Default)]
pub struct PpsSample {
    /// Frames the generator sent, per second.
    pub pps_in: f64,
    /// Frames the sink counted, per second.
    pub pps_out: f64,
    /// `1 - out / in`.
    pub loss: f64,
    /// Use of the generator's CPUs (where the whole pipeline runs).
    pub cpu: CpuUse,
    /// Packets per verdict reason of xvip during the run (empty for other programs).
    pub reasons: Vec<(&'static str, u64)>,
    /// Run time per packet of the program under test on `l0`, from the kernel's BPF run
    /// statistics (`run_time_ns / run_cnt` over the run, stats overhead included); NaN when
    /// the statistics could not be enabled.
    pub prog_ns: f64,
}

/// (run time, run count) of a loaded program, as the kernel's BPF run statistics have them.
pub fn run_stats(prog: &Xdp) -> Option<(Duration, u64)> {
    let info = prog.info().ok()?;
    Some((info.run_time(), info.run_count()))
}

/// Nanoseconds per run between two [`run_stats`] readings (NaN without runs).
pub fn ns_per_run(before: Option<(Duration, u64)>, after: Option<(Duration, u64)>) -> f64 {
    match (before, after) {
        (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => {
            t1.saturating_sub(t0).as_nanos() as f64 / (n1 - n0) as f64
        }
        _ => f64::NAN,
    }
}

/// The two namespaces, the lab programs and whatever is under test on `l0`. Fields drop in
/// order: programs first, then the namespaces (which takes the veth pair with them).
pub struct XdpLab {
    xvip: Option<Dataplane>,
    forward: Option<XdpLinkId>,
    /// `lab_redirect` on `l0` (the two-arm limit).
    redirect: Option<XdpLinkId>,
    /// Index of `l1` in the LB namespace, once `add_second_arm` made it.
    pub lb1_ifindex: Option<u32>,
    lab: Ebpf,
    pub genns: Netns,
    pub lb: Netns,
    /// Index of `g0` in the generator namespace.
    pub gen_ifindex: u32,
    cpus: u32,
    /// Keeps the kernel's BPF run statistics on while the lab lives (`BPF_ENABLE_STATS`:
    /// they go off again when the last such descriptor closes, whatever happens to us).
    stats: Option<OwnedFd>,
}

impl XdpLab {
    /// Creates the namespaces `PREFIX-gen` and `PREFIX-lb`, the veth pair and the sink.
    pub fn new(prefix: &str, gen_cpus: u32) -> Result<Self> {
        let genns = Netns::new(format!("{prefix}-gen"))?;
        let lb = Netns::new(format!("{prefix}-lb"))?;
        genns.ip(&[
            "link",
            "add",
            GEN_DEV,
            "address",
            &mac_str(GEN_MAC),
            "type",
            "veth",
            "peer",
            "name",
            LB_DEV,
            "netns",
            &lb.name,
        ])?;
        lb.ip(&["link", "set", LB_DEV, "address", &mac_str(LB_MAC)])?;
        for (ns, dev, ip) in [(&genns, GEN_DEV, GEN_IP), (&lb, LB_DEV, LB_IP)] {
            // No IPv6: router solicitations and DAD would reach the sink's counters.
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")?;
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        let path = lab_object();
        let mut lab =
            Ebpf::load_file(&path).with_context(|| format!("loading {}", path.display()))?;
        for name in ["lab_count", "lab_forward", "lab_redirect", "lab_gen"] {
            let p: &mut Xdp = lab
                .program_mut(name)
                .with_context(|| format!("{name} not in {}", path.display()))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let gen_ifindex = with_netns(&genns.name, || {
            let p: &mut Xdp = lab.program_mut("lab_count").expect("loaded").try_into()?;
            let name = CString::new(GEN_DEV)?;
            p.attach(name.as_c_str(), XdpMode::Driver)
                .context("attaching lab_count to g0 (native)")?;
            // SAFETY: a valid C string.
            Ok(unsafe { libc::if_nametoindex(name.as_ptr()) })
        })?;
        if gen_ifindex == 0 {
            bail!("no {GEN_DEV} in {}", genns.name);
        }
        Ok(Self {
            xvip: None,
            forward: None,
            redirect: None,
            lb1_ifindex: None,
            lab,
            genns,
            lb,
            gen_ifindex,
            cpus: gen_cpus.max(1),
            stats: aya::sys::enable_stats(aya::sys::Stats::RunTime).ok(),
        })
    }

    /// The lab object (for `lab_forward` and `lab_pass` cost runs).
    pub fn lab_program(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .lab
            .program(name)
            .with_context(|| format!("{name} not in lab-xdp"))?
            .try_into()?)
    }

    /// Removes whatever runs on `l0`.
    pub fn clear(&mut self) -> Result<()> {
        // Dropping the data path closes its XDP link, which detaches it.
        drop(self.xvip.take());
        if let Some(id) = self.forward.take() {
            let p: &mut Xdp = self
                .lab
                .program_mut("lab_forward")
                .expect("loaded")
                .try_into()?;
            p.detach(id)?;
        }
        if let Some(id) = self.redirect.take() {
            let p: &mut Xdp = self
                .lab
                .program_mut("lab_redirect")
                .expect("loaded")
                .try_into()?;
            p.detach(id)?;
        }
        Ok(())
    }

    /// The two-arm shape: a second veth pair `g1`/`l1` (198.51.100.0/24), the sink counting
    /// on `g1` as on `g0`. Frames the LB redirects from `l0` to `l1` are counted there.
    pub fn add_second_arm(&mut self) -> Result<()> {
        self.genns.ip(&[
            "link",
            "add",
            GEN1_DEV,
            "address",
            &mac_str(GEN1_MAC),
            "type",
            "veth",
            "peer",
            "name",
            LB1_DEV,
            "netns",
            &self.lb.name,
        ])?;
        self.lb
            .ip(&["link", "set", LB1_DEV, "address", &mac_str(LB1_MAC)])?;
        for (ns, dev, ip) in [
            (&self.genns, GEN1_DEV, "198.51.100.10/24"),
            (&self.lb, LB1_DEV, "198.51.100.2/24"),
        ] {
            ns.ip(&["addr", "add", ip, "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        let lab = &mut self.lab;
        with_netns(&self.genns.name, || {
            let p: &mut Xdp = lab.program_mut("lab_count").expect("loaded").try_into()?;
            let name = CString::new(GEN1_DEV)?;
            p.attach(name.as_c_str(), XdpMode::Driver)
                .context("attaching lab_count to g1 (native)")?;
            Ok(())
        })?;
        let idx = with_netns(&self.lb.name, || {
            let name = CString::new(LB1_DEV)?;
            // SAFETY: a valid C string.
            Ok(unsafe { libc::if_nametoindex(name.as_ptr()) })
        })?;
        if idx == 0 {
            bail!("no {LB1_DEV} in {}", self.lb.name);
        }
        self.lb1_ifindex = Some(idx);
        Ok(())
    }

    /// Puts the two-arm bare forwarder (`lab_redirect`: MACs set, redirect to `l1`) on `l0`.
    pub fn use_redirect(&mut self) -> Result<()> {
        self.clear()?;
        let to = self.lb1_ifindex.context("no second arm")?;
        let mut m: Array<&mut MapData, RedirectConfig> =
            Array::try_from(self.lab.map_mut("REDIRECT_TO").context("REDIRECT_TO")?)?;
        m.set(
            0,
            &RedirectConfig {
                ifindex: to,
                dst_mac: GEN1_MAC,
                src_mac: LB1_MAC,
            },
            0,
        )?;
        let lab = &mut self.lab;
        let id = with_netns(&self.lb.name, || {
            let p: &mut Xdp = lab
                .program_mut("lab_redirect")
                .expect("loaded")
                .try_into()?;
            let name = CString::new(LB_DEV)?;
            Ok(p.attach(name.as_c_str(), XdpMode::Driver)?)
        })?;
        self.redirect = Some(id);
        Ok(())
    }

    /// Puts xvip on `l0` and `l1` (one program, one set of maps), natively.
    pub fn use_xvip_two_arm(&mut self, mut dp: Dataplane) -> Result<()> {
        self.clear()?;
        with_netns(&self.lb.name, || {
            dp.attach(LB_DEV, XdpAttachMode::Native, Placement::Xdp)?;
            dp.attach(LB1_DEV, XdpAttachMode::Native, Placement::Xdp)?;
            Ok(())
        })?;
        self.xvip = Some(dp);
        Ok(())
    }

    /// Puts the bare forwarder (`lab_forward`) on `l0`.
    pub fn use_forward(&mut self) -> Result<()> {
        self.clear()?;
        let lab = &mut self.lab;
        let id = with_netns(&self.lb.name, || {
            let p: &mut Xdp = lab.program_mut("lab_forward").expect("loaded").try_into()?;
            let name = CString::new(LB_DEV)?;
            Ok(p.attach(name.as_c_str(), XdpMode::Driver)?)
        })?;
        self.forward = Some(id);
        Ok(())
    }

    /// Puts xvip (a loaded, configured data path) on `l0`, natively.
    pub fn use_xvip(&mut self, mut dp: Dataplane) -> Result<()> {
        self.clear()?;
        with_netns(&self.lb.name, || {
            dp.attach(LB_DEV, XdpAttachMode::Native, Placement::Xdp)?;
            Ok(())
        })?;
        self.xvip = Some(dp);
        Ok(())
    }

    /// The data path under test, if xvip is.
    pub fn xvip(&self) -> Option<&Dataplane> {
        self.xvip.as_ref()
    }

    /// Whether the kernel's BPF run statistics are on (so samples carry `prog_ns`).
    pub fn stats_on(&self) -> bool {
        self.stats.is_some()
    }

    /// The program on `l0` (xvip or the bare forwarder), if any.
    pub fn under_test(&self) -> Option<&Xdp> {
        match (&self.xvip, &self.forward, &self.redirect) {
            (Some(dp), _, _) => Some(dp.program()),
            (None, Some(_), _) => self.lab_program("lab_forward").ok(),
            (None, None, Some(_)) => self.lab_program("lab_redirect").ok(),
            (None, None, None) => None,
        }
    }

    /// Points the generator at `spec` and returns the template frame to feed it.
    pub fn configure(&mut self, spec: &GenSpec) -> Result<Vec<u8>> {
        self.configure_to(spec, VIP_PORT)
    }

    /// [`Self::configure`] with another destination port (replies go to a client's or a
    /// SNAT port).
    pub fn configure_to(&mut self, spec: &GenSpec, dport: u16) -> Result<Vec<u8>> {
        let mut t = spec.frame();
        t.dport = dport;
        let (cfg, frame) = gen_config(spec, &t, self.gen_ifindex, self.cpus);
        let mut m: Array<&mut MapData, GenConfig> =
            Array::try_from(self.lab.map_mut("GEN_CONFIG").context("GEN_CONFIG")?)?;
        m.set(0, &cfg, 0)?;
        Ok(frame)
    }

    fn per_cpu_sum(&self, map: &str) -> Result<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.lab.map(map).with_context(|| map.to_string())?)?;
        Ok(m.get(&0, 0)?.iter().sum())
    }

    /// (frames generated, frames counted by the sink) so far.
    pub fn counters(&self) -> Result<(u64, u64)> {
        Ok((
            self.per_cpu_sum("GEN_SEQ")?,
            self.per_cpu_sum("LAB_COUNTS")?,
        ))
    }

    /// Number of generator CPUs (0.. are used).
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// Frames counted by the sink so far.
    pub fn sink_count(&self) -> Result<u64> {
        self.per_cpu_sum("LAB_COUNTS")
    }

    /// Sends `frame` (configured with [`Self::configure`]) for `dur` from one thread per
    /// generator CPU, each pinned to its CPU. Returns the time it took.
    pub fn blast(&self, frame: &[u8], dur: Duration, stop: &AtomicBool) -> Result<Duration> {
        self.blast_batches(frame, dur, GEN_REPEAT, stop)
    }

    /// [`Self::blast`] with `repeat` frames per `BPF_PROG_TEST_RUN` call.
    pub fn blast_batches(
        &self,
        frame: &[u8],
        dur: Duration,
        repeat: u32,
        stop: &AtomicBool,
    ) -> Result<Duration> {
        let prog = self.lab_program("lab_gen")?;
        let ns = self.genns.name.as_str();
        // Each call is ~10 ms of traffic or more: this bounds the loop well above `dur`.
        let max_calls = dur.as_millis() as u64 + 100;
        let start = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = (0..self.cpus as usize)
                .map(|cpu| {
                    s.spawn(move || -> Result<()> {
                        enter_netns(ns)?;
                        pin_to_cpu(cpu)?;
                        let end = Instant::now() + dur;
                        for _ in 0..max_calls {
                            if Instant::now() >= end || stop.load(Ordering::Relaxed) {
                                break;
                            }
                            prog.test_run(TestRunOptions {
                                data_in: Some(frame),
                                repeat,
                                attrs: TestRunAttrs::new().xdp_live_frames(GEN_BATCH),
                                ..Default::default()
                            })
                            .context(
                                "BPF_PROG_TEST_RUN (live frames) of lab_gen (EPERM: the \
                                 kernel refuses live-frames runs, see bench::raw_gen)",
                            )?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow!("generator thread panicked"))??;
            }
            Ok(())
        })?;
        Ok(start.elapsed())
    }

    /// xvip's packets per verdict reason so far (empty unless xvip is under test).
    pub fn reasons(&self) -> Result<Vec<u64>> {
        match &self.xvip {
            Some(dp) => Ok(dp.snapshot(&[])?.reasons),
            None => Ok(Vec::new()),
        }
    }

    /// One measured run: generator counts, sink counts, CPU, xvip's verdicts.
    pub fn measure(&self, frame: &[u8], dur: Duration, stop: &AtomicBool) -> Result<PpsSample> {
        self.measure_batches(frame, dur, GEN_REPEAT, stop)
    }

    /// [`Self::measure`] with `repeat` frames per generator call.
    pub fn measure_batches(
        &self,
        frame: &[u8],
        dur: Duration,
        repeat: u32,
        stop: &AtomicBool,
    ) -> Result<PpsSample> {
        let (g0, s0) = self.counters()?;
        let r0 = self.reasons()?;
        let p0 = self.under_test().and_then(run_stats);
        let c0 = cpu_times(Some(self.cpus as usize));
        let wall = self.blast_batches(frame, dur, repeat, stop)?;
        let c1 = cpu_times(Some(self.cpus as usize));
        // Let the last batch leave the veth rings before counting it.
        std::thread::sleep(Duration::from_millis(20));
        let (g1, s1) = self.counters()?;
        let r1 = self.reasons()?;
        let p1 = self.under_test().and_then(run_stats);
        let secs = wall.as_secs_f64();
        let sent = g1.saturating_sub(g0) as f64;
        let got = s1.saturating_sub(s0) as f64;
        let reasons = reason_deltas(&r0, &r1);
        Ok(PpsSample {
            pps_in: sent / secs,
            pps_out: got / secs,
            // Frames in flight at the window's edges can make this slightly negative.
            loss: if sent > 0.0 {
                (1.0 - got / sent).max(0.0)
            } else {
                0.0
            },
            cpu: cpu_use(c0, c1),
            reasons,
            prog_ns: ns_per_run(p0, p1),
        })
    }
}

/// Non-zero per-reason differences between two reason snapshots, by name.
pub fn reason_deltas(before: &[u64], after: &[u64]) -> Vec<(&'static str, u64)> {
    lb_common::Reason::ALL
        .iter()
        .zip(after.iter().zip(before.iter().chain(std::iter::repeat(&0))))
        .map(|(r, (b, a))| (r.name(), b.saturating_sub(*a)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl Drop for XdpLab {
    fn drop(&mut self) {
        let _ = self.clear();
    }
}
