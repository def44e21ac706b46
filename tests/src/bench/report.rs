//! The report: `report.json` (everything), `report.md` (tables) and `report.svg` (bars).

use std::fmt::Write as _;

use serde::Serialize;

use super::stats::Summary;

/// The machine the numbers come from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
}

impl Machine {
    /// Reads `/proc/cpuinfo`, `/proc/meminfo` and `uname -srvm`.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::process::Command::new("uname")
            .arg("-srvm")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            memory_gib: mem_kib / 1024.0 / 1024.0,
        }
    }
}

/// One packet-rate scenario.
#[derive(Clone, Debug, Serialize)]
pub struct PpsRow {
    pub scenario: String,
    /// Which generator fed it: `xdp` (lab_gen, live frames) or `trafgen`.
    pub generator: String,
    pub mode: String,
    pub flows: u64,
    pub backends: u32,
    pub pps_in: Summary,
    pub pps_out: Summary,
    pub loss_pct: Summary,
    /// Percent of the generator's CPUs.
    pub cpu_busy_pct: Summary,
    pub cpu_softirq_pct: Summary,
    pub cpu_system_pct: Summary,
    /// Run time per packet of the program under test on the LB's veth, from the kernel's
    /// BPF run statistics (`run_time_ns / run_cnt` over each run; NaN for the kernel paths).
    pub live_ns: Summary,
    /// xvip's verdict reasons over all runs (share of packets), when xvip ran.
    pub verdicts: String,
}

/// One TCP path.
#[derive(Clone, Debug, Serialize)]
pub struct TcpRow {
    pub path: String,
    pub conns_per_s: Summary,
    pub p50_us: Summary,
    pub p99_us: Summary,
    pub errors: u64,
    /// Requests answered, in percent of those tried.
    pub success_pct: Summary,
}

/// Per-packet cost of one packet class.
#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub class: String,
    pub program: String,
    /// `repeat N` (one syscall, the kernel's average) or `N x repeat 1`.
    pub method: String,
    pub ns: Summary,
}

/// Per-packet program time of one packet class, live (bpf_stats during a packet-rate run)
/// beside `BPF_PROG_TEST_RUN` (single runs of the original frame).
#[derive(Clone, Debug, Serialize)]
pub struct ClassCost {
    pub class: String,
    /// The packet-rate scenario it comes from.
    pub live_from: String,
    pub live_ns: Summary,
    /// The `BPF_PROG_TEST_RUN` row it comes from (empty when none measures this class).
    pub test_run_from: String,
    pub test_run_ns: Summary,
}

/// (class, scenario, mode, backends, flows or 0 for any, test-run class and program).
const CLASSES: &[(&str, &str, &str, u32, u64, &str, &str)] = &[
    (
        "bare forward (MAC swap, XDP_TX)",
        "limit: bare XDP forward",
        "-",
        0,
        1000,
        "bare forward (swap, XDP_TX)",
        "lab_forward",
    ),
    (
        "established forward, fullnat",
        "xvip established",
        "fullnat",
        3,
        1000,
        "established (conntrack hit), fullnat",
        "xvip",
    ),
    (
        "established forward, dnat",
        "xvip established",
        "dnat",
        3,
        1000,
        "",
        "",
    ),
    (
        "reply, fullnat",
        "xvip reply",
        "fullnat",
        3,
        1,
        "reply (reverse hit), fullnat",
        "xvip",
    ),
    ("reply, dnat", "xvip reply", "dnat", 3, 1, "", ""),
    (
        "new flow, dnat",
        "xvip new flow per packet",
        "dnat",
        3,
        0,
        "new flow, dnat",
        "xvip",
    ),
    (
        "new flow, fullnat",
        "xvip new flow per packet",
        "fullnat",
        1000,
        0,
        "new flow, fullnat",
        "xvip",
    ),
    (
        "non-VIP (XDP_PASS), fullnat VIP only",
        "xvip non-VIP (to the stack)",
        "fullnat",
        3,
        0,
        "non-VIP (XDP_PASS)",
        "xvip",
    ),
    (
        "non-VIP (XDP_PASS), dnat VIP present",
        "xvip non-VIP (to the stack)",
        "dnat",
        3,
        0,
        "",
        "",
    ),
];

