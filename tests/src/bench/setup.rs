//! xvip set up for the bench: its settings, a data path loaded and filled as the daemon
//! would (one-armed, two-armed, IPv6), and the client frames sent to it.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use crate::bench::{
    frame::{TcpFrame, TcpFrame6},
    xdp_lab::{GEN_MAC, GEN1_MAC, LB_DEV, LB_MAC, LB1_MAC, VIP, VIP_PORT},
};
use anyhow::Result;
use lb_common::Config;
use xvip::{
    config::{HealthKind, Mode, Settings, args::RunArgs},
    control::reconcile::Reconciler,
    dataplane::{Dataplane, store::MapStore},
};

fn backend_list(n: usize) -> Vec<String> {
    if n <= 3 {
        (0..n).map(|i| format!("192.0.2.{}", 11 + i)).collect()
    } else {
        (0..n)
            .map(|i| format!("198.51.100.{}:{}", 1 + i % 250, 6443 + i / 250))
            .collect()
    }
}

fn settings(mode: Mode, backends: usize, conntrack: u32) -> Result<Settings> {
    Ok(RunArgs {
        interface: vec![LB_DEV.into()],
        vips: vec![format!("{VIP}:{VIP_PORT}")],
        backends: backend_list(backends),
        mode: Some(mode),
        health: Some(HealthKind::None),
        conntrack_size: Some(conntrack),
        ..Default::default()
    }
    .resolve()?)
}

/// A loaded data path with its maps filled as the daemon would (the Reconciler), every
/// backend's next hop being the generator's veth. Not attached.
pub fn xvip_dataplane(
    obj: &[u8],
    mode: Mode,
    backends: usize,
    conntrack: u32,
) -> Result<Dataplane> {
    xvip_dataplane_pinned(obj, mode, backends, conntrack, None)
}

/// [`xvip_dataplane`] with its maps pinned in `pins` (a bpffs directory the caller
/// removes), so that second handles on them can be opened; IPv4 only.
pub fn xvip_dataplane_pinned(
    obj: &[u8],
    mode: Mode,
    backends: usize,
    conntrack: u32,
    pins: Option<&std::path::Path>,
) -> Result<Dataplane> {
    let s = settings(mode, backends, conntrack)?;
    let mut dp = match pins {
        Some(dir) => Dataplane::load_pinned(obj, conntrack, false, Some((dir, LB_DEV)))?,
        None => Dataplane::load(obj, conntrack)?,
    };
    dp.set_config(&Config {
        snat_port_min: s.snat_ports.0,
        snat_port_max: s.snat_ports.1,
        if_mac: LB_MAC,
        ..Default::default()
    })?;
    let mut r = Reconciler::new(&s);
    for b in &s.backends {
        r.set_mac(b.addr, GEN_MAC);
    }
    r.apply(&mut dp, &[])?;
    Ok(dp)
}

/// Turns the established fast path off in a data path made by [`xvip_dataplane`] or
/// [`xvip_dataplane6`] (its `CONFIG` written again with `CONFIG_FLAG_NO_FAST_PATH`):
/// every packet takes the full path, as before the fast path, for rows beside the fast
/// path's in the same run.
///
/// # Errors
/// When the settings do not resolve or the map write fails.
pub fn no_fast_path(dp: &mut Dataplane, mode: Mode) -> Result<()> {
    fast_path(dp, mode, false)
}

/// Turns the established fast path on (`on`, as the daemon runs) or off again; see
/// [`no_fast_path`].
///
/// # Errors
/// As [`no_fast_path`].
pub fn fast_path(dp: &mut Dataplane, mode: Mode, on: bool) -> Result<()> {
    let s = settings(mode, 3, 1 << 16)?;
    dp.set_config(&Config {
        snat_port_min: s.snat_ports.0,
        snat_port_max: s.snat_ports.1,
        if_mac: LB_MAC,
        flags: if on {
            0
        } else {
            lb_common::CONFIG_FLAG_NO_FAST_PATH
        },
        ..Default::default()
    })?;
    Ok(())
}

