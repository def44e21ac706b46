//! The cost of conntrack sync (`--sync-key-file`): two VRRP nodes in front of three plain
//! HTTP API servers, a new connection per request from the client (the TCP load), once
//! without sync and once with it. Per new flow: bytes the master sent, records, and the CPU
//! time of the master's and the backup's xvip processes (all threads, from
//! `/proc/PID/stat`); beside the new-flow rate with sync off and on.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Stdio,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{ctx::Ctx, ctx::STOP, report::Report};
use super::{
    report::cell,
    stats::Summary,
    tcp::{self, TcpSample},
};
use crate::lab::{Lab, MASTERS, sh, xvip_bin};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const WORKERS: usize = 32;

/// One configuration's figures (medians over the runs in the summaries).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncRow {
    pub sync: bool,
    pub conns_per_s: Summary,
    /// Sync UDP payload bytes the master sent per new flow.
    pub bytes_per_flow: Summary,
    /// Records the master sent per new flow (confirmed, closing, removed).
    pub records_per_flow: Summary,
    /// CPU time of the master's xvip (all threads) per new flow, microseconds.
    pub master_cpu_us_per_flow: Summary,
    /// The same for the backup (receiving and installing).
    pub backup_cpu_us_per_flow: Summary,
    /// Records the backup installed per new flow.
    pub installed_per_flow: Summary,
    pub errors: u64,
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_s(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn status(lab: &Lab, host: &str) -> Result<xvip::api::document::Status> {
    lab.xvip_status(host)
}

/// Sent bytes, sent records (master) and installed records (backup), zero without sync.
fn counters(lab: &Lab) -> (u64, u64, u64) {
    let m = status(lab, "lb1").ok().and_then(|s| s.sync);
    let b = status(lab, "lb2").ok().and_then(|s| s.sync);
    (
        m.as_ref().map_or(0, |s| s.sent_bytes),
        m.as_ref().map_or(0, |s| s.sent_records),
        b.map_or(0, |s| s.installed),
    )
}

fn one_config(
    sync: bool,
    runs: usize,
    run: Duration,
    stop: &AtomicBool,
    tmp: &Path,
    prefix: &str,
) -> Result<SyncRow> {
    let mut lab = Lab::new(
        if sync { "bsy" } else { "bsn" },
        &[
            ("client", Ipv4Addr::new(192, 0, 2, 10)),
            ("lb1", Ipv4Addr::new(192, 0, 2, 2)),
            ("lb2", Ipv4Addr::new(192, 0, 2, 3)),
            ("m1", Ipv4Addr::new(192, 0, 2, 11)),
            ("m2", Ipv4Addr::new(192, 0, 2, 12)),
            ("m3", Ipv4Addr::new(192, 0, 2, 13)),
        ],
    )?;
    for m in MASTERS {
        lab.start_plain_apiserver(m)?;
    }
    let client = &lab.host("client").ns;
    sh(client
        .cmd("sysctl")
        .args(["-qw", "net.ipv4.ip_local_port_range=1024 65000"]))?;
    sh(client
        .cmd("sysctl")
        .args(["-qw", "net.ipv4.tcp_tw_reuse=1"]))?;
    let key = tmp.join("sync.key");
    std::fs::write(&key, [0x5a; 32])?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let mut pids = Vec::new();
    for (host, prio) in [("lb1", "150"), ("lb2", "100")] {
        let pin_root = format!("/sys/fs/bpf/{prefix}-sync-{host}");
        let mut cmd = lab.host(host).ns.cmd(xvip_bin());
        cmd.args([
            "run",
            "--interface",
            "eth0",
            "--vip",
            &VIP.to_string(),
            "--health",
            "tcp",
            "--xdp-mode",
            "native",
            "--backend",
            "192.0.2.11",
            "--backend",
            "192.0.2.12",
            "--backend",
            "192.0.2.13",
            "--vrrp-vrid",
            "51",
            "--vrrp-priority",
            prio,
            "--pin-root",
            &pin_root,
        ]);
        if sync {
            cmd.arg("--sync-key-file").arg(&key);
        }
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        pids.push(lab.spawn(&format!("xvip-{host}"), cmd)?.child.id());
    }
    let end = Instant::now() + Duration::from_secs(15);
    while !status(&lab, "lb1")
        .ok()
        .and_then(|s| s.vrrp)
        .is_some_and(|v| v.state == "master")
    {
        if Instant::now() > end {
            bail!("lb1 did not become VRRP master");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ns = lab.host("client").ns.name.clone();
    let target = SocketAddr::V4(SocketAddrV4::new(VIP, 6443));
    tcp::wait_ready(&ns, target, Duration::from_secs(10))?;
    tcp::load(&ns, target, Duration::from_millis(500), WORKERS, stop)?;
    std::thread::sleep(Duration::from_millis(200));
    let mut samples: Vec<(TcpSample, [f64; 5])> = Vec::new();
    for _ in 0..runs {
        let (b0, r0, i0) = counters(&lab);
        let (m0, k0) = (cpu_s(pids[0])?, cpu_s(pids[1])?);
        let s = tcp::load(&ns, target, run, WORKERS, stop)?;
        // The last batch leaves within 10 ms; a FIN's closing record with the connection.
        std::thread::sleep(Duration::from_millis(100));
        let (m1, k1) = (cpu_s(pids[0])?, cpu_s(pids[1])?);
        let (b1, r1, i1) = counters(&lab);
        let flows = s.ok.max(1) as f64;
        samples.push((
            s,
            [
                (b1 - b0) as f64 / flows,
                (r1 - r0) as f64 / flows,
                (m1 - m0) * 1e6 / flows,
                (k1 - k0) * 1e6 / flows,
                (i1 - i0) as f64 / flows,
            ],
        ));
    }
    let col = |i: usize| Summary::of(&samples.iter().map(|(_, v)| v[i]).collect::<Vec<_>>());
    let row = SyncRow {
        sync,
        conns_per_s: Summary::of(
            &samples
                .iter()
                .map(|(s, _)| s.conns_per_s)
                .collect::<Vec<_>>(),
        ),
        bytes_per_flow: col(0),
        records_per_flow: col(1),
        master_cpu_us_per_flow: col(2),
        backup_cpu_us_per_flow: col(3),
        installed_per_flow: col(4),
        errors: samples.iter().map(|(s, _)| s.errors).sum(),
    };
    eprintln!(
        "   sync {:<3} {:>8.0} conn/s  {:.0} B/flow  {:.2} records/flow  master {:.1} µs/flow  backup {:.1} µs/flow",
        if sync { "on" } else { "off" },
        row.conns_per_s.median,
        row.bytes_per_flow.median,
        row.records_per_flow.median,
        row.master_cpu_us_per_flow.median,
        row.backup_cpu_us_per_flow.median
    );
    for p in ["lb1", "lb2"] {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{prefix}-sync-{p}"));
    }
    Ok(row)
}

/// Both configurations, sync off first.
///
/// # Errors
/// A lab or load failure.
pub fn measure(
    runs: usize,
    run: Duration,
    stop: &AtomicBool,
    tmp: &Path,
    prefix: &str,
) -> Result<Vec<SyncRow>> {
    Ok(vec![
        one_config(false, runs, run, stop, tmp, prefix)?,
        one_config(true, runs, run, stop, tmp, prefix)?,
    ])
}

/// The report's section.
pub fn markdown(rows: &[SyncRow]) -> String {
    let mut m = String::new();
    m.push_str(
        "Two VRRP nodes (lb1 master, lb2 backup) in full NAT, a new connection per request from 32 client threads; CPU is the xvip processes' (all threads, /proc/PID/stat, 10 ms ticks), per completed connection.\n\n",
    );
    m.push_str("| sync | connections/s | sent bytes/flow | records/flow | master CPU µs/flow | backup CPU µs/flow | installed/flow | errors |\n|---|---|---|---|---|---|---|---:|\n");
    for r in rows {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            if r.sync { "on" } else { "off" },
            cell(&r.conns_per_s, 1.0, 0),
            cell(&r.bytes_per_flow, 1.0, 0),
            cell(&r.records_per_flow, 1.0, 2),
            cell(&r.master_cpu_us_per_flow, 1.0, 1),
            cell(&r.backup_cpu_us_per_flow, 1.0, 1),
            cell(&r.installed_per_flow, 1.0, 2),
            r.errors
        );
    }
    m
}

/// The `sync` part: conntrack sync off and on.
pub fn sync_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    report.sync = measure(ctx.runs, ctx.run, &STOP, &ctx.tmp, &ctx.prefix)?;
    Ok(())
}
