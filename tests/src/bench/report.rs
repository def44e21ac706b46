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

/// Maglev table build time.
#[derive(Clone, Debug, Serialize)]
pub struct MaglevRow {
    pub backends: u32,
    pub table_size: u32,
    pub ms: Summary,
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
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

/// `median (min-max)` scaled by `scale`, with `prec` decimals.
pub fn cell(s: &Summary, scale: f64, prec: usize) -> String {
    if s.runs == 0 {
        return "n/a".into();
    }
    format!(
        "{:.p$} ({:.p$}–{:.p$})",
        s.median / scale,
        s.min / scale,
        s.max / scale,
        p = prec
    )
}

impl Report {
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
        m.push_str("| scenario | generator | mode | flows | backends | Mpps in | Mpps out | loss % | gen CPU busy % (softirq) | xvip verdicts |\n");
        m.push_str("|---|---|---|---:|---:|---|---|---|---|---|\n");
        for r in &self.pps {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.0}) | {} |",
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
        m.push_str("\n## Per-packet cost (BPF_PROG_TEST_RUN)\n\n");
        m.push_str("| class | program | method | ns/packet |\n|---|---|---|---|\n");
        for r in &self.costs {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                r.class,
                r.program,
                r.method,
                cell(&r.ns, 1.0, 1)
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
        if !self.notes.is_empty() {
            m.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        m
    }

    /// Two horizontal bar panels: packet rate out per scenario, connections/s per path, each
    /// bar the median with a min–max whisker.
    pub fn svg(&self) -> String {
        let pps: Vec<(String, Summary)> = self
            .pps
            .iter()
            .map(|r| {
                (
                    format!(
                        "{} [{}, {} flows, {} be]",
                        r.scenario, r.generator, r.flows, r.backends
                    ),
                    r.pps_out,
                )
            })
            .collect();
        let tcp: Vec<(String, Summary)> = self
            .tcp
            .iter()
            .map(|r| (r.path.clone(), r.conns_per_s))
            .collect();
        let (w, label_w, row_h, top) = (960.0, 380.0, 20.0, 30.0);
        let plot_w = w - label_w - 90.0;
        let panel_h = |n: usize| top + n as f64 * row_h + 20.0;
        let h = panel_h(pps.len()) + panel_h(tcp.len()) + 10.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
        let mut y0 = 0.0;
        for (title, rows, scale, unit) in [
            (
                "Packets out per second (median, min–max)",
                &pps,
                1e6,
                "Mpps",
            ),
            (
                "TCP connections per second (median, min–max)",
                &tcp,
                1.0,
                "conn/s",
            ),
        ] {
            let _ = writeln!(
                s,
                r#"<text x="10" y="{}" font-weight="bold" font-size="14">{}</text>"#,
                y0 + 20.0,
                esc(title)
            );
            let max = rows
                .iter()
                .map(|(_, v)| if v.max.is_finite() { v.max } else { 0.0 })
                .fold(0.0, f64::max)
                .max(1e-9);
            for (i, (label, v)) in rows.iter().enumerate() {
                let y = y0 + top + i as f64 * row_h;
                let x = |val: f64| label_w + plot_w * (val / max).clamp(0.0, 1.0);
                let med = if v.median.is_finite() { v.median } else { 0.0 };
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{}"/>"#,
                    label_w - 6.0,
                    y + 13.0,
                    esc(label),
                    y + 3.0,
                    x(med) - label_w,
                    row_h - 6.0,
                    if label.starts_with("xvip") {
                        "#2b6cb0"
                    } else {
                        "#a0aec0"
                    }
                );
                if v.runs > 0 {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="black"/><text x="{:.1}" y="{}">{:.3} {unit}</text>"#,
                        x(v.min),
                        x(v.max),
                        y + 10.0,
                        y + 10.0,
                        x(v.max) + 6.0,
                        y + 13.0,
                        med / scale
                    );
                }
            }
            y0 += panel_h(rows.len());
        }
        s.push_str("</svg>\n");
        s
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
