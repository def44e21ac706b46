//! The `flows` part: an established packet's program time with the confirmed tables holding
//! 1,000, 10,000, 100,000 and 1,000,000 flows (issue #27: the 1M-flow cost within 1.5× of
//! the 1k-flow cost), through kernel-timed single `BPF_PROG_TEST_RUN`s on one CPU.
//!
//! One data path per (mode, size), every one with the same `CONNTRACK`/`REVERSE` of
//! [`MAP_ENTRIES`] (so the bucket count is the same and only the fill differs); within each
//! round the tables take turns with the bare forwarder (`lab_forward`, the harness's own
//! cost), so load drift moves every row alike and the ratios compare the same moments.
//!
//! Filling a million flows through the program would take minutes (two test runs per flow
//! and the new-flow budget of unproven sources), so a few flows are made by the program
//! (one per backend: the templates, then removed) and the table is written from them with
//! `BPF_MAP_UPDATE_BATCH`: each flow's forward entry and the reverse entry of its own tuple
//! (full NAT: SNAT port `min + i / backends`, unique per backend), state established.
//! Every measured packet must come back `XDP_TX` without creating a flow (the VIP's
//! `new_flows` counter must not move), so a row cannot silently measure another path.
//! Packets hit the table in a stride of 7,919 flows, as traffic of that many flows would.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    maps::{HashMap, Map, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{CtEntry, FlowKey, RevEntry, ct_state, map_names};
use xvip::{config::Mode, dataplane::Dataplane};

use super::{
    ctx::Ctx,
    frame::{TCP_ACK, reply_to},
    report::{FlowRow, Report},
    setup::{client_frame, mode_name, xvip_dataplane_pinned},
    stats::Summary,
    xdp_lab::{VIP, pin_to_cpu},
};
use crate::lab::lab_object;

/// Table sizes measured.
pub const FLOW_SIZES: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Entries of every table's `CONNTRACK` and `REVERSE` (2^20: room for a million flows
/// and the LRU's per-CPU free lists, one bucket count for every row).
pub const MAP_ENTRIES: u32 = 1 << 20;
/// Backends: full NAT gives each (backend, SNAT address) 40,000 ports, so a million
/// flows need at least 25.
const BACKENDS: usize = 32;
/// Ports per client address of the table's flows (203.0.113.1 onwards).
const PORTS_PER_ADDR: u32 = 50_000;
/// Stride through the table between consecutive packets.
const STRIDE: u64 = 7_919;
/// The first SNAT port (the default range's; full NAT's flows take `min + i / backends`).
const SNAT_PORT_MIN: u16 = lb_common::DEFAULT_SNAT_PORT_MIN;
/// Entries per `BPF_MAP_UPDATE_BATCH`.
const BATCH: usize = 8_192;
const XDP_TX: u32 = 3;

/// Flow `i` of the table: its client address and port.
fn flow(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(203, 0, 113, 1)) + i / PORTS_PER_ADDR),
        (1024 + i % PORTS_PER_ADDR) as u16,
    )
}

/// The `CONNTRACK` key of a TCP flow from `src:sport` to the VIP.
fn client_key(src: Ipv4Addr, sport: u16) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes(src.octets()),
        dst_addr: u32::from_ne_bytes(VIP.octets()),
        src_port: sport.to_be(),
        dst_port: super::xdp_lab::VIP_PORT.to_be(),
        proto: 6,
        _pad: [0; 3],
    }
}

/// The `REVERSE` key of the tuple a forward entry holds.
fn reverse_key(e: &CtEntry) -> FlowKey {
    FlowKey {
        src_addr: e.backend_addr,
        dst_addr: e.snat_addr,
        src_port: e.backend_port,
        dst_port: e.snat_port,
        proto: 6,
        _pad: [0; 3],
    }
}

/// `BPF_MAP_UPDATE_BATCH` of `keys[i] -> values[i]` (`BPF_ANY`).
fn update_batch<K, V>(map: &MapData, keys: &[K], values: &[V]) -> Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    ensure!(keys.len() == values.len(), "batch of unequal lengths");
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: (keys.len() - done) as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
        // SAFETY: the key and value arrays outlive the call and hold `count` elements of
        // the map's key and value size (checked by the caller's types).
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        if r < 0 {
            bail!("BPF_MAP_UPDATE_BATCH: {}", std::io::Error::last_os_error());
        }
        ensure!(attr.count > 0, "BPF_MAP_UPDATE_BATCH wrote nothing");
        done += attr.count as usize;
    }
    Ok(())
}

