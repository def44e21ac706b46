//! The `peers` part: Katran's XDP balancer (facebookincubator/katran, `balancer.bpf.c`,
//! formerly `balancer_kern.c`) beside xvip, packet class by packet class, through
//! `BPF_PROG_TEST_RUN` single runs (kernel-timed, each on a fresh copy of the frame) at
//! 1,000 and 100,000 flows.
//!
//! Katran's code is not in this tree: the bench takes a checkout from `XVIP_KATRAN_SRC`
//! (a directory holding `katran/lib/bpf/balancer.bpf.c`), else clones it from GitHub
//! into its temporary directory, builds it with clang (`-DMAX_CONN_RATE` raised, so that
//! filling 100,000 flows in a second is not taken for a flood), loads and pins it with
//! bpftool (libbpf) and configures it: one VIP, three reals, the VIP's consistent-hash
//! ring, the next hop's MAC, and one LRU per CPU in `lru_mapping` (as Katran's own
//! loader does). Without clang, bpftool or a source the part is skipped with a note.
//!
//! What each does per packet: Katran looks the VIP up (hash), the flow up in its CPU's
//! LRU (a hash of the 5-tuple; a miss picks the real from the ring and inserts it), reads
//! the real, and encapsulates the frame in IPIP towards it (`bpf_xdp_adjust_head`, a new
//! outer IPv4 header and its checksum): the real answers the client directly (DSR), so
//! Katran never sees replies and keeps no reverse state. xvip translates: it rewrites the
//! addresses and ports (DNAT; full NAT also the source), keeps a forward and a reverse
//! entry per flow, follows TCP state, checks the tuple's ownership, and sees the replies.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use xvip::{config::Mode, dataplane::Dataplane};

use super::{
    ctx::Ctx,
    frame::{TCP_ACK, TCP_SYN, reply_to},
    report::{PeerRow, Report},
    setup::{client_frame, have, mode_name, no_fast_path, xvip_dataplane},
    stats::Summary,
    xdp_lab::{GEN_MAC, VIP, VIP_PORT, pin_to_cpu},
};

/// Katran's `RING_SIZE` (balancer_consts.h).
const KATRAN_RING: u32 = 65_537;
/// Entries of each per-CPU LRU, and of xvip's flow maps: room for the largest table.
const FLOW_ROOM: u32 = 262_144;
/// Table sizes measured.
pub const PEER_FLOWS: [u32; 2] = [1_000, 100_000];
/// The reals (xvip's backends) of the lab.
const REALS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
    Ipv4Addr::new(192, 0, 2, 13),
];
/// Ports per client address of the established flows.
const PORTS_PER_ADDR: u32 = 50_000;

#[repr(C)]
#[derive(Clone, Copy)]
struct VipDef {
    addr: [u32; 4],
    port: u16,
    proto: u8,
    _pad: u8,
}
// SAFETY: plain integers, no padding left implicit.
unsafe impl Pod for VipDef {}

#[repr(C)]
#[derive(Clone, Copy)]
struct VipMeta {
    flags: u32,
    vip_num: u32,
}
// SAFETY: plain integers.
unsafe impl Pod for VipMeta {}

#[repr(C)]
#[derive(Clone, Copy)]
struct RealDef {
    addr: [u32; 4],
    flags: u8,
    _pad: [u8; 3],
}
// SAFETY: plain integers, no padding left implicit.
unsafe impl Pod for RealDef {}

/// Katran built, loaded and pinned under a directory of the bench's own; the pins go
/// when it drops (the program and maps with them).
struct Katran {
    pins: PathBuf,
    prog: std::os::fd::OwnedFd,
}

impl Drop for Katran {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("failed")
        );
    }
    Ok(())
}

/// A Katran checkout: `XVIP_KATRAN_SRC`, else a shallow clone into the bench's temporary
/// directory. `Err` says why there is none.
fn katran_source(ctx: &Ctx) -> Result<PathBuf> {
    let has = |d: &Path| d.join("katran/lib/bpf/balancer.bpf.c").is_file();
    if let Some(d) = std::env::var_os("XVIP_KATRAN_SRC").map(PathBuf::from) {
        ensure!(
            has(&d),
            "XVIP_KATRAN_SRC={} holds no katran/lib/bpf/balancer.bpf.c",
            d.display()
        );
        return Ok(d);
    }
    let d = ctx.tmp.join("katran-src");
    run(Command::new("timeout")
        .args(["120", "git", "clone", "--quiet", "--depth", "1"])
        .arg("https://github.com/facebookincubator/katran")
        .arg(&d))
    .context("no XVIP_KATRAN_SRC and cloning Katran failed")?;
    ensure!(has(&d), "the clone holds no katran/lib/bpf/balancer.bpf.c");
    Ok(d)
}