/// Maglev table build time.
#[derive(Clone, Debug, Serialize)]
pub struct MaglevRow {
    pub backends: u32,
    pub table_size: u32,
    pub ms: Summary,
}

/// Exec to attached (`super::startup`): the bench's clock, then the daemon's phases.
#[derive(Clone, Debug, Serialize)]
pub struct StartupRow {
    pub case: String,
    /// Starts measured (runs × nodes).
    pub starts: usize,
    pub exec_to_attached_ms: Summary,
    pub maps_ms: Summary,
    pub verifier_ms: Summary,
    pub verified_insns: Summary,
    pub hops_ms: Summary,
    pub table_ms: Summary,
    pub attach_ms: Summary,
}

/// One program's mean time per packet of a class at a table size (`super::peers`).
#[derive(Clone, Debug, Serialize)]
pub struct PeerRow {
    pub program: String,
    pub class: String,
    pub flows: u64,
    pub ns: Summary,
}

/// An established packet's time with the confirmed tables holding `flows` flows
/// (`super::flows`).
#[derive(Clone, Debug, Serialize)]
pub struct FlowRow {
    pub mode: String,
    pub flows: u64,
    /// `CONNTRACK` and `REVERSE` entries (the same for every row).
    pub map_entries: u32,
    /// Mean kernel time per packet (single test runs), one figure per round.
    pub ns: Summary,
    /// The bare forwarder (`lab_forward`) in the same rounds: the harness's own share.
    pub bare_ns: Summary,
    /// This row over its mode's 1k-flow row, paired per round.
    pub vs_1k: Summary,
    /// The same with the bare forwarder's time taken off both.
    pub own_vs_1k: Summary,
}

/// The reconnect storm through one balancer (`super::storm`).
#[derive(Clone, Debug, Serialize)]
pub struct StormRow {
    pub path: String,
    /// Clients holding a watch each.
    pub clients: u32,
    /// Clients whose watch was on the master that left.
    pub affected: Summary,
    /// From the kill until the last of them had a new watch, ms.
    pub all_back_ms: Summary,
    /// The same for the median one.
    pub median_back_ms: Summary,
    /// Watches on the other masters that broke too (all rounds).
    pub collateral: u64,
    /// Rounds run again: under a tenth of the clients were on the master that left.
    pub rerun: u32,
}

/// BPF memory of the flow tables.
#[derive(Clone, Debug, Serialize)]
pub struct MemRow {
    pub flows: u64,
    pub conntrack_bytes: u64,
    pub reverse_bytes: u64,
    pub bytes_per_flow: f64,
}

/// A target of issue 6, as measured.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub want: String,
    pub measured: String,
    /// PASS, MISS or n/a.
    pub verdict: String,
    pub note: String,
}

/// Everything one `xvip-bench` run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub load_before: String,
    pub load_after: String,
    pub runs: usize,
    pub run_secs: f64,
    pub gen_cpus: u32,
    pub pps: Vec<PpsRow>,
    pub tcp: Vec<TcpRow>,
    pub costs: Vec<CostRow>,
    pub maglev: Vec<MaglevRow>,
    pub memory: Vec<MemRow>,
    pub startup: Vec<StartupRow>,
    pub peers: Vec<PeerRow>,
    /// Established time by table size (`super::flows`).
    pub flows: Vec<FlowRow>,
    /// The reconnect storm (`super::storm`).
    pub storms: Vec<StormRow>,
    /// Per-class program time, live and `BPF_PROG_TEST_RUN` (see [`Report::fill_classes`]).
    pub classes: Vec<ClassCost>,
    /// Call targets in xvip's translated program (`bpftool prog dump xlated`) and how many
    /// call sites each has: helpers, and the map functions the verifier calls directly.
    pub xlated_calls: Vec<(String, usize)>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    /// Conntrack sync off and on (`super::sync`).
    pub sync: Vec<super::sync::SyncRow>,
}

