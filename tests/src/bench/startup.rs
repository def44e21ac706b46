//! The `startup` part: from exec to attached, for one node alone and for two nodes
//! started at the same moment (two hosts of one lab), each a fresh start (`ip netns exec`
//! gives every run a bpffs of its own: maps created, nothing adopted); then a restart after
//! a SIGKILL with the pins present (the host's bpffs, a pin root of the bench's own), once
//! adopting the running program and once with its marker removed (the verifier and the
//! in-place swap, the path every restart took before). The time is taken outside (spawn
//! until `xvip status` answers, which the daemon serves once attached); the daemon's own
//! log line `started in ...` splits it into its phases.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    ctx::Ctx,
    report::{Report, StartupRow},
    stats::Summary,
};
use crate::lab::{Lab, xvip_bin};

/// How long one start may take before the run counts as failed.
const START_BOUND: Duration = Duration::from_secs(60);

/// The phases of one start, as the daemon logged them (milliseconds).
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct Phases {
    pub total: f64,
    pub maps: f64,
    pub verifier: f64,
    pub insns: f64,
    pub hops: f64,
    pub table: f64,
    pub attach: f64,
}

/// Reads the daemon's `started in N ms: maps N ms, the verifier N ms (N instructions
/// processed) beside the next hops N ms, first table N ms, attach N ms` line; an adopted
/// start says `program adopted (id N, no verifier) N ms` instead (that time in `verifier`,
/// no instructions).
pub fn parse_phases(log: &str) -> Option<Phases> {
    let line = log.lines().find(|l| l.contains("started in "))?;
    let rest = &line[line.find("started in ")?..];
    let after = |key: &str| -> Option<f64> {
        let i = rest.find(key)? + key.len();
        rest[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(Phases {
        total: after("started in ")?,
        maps: after("maps ")?,
        verifier: after("the verifier ").or_else(|| after("no verifier) "))?,
        insns: if rest.contains("program adopted") {
            0.0
        } else {
            after("ms (").unwrap_or(f64::NAN)
        },
        hops: after("next hops ")?,
        table: after("first table ")?,
        attach: after("attach ")?,
    })
}

/// Starts xvip on every host of `hosts` at once; returns exec-to-answering and the
/// logged phases per host.
fn start_at_once(ctx: &Ctx, lab: &mut Lab, hosts: &[&str], run: usize) -> Result<Vec<Phases>> {
    let mut logs = Vec::new();
    let mut cmds = Vec::new();
    for h in hosts {
        let log = ctx.tmp.join(format!("startup-{h}-{run}.log"));
        let mut cmd = lab.host(h).ns.cmd(xvip_bin());
        cmd.args(["run", "--interface", "eth0", "--vip", "192.0.2.100"])
            .args(
                ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
                    .iter()
                    .flat_map(|b| ["--backend", b]),
            )
            .args(["--health", "none"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        logs.push(log);
        cmds.push(cmd);
    }
    let begun = Instant::now();
    for (h, cmd) in hosts.iter().zip(cmds) {
        lab.spawn(&format!("xvip-{h}"), cmd)?;
    }
    let mut exec_to_attached = vec![None; hosts.len()];
    while exec_to_attached.iter().any(Option::is_none) {
        ctx.check_stop()?;
        if begun.elapsed() > START_BOUND {
            bail!(
                "xvip did not attach within {START_BOUND:?} (logs in {})",
                ctx.tmp.display()
            );
        }
        for (i, h) in hosts.iter().enumerate() {
            if exec_to_attached[i].is_none() && lab.xvip_status(h).is_ok() {
                exec_to_attached[i] = Some(begun.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for h in hosts {
        lab.stop(&format!("xvip-{h}"));
    }
    let mut out = Vec::new();
    for (log, t) in logs.iter().zip(exec_to_attached) {
        let text = std::fs::read_to_string(log)?;
        let mut p = parse_phases(&text)
            .with_context(|| format!("no `started in` line in {}", log.display()))?;
        p.total = t.map_or(f64::NAN, |t| t.as_secs_f64() * 1e3);
        out.push(p);
    }
    Ok(out)
}

/// Detaches and removes the bench's own pin root, also when the part fails.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::process::Command::new(xvip_bin())
            .args(["detach", "--interface", "eth0", "--pin-root"])
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts xvip on `lb` entering only its network namespace (pins under `pin_root` on the
/// host's bpffs outlive it); returns exec-to-answering and the logged phases, and leaves it
/// running.
fn start_pinned(ctx: &Ctx, lab: &mut Lab, pin_root: &Path, log: &Path) -> Result<Phases> {
    let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
    cmd.args(["run", "--interface", "eth0", "--vip", "192.0.2.100"])
        .args(
            ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
                .iter()
                .flat_map(|b| ["--backend", b]),
        )
        .args(["--health", "none", "--pin-root"])
        .arg(pin_root)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    let begun = Instant::now();
    lab.spawn("xvip-lb", cmd)?;
    let took = loop {
        ctx.check_stop()?;
        if begun.elapsed() > START_BOUND {
            bail!(
                "xvip did not attach within {START_BOUND:?} ({})",
                log.display()
            );
        }
        if lab.xvip_status("lb").is_ok() {
            break begun.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(log)?;
    let mut p = parse_phases(&text)
        .with_context(|| format!("no `started in` line in {}", log.display()))?;
    p.total = took.as_secs_f64() * 1e3;
    Ok(p)
}

/// Restarts after a SIGKILL with the pins present, `ctx.runs` times: adopting the running
/// program, or (`drop_marker`) with its marker removed first, so the verifier runs and the
/// fresh program is swapped into the pinned link.
fn restarts(ctx: &Ctx, lab: &mut Lab, drop_marker: bool) -> Result<Vec<Phases>> {
    let root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/xvip-bench-{}",
        ctx.prefix
    )));
    let log = |i: usize| ctx.tmp.join(format!("restart-{drop_marker}-{i}.log"));
    start_pinned(ctx, lab, &root.0, &log(0))?;
    let mut out = Vec::new();
    for run in 1..=ctx.runs {
        lab.kill("xvip-lb")?;
        if drop_marker {
            for d in pin_dirs(&root.0) {
                for e in std::fs::read_dir(&d)?.filter_map(Result::ok) {
                    if e.file_name().to_string_lossy().starts_with("program-") {
                        // The marker holds the program's and its own maps' pins.
                        std::fs::remove_dir_all(e.path())?;
                    }
                }
            }
        }
        let p = start_pinned(ctx, lab, &root.0, &log(run))?;
        let adopted = p.insns == 0.0;
        if adopted == drop_marker {
            bail!(
                "restart {run}: {} (log {})",
                if adopted {
                    "adopted without a marker"
                } else {
                    "not adopted"
                },
                log(run).display()
            );
        }
        out.push(p);
    }
    lab.kill("xvip-lb")?;
    Ok(out)
}

/// The interface directories under a pin root (`<root>/<netns>/<if>`).
fn pin_dirs(root: &Path) -> Vec<PathBuf> {
    let sub = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|it| it.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    sub(root).iter().flat_map(|d| sub(d)).collect()
}

/// The `startup` part: one node alone, then two at once, `ctx.runs` times each; then the
/// restarts with pins present, adopting and not.
pub fn startup_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let hosts = [
        ("lb", Ipv4Addr::new(192, 0, 2, 2)),
        ("lb2", Ipv4Addr::new(192, 0, 2, 3)),
        ("m1", Ipv4Addr::new(192, 0, 2, 11)),
        ("m2", Ipv4Addr::new(192, 0, 2, 12)),
        ("m3", Ipv4Addr::new(192, 0, 2, 13)),
    ];
    let mut lab = Lab::new("su", &hosts)?;
    for (case, nodes) in [
        ("one node", &["lb"][..]),
        ("two nodes at once", &["lb", "lb2"][..]),
        ("restart, pins present, marker removed (verifier)", &[][..]),
        ("restart, pins present (program adopted)", &[][..]),
    ] {
        let all = if nodes.is_empty() {
            restarts(ctx, &mut lab, case.contains("marker removed"))?
        } else {
            let mut all = Vec::new();
            for run in 0..ctx.runs {
                all.extend(start_at_once(ctx, &mut lab, nodes, run)?);
            }
            all
        };
        let col = |f: fn(&Phases) -> f64| Summary::of(&all.iter().map(f).collect::<Vec<_>>());
        report.startup.push(StartupRow {
            case: case.into(),
            starts: all.len(),
            exec_to_attached_ms: col(|p| p.total),
            maps_ms: col(|p| p.maps),
            verifier_ms: col(|p| p.verifier),
            verified_insns: col(|p| p.insns),
            hops_ms: col(|p| p.hops),
            table_ms: col(|p| p.table),
            attach_ms: col(|p| p.attach),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_line_is_read_phase_by_phase() {
        let line = "2026-12-07T03:54:13Z  INFO xvip::daemon::startup: started in 4472 ms: maps 83 ms, \
                    the verifier 4297 ms (575329 instructions processed) beside the next hops 524 ms, \
                    first table 29 ms, attach 44 ms";
        let p = parse_phases(line).expect("parsed");
        assert_eq!(
            p,
            Phases {
                total: 4472.0,
                maps: 83.0,
                verifier: 4297.0,
                insns: 575_329.0,
                hops: 524.0,
                table: 29.0,
                attach: 44.0,
            }
        );
        assert!(parse_phases("attached to eth0").is_none());
        let adopted = "started in 107 ms: maps 68 ms, program adopted (id 58017, no verifier) \
                       3 ms beside the next hops 0 ms, first table 12 ms, attach 0 ms";
        let p = parse_phases(adopted).expect("parsed");
        assert_eq!(
            (p.total, p.verifier, p.insns, p.table),
            (107.0, 3.0, 0.0, 12.0)
        );
    }
}