impl Katran {
    fn build_and_load(ctx: &Ctx, src: &Path) -> Result<Self> {
        let obj = ctx.tmp.join("katran-balancer.o");
        // glibc's headers, reached through <linux/in.h>, want the 32-bit stubs on a
        // 64-bit host: an empty one is enough for a BPF target.
        let stub = ctx.tmp.join("katran-stub");
        std::fs::create_dir_all(stub.join("gnu"))?;
        std::fs::write(stub.join("gnu/stubs-32.h"), "")?;
        let multiarch = Command::new("gcc")
            .arg("-print-multiarch")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "x86_64-linux-gnu".into());
        run(Command::new("clang")
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-DMAX_CONN_RATE=100000000",
                "-w",
            ])
            .arg("-I")
            .arg(src)
            .arg("-I")
            .arg(&stub)
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(src.join("katran/lib/bpf/balancer.bpf.c"))
            .arg("-o")
            .arg(&obj))
        .context("building Katran's balancer.bpf.c")?;
        let pins = PathBuf::from(format!("/sys/fs/bpf/{}-katran", ctx.prefix));
        let _ = std::fs::remove_dir_all(&pins);
        std::fs::create_dir_all(&pins)?;
        let prog_pin = pins.join("prog");
        let maps = pins.join("maps");
        let k = |prog: std::os::fd::OwnedFd| Self {
            pins: pins.clone(),
            prog,
        };
        run(Command::new("bpftool")
            .args(["prog", "load"])
            .arg(&obj)
            .arg(&prog_pin)
            .args(["type", "xdp", "pinmaps"])
            .arg(&maps))
        .context("loading Katran with bpftool")?;
        let prog = obj_get(&prog_pin)?;
        let katran = k(prog);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for cpu in 0..cpus {
            let lru = maps.join(format!("lru{cpu}"));
            run(Command::new("bpftool")
                .args(["map", "create"])
                .arg(&lru)
                .args(["type", "lru_hash", "key", "40", "value", "16", "entries"])
                .arg(FLOW_ROOM.to_string())
                .args(["name", "katran_lru"]))?;
            let key = (cpu as u32).to_le_bytes();
            run(Command::new("bpftool")
                .args(["map", "update", "pinned"])
                .arg(maps.join("lru_mapping"))
                .arg("key")
                .args(key.iter().map(|b| b.to_string()))
                .args(["value", "pinned"])
                .arg(&lru))?;
        }
        katran.configure(&maps)?;
        Ok(katran)
    }

    /// One VIP (the lab's, TCP), three reals, the ring, the next hop's MAC.
    fn configure(&self, maps: &Path) -> Result<()> {
        let open = |name: &str| -> Result<MapData> {
            MapData::from_pin(maps.join(name)).with_context(|| format!("Katran's {name}"))
        };
        let mut vips: HashMap<MapData, VipDef, VipMeta> =
            HashMap::try_from(Map::HashMap(open("vip_map")?))?;
        vips.insert(
            &VipDef {
                addr: [u32::from_ne_bytes(VIP.octets()), 0, 0, 0],
                port: VIP_PORT.to_be(),
                proto: 6,
                _pad: 0,
            },
            &VipMeta {
                flags: 0,
                vip_num: 0,
            },
            0,
        )?;
        let mut reals: Array<MapData, RealDef> = Array::try_from(Map::Array(open("reals")?))?;
        for (i, r) in REALS.iter().enumerate() {
            reals.set(
                i as u32 + 1,
                &RealDef {
                    addr: [u32::from_ne_bytes(r.octets()), 0, 0, 0],
                    flags: 0,
                    _pad: [0; 3],
                },
                0,
            )?;
        }
        let mut ring: Array<MapData, u32> = Array::try_from(Map::Array(open("ch_rings")?))?;
        for slot in 0..KATRAN_RING {
            ring.set(slot, &(1 + slot % REALS.len() as u32), 0)?;
        }
        let mut ctl: Array<MapData, [u8; 8]> = Array::try_from(Map::Array(open("ctl_array")?))?;
        let mut mac = [0u8; 8];
        mac[..6].copy_from_slice(&GEN_MAC);
        ctl.set(0, &mac, 0)?;
        Ok(())
    }
}

