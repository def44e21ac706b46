//! The `pps-tc` part: packet rates of xvip at XDP and at tc ingress (`--attach tc`) side by
//! side, in the one-armed veth lab, fed by the `AF_PACKET` generator ([`RawGen`]) because
//! the kernel may refuse `lab_gen`'s live-frames runs (see `raw_gen`). The same generator
//! feeds the bare XDP forwarder as the rows' limit. Every frame goes through the transmit
//! path of `g0` and the receive path of `l0`, on the generator's CPU: these rows compare
//! the two attach points with each other, not with the `xdp`-generator rows of `pps`.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use xvip::{
    config::{Mode, XdpAttachMode},
    dataplane::{Dataplane, pins::Placement},
};

use super::{
    ctx::{Ctx, STOP},
    pps::{PpsCase, confirm_flows, pps_row, warm_for},
    raw_gen::{RAW_BATCH, RawGen},
    report::Report,
    setup::{mode_name, xvip_dataplane},
    stats::{cpu_times, cpu_use},
    xdp_lab::{
        GEN_DEV, GenSpec, LB_DEV, PpsSample, XdpLab, ns_per_run, pin_to_cpu, reason_deltas,
        run_stats, with_netns,
    },
};
/// Generator name of these rows.
const GENERATOR: &str = "raw";

/// Sends `spec`'s flows from `g0` for `dur` on CPU 0; returns (frames the kernel took,
/// wall time). Bounded in time and in batches (1 Mpps is well above what one `AF_PACKET`
/// thread reaches).
fn send_for(lab: &XdpLab, spec: GenSpec, frame: &[u8], dur: Duration) -> Result<(u64, Duration)> {
    let frame = frame.to_vec();
    with_netns(&lab.genns.name, move || {
        pin_to_cpu(0)?;
        let mut generator = RawGen::open(GEN_DEV, spec, frame, false)?;
        let max_batches = (dur.as_secs_f64() * 1e6 / RAW_BATCH as f64) as u64 + 1_000;
        let start = Instant::now();
        let end = start + dur;
        let mut sent = 0u64;
        for _ in 0..max_batches {
            if Instant::now() >= end || STOP.load(Ordering::Relaxed) {
                break;
            }
            sent += generator.send(RAW_BATCH)? as u64;
        }
        Ok((sent, start.elapsed()))
    })
}

/// (run time, run count) of whatever runs on `l0` for this row.
fn stats(lab: &XdpLab, dp: Option<&Dataplane>, at: Placement) -> Option<(Duration, u64)> {
    match (dp, at) {
        (Some(dp), Placement::Xdp) => run_stats(dp.program()),
        (Some(dp), Placement::Tc) => {
            let info = dp.tc_program_loaded()?.info().ok()?;
            Some((info.run_time(), info.run_count()))
        }
        (None, _) => lab.under_test().and_then(run_stats),
    }
}

/// Warms up, then measures `ctx.runs` runs of `spec` against what runs on `l0`.
fn measure(
    ctx: &Ctx,
    lab: &mut XdpLab,
    dp: Option<&Dataplane>,
    at: Placement,
    spec: GenSpec,
) -> Result<Vec<PpsSample>> {
    let frame = lab.configure(&spec)?;
    send_for(lab, spec, &frame, warm_for(spec.flows))?;
    let reasons = |dp: Option<&Dataplane>| -> Result<Vec<u64>> {
        dp.map_or(Ok(Vec::new()), |d| Ok(d.snapshot(&[])?.reasons))
    };
    let mut v = Vec::new();
    for _ in 0..ctx.runs {
        ctx.check_stop()?;
        let s0 = lab.sink_count()?;
        let r0 = reasons(dp)?;
        let p0 = stats(lab, dp, at);
        let c0 = cpu_times(Some(1));
        let (sent, wall) = send_for(lab, spec, &frame, ctx.run)?;
        let c1 = cpu_times(Some(1));
        // Let the last batch leave the veth rings and the backlog before counting it.
        std::thread::sleep(Duration::from_millis(20));
        let got = lab.sink_count()?.saturating_sub(s0) as f64;
        let r1 = reasons(dp)?;
        let p1 = stats(lab, dp, at);
        let secs = wall.as_secs_f64();
        v.push(PpsSample {
            pps_in: sent as f64 / secs,
            pps_out: got / secs,
            loss: if sent > 0 {
                (1.0 - got / sent as f64).max(0.0)
            } else {
                0.0
            },
            cpu: cpu_use(c0, c1),
            reasons: reason_deltas(&r0, &r1),
            prog_ns: ns_per_run(p0, p1),
        });
    }
    Ok(v)
}

/// The `pps-tc` part (see the module's text).
pub fn pps_tc_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let mut lab = XdpLab::new(&format!("{}-t", ctx.prefix), 1)?;
    let est = 1_000u32;
    let spec = GenSpec::established(est);

    lab.use_forward()?;
    let s = measure(ctx, &mut lab, None, Placement::Xdp, spec)?;
    report.pps.push(pps_row(
        PpsCase {
            scenario: "limit: bare XDP forward",
            generator: GENERATOR,
            mode: "-",
            flows: est as u64,
            backends: 0,
        },
        &s,
    ));
    lab.clear()?;

    for mode in [Mode::Fullnat, Mode::Dnat] {
        for (at, scenario) in [
            (Placement::Xdp, "xvip established at XDP"),
            (Placement::Tc, "xvip established at tc"),
        ] {
            ctx.check_stop()?;
            let mut dp = xvip_dataplane(&ctx.obj, mode, 3, 262_144)?;
            confirm_flows(&dp, &spec)?;
            with_netns(&lab.lb.name, || {
                dp.attach(LB_DEV, XdpAttachMode::Native, at)
                    .with_context(|| format!("attaching xvip to {LB_DEV} at {at:?}"))?;
                Ok(())
            })?;
            let s = measure(ctx, &mut lab, Some(&dp), at, spec)?;
            report.pps.push(pps_row(
                PpsCase {
                    scenario,
                    generator: GENERATOR,
                    mode: mode_name(mode),
                    flows: est as u64,
                    backends: 3,
                },
                &s,
            ));
            // Dropping the data path closes its link: l0 is free for the next row.
            drop(dp);
        }
    }
    Ok(())
}