/// `median (min-max)` scaled by `scale`, rounded to what the spread of the runs supports
/// (see [`round_to_noise`]), with at most `prec` decimals.
pub fn cell(s: &Summary, scale: f64, prec: usize) -> String {
    if s.runs == 0 {
        return "n/a".into();
    }
    let (step, dec) = noise_step(s, scale, prec);
    let r = |x: f64| fmt_step(x / scale, step, dec);
    format!("{} ({}–{})", r(s.median), r(s.min), r(s.max))
}

/// The median of `s` scaled by `scale`, rounded like [`cell`].
pub fn round_to_noise(s: &Summary, scale: f64, prec: usize) -> String {
    if s.runs == 0 {
        return "n/a".into();
    }
    let (step, dec) = noise_step(s, scale, prec);
    fmt_step(s.median / scale, step, dec)
}

/// Rounding step and decimals for a summary: the power of ten just below the min-max
/// spread (so the last digit shown is the first one the runs disagree on), never finer
/// than 3 significant digits of the median (one run, or runs that agree) and never coarser
/// than 2, nor finer than `prec` decimals.
fn noise_step(s: &Summary, scale: f64, prec: usize) -> (f64, usize) {
    let med = (s.median / scale).abs();
    let spread = ((s.max - s.min) / scale).abs();
    let sig3 = if med > 0.0 && med.is_finite() {
        med.log10().floor() - 2.0
    } else {
        0.0
    };
    let noise = if spread > 0.0 && spread.is_finite() {
        spread.log10().floor()
    } else {
        sig3
    };
    // ... but at least 2 significant digits, however noisy.
    let exp = noise.max(sig3).min(sig3 + 1.0).max(-(prec as f64));
    let dec = if exp < 0.0 { (-exp) as usize } else { 0 };
    (10f64.powf(exp), dec)
}

fn fmt_step(x: f64, step: f64, dec: usize) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    format!("{:.dec$}", (x / step).round() * step)
}

impl Report {
    /// Fills [`Report::classes`] from the packet-rate rows (live) and the cost rows.
    pub fn fill_classes(&mut self) {
        let none = Summary::of(&[]);
        self.classes = CLASSES
            .iter()
            .filter_map(
                |&(class, scenario, mode, backends, flows, tr_class, tr_prog)| {
                    let live = self.pps.iter().find(|p| {
                        p.scenario == scenario
                            && p.mode == mode
                            && p.generator == "xdp"
                            && p.backends == backends
                            && (flows == 0 || p.flows == flows)
                    })?;
                    let tr = self.costs.iter().find(|c| {
                        c.class == tr_class
                            && c.program == tr_prog
                            && !c.method.starts_with("repeat")
                    });
                    Some(ClassCost {
                        class: class.into(),
                        live_from: pps_label(live),
                        live_ns: live.live_ns,
                        test_run_from: tr.map_or(String::new(), |c| c.method.clone()),
                        test_run_ns: tr.map_or(none, |c| c.ns),
                    })
                },
            )
            .collect();
    }