/// `BPF_OBJ_GET` of a pinned program (aya opens pinned programs only through a type it
/// does not export here).
fn obj_get(path: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd, unix::ffi::OsStrExt};
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let attr = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: `attr` outlives the call; the kernel reads `size_of::<ObjGet>()` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            size_of::<ObjGet>() as u32,
        )
    };
    if fd < 0 {
        bail!(
            "BPF_OBJ_GET {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a new descriptor this process owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_PROG_TEST_RUN` of `fd` once on `frame`: verdict, frame left, kernel's duration.
fn raw_once(fd: &std::os::fd::OwnedFd, frame: &[u8]) -> Result<(u32, Vec<u8>, f64)> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    let mut out = vec![0u8; 512];
    let mut attr = TestRunAttr {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    // SAFETY: the buffers outlive the call and their sizes are given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as u32,
        )
    };
    if r < 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out, f64::from(attr.duration)))
}

/// Flow `i` of the established table: its client address and port.
fn flow(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(203, 0, 113, 1)) + i / PORTS_PER_ADDR),
        (1024 + i % PORTS_PER_ADDR) as u16,
    )
}

/// [`once`] through xvip, waiting out its budget of new flows from unproven sources
/// (10,000 a second per CPU, `NEW_FLOW_BUDGET`): a drop that moved the
/// `drop_new_flow_budget` counter is retried every 50 ms, for at most 5 s; any other
/// verdict is the caller's. `budget` is the counter as last read.
fn once_admitted(
    dp: &Dataplane,
    budget: &std::cell::Cell<u64>,
    frame: &[u8],
) -> Result<(u32, Vec<u8>, f64)> {
    let at = lb_common::Reason::ALL
        .iter()
        .position(|r| *r as u32 == lb_common::Reason::DropNewFlowBudget as u32)
        .context("no drop_new_flow_budget reason")?;
    for _ in 0..100 {
        let r = once(dp.program(), frame)?;
        if r.0 != XDP_DROP {
            return Ok(r);
        }
        let now = dp.snapshot(&[])?.reasons.get(at).copied().unwrap_or(0);
        if now == budget.get() {
            return Ok(r);
        }
        budget.set(now);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("xvip: still over its new-flow budget after 5 s")
}

const XDP_DROP: u32 = 1;

/// Runs `frame` once; returns the verdict, the frame left and the kernel's duration.
fn once(prog: &Xdp, frame: &[u8]) -> Result<(u32, Vec<u8>, f64)> {
    let mut out = vec![0u8; 512];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out, r.duration.as_nanos() as f64))
}

const XDP_TX: u32 = 3;

/// One program under comparison.
enum Peer {
    Katran(Katran),
    /// The last `drop_new_flow_budget` count read ([`once_admitted`]); whether the
    /// established fast path is on (off: `CONFIG_FLAG_NO_FAST_PATH`, every packet takes
    /// the full path, as before the fast path).
    Xvip(Mode, Box<Dataplane>, std::cell::Cell<u64>, bool),
}

impl Peer {
    fn name(&self) -> String {
        match self {
            Self::Katran(_) => "Katran".into(),
            Self::Xvip(m, .., true) => format!("xvip {}", mode_name(*m)),
            Self::Xvip(m, .., false) => format!("xvip {}, full path", mode_name(*m)),
        }
    }
    /// One run of `frame`, waiting out xvip's new-flow budget ([`once_admitted`]).
    fn run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>, f64)> {
        match self {
            Self::Katran(k) => raw_once(&k.prog, frame),
            Self::Xvip(_, d, budget, _) => once_admitted(d, budget, frame),
        }
    }
    /// Makes flows `from..to` established and appends those that are to `est`: Katran's
    /// first packet puts the flow in its LRU; xvip's flow is confirmed by its backend's
    /// first answer and established (`TCP_ESTABLISHED`: data both ways) by the backend's
    /// second and the client's next segment, all carrying data (a flow xvip refuses, e.g.
    /// no SNAT port left, is left out). Before the fast path the rows measured flows left
    /// open (`TCP_OPEN`, whose packets also look up `REVERSE` for the handshake's step).
    fn populate(&self, from: u32, to: u32, est: &mut Vec<u32>) -> Result<()> {
        for i in from..to {
            let (src, sport) = flow(i);
            let first = client_frame(src, sport, VIP, TCP_ACK);
            let (v, out, _) = self.run(&first)?;
            if v != XDP_TX {
                ensure!(
                    matches!(self, Self::Xvip(..)),
                    "{}: flow {i}'s first packet: verdict {v}",
                    self.name()
                );
                continue;
            }
            if let Self::Xvip(..) = self {
                let reply = reply_to(&out);
                for (what, frame) in [("reply", &reply), ("data", &reply), ("client data", &first)]
                {
                    let (v, _, _) = self.run(frame)?;
                    ensure!(
                        v == XDP_TX,
                        "{}: flow {i}'s {what}: verdict {v}",
                        self.name()
                    );
                }
            }
            est.push(i);
        }
        Ok(())
    }
}

