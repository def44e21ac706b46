//! The `storm` part: the reconnect storm after a master leaves. [`CLIENTS`] clients each
//! hold a long-lived watch (`lab-apiserver`'s `GET /watch`, a chunked line every 100 ms)
//! through the balancer; then master `m1` is killed (SIGKILL: its kernel closes every
//! connection), and each client whose watch was on `m1` reconnects at once, retrying
//! every [`RETRY`] until a new watch answers 200. The row is the time from the kill until
//! the last of them is back (and the median client's), through xvip (the daemon, full NAT,
//! TCP checks every 200 ms, out after 3 failures; passive health on) and through haproxy
//! (`mode tcp`, round robin, the same checks: `inter 200ms fall 3 rise 2`, `option
//! redispatch`), in the namespace lab of the `tcp` part.
//!
//! Every wait has a deadline; the clients run on one thread in the client's namespace
//! (a current-thread tokio runtime) and stop when the round ends.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    ctx::Ctx,
    nft::NFT_BACKENDS,
    report::{Report, StormRow},
    setup::have,
    stats::Summary,
    tcp_paths::lb_mac,
    xdp_lab::{VIP, VIP_PORT, enter_netns, sysctl},
};
use crate::lab::{Lab, MASTERS, STANDARD_HOSTS, xvip_bin};

/// Clients holding a watch each.
pub const CLIENTS: usize = 1_000;
/// A client's pause between failed reconnects.
pub const RETRY: Duration = Duration::from_millis(50);
/// How long every client has to get its first watch.
const CONNECT_WITHIN: Duration = Duration::from_secs(60);
/// How long the clients of the killed master have to come back.
const BACK_WITHIN: Duration = Duration::from_secs(30);
/// The master that leaves (its index in `MASTERS` + 1 is its server number).
const LEAVING: &str = "m1";

/// A round in which fewer than a tenth of the clients had their watch on the master that
/// left (the balancer had not put it back in rotation fully): run again.
const NOT_A_STORM: &str = "under a tenth of the clients had their watch on the master that left";

/// One client as the coordinator sees it: times in µs since the round's start, 0: not yet.
#[derive(Default)]
struct Slot {
    /// Server number (1-based index in `MASTERS`) of the first watch.
    first: AtomicU8,
    lost_us: AtomicU64,
    back_us: AtomicU64,
}

/// Opens a watch: connect, request, the answer's head; returns the stream and the server
/// number named by its `X-Lab-Server` header.
async fn open_watch(target: SocketAddr) -> Result<(tokio::net::TcpStream, u8)> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(target),
    )
    .await
    .context("connect timed out")??;
    s.write_all(b"GET /watch HTTP/1.1\r\nHost: storm\r\n\r\n")
        .await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    let end = Instant::now() + Duration::from_secs(2);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 4096 {
            bail!("answer head over 4 KiB");
        }
        let left = end.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .context("answer timed out")??;
        if n == 0 {
            bail!("closed before an answer");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        bail!("not a 200");
    }
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("x-lab-server:"))
        .map(str::trim)
        .context("no x-lab-server header")?;
    let n = MASTERS
        .iter()
        .position(|m| *m == name)
        .with_context(|| format!("unknown server {name}"))?;
    Ok((s, n as u8 + 1))
}