    /// The per-class program time table alone.
    pub fn classes_markdown(&self) -> String {
        let mut m = String::new();
        m.push_str("| class | live ns/packet (bpf_stats) | BPF_PROG_TEST_RUN ns/packet | live from |\n|---|---|---|---|\n");
        for c in &self.classes {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                c.class,
                cell(&c.live_ns, 1.0, 0),
                cell(&c.test_run_ns, 1.0, 0),
                c.live_from
            );
        }
        m
    }

    /// The targets table alone (printed at the end of a run).
    pub fn targets_markdown(&self) -> String {
        let mut m = String::new();
        m.push_str("| target | wanted | measured | verdict | where the time goes / why |\n");
        m.push_str("|---|---|---|---|---|\n");
        for t in &self.targets {
            let _ = writeln!(
                m,
                "| {} | {} | {} | **{}** | {} |",
                t.name, t.want, t.measured, t.verdict, t.note
            );
        }
        m
    }

    /// The packet-rate table alone.
    pub fn pps_markdown(&self) -> String {
        let mut m = String::new();
        m.push_str("| scenario | generator | mode | flows | backends | Mpps in | Mpps out | loss % | gen CPU busy % (softirq) | program ns/packet (bpf_stats) | xvip verdicts |\n");
        m.push_str("|---|---|---|---:|---:|---|---|---|---|---|---|\n");
        for r in &self.pps {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.0}) | {} | {} |",
                r.scenario,
                r.generator,
                r.mode,
                r.flows,
                r.backends,
                cell(&r.pps_in, 1e6, 3),
                cell(&r.pps_out, 1e6, 3),
                cell(&r.loss_pct, 1.0, 1),
                cell(&r.cpu_busy_pct, 1.0, 0),
                r.cpu_softirq_pct.median,
                cell(&r.live_ns, 1.0, 0),
                r.verdicts
            );
        }
        m
    }

    /// The TCP table alone.
    pub fn tcp_markdown(&self) -> String {
        let mut m = String::new();
        m.push_str(
            "| path | connections/s | p50 ms | p99 ms | errors | answered % |\n|---|---|---|---|---:|---|\n",
        );
        for r in &self.tcp {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} |",
                r.path,
                cell(&r.conns_per_s, 1.0, 0),
                cell(&r.p50_us, 1000.0, 2),
                cell(&r.p99_us, 1000.0, 2),
                r.errors,
                cell(&r.success_pct, 1.0, 2)
            );
        }
        m
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let mc = &self.machine;
        m.push_str("# xvip benchmark report\n\n");
        let _ = writeln!(
            m,
            "- machine: {} × {} cores, {:.1} GiB, kernel `{}`",
            mc.cpu_model, mc.cores, mc.memory_gib, mc.kernel
        );
        let _ = writeln!(m, "- command: `{}`", self.command);
        let _ = writeln!(
            m,
            "- {} runs of {:.1} s per figure (median, min–max); generator on {} CPU(s); took {:.0} s",
            self.runs, self.run_secs, self.gen_cpus, self.elapsed_s
        );
        let _ = writeln!(
            m,
            "- load average before: {}; after: {}\n",
            self.load_before, self.load_after
        );
        m.push_str("## Targets\n\n");
        m.push_str(&self.targets_markdown());
        m.push_str("\n## Packet rate\n\n");
        m.push_str("`xdp` = `lab_gen` through `BPF_PROG_TEST_RUN` live frames; `trafgen` = netsniff-ng's AF_PACKET generator (kernel path). The generator, the program under test and the sink all run on the generator's CPU(s) (veth XDP runs in the sender's softirq); \"gen CPU\" is the use of those CPUs from /proc/stat, other processes included.\n\n");
        m.push_str(&self.pps_markdown());
        m.push_str("\n## TCP: a new connection per request\n\n");
        m.push_str(&self.tcp_markdown());
        if !self.sync.is_empty() {
            m.push_str("\n## Conntrack sync: cost per new flow\n\n");
            m.push_str(&super::sync::markdown(&self.sync));
        }
        m.push_str("\n## Per-packet program time per class: live vs BPF_PROG_TEST_RUN\n\n");
        m.push_str("Live: the kernel's BPF run statistics (`BPF_ENABLE_STATS`, `run_time_ns / run_cnt` of the program on the LB's veth) over each packet-rate run; they include the statistics' own clock reads. BPF_PROG_TEST_RUN: single runs of the original frame, kernel-timed (includes the test harness's fixed overhead, see the bare forwarder).\n\n");
        m.push_str(&self.classes_markdown());
        if !self.xlated_calls.is_empty() {
            m.push_str("\nCall sites in xvip's translated program (`bpftool prog dump xlated`; array lookups are inlined by the verifier and do not appear):\n\n| call target | sites |\n|---|---:|\n");
            for (t, n) in &self.xlated_calls {
                let _ = writeln!(m, "| `{t}` | {n} |");
            }
        }
        m.push_str("\n## Per-packet cost (BPF_PROG_TEST_RUN)\n\n");
        m.push_str("| class | program | method | ns/packet |\n|---|---|---|---|\n");
        for r in &self.costs {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                r.class,
                r.program,
                r.method,
                cell(&r.ns, 1.0, 0)
            );
        }
        m.push_str("\n## Maglev table build\n\n| backends | M | ms |\n|---:|---:|---|\n");
        for r in &self.maglev {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                r.backends,
                r.table_size,
                cell(&r.ms, 1.0, 2)
            );
        }
        m.push_str("\n## BPF memory of the flow tables\n\n| flows | CONNTRACK | REVERSE | bytes/flow |\n|---:|---:|---:|---:|\n");
        for r in &self.memory {
            let _ = writeln!(
                m,
                "| {} | {:.1} MiB | {:.1} MiB | {:.0} |",
                r.flows,
                r.conntrack_bytes as f64 / 1048576.0,
                r.reverse_bytes as f64 / 1048576.0,
                r.bytes_per_flow
            );
        }
        m.push_str(
            "\n## Start-up: exec to attached\n\nA fresh start (maps created, nothing adopted), \
             three backends that answer ARP; the phases are the daemon's own (`started in` log \
             line); the verifier runs beside the next-hop resolution. The restarts follow a \
             SIGKILL with the pins present: adopting the running program (its check in the \
             verifier column, no instructions), or with its marker removed (the verifier and \
             the swap into the pinned link).\n\n\
             | case | starts | exec to attached ms | maps ms | verifier ms | instructions verified | next hops ms | first table ms | attach ms |\n\
             |---|---:|---|---|---|---|---|---|---|\n",
        );
        for r in &self.startup {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.case,
                r.starts,
                cell(&r.exec_to_attached_ms, 1.0, 0),
                cell(&r.maps_ms, 1.0, 0),
                cell(&r.verifier_ms, 1.0, 0),
                round_to_noise(&r.verified_insns, 1.0, 0),
                cell(&r.hops_ms, 1.0, 0),
                cell(&r.table_ms, 1.0, 0),
                cell(&r.attach_ms, 1.0, 0),
            );
        }
        m.push_str(
            "\n## Peers: Katran beside xvip (BPF_PROG_TEST_RUN single runs)\n\n\
             Kernel-timed single runs on one CPU (the harness's fixed ~35 ns included), each on a \
             fresh copy of the frame; established flows are hit in a stride through the table. \
             Katran: VIP hash lookup, its CPU's LRU, the real, IPIP encapsulation (DSR: no \
             replies, no reverse state). xvip: translation with forward and reverse state (DNAT; \
             full NAT also rewrites the source).\n\n\
             | program | class | flows | ns/packet | vs Katran |\n|---|---|---:|---|---|\n",
        );
        for r in &self.peers {
            let katran = self
                .peers
                .iter()
                .find(|k| k.program == "Katran" && k.class == r.class && k.flows == r.flows)
                .map(|k| k.ns.median);
            let vs = match katran {
                Some(k) if k > 0.0 && r.program != "Katran" => format!("{:.2}×", r.ns.median / k),
                _ => String::new(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                r.program,
                r.class,
                r.flows,
                cell(&r.ns, 1.0, 0),
                vs
            );
        }
        if !self.flows.is_empty() {
            m.push_str(
                "\n## Established cost by table size (BPF_PROG_TEST_RUN single runs)\n\n\
                 Every table in `CONNTRACK`/`REVERSE` maps of the same size, filled to the row's \
                 flows and hit in a stride of 7,919 flows; the tables and the bare forwarder \
                 take turns within each round, and the ratios are paired per round. \
                 \"own\": with the bare forwarder's time (the harness) taken off both.\n\n\
                 | mode | flows | map entries | ns/packet | bare forwarder ns | vs 1k flows | own vs 1k flows |\n\
                 |---|---:|---:|---|---|---|---|\n",
            );
            for r in &self.flows {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.mode,
                    r.flows,
                    r.map_entries,
                    cell(&r.ns, 1.0, 0),
                    cell(&r.bare_ns, 1.0, 0),
                    cell(&r.vs_1k, 1.0, 2),
                    cell(&r.own_vs_1k, 1.0, 2),
                );
            }
        }
        if !self.storms.is_empty() {
            m.push_str(
                "\n## The reconnect storm: a master leaves\n\n\
                 Every client holds a watch (a chunked line every 100 ms); master m1 is killed \
                 and each of its clients reconnects at once, retrying every 50 ms. Times from \
                 the kill until the clients of m1 have a new watch.\n\n\
                 | path | clients | on m1 | all back ms | median back ms | others broken | rounds run again |\n\
                 |---|---:|---|---|---|---:|---:|\n",
            );
            for r in &self.storms {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.path,
                    r.clients,
                    cell(&r.affected, 1.0, 0),
                    cell(&r.all_back_ms, 1.0, 0),
                    cell(&r.median_back_ms, 1.0, 0),
                    r.collateral,
                    r.rerun
                );
            }
        }
        if !self.notes.is_empty() {
            m.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        m
    }

    /// Three horizontal bar panels: packet rate out per scenario, connections/s per path,
    /// program time per packet class (live and `BPF_PROG_TEST_RUN`); each bar the median
    /// with a min–max whisker, numbers rounded to the runs' spread.
    pub fn svg(&self) -> String {
        let xvip = "#2b6cb0";
        let other = "#a0aec0";
        let test_run = "#90cdf4";
        let colour = |label: &str| {
            if label.starts_with("xvip") {
                xvip
            } else {
                other
            }
        };
        let pps: Vec<Bar> = self
            .pps
            .iter()
            .filter(|r| r.pps_out.median > 0.0)
            .map(|r| Bar {
                label: pps_label(r),
                v: r.pps_out,
                colour: colour(&r.scenario),
            })
            .collect();
        let tcp: Vec<Bar> = self
            .tcp
            .iter()
            .map(|r| Bar {
                label: r.path.clone(),
                v: r.conns_per_s,
                colour: colour(&r.path.replace("through xvip", "xvip")),
            })
            .collect();
        let mut cost = Vec::new();
        for c in &self.classes {
            let bare = c.class.starts_with("bare");
            cost.push(Bar {
                label: format!("{}, live", c.class),
                v: c.live_ns,
                colour: if bare { other } else { xvip },
            });
            if c.test_run_ns.runs > 0 {
                cost.push(Bar {
                    label: format!("{}, BPF_PROG_TEST_RUN", c.class),
                    v: c.test_run_ns,
                    colour: if bare { "#cbd5e0" } else { test_run },
                });
            }
        }
        let panels = [
            (
                "Packets out per second (median, min–max)",
                pps,
                1e6,
                "Mpps",
                3,
            ),
            (
                "TCP connections per second, a new connection per request",
                tcp,
                1.0,
                "conn/s",
                0,
            ),
            (
                "Program time per packet (median, min–max)",
                cost,
                1.0,
                "ns",
                0,
            ),
        ];
        // ~7 px per character at 12 px sans-serif: labels never run off the left edge.
        let longest = panels
            .iter()
            .flat_map(|p| p.1.iter().map(|b| b.label.chars().count()))
            .max()
            .unwrap_or(10);
        let (row_h, top, value_w) = (20.0, 30.0, 120.0);
        let label_w = 20.0 + 7.0 * longest as f64;
        let plot_w = 480.0;
        let w = label_w + plot_w + value_w;
        let panel_h = |n: usize| top + n as f64 * row_h + 20.0;
        let h: f64 = panels.iter().map(|p| panel_h(p.1.len())).sum::<f64>() + 10.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="12">"#
        );
        s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
        let mut y0 = 0.0;
        for (title, rows, scale, unit, prec) in &panels {
            let _ = writeln!(
                s,
                r#"<text x="10" y="{}" font-weight="bold" font-size="14">{}</text>"#,
                y0 + 20.0,
                esc(title)
            );
            let max = rows
                .iter()
                .map(|b| if b.v.max.is_finite() { b.v.max } else { 0.0 })
                .fold(0.0, f64::max)
                .max(1e-9);
            for (i, b) in rows.iter().enumerate() {
                let y = y0 + top + i as f64 * row_h;
                let x = |val: f64| label_w + plot_w * (val / max).clamp(0.0, 1.0);
                let med = if b.v.median.is_finite() {
                    b.v.median
                } else {
                    0.0
                };
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{}"/>"#,
                    label_w - 6.0,
                    y + 13.0,
                    esc(&b.label),
                    y + 3.0,
                    x(med) - label_w,
                    row_h - 6.0,
                    b.colour
                );
                if b.v.runs > 0 {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="black"/><text x="{:.1}" y="{}">{} {unit}</text>"#,
                        x(b.v.min),
                        x(b.v.max),
                        y + 10.0,
                        y + 10.0,
                        x(b.v.max) + 6.0,
                        y + 13.0,
                        round_to_noise(&b.v, *scale, *prec)
                    );
                } else {
                    let _ = writeln!(
                        s,
                        r#"<text x="{}" y="{}">n/a</text>"#,
                        label_w + 6.0,
                        y + 13.0
                    );
                }
            }
            y0 += panel_h(rows.len());
        }
        s.push_str("</svg>\n");
        s
    }
}