/// Mean kernel time of `n` single runs, each of the frame `make(k)`, and how many of them
/// were not sent out again (`XDP_TX`).
fn mean_ns(p: &Peer, n: u32, make: impl Fn(u32) -> Vec<u8>) -> Result<(f64, u32)> {
    let (mut total, mut not_tx) = (0.0, 0);
    for k in 0..n {
        let (v, _, ns) = p.run(&make(k))?;
        not_tx += u32::from(v != XDP_TX);
        total += ns;
    }
    Ok((total / f64::from(n), not_tx))
}

/// The `peers` part (see the module's documentation).
pub fn peers_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    for tool in ["clang", "bpftool", "gcc"] {
        if !have(tool) {
            report
                .notes
                .push(format!("peers: no Katran rows: `{tool}` is not installed (apt-get install -y clang llvm bpftool)"));
            return Ok(());
        }
    }
    let src = match katran_source(ctx) {
        Ok(s) => s,
        Err(e) => {
            report.notes.push(format!(
                "peers: no Katran rows: {e:#} (set XVIP_KATRAN_SRC to a checkout of facebookincubator/katran)"
            ));
            return Ok(());
        }
    };
    // Every test run on one CPU: Katran's LRU is per CPU, and a flow put in one CPU's
    // LRU would be a miss on the other.
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            pin_to_cpu(0)?;
            measure(ctx, report, &src)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the peers thread panicked"))?
    })
}

fn measure(ctx: &Ctx, report: &mut Report, src: &Path) -> Result<()> {
    let xvip = |mode, fast: bool| -> Result<Peer> {
        let mut dp = xvip_dataplane(&ctx.obj, mode, 3, FLOW_ROOM)?;
        if !fast {
            no_fast_path(&mut dp, mode)?;
        }
        Ok(Peer::Xvip(mode, Box::new(dp), Default::default(), fast))
    };
    let peers = [
        Peer::Katran(Katran::build_and_load(ctx, src)?),
        xvip(Mode::Dnat, true)?,
        xvip(Mode::Fullnat, true)?,
        xvip(Mode::Dnat, false)?,
        xvip(Mode::Fullnat, false)?,
    ];
    let singles: u32 = if ctx.quick { 2_000 } else { 10_000 };
    let mut new_flow_base = 0u32;
    let mut have = 0u32;
    let mut est_flows: Vec<Vec<u32>> = vec![Vec::new(); peers.len()];
    for flows in PEER_FLOWS {
        for (p, est) in peers.iter().zip(&mut est_flows) {
            p.populate(have, flows, est)?;
            if est.len() < flows as usize {
                report.notes.push(format!(
                    "peers: {} refused {} of {flows} flows when they were made (the rows use the {} it keeps)",
                    p.name(),
                    flows as usize - est.len(),
                    est.len()
                ));
            }
        }
        have = flows;
        // (peer, class) -> one mean per round; the peers alternate within a round.
        let mut est: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
        let mut new: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
        let mut refused = vec![0u32; peers.len()];
        let news = singles.min(2_000);
        for _ in 0..ctx.runs {
            ctx.check_stop()?;
            for (i, p) in peers.iter().enumerate() {
                // Established: a stride through the table, so consecutive runs touch
                // different flows (as live traffic of that many flows would).
                let table = &est_flows[i];
                let (ns, not_tx) = mean_ns(p, singles, |k| {
                    let (a, port) = flow(table[(k as usize * 7_919) % table.len()]);
                    client_frame(a, port, VIP, TCP_ACK)
                })?;
                ensure!(
                    not_tx == 0,
                    "{}: {not_tx} established packets not sent out",
                    p.name()
                );
                est[i].push(ns);
                // New flow: the SYN of a client never seen (198.51.100.0/24).
                let base = new_flow_base;
                let (ns, not_tx) = mean_ns(p, news, |k| {
                    let n = base + k;
                    let a = Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(198, 51, 100, 1)) + n / PORTS_PER_ADDR,
                    );
                    client_frame(a, (1024 + n % PORTS_PER_ADDR) as u16, VIP, TCP_SYN)
                })?;
                refused[i] += not_tx;
                new[i].push(ns);
            }
            new_flow_base += news;
        }
        for (i, p) in peers.iter().enumerate() {
            if refused[i] > 0 {
                report.notes.push(format!(
                    "peers: {flows} flows, {}: {} of {} new flows refused (in the row's mean)",
                    p.name(),
                    refused[i],
                    news as usize * ctx.runs
                ));
            }
            for (class, v) in [("established", &est[i]), ("new flow (SYN)", &new[i])] {
                report.peers.push(PeerRow {
                    program: p.name(),
                    class: class.into(),
                    flows: flows.into(),
                    ns: Summary::of(v),
                });
            }
        }
    }
    Ok(())
}