/// The forward and reverse entries of flows `range`, from the templates (one per
/// backend): established, each holding its own tuple.
fn entries(
    templates: &[CtEntry],
    fullnat: bool,
    range: std::ops::Range<u32>,
) -> (Vec<FlowKey>, Vec<CtEntry>, Vec<FlowKey>, Vec<RevEntry>) {
    let n = range.len();
    let (mut keys, mut cts, mut rkeys, mut revs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for j in range {
        let (a, port) = flow(j);
        let key = client_key(a, port);
        let mut e = templates[j as usize % templates.len()];
        e.state = ct_state::TCP_ESTABLISHED;
        if fullnat {
            e.snat_port = (SNAT_PORT_MIN + (j / templates.len() as u32) as u16).to_be();
        } else {
            e.snat_addr = key.src_addr;
            e.snat_port = key.src_port;
        }
        revs.push(RevEntry {
            last_seen_ns: e.last_seen_ns,
            client_addr: key.src_addr,
            vip_addr: key.dst_addr,
            client_port: key.src_port,
            vip_port: key.dst_port,
            backend_idx: e.backend_idx,
            client_mac: e.client_mac,
            state: e.state,
            flags: 0,
            vip_index: e.vip_index,
            client_ifindex: e.client_ifindex,
            seq_next: 0,
            client_vlan: e.client_vlan,
        });
        rkeys.push(reverse_key(&e));
        keys.push(key);
        cts.push(e);
    }
    (keys, cts, rkeys, revs)
}

/// A bpffs directory of the bench's own, removed with everything pinned in it.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One data path with its table filled to `flows` flows.
struct Table {
    mode: Mode,
    flows: u32,
    map_entries: u32,
    /// The VIP's index (its `new_flows` counter proves every packet hit its flow).
    vip_index: u32,
    // Field order is drop order: the program and its maps, then their pins.
    dp: Dataplane,
    _pins: PinDir,
}

/// Runs `frame` once through `prog`: verdict, frame left, the kernel's duration.
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

impl Table {
    fn new(ctx: &Ctx, mode: Mode, flows: u32, map_entries: u32) -> Result<Self> {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/{}-flows-{}-{flows}-{map_entries}",
            ctx.prefix,
            mode_name(mode)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let pins = PinDir(dir);
        let dp = xvip_dataplane_pinned(&ctx.obj, mode, BACKENDS, map_entries, Some(&pins.0))?;
        let open = |name: &str| -> Result<MapData> {
            MapData::from_pin(pins.0.join(name)).with_context(|| format!("pinned {name}"))
        };
        let ct: HashMap<MapData, FlowKey, CtEntry> =
            HashMap::try_from(Map::LruHashMap(open(map_names::CONNTRACK)?))?;
        let mut ct_w: HashMap<MapData, FlowKey, CtEntry> =
            HashMap::try_from(Map::LruHashMap(open(map_names::CONNTRACK)?))?;
        let mut rev_w: HashMap<MapData, FlowKey, RevEntry> =
            HashMap::try_from(Map::LruHashMap(open(map_names::REVERSE)?))?;
        // The templates: one confirmed flow per backend, made by the program (client
        // 203.0.113.200, far from the table's addresses), read, then removed.
        let mut by_backend = std::collections::BTreeMap::<u32, CtEntry>::new();
        let src = Ipv4Addr::new(203, 0, 113, 200);
        for port in 1024..1024 + 64 * BACKENDS as u16 {
            if by_backend.len() == BACKENDS {
                break;
            }
            let (v, out, _) = once(dp.program(), &client_frame(src, port, VIP, TCP_ACK))?;
            if v != XDP_TX {
                continue;
            }
            let (v, _, _) = once(dp.program(), &reply_to(&out))?;
            ensure!(v == XDP_TX, "template flow {port}: reply verdict {v}");
            let key = client_key(src, port);
            let e = ct
                .get(&key, 0)
                .with_context(|| format!("template flow {port} not confirmed"))?;
            let _ = rev_w.remove(&reverse_key(&e));
            let _ = ct_w.remove(&key);
            by_backend.entry(e.backend_idx).or_insert(e);
        }
        ensure!(
            by_backend.len() == BACKENDS,
            "template flows reached {} of {BACKENDS} backends",
            by_backend.len()
        );
        let templates: Vec<CtEntry> = by_backend.into_values().collect();
        let vip_index = templates[0].vip_index;
        let fullnat = mode == Mode::Fullnat;
        let ct_map = open(map_names::CONNTRACK)?;
        let rev_map = open(map_names::REVERSE)?;
        // Each CPU writes its share of the batches (a per-CPU LRU list, if the maps have
        // them, takes only its own CPU's inserts).
        // Online CPUs (not `available_parallelism`: this thread is pinned to one).
        // SAFETY: sysconf has no preconditions.
        let cpus = usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
            .unwrap_or(1)
            .max(1);
        let batches = flows.div_ceil(BATCH as u32);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..cpus)
                .map(|cpu| {
                    let (templates, ct_map, rev_map) = (&templates, &ct_map, &rev_map);
                    s.spawn(move || -> Result<()> {
                        pin_to_cpu(cpu)?;
                        for b in (cpu as u32..batches).step_by(cpus) {
                            let i = b * BATCH as u32;
                            let end = flows.min(i + BATCH as u32);
                            let (keys, cts, rkeys, revs) = entries(templates, fullnat, i..end);
                            update_batch(rev_map, &rkeys, &revs)?;
                            update_batch(ct_map, &keys, &cts)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a fill thread panicked"))??;
            }
            Ok(())
        })?;
        Ok(Self {
            mode,
            flows,
            map_entries,
            vip_index,
            dp,
            _pins: pins,
        })
    }

    fn name(&self) -> String {
        format!(
            "xvip {} {} flows in {}",
            mode_name(self.mode),
            self.flows,
            self.map_entries
        )
    }

    fn new_flows(&self) -> Result<u64> {
        let s = self.dp.snapshot(&[])?;
        Ok(s.vips
            .get(self.vip_index as usize)
            .map_or(0, |c| c.new_flows))
    }

    /// Mean kernel time of `n` established packets, starting `start` strides into the
    /// table; fails on a packet not sent out or one that made a new flow.
    fn established_ns(&self, n: u32, start: u64) -> Result<f64> {
        let before = self.new_flows()?;
        let mut total = 0.0;
        for k in 0..u64::from(n) {
            let j = ((start + k) * STRIDE % u64::from(self.flows)) as u32;
            let (a, port) = flow(j);
            let (v, _, ns) = once(self.dp.program(), &client_frame(a, port, VIP, TCP_ACK))?;
            ensure!(v == XDP_TX, "{}: flow {j}: verdict {v}", self.name());
            total += ns;
        }
        let made = self.new_flows()? - before;
        ensure!(
            made == 0,
            "{}: {made} of {n} established packets made a new flow (the table is not what it should be)",
            self.name()
        );
        Ok(total / f64::from(n))
    }
}

/// The `flows` part (see the module's documentation).
pub fn flows_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            pin_to_cpu(0)?;
            measure(ctx, report)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the flows thread panicked"))?
    })
}

