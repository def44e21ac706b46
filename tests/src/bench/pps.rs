//! The packet-rate parts (`pps`, `two-arm`): xvip and the bare-XDP limits fed by the XDP
//! generator in the veth lab.

use std::{net::Ipv4Addr, time::Duration};

use super::ctx::Ctx;
use super::ctx::STOP;
use super::setup::client_frame;
use super::setup::mode_name;
use super::setup::xvip_dataplane;
use super::setup::xvip_dataplane_two_arm;
use crate::bench::{
    frame::{TCP_ACK, reply_to},
    report::{PpsRow, Report},
    stats::Summary,
    xdp_lab::{GEN_BATCH, GenSpec, LB_DEV, LB_MAC, PpsSample, VIP, XdpLab, with_netns},
};
use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use xvip::{config::Mode, dataplane::Dataplane};

fn verdict_text(total: &[(&'static str, u64)]) -> String {
    let sum: u64 = total.iter().map(|(_, n)| n).sum();
    if sum == 0 {
        return String::new();
    }
    let mut v: Vec<_> = total.to_vec();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter()
        .take(3)
        .map(|(r, n)| format!("{r} {:.1}%", 100.0 * *n as f64 / sum as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn add_reasons(acc: &mut Vec<(&'static str, u64)>, s: &PpsSample) {
    for (r, n) in &s.reasons {
        match acc.iter_mut().find(|(a, _)| a == r) {
            Some(e) => e.1 += n,
            None => acc.push((r, *n)),
        }
    }
}

/// What one packet-rate row measured (its scenario, mode, generator, backends and flows).
pub struct PpsCase<'a> {
    /// What was measured (`xvip established`, a limit, a baseline).
    pub scenario: &'a str,
    /// What sent the frames (`xdp`, `trafgen`).
    pub generator: &'a str,
    /// `fullnat`, `dnat` or `-`.
    pub mode: &'a str,
    /// Distinct flows sent.
    pub flows: u64,
    /// Backends behind the VIP.
    pub backends: u32,
}

/// The report row of `case` from its samples.
pub fn pps_row(case: PpsCase<'_>, samples: &[PpsSample]) -> PpsRow {
    let f = |g: fn(&PpsSample) -> f64| Summary::of(&samples.iter().map(g).collect::<Vec<_>>());
    let mut reasons = Vec::new();
    for s in samples {
        add_reasons(&mut reasons, s);
    }
    let row = PpsRow {
        scenario: case.scenario.into(),
        generator: case.generator.into(),
        mode: case.mode.into(),
        flows: case.flows,
        backends: case.backends,
        pps_in: f(|s| s.pps_in),
        pps_out: f(|s| s.pps_out),
        loss_pct: f(|s| 100.0 * s.loss),
        cpu_busy_pct: f(|s| s.cpu.busy_pct),
        cpu_softirq_pct: f(|s| s.cpu.softirq_pct),
        cpu_system_pct: f(|s| s.cpu.system_pct),
        live_ns: f(|s| s.prog_ns),
        verdicts: verdict_text(&reasons),
    };
    eprintln!(
        "   {:<34} {:<7} {:<15} {:>8} fl {:>4} be  in {:>6.3} Mpps  out {:>6.3} Mpps  (min {:.3} max {:.3})  loss {:>5.1}%  cpu {:>3.0}%  {:.0} ns/pkt live  {}",
        row.scenario,
        row.generator,
        row.mode,
        row.flows,
        row.backends,
        row.pps_in.median / 1e6,
        row.pps_out.median / 1e6,
        row.pps_out.min / 1e6,
        row.pps_out.max / 1e6,
        row.loss_pct.median,
        row.cpu_busy_pct.median,
        row.live_ns.median,
        row.verdicts
    );
    row
}

/// Warms up (so flows exist), then measures `ctx.runs` runs.
fn measure_xdp(
    ctx: &Ctx,
    lab: &mut XdpLab,
    spec: &GenSpec,
    warm: Duration,
) -> Result<Vec<PpsSample>> {
    let frame = lab.configure(spec)?;
    lab.blast(&frame, warm, &STOP)?;
    let mut v = Vec::new();
    for _ in 0..ctx.runs {
        ctx.check_stop()?;
        v.push(lab.measure(&frame, ctx.run, &STOP)?);
    }
    Ok(v)
}

/// Warm-up long enough to send every flow about twice at ~1 Mpps.
pub fn warm_for(flows: u32) -> Duration {
    Duration::from_millis(300) + Duration::from_micros(2 * flows as u64)
}

/// The `pps` part: packet rates of the bare-XDP limit and xvip, one-armed.
pub fn pps_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let mut lab = XdpLab::new(&format!("{}-x", ctx.prefix), ctx.gen_cpus)?;
    let est = 1_000u32;

    lab.use_forward()?;
    let s = measure_xdp(ctx, &mut lab, &GenSpec::established(est), warm_for(est))?;
    report.pps.push(pps_row(
        PpsCase {
            scenario: "limit: bare XDP forward",
            generator: "xdp",
            mode: "-",
            flows: est as u64,
            backends: 0,
        },
        &s,
    ));

    // (scenario, mode, backends, flows or 0 for a SYN flood, conntrack size)
    let mut cases: Vec<(&str, Mode, usize, u32, u32)> = vec![
        ("xvip established", Mode::Fullnat, 3, est, 262_144),
        ("xvip established", Mode::Dnat, 3, est, 262_144),
        ("xvip new flow per packet", Mode::Dnat, 3, 0, 1 << 20),
        ("xvip new flow per packet", Mode::Fullnat, 3, 0, 1 << 20),
        ("xvip new flow per packet", Mode::Fullnat, 1000, 0, 1 << 20),
        (
            "xvip established, flows scale",
            Mode::Dnat,
            3,
            100_000,
            262_144,
        ),
        (
            "xvip established, flows scale",
            Mode::Dnat,
            3,
            1_000_000,
            2 << 20,
        ),
        (
            "xvip established, flows scale",
            Mode::Fullnat,
            3,
            100_000,
            262_144,
        ),
        (
            "xvip established, backends scale",
            Mode::Fullnat,
            100,
            est,
            262_144,
        ),
        (
            "xvip established, backends scale",
            Mode::Fullnat,
            1000,
            est,
            262_144,
        ),
    ];
    if ctx.quick {
        cases.retain(|c| !(c.3 == 100_000 && c.1 == Mode::Fullnat) && c.2 != 100);
    }
    for (scenario, mode, backends, flows, ct) in cases {
        ctx.check_stop()?;
        let dp = xvip_dataplane(&ctx.obj, mode, backends, ct)?;
        lab.use_xvip(dp)?;
        let (spec, warm, flows_shown) = if flows == 0 {
            let s = GenSpec::syn_flood();
            (s, Duration::from_millis(200), s.flows as u64)
        } else {
            let s = GenSpec::established(flows);
            confirm_flows(lab.xvip().context("xvip on l0")?, &s)?;
            (s, warm_for(flows), flows as u64)
        };
        let s = measure_xdp(ctx, &mut lab, &spec, warm)?;
        report.pps.push(pps_row(
            PpsCase {
                scenario,
                generator: "xdp",
                mode: mode_name(mode),
                flows: flows_shown,
                backends: backends as u32,
            },
            &s,
        ));
    }
    for mode in [Mode::Fullnat, Mode::Dnat] {
        ctx.check_stop()?;
        let s = measure_replies(ctx, &mut lab, mode)?;
        report.pps.push(pps_row(
            PpsCase {
                scenario: "xvip reply",
                generator: "xdp",
                mode: mode_name(mode),
                flows: 1,
                backends: 3,
            },
            &s,
        ));
    }
    for mode in [Mode::Fullnat, Mode::Dnat] {
        ctx.check_stop()?;
        lab.use_xvip(xvip_dataplane(&ctx.obj, mode, 3, 262_144)?)?;
        let mut spec = GenSpec::established(est);
        spec.dst = NON_VIP;
        let frame = lab.configure(&spec)?;
        let mut s = Vec::new();
        for _ in 0..ctx.runs {
            ctx.check_stop()?;
            s.push(lab.measure_batches(&frame, ctx.run, NON_VIP_BATCH, &STOP)?);
        }
        report.pps.push(pps_row(
            PpsCase {
                scenario: NON_VIP_SCENARIO,
                generator: "xdp",
                mode: mode_name(mode),
                flows: est as u64,
                backends: 3,
            },
            &s,
        ));
    }
    lab.clear()?;
    Ok(())
}

/// Name of the two-arm shape's limit row.
pub const TWO_ARM_LIMIT: &str = "two-arm limit: bare XDP redirect";
/// Name of the two-arm shape's xvip rows.
pub const TWO_ARM_XVIP: &str = "two-arm xvip established";

/// The two-arm shape: clients on `l0`, masters behind `l1`, every forwarded frame redirected
/// from one to the other (`--interface` repeated). Its own limit is `lab_redirect` (MACs set,
/// redirect), as `lab_forward` is the one-armed shape's.
pub fn two_arm_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let mut lab = XdpLab::new(&format!("{}-2", ctx.prefix), ctx.gen_cpus)?;
    lab.add_second_arm()?;
    let l1 = lab.lb1_ifindex.context("l1")?;
    let l0 = with_netns(&lab.lb.name, || {
        let name = std::ffi::CString::new(LB_DEV)?;
        // SAFETY: a valid C string.
        Ok(unsafe { libc::if_nametoindex(name.as_ptr()) })
    })?;
    let est = 1_000u32;
    lab.use_redirect()?;
    let s = measure_xdp(ctx, &mut lab, &GenSpec::established(est), warm_for(est))?;
    report.pps.push(pps_row(
        PpsCase {
            scenario: TWO_ARM_LIMIT,
            generator: "xdp",
            mode: "-",
            flows: est as u64,
            backends: 0,
        },
        &s,
    ));
    for mode in [Mode::Fullnat, Mode::Dnat] {
        ctx.check_stop()?;
        let dp = xvip_dataplane_two_arm(&ctx.obj, mode, 3, 262_144, l0, l1)?;
        let spec = GenSpec::established(est);
        confirm_flows_two_arm(&dp, &spec)?;
        lab.use_xvip_two_arm(dp)?;
        let s = measure_xdp(ctx, &mut lab, &spec, warm_for(est))?;
        report.pps.push(pps_row(
            PpsCase {
                scenario: TWO_ARM_XVIP,
                generator: "xdp",
                mode: mode_name(mode),
                flows: est as u64,
                backends: 3,
            },
            &s,
        ));
    }
    lab.clear()?;
    Ok(())
}

/// [`confirm_flows`] for the two-arm data path: the backend's answer is addressed to `l1`'s
/// MAC, but a test run's ingress is `lo`, for which the program expects `l0`'s (the
/// configured `if_mac`), so the reply is readdressed to it.
fn confirm_flows_two_arm(dp: &Dataplane, spec: &GenSpec) -> Result<()> {
    let span = u32::from(spec.port_span.max(1));
    for i in 0..spec.flows {
        let src = Ipv4Addr::from(u32::from(spec.src_base).wrapping_add(i / span));
        let sport = (u32::from(spec.first_port) + i % span) as u16;
        let out = test_run_once(
            dp.program(),
            &client_frame(src, sport, spec.dst, spec.flags),
        )?;
        let mut reply = reply_to(&out);
        reply[..6].copy_from_slice(&LB_MAC);
        test_run_once(dp.program(), &reply)?;
    }
    Ok(())
}

/// Runs `frame` through `prog` once (`BPF_PROG_TEST_RUN`) and returns the frame it left.
fn test_run_once(prog: &Xdp, frame: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; 256];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok(out)
}

/// Makes every flow of `spec` a confirmed one, as a real backend's answer would: each
/// client packet (picked up mid-stream, so unconfirmed) and the backend's reply to it go
/// through `BPF_PROG_TEST_RUN` once. Without this the lab's virtual backends never answer
/// and "established" flows would stay unconfirmed (and beyond `UNCONFIRMED_SIZE` flows,
/// churn that LRU map).
pub fn confirm_flows(dp: &Dataplane, spec: &GenSpec) -> Result<()> {
    let span = u32::from(spec.port_span.max(1));
    for i in 0..spec.flows {
        let src = Ipv4Addr::from(u32::from(spec.src_base).wrapping_add(i / span));
        let sport = (u32::from(spec.first_port) + i % span) as u16;
        let out = test_run_once(
            dp.program(),
            &client_frame(src, sport, spec.dst, spec.flags),
        )?;
        test_run_once(dp.program(), &reply_to(&out))?;
    }
    Ok(())
}

/// A destination on the lab's segment that is neither a VIP nor a SNAT address.
const NON_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// The live non-VIP scenario: its frames go up the LB's stack, which takes live frames
/// slowly on veth, so only its per-packet program time (bpf_stats) means something.
pub const NON_VIP_SCENARIO: &str = "xvip non-VIP (to the stack)";
/// Frames per generator call for non-VIP frames (bounds a call's time at the stack's pace).
const NON_VIP_BATCH: u32 = 256;

/// Replies of one flow, live: a client's ACK (through `BPF_PROG_TEST_RUN`) makes the flow,
/// the backend's first reply confirms it, the rest hit its confirmed reverse entry.
fn measure_replies(ctx: &Ctx, lab: &mut XdpLab, mode: Mode) -> Result<Vec<PpsSample>> {
    let dp = xvip_dataplane(&ctx.obj, mode, 3, 262_144)?;
    let fwd = client_frame(Ipv4Addr::new(203, 0, 113, 1), 10_000, VIP, TCP_ACK);
    let reply = reply_to(&test_run_once(dp.program(), &fwd)?);
    let ip = |at: usize| Ipv4Addr::new(reply[at], reply[at + 1], reply[at + 2], reply[at + 3]);
    let port = |at: usize| u16::from_be_bytes([reply[at], reply[at + 1]]);
    let (l3, l4) = (
        crate::bench::frame::ETH_LEN,
        crate::bench::frame::ETH_LEN + 20,
    );
    let spec = GenSpec {
        flows: 1,
        src_base: ip(l3 + 12),
        first_port: port(l4),
        port_span: 1,
        flags: TCP_ACK,
        dst: ip(l3 + 16),
    };
    // Confirm it (the backend answered), then let the client's live packets move its
    // replies to the client's interface (the test run's ingress is `lo`).
    test_run_once(dp.program(), &reply)?;
    lab.use_xvip(dp)?;
    let client = GenSpec::established(1);
    let f = lab.configure(&client)?;
    lab.blast_batches(&f, Duration::from_millis(50), GEN_BATCH, &STOP)?;
    let frame = lab.configure_to(&spec, port(l4 + 2))?;
    lab.blast(&frame, Duration::from_millis(200), &STOP)?;
    let mut v = Vec::new();
    for _ in 0..ctx.runs {
        ctx.check_stop()?;
        v.push(lab.measure(&frame, ctx.run, &STOP)?);
    }
    Ok(v)
}
