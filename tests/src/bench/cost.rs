//! The per-packet cost part: each packet class through `BPF_PROG_TEST_RUN`, and the helper
//! calls in the translated program.

use std::{net::Ipv4Addr, path::Path, process::Command};

use super::ctx::Ctx;
use super::setup::VIP6;
use super::setup::client_frame;
use super::setup::client_frame6;
use super::setup::xvip_dataplane;
use super::setup::xvip_dataplane6;
use super::setup::{fast_path, no_fast_path};
use crate::{
    bench::{
        frame::{TCP_ACK, TCP_SYN, reply_to, reply_to6},
        report::{CostRow, Report},
        stats::Summary,
        xdp_lab::VIP,
    },
    lab::lab_object,
};
use anyhow::{Context, Result, bail};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp};
use xvip::config::Mode;

pub(super) fn xdp_ns_repeat(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<f64> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })?;
    Ok(r.duration.as_nanos() as f64)
}

/// Average of `n` single runs, each with the frame `make(i)`; the packet is reset on every
/// call, so a class whose rewrite would change the next run's class is measured right.
fn xdp_ns_single<P>(prog: &P, n: u32, mut make: impl FnMut(u32) -> Vec<u8>) -> Result<f64>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut total = 0u128;
    for i in 0..n {
        let f = make(i);
        let r = prog.test_run(TestRunOptions {
            data_in: Some(&f),
            repeat: 1,
            ..Default::default()
        })?;
        total += r.duration.as_nanos();
    }
    Ok(total as f64 / n as f64)
}