/// The IPv6 VIP of the cost rows, and its three backends.
pub const VIP6: &str = "2001:db8::100";

/// [`xvip_dataplane`] with an IPv6 VIP (full NAT, SNAT from the VIP) and three IPv6
/// backends instead.
pub fn xvip_dataplane6(obj: &[u8], conntrack: u32) -> Result<Dataplane> {
    let s = RunArgs {
        interface: vec![LB_DEV.into()],
        vips: vec![format!("[{VIP6}]:{VIP_PORT}")],
        backends: (0..3)
            .map(|i| format!("[2001:db8::{}]:6443", 11 + i))
            .collect(),
        mode: Some(Mode::Fullnat),
        health: Some(HealthKind::None),
        conntrack_size: Some(conntrack),
        ..Default::default()
    }
    .resolve()?;
    let mut dp = Dataplane::load(obj, conntrack)?;
    dp.set_config(&Config {
        snat_port_min: s.snat_ports.0,
        snat_port_max: s.snat_ports.1,
        if_mac: LB_MAC,
        ..Default::default()
    })?;
    let mut r = Reconciler::new(&s);
    for b in &s.backends6 {
        r.set_mac(b.addr, GEN_MAC);
    }
    r.apply(&mut dp, &[])?;
    Ok(dp)
}

/// [`client_frame`] for IPv6.
pub fn client_frame6(
    src: std::net::Ipv6Addr,
    sport: u16,
    dst: std::net::Ipv6Addr,
    flags: u8,
) -> Vec<u8> {
    TcpFrame6 {
        src_mac: GEN_MAC,
        dst_mac: LB_MAC,
        src,
        dst,
        sport,
        dport: VIP_PORT,
        flags,
        hop_limit: 64,
        payload: crate::bench::xdp_lab::FRAME_PAYLOAD,
    }
    .build()
}

/// [`xvip_dataplane`] for the two-arm shape: clients on `l0`, every backend's next hop the
/// generator's `g1` out of `l1` (index `l1`), each interface's MAC in `IFACES`.
pub fn xvip_dataplane_two_arm(
    obj: &[u8],
    mode: Mode,
    backends: usize,
    conntrack: u32,
    l0: u32,
    l1: u32,
) -> Result<Dataplane> {
    let s = settings(mode, backends, conntrack)?;
    let mut dp = Dataplane::load(obj, conntrack)?;
    dp.set_config(&Config {
        snat_port_min: s.snat_ports.0,
        snat_port_max: s.snat_ports.1,
        flags: lb_common::CONFIG_FLAG_IFACES,
        if_mac: LB_MAC,
        ..Default::default()
    })?;
    let mut ifaces = lb_common::Ifaces::default();
    for (e, (ifindex, mac)) in ifaces.entries.iter_mut().zip([(l0, LB_MAC), (l1, LB1_MAC)]) {
        e.ifindex = ifindex;
        e.mac = mac;
    }
    dp.set_ifaces(&ifaces)?;
    let mut r = Reconciler::new(&s);
    for b in &s.backends {
        r.set_next_hop(b.addr, l1, Some(GEN1_MAC));
    }
    r.apply(&mut dp, &[])?;
    Ok(dp)
}

/// The report's name of `m`.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Fullnat => "fullnat",
        Mode::Dnat => "dnat",
    }
}

/// A TCP frame from the generator to the LB, to port `VIP_PORT` of `dst`.
pub fn client_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, flags: u8) -> Vec<u8> {
    TcpFrame {
        src_mac: GEN_MAC,
        dst_mac: LB_MAC,
        src,
        dst,
        sport,
        dport: VIP_PORT,
        flags,
        ttl: 64,
        payload: crate::bench::xdp_lab::FRAME_PAYLOAD,
    }
    .build()
}

/// Whether `tool` is installed (on `PATH`).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
