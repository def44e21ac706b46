//! `xvip-bench`: xvip side by side with the bare-XDP limit, nftables DNAT and haproxy, in
//! network namespaces of its own. Run it with `cargo xtask bench [--quick]`; it writes
//! `report.md`, `report.json` and `report.svg` into `$XVIP_BENCH_OUT` (or `target/bench`)
//! and prints the tables. See docs/benchmarks.md for how to read them.

use std::{
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tests::bench::{
    control::{maglev_part, memory_part},
    cost::cost_part,
    ctx::{Ctx, STOP},
    flows::flows_part,
    nft::nft_part,
    passive::passive_part,
    peers::peers_part,
    pps::{TWO_ARM_LIMIT, TWO_ARM_XVIP, pps_part, two_arm_part},
    pps_tc::pps_tc_part,
    report::{Machine, PpsRow, Report, Target},
    startup::startup_part,
    storm::storm_part,
    sync::sync_part,
    tcp_paths::{BARE_TCP, tcp_part},
};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Benchmarks xvip against the XDP limit, nftables and haproxy (needs root)")]
struct Args {
    /// Fewer and shorter runs: the whole bench in under 5 minutes.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (default 5, or 3 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds per run (default 3, or 1 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// CPUs the XDP generator uses, one pinned thread each.
    #[arg(long, default_value_t = 1)]
    gen_cpus: u32,
    /// Only these parts: maglev,memory,startup,peers,flows,cost,passive,pps,two-arm,pps-tc,nft,tcp,storm,sync (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output directory (default: $XVIP_BENCH_OUT, else target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvip-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, XDP)");
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let started = Instant::now();
    let out = args
        .out
        .clone()
        .or_else(|| std::env::var_os("XVIP_BENCH_OUT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let obj_path = std::env::var_os("XVIP_EBPF_OBJ")
        .map(PathBuf::from)
        .context("XVIP_EBPF_OBJ (the lb-ebpf object) is not set: run `cargo xtask bench`")?;
    let obj =
        std::fs::read(&obj_path).with_context(|| format!("reading {}", obj_path.display()))?;
    let tmp = std::env::temp_dir().join(format!("xvip-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let ctx = Ctx {
        obj,
        runs: args.runs.unwrap_or(if args.quick { 3 } else { 5 }).max(1),
        run: Duration::from_secs_f64(args.secs.unwrap_or(if args.quick { 1.0 } else { 3.0 })),
        quick: args.quick,
        gen_cpus: args.gen_cpus.max(1),
        prefix: format!("xvb{}", std::process::id()),
        tmp,
        out: out.clone(),
    };
    let mut report = Report {
        machine: Machine::detect(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        load_before: loadavg(),
        runs: ctx.runs,
        run_secs: ctx.run.as_secs_f64(),
        gen_cpus: ctx.gen_cpus,
        ..Default::default()
    };
    if args.quick {
        report.command = "cargo xtask bench --quick".into();
    } else if args.runs.is_none() && args.secs.is_none() && args.only.is_empty() {
        report.command = "cargo xtask bench".into();
    }
    let want = |p: &str| args.only.is_empty() || args.only.iter().any(|o| o == p);
    type Part = fn(&Ctx, &mut Report) -> Result<()>;
    let parts: [(&str, Part); 14] = [
        ("maglev", maglev_part),
        ("memory", memory_part),
        ("startup", startup_part),
        ("peers", peers_part),
        ("flows", flows_part),
        ("cost", cost_part),
        ("passive", passive_part),
        ("pps", pps_part),
        ("two-arm", two_arm_part),
        ("pps-tc", pps_tc_part),
        ("nft", nft_part),
        ("tcp", tcp_part),
        ("storm", storm_part),
        ("sync", sync_part),
    ];
    let mut result = Ok(());
    for (name, part) in parts {
        if !want(name) {
            continue;
        }
        eprintln!("== {name}");
        if let Err(e) = part(&ctx, &mut report) {
            if STOP.load(Ordering::Relaxed) {
                result = Err(e);
                break;
            }
            eprintln!("xvip-bench: part {name} failed: {e:#}");
            report.notes.push(format!("part `{name}` failed: {e:#}"));
        }
    }
    let _ = std::fs::remove_dir_all(&ctx.tmp);
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.load_after = loadavg();
    report.fill_classes();
    targets(&mut report);
    let md = report.markdown();
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("report.svg"), report.svg())?;
    println!("{md}");
    eprintln!(
        "report: {} (.json, .svg); {:.0} s",
        out.join("report.md").display(),
        report.elapsed_s
    );
    result
}

// ---------------------------------------------------------------- targets

/// The two-arm rows against their own limit (separate from the one-armed targets).
fn two_arm_targets(r: &Report, push: &mut dyn FnMut(Target)) {
    let out = |p: Option<&PpsRow>| p.map(|p| p.pps_out.median);
    let limit = out(find(r, TWO_ARM_LIMIT, "-", "xdp", 0, 0));
    for mode in ["fullnat", "dnat"] {
        let est = out(find(r, TWO_ARM_XVIP, mode, "xdp", 3, 1000));
        let q = match (est, limit) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        push(Target {
            name: format!("two-arm established {mode} vs bare-redirect limit"),
            want: ">= 0.90×".into(),
            measured: q.map_or("n/a".into(), |q| format!("{q:.2}×")),
            verdict: verdict(q.map(|q| q >= 0.9)),
            note: format!(
                "{} vs {} Mpps out, clients on l0, masters behind l1 (redirect)",
                est.map_or("n/a".into(), |x| format!("{:.2}", x / 1e6)),
                limit.map_or("n/a".into(), |x| format!("{:.2}", x / 1e6))
            ),
        });
    }
}

fn find<'a>(
    r: &'a Report,
    scenario: &str,
    mode: &str,
    generator: &str,
    backends: u32,
    flows: u64,
) -> Option<&'a PpsRow> {
    r.pps.iter().find(|p| {
        p.scenario == scenario
            && p.mode == mode
            && p.generator == generator
            && p.backends == backends
            && (flows == 0 || p.flows == flows)
    })
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "PASS".into(),
        Some(false) => "MISS".into(),
        None => "n/a".into(),
    }
}

/// Exec to attached, per case (`tests::bench::startup`).
fn startup_targets(r: &Report, t: &mut Vec<Target>) {
    for row in &r.startup {
        let s = &row.exec_to_attached_ms;
        let q = (s.runs > 0).then_some(s.median / 1e3);
        t.push(Target {
            name: format!("exec to attached, {}", row.case),
            want: "<= 0.5 s".into(),
            measured: q.map_or("n/a".into(), |q| format!("{q:.2} s")),
            verdict: verdict(q.map(|q| q <= 0.5)),
            note: format!(
                "the verifier {:.0} ms of it ({:.0} instructions processed), maps {:.0} ms, \
                 first table {:.0} ms, attach {:.0} ms (medians)",
                row.verifier_ms.median,
                row.verified_insns.median,
                row.maps_ms.median,
                row.table_ms.median,
                row.attach_ms.median
            ),
        });
    }
}

/// xvip's established per-packet time at or below Katran's, per mode and table size.
fn peer_targets(r: &Report, t: &mut Vec<Target>) {
    for x in r
        .peers
        .iter()
        .filter(|p| p.program != "Katran" && p.class == "established")
    {
        let Some(k) = r
            .peers
            .iter()
            .find(|k| k.program == "Katran" && k.class == x.class && k.flows == x.flows)
        else {
            continue;
        };
        let q = (k.ns.median > 0.0).then(|| x.ns.median / k.ns.median);
        t.push(Target {
            name: format!("{} established vs Katran, {} flows", x.program, x.flows),
            want: "<= 1.00×".into(),
            measured: q.map_or("n/a".into(), |q| format!("{q:.2}×")),
            verdict: verdict(q.map(|q| q <= 1.0)),
            note: format!(
                "{:.0} vs {:.0} ns per packet (BPF_PROG_TEST_RUN single runs, same run)",
                x.ns.median, k.ns.median
            ),
        });
    }
}

/// The established cost at a million flows within 1.5× of a thousand, per mode.
fn flow_targets(r: &Report, t: &mut Vec<Target>) {
    let top = r.flows.iter().map(|f| f.flows).max().unwrap_or(0);
    for x in r.flows.iter().filter(|f| f.flows == top && top > 1_000) {
        let q = x.vs_1k.median;
        t.push(Target {
            name: format!("established {}: {} flows vs 1,000", x.mode, x.flows),
            want: "<= 1.50×".into(),
            measured: format!("{q:.2}×"),
            verdict: verdict(q.is_finite().then_some(q <= 1.5)),
            note: format!(
                "{:.0} ns per packet (BPF_PROG_TEST_RUN single runs, the harness's {:.0} ns included; without it {:.2}×), paired per round",
                x.ns.median, x.bare_ns.median, x.own_vs_1k.median
            ),
        });
    }
}

/// The reconnect storm: xvip's clients all back no later than haproxy's.
fn storm_target(r: &Report, t: &mut Vec<Target>) {
    let row = |p: &str| r.storms.iter().find(|s| s.path.starts_with(p));
    let (Some(x), Some(h)) = (row("through xvip"), row("through haproxy")) else {
        return;
    };
    let (a, b) = (x.all_back_ms.median, h.all_back_ms.median);
    t.push(Target {
        name: format!(
            "reconnect storm ({} clients): all back, xvip vs haproxy",
            x.clients
        ),
        want: "lower".into(),
        measured: format!("{a:.0} vs {b:.0} ms"),
        verdict: verdict((a.is_finite() && b.is_finite()).then_some(a <= b)),
        note: format!(
            "median client {:.0} vs {:.0} ms; the same TCP checks (200 ms, fall 3)",
            x.median_back_ms.median, h.median_back_ms.median
        ),
    });
}

fn targets(r: &mut Report) {
    let mut t = Vec::new();
    startup_targets(r, &mut t);
    peer_targets(r, &mut t);
    flow_targets(r, &mut t);
    storm_target(r, &mut t);
    let out = |p: Option<&PpsRow>| p.map(|p| p.pps_out.median);
    // The established rows and the limit: from the XDP generator, or, where its live frames
    // are refused (EPERM on some kernels: docs/benchmarks.md), from the AF_PACKET
    // generator's rows of the `pps-tc` part, measured the same way.
    let xdp_limit = find(r, "limit: bare XDP forward", "-", "xdp", 0, 0);
    let generator = if xdp_limit.is_some() { "xdp" } else { "raw" };
    let limit_row = xdp_limit.or_else(|| find(r, "limit: bare XDP forward", "-", "raw", 0, 0));
    fn est_row<'a>(r: &'a Report, generator: &str, mode: &str) -> Option<&'a PpsRow> {
        match generator {
            "xdp" => find(r, "xvip established", mode, "xdp", 3, 1000),
            _ => find(r, "xvip established at XDP", mode, "raw", 3, 1000),
        }
    }
    let limit = out(limit_row);
    let est_full = out(est_row(r, generator, "fullnat"));
    let est_dnat = out(est_row(r, generator, "dnat"));
    let nft = out(find(r, "nftables DNAT", "dnat", "trafgen", 3, 0));
    let xvip_tg = out(find(r, "xvip established", "fullnat", "trafgen", 3, 0));
    let new_dnat = out(find(r, "xvip new flow per packet", "dnat", "xdp", 3, 0));
    let new_full = out(find(r, "xvip new flow per packet", "fullnat", "xdp", 3, 0));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut push = |name: &str, want: &str, measured: String, ok: Option<bool>, note: String| {
        t.push(Target {
            name: name.into(),
            want: want.into(),
            measured,
            verdict: verdict(ok),
            note,
        })
    };
    let show = |x: Option<f64>, unit: &str| x.map_or("n/a".into(), |x| format!("{x:.2}{unit}"));
    for (mode, est) in [("fullnat", est_full), ("dnat", est_dnat)] {
        let q = ratio(est, limit);
        push(
            &format!("established {mode} vs bare-forward limit"),
            ">= 0.90×",
            show(q, "×"),
            q.map(|q| q >= 0.9),
            format!(
                "{} vs {} Mpps out, same generator ({generator}), same run",
                show(est.map(|x| x / 1e6), ""),
                show(limit.map(|x| x / 1e6), "")
            ),
        );
    }
    let q = ratio(est_full, nft);
    push(
        "established fullnat vs nftables DNAT",
        ">= 4×",
        show(q, "×"),
        q.map(|q| q >= 4.0),
        format!(
            "xvip fed by the {generator} generator, nftables by trafgen (the kernel path needs skbs); with trafgen feeding both: {}",
            show(ratio(xvip_tg, nft), "×")
        ),
    );
    for (mode, new, est) in [
        ("dnat", new_dnat, est_dnat),
        ("fullnat", new_full, est_full),
    ] {
        let q = ratio(new, est);
        let verdicts = find(r, "xvip new flow per packet", mode, "xdp", 3, 0)
            .map(|p| p.verdicts.clone())
            .unwrap_or_default();
        let want = if mode == "dnat" { 0.7 } else { 0.5 };
        // Without live rates: the ratio of the per-packet times the `peers` part measured
        // for the two classes in the same rounds (a rate is the inverse of a time).
        let peer = |class: &str| {
            r.peers
                .iter()
                .find(|p| {
                    p.program == format!("xvip {mode}") && p.class == class && p.flows == 1000
                })
                .map(|p| p.ns.median)
        };
        let (q, note) = match q {
            Some(q) => (Some(q), format!("3 backends; verdicts: {verdicts}")),
            None => {
                let (e, n) = (peer("established"), peer("new flow (SYN)"));
                (
                    ratio(e, n),
                    format!(
                        "no live rates: per-packet time, established {} ns vs new flow {} ns (BPF_PROG_TEST_RUN single runs of the peers part, 1,000 flows, same rounds)",
                        show(e, ""),
                        show(n, "")
                    ),
                )
            }
        };
        push(
            &format!("new flow per packet {mode} vs established"),
            &format!(">= {want:.1}×"),
            show(q, "×"),
            q.map(|q| q >= want),
            note,
        );
    }
    // Non-VIP: the program's extra cost per frame over a bare program, applied to the
    // limit's per-packet time.
    let cost = |class: &str, prog: &str| {
        r.costs
            .iter()
            .find(|c| c.class == class && c.program == prog && c.method.starts_with("repeat"))
            .map(|c| c.ns.median)
    };
    let (nonvip, pass) = (
        cost("non-VIP (XDP_PASS)", "xvip"),
        cost("bare pass", "lab_pass"),
    );
    let q = match (nonvip, pass, limit) {
        (Some(n), Some(p), Some(l)) if l > 0.0 => {
            let t = 1e9 / l;
            Some(t / (t + (n - p).max(0.0)))
        }
        _ => None,
    };
    push(
        "non-VIP traffic vs limit",
        ">= 0.95×",
        show(q, "×"),
        q.map(|q| q >= 0.95),
        format!(
            "modelled: xvip costs {} ns/frame on non-VIP frames vs {} for a bare XDP_PASS (BPF_PROG_TEST_RUN repeat), added to the limit's {} ns/frame; live XDP_PASS frames on veth reach the stack at only ~500 pps, so they are not sent",
            show(nonvip, ""),
            show(pass, ""),
            show(limit.map(|l| 1e9 / l), "")
        ),
    );
    // IPv6 beside IPv4: the same class's per-packet cost in the same run (BPF_PROG_TEST_RUN,
    // single runs; the ratio of costs is the ratio of rates the program alone allows).
    let single = |class: &str| {
        r.costs
            .iter()
            .find(|c| c.class == class && c.program == "xvip" && !c.method.starts_with("repeat"))
            .map(|c| c.ns.median)
    };
    for (v4, v6) in [
        (
            "established (conntrack hit), fullnat",
            "IPv6 established (conntrack hit), fullnat",
        ),
        (
            "reply (reverse hit), fullnat",
            "IPv6 reply (reverse hit), fullnat",
        ),
        ("new flow, fullnat", "IPv6 new flow, fullnat"),
    ] {
        let (a, b) = (single(v4), single(v6));
        let q = ratio(a, b);
        push(
            &format!("IPv6 vs IPv4: {v4}"),
            ">= 0.90×",
            show(q, "×"),
            q.map(|q| q >= 0.9),
            format!(
                "per-packet cost, same run: {} ns (v4) vs {} ns (v6), each including the test-run timer",
                show(a, ""),
                show(b, "")
            ),
        );
    }
    // Live program time per packet (bpf_stats, its own overhead included).
    let live = |scenario: &str, mode: &str, flows: u64| {
        let row = match (generator, scenario) {
            ("raw", "xvip established") => est_row(r, generator, mode),
            // The AF_PACKET rows have no reply scenario.
            ("raw", _) => None,
            _ => find(r, scenario, mode, "xdp", 3, flows),
        };
        row.map(|p| p.live_ns.median)
    };
    let bare_ns = limit_row.map(|p| p.live_ns.median);
    for (what, scenario, mode, flows) in [
        ("established forward", "xvip established", "fullnat", 1000),
        ("established forward", "xvip established", "dnat", 1000),
        ("reply", "xvip reply", "fullnat", 1),
        ("reply", "xvip reply", "dnat", 1),
    ] {
        let v = live(scenario, mode, flows).filter(|v| v.is_finite());
        push(
            &format!("{what} {mode}: live program time"),
            "<= 100 ns",
            show(v, " ns"),
            v.map(|v| v <= 100.0),
            format!(
                "bpf_stats run_time_ns / run_cnt during the packet-rate runs ({generator} generator); the bare forwarder measured the same way: {}",
                show(bare_ns.filter(|v| v.is_finite()), " ns")
            ),
        );
    }
    let tcp = |p: &str| r.tcp.iter().find(|x| x.path.starts_with(p));
    let (x, b) = (tcp("through xvip"), tcp(BARE_TCP));
    let q = match (x, b) {
        (Some(x), Some(b)) if b.conns_per_s.median > 0.0 => {
            Some(x.conns_per_s.median / b.conns_per_s.median)
        }
        _ => None,
    };
    push(
        "TCP connections/s vs bare forwarder (same hops)",
        ">= 0.90×",
        show(q, "×"),
        q.map(|q| q >= 0.9),
        match (x, b) {
            (Some(x), Some(b)) => format!(
                "p50 {:.2} vs {:.2} ms; the bare forwarder carries the client's connections to one master over the same client -> lb -> master -> lb hops",
                x.p50_us.median / 1e3,
                b.p50_us.median / 1e3
            ),
            _ => String::new(),
        },
    );
    let (x, h) = (tcp("through xvip"), tcp("through haproxy"));
    let q = match (x, h) {
        (Some(x), Some(h)) if h.conns_per_s.median > 0.0 => {
            Some(x.conns_per_s.median / h.conns_per_s.median)
        }
        _ => None,
    };
    push(
        "TCP connections/s vs haproxy",
        ">= 2×",
        show(q, "×"),
        q.map(|q| q >= 2.0),
        "new connection per request, 32 clients, plain HTTP /healthz to lab-apiserver".into(),
    );
    let p99 = match (x, h) {
        (Some(x), Some(h)) => Some((x.p99_us.median, h.p99_us.median)),
        _ => None,
    };
    push(
        "TCP p99 latency vs haproxy",
        "lower",
        p99.map_or("n/a".into(), |(a, b)| {
            format!("{:.2} vs {:.2} ms", a / 1e3, b / 1e3)
        }),
        p99.map(|(a, b)| a < b),
        String::new(),
    );
    for who in ["through xvip", "through haproxy"] {
        let f = r
            .tcp
            .iter()
            .find(|x| x.path.starts_with(who) && x.path.ends_with("spoofed SYN flood"));
        let v = f.map(|f| f.success_pct.median);
        push(
            &format!("SYN flood: legitimate connections answered, {}", &who[8..]),
            ">= 99%",
            show(v, "%"),
            v.map(|v| v >= 99.0),
            f.map_or(String::new(), |f| {
                format!("p99 {:.2} ms", f.p99_us.median / 1e3)
            }),
        );
    }
    let mag = |n: u32| {
        r.maglev
            .iter()
            .find(|m| m.backends == n)
            .map(|m| m.ms.median)
    };
    for (n, lim) in [(1000u32, 50.0), (3, 2.0)] {
        let v = mag(n);
        push(
            &format!("Maglev build, {n} backends, M=65537"),
            &format!("< {lim} ms"),
            show(v, " ms"),
            v.map(|v| v < lim),
            String::new(),
        );
    }
    two_arm_targets(r, &mut |x| t.push(x));
    r.targets = t;
}
