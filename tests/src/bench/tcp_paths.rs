//! The TCP part: real connections through xvip, haproxy and the bare forwarder, and under a
//! SYN flood; conntrack sync off and on.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use super::ctx::Ctx;
use super::ctx::STOP;
use super::nft::NFT_BACKENDS;
use super::nft::nft_rules;
use super::setup::have;
use crate::{
    bench::{
        report::{Report, TcpRow},
        stats::Summary,
        tcp,
        xdp_lab::{VIP, VIP_PORT, mac_str, sysctl, with_netns},
    },
    flood::{Flood, FloodSpec},
    lab::{Lab, MASTERS, STANDARD_HOSTS, lab_object, sh, xvip_bin},
};
use anyhow::{Context, Result, bail};
use aya::programs::Xdp;

const TCP_WORKERS: usize = 32;

/// lb's `eth0` MAC (the client's static neighbour entry for the VIP).
pub(super) fn lb_mac(lab: &Lab) -> Result<String> {
    let out = lab
        .host("lb")
        .ns
        .ip(&["-j", "link", "show", "dev", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["address"].as_str().context("no MAC")?.to_string())
}

fn tcp_measure(ctx: &Ctx, lab: &Lab, path: &str, target: SocketAddr) -> Result<TcpRow> {
    let ns = lab.host("client").ns.name.clone();
    tcp::wait_ready(&ns, target, Duration::from_secs(10))?;
    tcp::load(&ns, target, Duration::from_millis(500), TCP_WORKERS, &STOP)?;
    let mut v = Vec::new();
    for _ in 0..ctx.runs {
        ctx.check_stop()?;
        v.push(tcp::load(&ns, target, ctx.run, TCP_WORKERS, &STOP)?);
    }
    let f = |g: fn(&tcp::TcpSample) -> f64| Summary::of(&v.iter().map(g).collect::<Vec<_>>());
    let row = TcpRow {
        path: path.into(),
        conns_per_s: f(|s| s.conns_per_s),
        p50_us: f(|s| s.p50_us),
        p99_us: f(|s| s.p99_us),
        errors: v.iter().map(|s| s.errors).sum(),
        success_pct: f(|s| 100.0 * s.ok as f64 / (s.ok + s.errors).max(1) as f64),
    };
    eprintln!(
        "   {:<32} {:>8.0} conn/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
        row.path,
        row.conns_per_s.median,
        row.p50_us.median / 1e3,
        row.p99_us.median / 1e3,
        row.errors
    );
    Ok(row)
}

/// The `tcp` part: TCP load through xvip, haproxy and the bare forwarder, and under a SYN
/// flood.
pub fn tcp_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let hosts: Vec<_> = STANDARD_HOSTS
        .into_iter()
        .chain([("attacker", Ipv4Addr::new(192, 0, 2, 66))])
        .collect();
    let mut lab = Lab::new("bt", &hosts)?;
    for m in MASTERS {
        lab.start_plain_apiserver(m)?;
    }
    let client = &lab.host("client").ns;
    sysctl(client, "net.ipv4.ip_local_port_range=1024 65000")?;
    sysctl(client, "net.ipv4.tcp_tw_reuse=1")?;
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
    let vip = SocketAddr::V4(SocketAddrV4::new(VIP, VIP_PORT));

    report.tcp.push(tcp_measure(
        ctx,
        &lab,
        "direct to one backend",
        "192.0.2.11:6443".parse()?,
    )?);

    match bare_tcp_forward(ctx, &lab) {
        Ok(r) => report.tcp.push(r),
        Err(e) => {
            ctx.check_stop()?;
            report.notes.push(format!("no bare-forward TCP row: {e:#}"));
        }
    }

    // xvip: the real daemon, fullnat, TCP health checks.
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/{}-tcp", ctx.prefix));
    let log = std::fs::File::create(ctx.out.join("xvip.log"))?;
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
    .stderr(log);
    lab.spawn("xvip", cmd)?;
    let r = tcp_measure(ctx, &lab, "through xvip (fullnat)", vip);
    report.tcp.push(r?);
    let r = under_syn_flood(ctx, report, &lab, "through xvip (fullnat)", vip);
    lab.stop("xvip");
    let _ = std::fs::remove_dir_all(&pin_root);
    report.tcp.push(r?);

    if have("haproxy") {
        let cfg = ctx.tmp.join("haproxy.cfg");
        let servers: String = NFT_BACKENDS
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server m{} {b}:6443\n", i + 1))
            .collect();
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend apiserver\n  bind 192.0.2.2:6443\n  default_backend masters\nbackend masters\n  balance roundrobin\n{servers}"
            ),
        )?;
        let mut cmd = lab.host("lb").ns.cmd("haproxy");
        cmd.arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(ctx.out.join("haproxy.log"))?);
        lab.spawn("haproxy", cmd)?;
        let haproxy = "192.0.2.2:6443".parse()?;
        let r = tcp_measure(ctx, &lab, "through haproxy (mode tcp)", haproxy);
        report.tcp.push(r?);
        let r = under_syn_flood(ctx, report, &lab, "through haproxy (mode tcp)", haproxy);
        lab.stop("haproxy");
        report.tcp.push(r?);
    } else {
        report
            .notes
            .push("haproxy missing (apt-get install -y haproxy): no haproxy row".into());
    }

    if have("nft") {
        let lb = &lab.host("lb").ns;
        sysctl(lb, "net.ipv4.ip_forward=1")?;
        sysctl(lb, "net.ipv4.conf.all.send_redirects=0")?;
        sysctl(lb, "net.ipv4.conf.eth0.send_redirects=0")?;
        let rules = ctx.tmp.join("tcp.nft");
        std::fs::write(&rules, nft_rules(true))?;
        sh(lb.cmd("nft").arg("-f").arg(&rules))?;
        let r = tcp_measure(ctx, &lab, "through nftables DNAT+masquerade", vip);
        let _ = sh(lb.cmd("nft").args(["flush", "ruleset"]));
        report.tcp.push(r?);
    }
    with_netns(&lab.host("client").ns.name, || Ok(()))?;
    Ok(())
}

