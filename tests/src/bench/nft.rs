//! The nftables part: nftables DNAT (and xvip beside it) fed by trafgen, the kernel path
//! needing socket buffers.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use super::ctx::Ctx;
use super::pps::PpsCase;
use super::pps::pps_row;
use super::setup::have;
use super::setup::xvip_dataplane;
use crate::{
    bench::{
        report::Report,
        xdp_lab::{
            GEN_MAC, LB_DEV, LB_MAC, PpsSample, VIP, VIP_PORT, XdpLab, mac_str, ns_per_run,
            run_stats, sysctl,
        },
    },
    lab::{Proc, sh},
};
use anyhow::{Context, Result, bail};
use xvip::config::Mode;

fn link_tx_packets(ns: &crate::lab::Netns, dev: &str) -> Result<u64> {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .context("no tx packets in `ip -s -j link`")
}

/// Flows of the trafgen runs: two counters of coprime-ish periods (client address 1-8,
/// port low byte 0-249) give lcm(8, 250) = 1000 distinct flows.
const TRAFGEN_FLOWS: u32 = 1000;

fn trafgen_conf(tmp: &Path) -> Result<PathBuf> {
    let p = tmp.join("trafgen.cfg");
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let [v0, v1, v2, v3] = VIP.octets();
    let payload = crate::bench::xdp_lab::FRAME_PAYLOAD;
    let conf = format!(
        "{{\n  {}, {}, c16(0x0800),\n  0x45, 0x00, c16({}), c16(0), c16(0x4000), 64, 6, csumip(14, 33), 203, 0, 113, dinc(1, 8), {v0}, {v1}, {v2}, {v3},\n  0x27, dinc(0, 249), c16({VIP_PORT}), c32(1), c32(1), 0x50, 0x10, c16(65535), csumtcp(14, 34), c16(0),\n  fill(0x00, {payload})\n}}\n",
        mac(LB_MAC),
        mac(GEN_MAC),
        20 + 20 + payload,
    );
    std::fs::write(&p, conf)?;
    Ok(p)
}

/// Runs trafgen in the generator namespace and measures `ctx.runs` windows.
fn measure_trafgen(ctx: &Ctx, lab: &XdpLab, conf: &Path) -> Result<Vec<PpsSample>> {
    let mut cmd = lab.genns.cmd("trafgen");
    cmd.args(["--dev", "g0", "--conf"])
        .arg(conf)
        .args(["--cpus", &ctx.gen_cpus.to_string(), "--no-cpu-stats"])
        .stdin(Stdio::null());
    let log = std::fs::File::create(ctx.out.join("trafgen.log"))?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let child = cmd
        .spawn()
        .context("starting trafgen (Debian package netsniff-ng)")?;
    let mut proc = Proc {
        name: "trafgen".into(),
        child,
    };
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(st)) = proc.child.try_wait() {
        let log = std::fs::read_to_string(ctx.out.join("trafgen.log")).unwrap_or_default();
        bail!("trafgen exited at once ({st}): {}", log.trim());
    }
    let mut v = Vec::new();
    for _ in 0..ctx.runs {
        ctx.check_stop()?;
        let r0 = lab.reasons()?;
        let p0 = lab.under_test().and_then(run_stats);
        let tx0 = link_tx_packets(&lab.genns, "g0")?;
        let s0 = lab.sink_count()?;
        let c0 = crate::bench::stats::cpu_times(Some(ctx.gen_cpus as usize));
        let t = Instant::now();
        std::thread::sleep(ctx.run);
        let tx1 = link_tx_packets(&lab.genns, "g0")?;
        let s1 = lab.sink_count()?;
        let c1 = crate::bench::stats::cpu_times(Some(ctx.gen_cpus as usize));
        let r1 = lab.reasons()?;
        let p1 = lab.under_test().and_then(run_stats);
        let secs = t.elapsed().as_secs_f64();
        let sent = tx1.saturating_sub(tx0) as f64;
        let got = s1.saturating_sub(s0) as f64;
        v.push(PpsSample {
            pps_in: sent / secs,
            pps_out: got / secs,
            loss: if sent > 0.0 {
                (1.0 - got / sent).max(0.0)
            } else {
                0.0
            },
            cpu: crate::bench::stats::cpu_use(c0, c1),
            reasons: crate::bench::xdp_lab::reason_deltas(&r0, &r1),
            prog_ns: ns_per_run(p0, p1),
        });
    }
    proc.signal(libc::SIGINT);
    drop(proc);
    Ok(v)
}