/// The `cost` part: each packet class's cost through `BPF_PROG_TEST_RUN`, and the helper
/// calls in the translated program.
pub fn cost_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let path = lab_object();
    let mut lab = aya::Ebpf::load_file(&path).with_context(|| format!("{}", path.display()))?;
    for name in ["lab_forward", "lab_pass"] {
        let p: &mut Xdp = lab.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    let fwd: &Xdp = lab
        .program("lab_forward")
        .context("lab_forward")?
        .try_into()?;
    let pass: &Xdp = lab.program("lab_pass").context("lab_pass")?.try_into()?;
    let client = Ipv4Addr::new(203, 0, 113, 7);
    let other = Ipv4Addr::new(192, 0, 2, 50);
    let est = client_frame(client, 40000, VIP, TCP_ACK);
    let non_vip = client_frame(client, 40000, other, TCP_ACK);
    let repeat: u32 = if ctx.quick { 200_000 } else { 1_000_000 };
    let singles: u32 = if ctx.quick { 5_000 } else { 20_000 };

    let mut full = xvip_dataplane(&ctx.obj, Mode::Fullnat, 3, 1 << 20)?;
    // The tc entry (`--attach tc`) of the same object and maps: an skb per packet.
    full.tc_program()?;
    let dnat = xvip_dataplane(&ctx.obj, Mode::Dnat, 3, 1 << 20)?;
    // The flow for the established and reply classes, and the reply a backend sends.
    let mut out = vec![0u8; 256];
    let r = full.program().test_run(TestRunOptions {
        data_in: Some(&est),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    })?;
    let reply = reply_to(&out[..r.data_size_out as usize]);

    // IPv6 beside IPv4 in the same run: the same classes through a v6 VIP.
    let mut full6 = xvip_dataplane6(&ctx.obj, 1 << 20)?;
    let (client6, vip6): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        ("2001:db8:ff::7".parse()?, VIP6.parse()?);
    let est6 = client_frame6(client6, 40000, vip6, TCP_ACK);
    let non_vip6 = client_frame6(client6, 40000, "2001:db8::50".parse()?, TCP_ACK);
    let r6 = full6.program().test_run(TestRunOptions {
        data_in: Some(&est6),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    })?;
    anyhow::ensure!(
        r6.return_value == 3,
        "the v6 flow's first packet was not forwarded"
    );
    let reply6 = reply_to6(&out[..r6.data_size_out as usize]);
    // The backends' first answers confirm both flows (picked up mid-stream), so the
    // established and reply rows measure confirmed entries from the first run on.
    for (dp, frame) in [(&full, &reply), (&full6, &reply6)] {
        let r = dp.program().test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })?;
        anyhow::ensure!(
            r.return_value == 3,
            "a backend's first answer was not sent back"
        );
    }
    // Then data both ways (the backend's, the client's) makes them established, the
    // state of a long-lived connection and the established fast path's.
    for (dp, frames) in [(&full, [&reply, &est]), (&full6, [&reply6, &est6])] {
        for frame in frames {
            let r = dp.program().test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })?;
            anyhow::ensure!(
                r.return_value == 3,
                "an established flow's packet was not sent"
            );
        }
    }

    let mut rows: Vec<(String, String, String, Vec<f64>)> = Vec::new();
    let mut add = |class: &str, program: &str, method: String, v: f64| match rows
        .iter_mut()
        .find(|r| r.0 == class && r.1 == program && r.2 == method)
    {
        Some(r) => r.3.push(v),
        None => rows.push((class.into(), program.into(), method, vec![v])),
    };
    let mut next_port = 0u32;
    for _ in 0..ctx.runs {
        ctx.check_stop()?;
        let rep = format!("repeat {repeat}");
        add(
            "bare forward (swap, XDP_TX)",
            "lab_forward",
            rep.clone(),
            xdp_ns_repeat(fwd, &est, repeat)?,
        );
        add(
            "bare pass",
            "lab_pass",
            rep.clone(),
            xdp_ns_repeat(pass, &non_vip, repeat)?,
        );
        add(
            "non-VIP (XDP_PASS)",
            "xvip",
            rep.clone(),
            xdp_ns_repeat(full.program(), &non_vip, repeat)?,
        );
        let one = format!("{singles} × repeat 1");
        add(
            "bare forward (swap, XDP_TX)",
            "lab_forward",
            one.clone(),
            xdp_ns_single(fwd, singles, |_| est.clone())?,
        );
        add(
            "non-VIP (XDP_PASS)",
            "xvip",
            one.clone(),
            xdp_ns_single(full.program(), singles, |_| non_vip.clone())?,
        );
        add(
            "established (conntrack hit), fullnat",
            "xvip",
            one.clone(),
            xdp_ns_single(full.program(), singles, |_| est.clone())?,
        );
        add(
            "reply (reverse hit), fullnat",
            "xvip",
            one.clone(),
            xdp_ns_single(full.program(), singles, |_| reply.clone())?,
        );
        // The same classes through the full path alone (as before the fast path).
        no_fast_path(&mut full, Mode::Fullnat)?;
        no_fast_path(&mut full6, Mode::Fullnat)?;
        for (class, dp, frame) in [
            (
                "established (conntrack hit), fullnat, full path",
                &full,
                &est,
            ),
            ("reply (reverse hit), fullnat, full path", &full, &reply),
            (
                "IPv6 established (conntrack hit), fullnat, full path",
                &full6,
                &est6,
            ),
            (
                "IPv6 reply (reverse hit), fullnat, full path",
                &full6,
                &reply6,
            ),
        ] {
            add(
                class,
                "xvip",
                one.clone(),
                xdp_ns_single(dp.program(), singles, |_| frame.clone())?,
            );
        }
        fast_path(&mut full, Mode::Fullnat, true)?;
        fast_path(&mut full6, Mode::Fullnat, true)?;
        let tc: &SchedClassifier = full.tc_program_loaded().context("tc entry")?;
        add(
            "non-VIP (tc: TC_ACT_UNSPEC)",
            "xvip_tc",
            one.clone(),
            xdp_ns_single(tc, singles, |_| non_vip.clone())?,
        );
        add(
            "established (conntrack hit), fullnat",
            "xvip_tc",
            one.clone(),
            xdp_ns_single(tc, singles, |_| est.clone())?,
        );
        add(
            "reply (reverse hit), fullnat",
            "xvip_tc",
            one.clone(),
            xdp_ns_single(tc, singles, |_| reply.clone())?,
        );
        for (name, dp) in [("new flow, fullnat", &full), ("new flow, dnat", &dnat)] {
            // Fresh flows each time: client ports 1024.. across 198.51.100.0/24.
            let base = next_port;
            next_port += singles;
            let v = xdp_ns_single(dp.program(), singles, |i| {
                let k = base + i;
                let src = Ipv4Addr::new(198, 51, 100, (k / 60_000 % 250) as u8 + 1);
                client_frame(src, 1024 + (k % 60_000) as u16, VIP, TCP_SYN)
            })?;
            add(name, "xvip", one.clone(), v);
        }
        add(
            "IPv6 non-VIP (XDP_PASS)",
            "xvip",
            one.clone(),
            xdp_ns_single(full6.program(), singles, |_| non_vip6.clone())?,
        );
        add(
            "IPv6 established (conntrack hit), fullnat",
            "xvip",
            one.clone(),
            xdp_ns_single(full6.program(), singles, |_| est6.clone())?,
        );
        add(
            "IPv6 reply (reverse hit), fullnat",
            "xvip",
            one.clone(),
            xdp_ns_single(full6.program(), singles, |_| reply6.clone())?,
        );
        let base = next_port;
        next_port += singles;
        let v = xdp_ns_single(full6.program(), singles, |i| {
            let k = base + i;
            let src =
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xfe, 0, 0, 0, 0, (k / 60_000) as u16 + 1);
            client_frame6(src, 1024 + (k % 60_000) as u16, vip6, TCP_SYN)
        })?;
        add("IPv6 new flow, fullnat", "xvip", one.clone(), v);
    }
    match xlated_calls(full.program(), &ctx.out.join("xvip.xlated.txt")) {
        Ok(c) => report.xlated_calls = c,
        Err(e) => report.notes.push(format!(
            "no call breakdown (bpftool prog dump xlated): {e:#}"
        )),
    }
    for (class, program, method, v) in rows {
        report.costs.push(CostRow {
            class,
            program,
            method,
            ns: Summary::of(&v),
        });
    }
    Ok(())
}

/// The call sites of a loaded program's translated code by target (`bpftool prog dump
/// xlated`, also saved to `save`): `call bpf_ktime_get_ns#...`, `call __htab_map_lookup_elem#...`.
fn xlated_calls(prog: &Xdp, save: &Path) -> Result<Vec<(String, usize)>> {
    let id = prog.info()?.id();
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()
        .context("running bpftool (Debian package bpftool)")?;
    if !out.status.success() {
        bail!("bpftool: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::write(save, text.as_bytes())?;
    let mut calls: Vec<(String, usize)> = Vec::new();
    for target in text.lines().filter_map(call_target) {
        match calls.iter_mut().find(|c| c.0 == target) {
            Some(c) => c.1 += 1,
            None => calls.push((target.to_string(), 1)),
        }
    }
    calls.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(calls)
}

/// `  12: (85) call bpf_ktime_get_ns#125` -> `bpf_ktime_get_ns`.
fn call_target(line: &str) -> Option<&str> {
    let rest = line.split_once(") call ")?.1;
    Some(rest.split(['#', ' ']).next().unwrap_or(rest))
}