/// The MAC address of a lab host's `eth0`.
fn host_mac(lab: &Lab, host: &str) -> Result<[u8; 6]> {
    let out = lab
        .host(host)
        .ns
        .ip(&["-j", "link", "show", "dev", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let text = v[0]["address"].as_str().context("no MAC")?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next().context("short MAC")?, 16)?;
    }
    Ok(mac)
}

/// Path name of the TCP row through the bare forwarder.
pub const BARE_TCP: &str = "bare XDP forward to one backend (same hops as xvip)";

/// The limit of this topology for TCP: the client's connections to one master take the
/// same hops as through xvip (client -> lb -> master -> lb -> client) through
/// `lab_l2_forward` on lb's `eth0` (MAC rewrite and `XDP_TX`, no NAT, no state): static
/// neighbour entries send each end's frames for the other to lb's MAC.
fn bare_tcp_forward(ctx: &Ctx, lab: &Lab) -> Result<TcpRow> {
    let path = lab_object();
    let mut obj = aya::Ebpf::load_file(&path).with_context(|| format!("{}", path.display()))?;
    let (client, m1) = (Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11));
    {
        let mut next: aya::maps::HashMap<_, u32, [u8; 8]> =
            aya::maps::HashMap::try_from(obj.map_mut("L2_NEXT").context("L2_NEXT")?)?;
        for (ip, host) in [(client, "client"), (m1, "m1")] {
            let mut v = [0u8; 8];
            v[..6].copy_from_slice(&host_mac(lab, host)?);
            next.insert(&u32::from_ne_bytes(ip.octets()), &v, 0)?;
        }
    }
    let prog: &mut Xdp = obj
        .program_mut("lab_l2_forward")
        .context("lab_l2_forward not in lab-xdp")?
        .try_into()?;
    prog.load()?;
    let link = with_netns(&lab.host("lb").ns.name, || {
        let dev = std::ffi::CString::new("eth0")?;
        Ok(prog.attach(dev.as_c_str(), aya::programs::XdpMode::Driver)?)
    })?;
    let lb = mac_str(host_mac(lab, "lb")?);
    let via_lb = |host: &str, peer: Ipv4Addr| {
        lab.host(host).ns.ip(&[
            "neigh",
            "replace",
            &peer.to_string(),
            "lladdr",
            &lb,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
    };
    let row = via_lb("client", m1)
        .and_then(|_| via_lb("m1", client))
        .and_then(|_| {
            tcp_measure(
                ctx,
                lab,
                BARE_TCP,
                SocketAddr::V4(SocketAddrV4::new(m1, 6443)),
            )
        });
    for (host, peer) in [("client", m1), ("m1", client)] {
        let _ = lab
            .host(host)
            .ns
            .ip(&["neigh", "del", &peer.to_string(), "dev", "eth0"]);
    }
    let _ = prog.detach(link);
    row
}

/// The TCP load on `path` while the attacker floods `target` with spoofed SYNs from every
/// address of 203.0.113.0/24 at the generator's full rate (one CPU).
fn under_syn_flood(
    ctx: &Ctx,
    report: &mut Report,
    lab: &Lab,
    path: &str,
    target: SocketAddr,
) -> Result<TcpRow> {
    let SocketAddr::V4(t) = target else {
        bail!("IPv4 only");
    };
    let flood = Flood::start(
        lab,
        "attacker",
        "lb",
        FloodSpec {
            src_base: Ipv4Addr::new(203, 0, 113, 0),
            addresses: 256,
            first_port: 2000,
            port_span: 60_000,
            dst: *t.ip(),
            dport: t.port(),
            flags: crate::bench::frame::TCP_SYN,
            bad_checksum: false,
            max_frames: u64::MAX,
            max_time: Duration::from_secs(600),
            max_rate: None,
        },
    )?;
    let row = tcp_measure(ctx, lab, &format!("{path}, spoofed SYN flood"), target);
    let (sent, rate) = flood.stop()?;
    report.notes.push(format!(
        "SYN flood against {path}: {sent} spoofed SYNs at {:.0} k/s from one CPU, during the \
         legitimate load",
        rate / 1e3
    ));
    row
}