/// One bar of the SVG.
struct Bar {
    label: String,
    v: Summary,
    colour: &'static str,
}

/// A packet-rate row's name with everything that tells it apart from the others.
pub fn pps_label(r: &PpsRow) -> String {
    let mode = if r.mode == "-" {
        String::new()
    } else {
        format!("{}, ", r.mode)
    };
    format!(
        "{} [{mode}{}, {} flows, {} be]",
        r.scenario,
        r.generator,
        short_count(r.flows),
        r.backends
    )
}

/// 1000 -> "1k", 15360000 -> "15.4M".
fn short_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 if n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ if n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(median: f64, min: f64, max: f64) -> Summary {
        Summary {
            median,
            min,
            max,
            runs: 3,
        }
    }

    #[test]
    fn rounding_follows_the_spread_of_the_runs() {
        assert_eq!(
            cell(&sum(15332.857, 14900.0, 15800.0), 1.0, 0),
            "15300 (14900–15800)"
        );
        assert_eq!(
            cell(&sum(773_000.0, 743_000.0, 822_000.0), 1e6, 3),
            "0.77 (0.74–0.82)"
        );
        assert_eq!(cell(&sum(217.9, 215.8, 227.2), 1.0, 0), "220 (220–230)");
        assert_eq!(
            round_to_noise(&sum(0.06e6, 0.049e6, 0.153e6), 1e6, 3),
            "0.060"
        );
    }

    #[test]
    fn runs_that_agree_keep_three_significant_digits() {
        assert_eq!(
            round_to_noise(&sum(1.302e6, 1.302e6, 1.302e6), 1e6, 3),
            "1.30"
        );
        assert_eq!(round_to_noise(&sum(25.0, 25.0, 25.0), 1.0, 0), "25");
        assert_eq!(cell(&Summary::of(&[]), 1.0, 0), "n/a");
    }

    #[test]
    fn rows_of_the_same_scenario_are_told_apart_by_mode() {
        let row = |mode: &str| PpsRow {
            scenario: "xvip established".into(),
            generator: "xdp".into(),
            mode: mode.into(),
            flows: 1000,
            backends: 3,
            pps_in: Summary::default(),
            pps_out: Summary::default(),
            loss_pct: Summary::default(),
            cpu_busy_pct: Summary::default(),
            cpu_softirq_pct: Summary::default(),
            cpu_system_pct: Summary::default(),
            live_ns: Summary::default(),
            verdicts: String::new(),
        };
        assert_eq!(
            pps_label(&row("dnat")),
            "xvip established [dnat, xdp, 1k flows, 3 be]"
        );
        assert_ne!(pps_label(&row("dnat")), pps_label(&row("fullnat")));
        assert_eq!(short_count(15_360_000), "15.4M");
    }
}