/// One client: a watch held until it breaks, then reconnects every [`RETRY`] until one
/// answers again; holds that one until `stop`.
async fn client(target: SocketAddr, slot: Arc<Slot>, start: Instant, stop: Arc<AtomicBool>) {
    let us = || start.elapsed().as_micros().max(1) as u64;
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, server)) = open_watch(target).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        if slot.first.load(Ordering::Relaxed) == 0 {
            slot.first.store(server, Ordering::Relaxed);
        } else if slot.lost_us.load(Ordering::Relaxed) != 0
            && slot.back_us.load(Ordering::Relaxed) == 0
        {
            slot.back_us.store(us(), Ordering::Relaxed);
        }
        // Hold the watch: read its lines until it ends or the round does.
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Err(_) | Ok(Ok(1..)) => continue,
                Ok(Ok(0) | Err(_)) => {
                    if slot.lost_us.load(Ordering::Relaxed) == 0 {
                        slot.lost_us.store(us(), Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    }
}

/// What one storm measured.
struct Round {
    affected: usize,
    /// ms from the kill to the last affected client's new watch, and to the median's.
    all_back_ms: f64,
    median_back_ms: f64,
    /// Clients on the other masters that lost their watch too.
    collateral: usize,
}

/// Lets `stop` end the clients' thread however the round ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One storm through `target`: the clients connect, `LEAVING` is killed, the clients it
/// held come back. `m1` is restarted by the caller.
fn storm(ctx: &Ctx, lab: &mut Lab, target: SocketAddr, clients: usize) -> Result<Round> {
    let slots: Arc<Vec<Arc<Slot>>> = Arc::new((0..clients).map(|_| Arc::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let ns = lab.host("client").ns.name.clone();
    let thread = {
        let (slots, stop) = (slots.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            enter_netns(&ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let tasks: Vec<_> = slots
                    .iter()
                    .map(|s| tokio::spawn(client(target, s.clone(), start, stop.clone())))
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
            Ok(())
        })
    };
    let stopper = StopOnDrop(stop.clone());
    let result = (|| -> Result<Round> {
        let connected = |slots: &[Arc<Slot>]| {
            slots
                .iter()
                .filter(|s| s.first.load(Ordering::Relaxed) != 0)
                .count()
        };
        let deadline = Instant::now() + CONNECT_WITHIN;
        while connected(&slots) < clients {
            ctx.check_stop()?;
            if Instant::now() > deadline || thread.is_finished() {
                bail!(
                    "only {} of {clients} clients got a watch within {CONNECT_WITHIN:?}",
                    connected(&slots)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Every client holds a watch; no watch may have broken before the kill.
        let early = slots
            .iter()
            .filter(|s| s.lost_us.load(Ordering::Relaxed) != 0)
            .count();
        if early > 0 {
            bail!("{early} watches broke before the master left");
        }
        let leaving = MASTERS.iter().position(|m| *m == LEAVING).unwrap_or(0) as u8 + 1;
        let on_leaving: Vec<&Arc<Slot>> = slots
            .iter()
            .filter(|s| s.first.load(Ordering::Relaxed) == leaving)
            .collect();
        if on_leaving.len() < clients / 10 {
            bail!("{NOT_A_STORM}");
        }
        let kill_us = start.elapsed().as_micros() as u64;
        lab.kill(&format!("apiserver-{LEAVING}"))?;
        let deadline = Instant::now() + BACK_WITHIN;
        loop {
            let back = on_leaving
                .iter()
                .filter(|s| s.back_us.load(Ordering::Relaxed) != 0)
                .count();
            if back == on_leaving.len() {
                break;
            }
            ctx.check_stop()?;
            if Instant::now() > deadline {
                bail!(
                    "{back} of {} clients of {LEAVING} back within {BACK_WITHIN:?}",
                    on_leaving.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut back: Vec<f64> = on_leaving
            .iter()
            .map(|s| s.back_us.load(Ordering::Relaxed).saturating_sub(kill_us) as f64 / 1e3)
            .collect();
        back.sort_by(f64::total_cmp);
        let collateral = slots
            .iter()
            .filter(|s| {
                s.first.load(Ordering::Relaxed) != leaving && s.lost_us.load(Ordering::Relaxed) != 0
            })
            .count();
        Ok(Round {
            affected: on_leaving.len(),
            all_back_ms: back.last().copied().unwrap_or(f64::NAN),
            median_back_ms: back.get(back.len() / 2).copied().unwrap_or(f64::NAN),
            collateral,
        })
    })();
    drop(stopper);
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the clients' thread panicked"))??;
    result
}

/// Waits (at most 10 s) until a new connection through `target` reaches `LEAVING` again:
/// it is back in the balancer's rotation.
fn wait_in_rotation(lab: &Lab, target: SocketAddr) -> Result<()> {
    let ns = lab.host("client").ns.name.clone();
    super::xdp_lab::with_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let leaving = MASTERS.iter().position(|m| *m == LEAVING).unwrap_or(0) as u8 + 1;
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok((_, n)) = open_watch(target).await
                    && n == leaving
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            bail!("{LEAVING} not back in rotation through {target} within 10 s")
        })
    })
}

/// `ctx.runs` storms through `target`, `LEAVING` restarted after each.
fn rounds(ctx: &Ctx, lab: &mut Lab, path: &str, target: SocketAddr) -> Result<StormRow> {
    let mut v = Vec::new();
    let mut degenerate = 0;
    while v.len() < ctx.runs {
        ctx.check_stop()?;
        wait_in_rotation(lab, target)?;
        let r = storm(ctx, lab, target, CLIENTS);
        if lab.proc_index(&format!("apiserver-{LEAVING}")).is_none() {
            lab.start_plain_apiserver(LEAVING)?;
        }
        let r = match r {
            Err(e) if e.to_string() == NOT_A_STORM && degenerate < ctx.runs => {
                degenerate += 1;
                eprintln!("   {path}: {e}; again");
                continue;
            }
            r => r?,
        };
        eprintln!(
            "   {path}: {} clients of {LEAVING} back in {:.0} ms (median {:.0} ms), {} others broken",
            r.affected, r.all_back_ms, r.median_back_ms, r.collateral
        );
        v.push(r);
    }
    let f = |g: fn(&Round) -> f64| Summary::of(&v.iter().map(g).collect::<Vec<_>>());
    Ok(StormRow {
        path: path.into(),
        clients: CLIENTS as u32,
        affected: f(|r| r.affected as f64),
        all_back_ms: f(|r| r.all_back_ms),
        median_back_ms: f(|r| r.median_back_ms),
        collateral: v.iter().map(|r| r.collateral as u64).sum(),
        rerun: degenerate as u32,
    })
}

/// Raises this process's open-file limit to its hard limit (the clients' sockets; the
/// lab's servers inherit it).
fn raise_nofile() -> Result<()> {
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
        if r.rlim_cur < 4 * CLIENTS as u64 {
            bail!(
                "open-file limit {} is below {} (the clients and the servers' sockets)",
                r.rlim_cur,
                4 * CLIENTS
            );
        }
    }
    Ok(())
}

/// The `storm` part (see the module's documentation).
pub fn storm_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    raise_nofile()?;
    let mut lab = Lab::new("bs", &STANDARD_HOSTS)?;
    for m in MASTERS {
        lab.start_plain_apiserver(m)?;
    }
    let client = &lab.host("client").ns;
    sysctl(client, "net.ipv4.ip_local_port_range=1024 65000")?;
    client.ip(&[
        "neigh",
        "replace",
        &VIP.to_string(),
        "lladdr",
        &lb_mac(&lab)?,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    let vip = SocketAddr::from((VIP, VIP_PORT));

    let pin_root = PathBuf::from(format!("/sys/fs/bpf/{}-storm", ctx.prefix));
    let mut cmd = lab.host("lb").ns.cmd(xvip_bin());
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
    ])
    .args(NFT_BACKENDS.iter().flat_map(|b| ["--backend", b]))
    .arg("--pin-root")
    .arg(&pin_root)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(ctx.out.join("xvip-storm.log"))?);
    lab.spawn("xvip", cmd)?;
    let r = super::tcp::wait_ready(&lab.host("client").ns.name, vip, Duration::from_secs(10))
        .and_then(|()| rounds(ctx, &mut lab, "through xvip (fullnat)", vip));
    lab.stop("xvip");
    let _ = std::fs::remove_dir_all(&pin_root);
    report.storms.push(r?);

    if !have("haproxy") {
        report
            .notes
            .push("haproxy missing (apt-get install -y haproxy): no haproxy storm row".into());
        return Ok(());
    }
    let cfg = ctx.tmp.join("haproxy-storm.cfg");
    let servers: String = NFT_BACKENDS
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server m{} {b}:6443 check\n", i + 1))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 8000\ndefaults\n  mode tcp\n  retries 3\n  option redispatch\n  \
             timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  \
             default-server inter 200ms fall 3 rise 2\nfrontend apiserver\n  bind 192.0.2.2:6443\n  \
             default_backend masters\nbackend masters\n  balance roundrobin\n{servers}"
        ),
    )?;
    let mut cmd = lab.host("lb").ns.cmd("haproxy");
    cmd.arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ctx.out.join("haproxy-storm.log"))?);
    lab.spawn("haproxy", cmd)?;
    let haproxy: SocketAddr = "192.0.2.2:6443".parse()?;
    let r = super::tcp::wait_ready(
        &lab.host("client").ns.name,
        haproxy,
        Duration::from_secs(10),
    )
    .and_then(|()| rounds(ctx, &mut lab, "through haproxy (mode tcp, checks)", haproxy));
    lab.stop("haproxy");
    report.storms.push(r?);
    Ok(())
}