/// The masters nftables DNATs to.
pub const NFT_BACKENDS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];

/// The nftables ruleset of the baseline (DNAT to the three masters; `masquerade`: SNAT too).
pub fn nft_rules(masquerade: bool) -> String {
    let map = NFT_BACKENDS
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = format!(
        "table ip xvipbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n    ip daddr {VIP} tcp dport {VIP_PORT} dnat to numgen inc mod 3 map {{ {map} }}\n  }}\n"
    );
    if masquerade {
        r.push_str(&format!(
            "  chain post {{\n    type nat hook postrouting priority srcnat;\n    ip daddr {{ {} }} masquerade\n  }}\n",
            NFT_BACKENDS.join(", ")
        ));
    }
    r.push_str("}\n");
    r
}

/// The `nft` part: nftables DNAT and xvip fed by trafgen.
pub fn nft_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    for tool in ["trafgen", "nft"] {
        if !have(tool) {
            bail!("{tool} is missing: apt-get install -y netsniff-ng nftables");
        }
    }
    let flows = TRAFGEN_FLOWS;
    let mut lab = XdpLab::new(&format!("{}-n", ctx.prefix), ctx.gen_cpus)?;
    let conf = trafgen_conf(&ctx.tmp)?;

    // xvip fed by the same generator, for a like-for-like ratio.
    lab.use_xvip(xvip_dataplane(&ctx.obj, Mode::Fullnat, 3, 262_144)?)?;
    let s = measure_trafgen(ctx, &lab, &conf)?;
    report.pps.push(pps_row(
        PpsCase {
            scenario: "xvip established",
            generator: "trafgen",
            mode: "fullnat",
            flows: flows as u64,
            backends: 3,
        },
        &s,
    ));
    lab.clear()?;

    let lb = &lab.lb;
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        &format!("net.ipv4.conf.{LB_DEV}.send_redirects=0"),
        "net.ipv4.conf.all.rp_filter=0",
        &format!("net.ipv4.conf.{LB_DEV}.rp_filter=0"),
    ] {
        sysctl(lb, kv)?;
    }
    for b in NFT_BACKENDS {
        lb.ip(&[
            "neigh",
            "replace",
            b,
            "lladdr",
            &mac_str(GEN_MAC),
            "dev",
            LB_DEV,
            "nud",
            "permanent",
        ])?;
    }
    for (mode, masq) in [("dnat", false), ("dnat+masquerade", true)] {
        ctx.check_stop()?;
        let rules = ctx.tmp.join("rules.nft");
        std::fs::write(&rules, nft_rules(masq))?;
        sh(lb.cmd("nft").arg("-f").arg(&rules))?;
        // The window check would call our repeated segments invalid; kube-proxy clusters
        // often run liberal too. Only exists once conntrack is loaded.
        let _ = sysctl(lb, "net.netfilter.nf_conntrack_tcp_be_liberal=1");
        let s = measure_trafgen(ctx, &lab, &conf);
        let _ = sh(lb.cmd("nft").args(["flush", "ruleset"]));
        report.pps.push(pps_row(
            PpsCase {
                scenario: "nftables DNAT",
                generator: "trafgen",
                mode,
                flows: flows as u64,
                backends: 3,
            },
            &s?,
        ));
    }
    Ok(())
}