fn measure(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let path = lab_object();
    let mut lab = aya::Ebpf::load_file(&path).with_context(|| format!("{}", path.display()))?;
    let fwd: &mut Xdp = lab
        .program_mut("lab_forward")
        .context("lab_forward")?
        .try_into()?;
    fwd.load()?;
    let fwd: &Xdp = lab
        .program("lab_forward")
        .context("lab_forward")?
        .try_into()?;
    let mut tables = Vec::new();
    for mode in [Mode::Dnat, Mode::Fullnat] {
        let sizes = FLOW_SIZES.map(|f| (f, MAP_ENTRIES));
        for (flows, entries) in sizes.into_iter().chain([(1_000_000, 2 * MAP_ENTRIES)]) {
            ctx.check_stop()?;
            let t = std::time::Instant::now();
            tables.push(Table::new(ctx, mode, flows, entries)?);
            eprintln!(
                "flows: {} filled in {:.1} s",
                tables.last().map(Table::name).unwrap_or_default(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    let singles: u32 = if ctx.quick { 5_000 } else { 20_000 };
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); tables.len()];
    let mut bare = Vec::new();
    let bare_frame = client_frame(Ipv4Addr::new(203, 0, 113, 1), 1024, VIP, TCP_ACK);
    for round in 0..ctx.runs {
        ctx.check_stop()?;
        let mut total = 0.0;
        for _ in 0..singles {
            total += once(fwd, &bare_frame)?.2;
        }
        bare.push(total / f64::from(singles));
        for (t, v) in tables.iter().zip(&mut ns) {
            v.push(t.established_ns(singles, (round as u64) * u64::from(singles))?);
        }
    }
    for (i, t) in tables.iter().enumerate() {
        // Paired per round: this table's time over its mode's 1k-flow table's, measured
        // within the same round (load drift cancels).
        let base = tables
            .iter()
            .position(|b| {
                b.mode == t.mode && b.flows == FLOW_SIZES[0] && b.map_entries == MAP_ENTRIES
            })
            .context("no 1k-flow table")?;
        let per_round = |f: &dyn Fn(f64, f64, f64) -> f64| -> Vec<f64> {
            (0..ns[i].len())
                .map(|r| f(ns[i][r], ns[base][r], bare[r]))
                .collect()
        };
        report.flows.push(FlowRow {
            mode: mode_name(t.mode).into(),
            flows: t.flows.into(),
            map_entries: t.map_entries,
            ns: Summary::of(&ns[i]),
            bare_ns: Summary::of(&bare),
            vs_1k: Summary::of(&per_round(&|x, b, _| x / b)),
            own_vs_1k: Summary::of(&per_round(&|x, b, h| (x - h) / (b - h))),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One template per backend, as the program would leave them (full NAT: the SNAT
    /// address fixed, DNAT: the client's own).
    fn templates() -> Vec<CtEntry> {
        (0..BACKENDS as u32)
            .map(|b| CtEntry {
                backend_idx: b,
                backend_addr: u32::from_ne_bytes([198, 51, 100, 1 + b as u8]),
                backend_port: 6443u16.to_be(),
                snat_addr: u32::from_ne_bytes(VIP.octets()),
                snat_port: 1,
                ..Default::default()
            })
            .collect()
    }

    fn tuple(k: &FlowKey) -> (u32, u32, u16, u16) {
        (k.src_addr, k.dst_addr, k.src_port, k.dst_port)
    }

    #[test]
    fn a_million_full_nat_flows_hold_distinct_tuples_in_the_snat_range() {
        // The last 100,000 of a million: the highest SNAT ports, and every backend's.
        let n = *FLOW_SIZES.last().unwrap();
        let (keys, cts, rkeys, revs) = entries(&templates(), true, n - 100_000..n);
        let mut seen = std::collections::HashSet::new();
        for (i, rk) in rkeys.iter().enumerate() {
            assert!(seen.insert(tuple(rk)), "flow {i} shares its tuple");
            let port = u16::from_be(rk.dst_port);
            assert!(
                (SNAT_PORT_MIN..=lb_common::DEFAULT_SNAT_PORT_MAX).contains(&port),
                "flow {i}: SNAT port {port}"
            );
            assert_eq!(cts[i].state, ct_state::TCP_ESTABLISHED);
            assert_eq!(revs[i].client_addr, keys[i].src_addr);
            assert_eq!(revs[i].client_port, keys[i].src_port);
            assert_eq!(tuple(rk), tuple(&reverse_key(&cts[i])));
        }
        let clients: std::collections::HashSet<_> = keys.iter().map(tuple).collect();
        assert_eq!(clients.len(), keys.len(), "client keys repeat");
    }

    #[test]
    fn dnat_flows_hold_the_clients_own_address_and_port() {
        let (keys, _, rkeys, _) = entries(&templates(), false, 0..70_000);
        for (k, rk) in keys.iter().zip(&rkeys) {
            assert_eq!((rk.dst_addr, rk.dst_port), (k.src_addr, k.src_port));
        }
    }
}
