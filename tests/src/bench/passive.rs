//! The `passive` part: what passive health's counting adds to a packet. In xvip it is one
//! per-CPU array counter of the backend, bumped on a new flow's SYN and on the backend's
//! first answer (`lb-ebpf/src/stats.rs` `count_handshake`); it cannot be turned off at run
//! time, so the SYN path with and without it cannot be timed apart in one object. Measured
//! instead: the lab's `lab_pass` and `lab_passive` (the same plus that counter update, on
//! an index the verifier cannot know) through `BPF_PROG_TEST_RUN`, taken in turns, and the
//! difference of each pair of runs.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::programs::Xdp;

use super::cost::xdp_ns_repeat;
use super::ctx::Ctx;
use super::frame::TCP_SYN;
use super::report::{CostRow, Report};
use super::setup::client_frame;
use super::stats::Summary;
use super::xdp_lab::VIP;
use crate::lab::lab_object;

/// Runs the two programs in turns, `ctx.runs` times (at least 5).
pub fn passive_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let path = lab_object();
    let mut lab = aya::Ebpf::load_file(&path).with_context(|| format!("{}", path.display()))?;
    for name in ["lab_pass", "lab_passive"] {
        let p: &mut Xdp = lab.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    let pass: &Xdp = lab.program("lab_pass").context("lab_pass")?.try_into()?;
    let counted: &Xdp = lab
        .program("lab_passive")
        .context("lab_passive")?
        .try_into()?;
    let syn = client_frame(Ipv4Addr::new(203, 0, 113, 7), 40000, VIP, TCP_SYN);
    let repeat: u32 = if ctx.quick { 200_000 } else { 1_000_000 };
    let (mut bare, mut with, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs.max(5) {
        ctx.check_stop()?;
        let a = xdp_ns_repeat(pass, &syn, repeat)?;
        let b = xdp_ns_repeat(counted, &syn, repeat)?;
        bare.push(a);
        with.push(b);
        diff.push(b - a);
    }
    let method = format!("repeat {repeat}, in turns");
    for (class, program, v) in [
        ("bare pass (passive part)", "lab_pass", bare),
        ("pass + one passive-health counter", "lab_passive", with),
        (
            "passive-health counter alone (difference)",
            "lab_passive - lab_pass",
            diff,
        ),
    ] {
        report.costs.push(CostRow {
            class: class.into(),
            program: program.into(),
            method: method.clone(),
            ns: Summary::of(&v),
        });
    }
    Ok(())
}
