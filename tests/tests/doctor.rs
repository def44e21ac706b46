//! `xvip doctor` in the namespace lab: a healthy lab passes, and each fault the lab can make
//! (a host answering ARP for the VIP, the VIP on the node, a SNAT/ephemeral overlap, a
//! foreign XDP program, kube-ipvs0 holding the VIP, certificates without the VIP, about to
//! expire or of another CA, another VRRP router on our VRID, a peer whose multicast does
//! not arrive) is a line naming it, with exit status 1. Nothing is attached by the doctor.

use std::{
    net::IpAddr,
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tests::lab::{Lab, MASTERS, TempDir, VIP, ca, in_netns, lab_object, run_args, xvip_bin};

/// m1's MAC (the lab's `02:00:00:00:{port+1}:{last octet}`).
const M1_MAC: &str = "02:00:00:00:03:0b";

/// The standard lab's hosts with API servers whose certificates name the VIP, except the
/// masters in `special`, started with those flags instead.
fn lab(tag: &str, special: &[(&str, &[&str])]) -> Lab {
    let mut lab = Lab::segment(tag).unwrap();
    for m in MASTERS {
        let h = lab.host(m);
        let mut cmd = h.ns.cmd(tests::lab::apiserver_bin());
        cmd.args(["--listen", &format!("{}:6443", h.ip), "--name", m]);
        match special.iter().find(|(name, _)| *name == m) {
            Some((_, flags)) => cmd.args(*flags),
            None => cmd.args(["--san", VIP]),
        };
        lab.spawn_apiserver(&format!("apiserver-{m}"), cmd).unwrap();
    }
    lab
}

/// `xvip doctor ARGS` on the lb host: its exit status and stdout.
fn doctor(lab: &Lab, args: &[&str]) -> (Option<i32>, String) {
    let out: Output = lab
        .host("lb")
        .ns
        .cmd(xvip_bin())
        .arg("doctor")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Waits (at most 5 s) until `host`'s eth0 has a link-local address past the kernel's
/// duplicate address detection.
fn wait_link_local(lab: &Lab, host: &str) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let shown = lab
            .host(host)
            .ns
            .ip(&["-6", "addr", "show", "dev", "eth0", "scope", "link"])
            .unwrap();
        if shown.contains("fe80::") && !shown.contains("tentative") {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "no link-local address on {host}: {shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

#[test]
fn a_healthy_lab_passes_and_nothing_is_attached() {
    let lab = lab("dok", &[]);
    let (code, out) = doctor(&lab, &run_args(&["--vrrp-vrid", "51"]));
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("fail")), "{out}");
    line(&out, "ok   kernel: Linux ");
    line(&out, "ok   xdp-driver: eth0: driver veth has native XDP");
    line(&out, "ok   xdp-program: eth0: no XDP program attached");
    line(&out, "ok   capabilities: ");
    line(
        &out,
        "ok   vip-local: 192.0.2.100 is not an address of this node",
    );
    line(
        &out,
        "ok   vip-arp: no host on eth0 answers ARP for 192.0.2.100",
    );
    line(&out, "ok   kube-ipvs0: no kube-ipvs0 device");
    line(&out, "ok   snat-ports: ");
    line(
        &out,
        "ok   vrrp-adverts: no other router advertises VRID 51 on eth0 (listened 3s)",
    );
    for (i, m) in ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
        .iter()
        .enumerate()
    {
        line(
            &out,
            &format!("ok   master-readyz: {m}:6443: GET /readyz answered in "),
        );
        // The lab's MACs: 02:00:00:00:{port + 1}:{last octet}, m1 on port 2.
        assert_eq!(
            line(&out, &format!("ok   master-route: {m}:6443: ")),
            format!(
                "ok   master-route: {m}:6443: on eth0, MAC 02:00:00:00:{:02x}:{:02x}",
                i + 3,
                11 + i
            )
        );
        line(
            &out,
            &format!("ok   master-cert: {m}:6443: certificate names the VIP, expires in "),
        );
    }
    line(
        &out,
        "ok   master-ca: every master's certificate is issued by ",
    );
    assert!(!lab.has_xdp("lb").unwrap(), "the doctor attached");

    // Bad configuration: status 2 and no check, as everywhere.
    let (code, out) = doctor(&lab, &["--interface", "eth0", "--vip", "not-an-ip"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.is_empty(), "{out}");

    let (code, json) = doctor(&lab, &run_args(&["--json"]));
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["exit"], 0);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "vip-arp" && f["level"] == "ok"),
        "{json}"
    );
}

#[test]
fn a_host_answering_arp_for_the_vip_fails_naming_its_mac() {
    let lab = lab("darp", &[]);
    lab.host("m1")
        .ns
        .ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"])
        .unwrap();
    let (code, out) = doctor(&lab, &run_args(&[]));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        line(&out, "fail vip-arp: "),
        format!(
            "fail vip-arp: {VIP} is answered on eth0 by {M1_MAC}: another host holds the VIP; fix: find the host with that MAC (`ip neigh`, the switch's MAC table) and remove the VIP from it, or choose a free VIP"
        )
    );
}

#[test]
fn the_vip_on_this_node_fails_and_so_does_the_snat_range_it_now_overlaps() {
    let lab = lab("dloc", &[]);
    let ns = &lab.host("lb").ns;
    ns.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"])
        .unwrap();
    let (code, out) = doctor(&lab, &run_args(&["--snat-ports", "20000-59999"]));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        line(&out, "fail vip-local: "),
        format!(
            "fail vip-local: {VIP} is assigned to eth0: the kernel answers for it, not xvip; fix: remove it (`ip addr del {VIP}/24 dev eth0`); xvip announces the VIP itself"
        )
    );
    let snat = line(&out, "fail snat-ports: ");
    assert!(
        snat.contains("overlaps the kernel's ephemeral ports")
            && snat.contains("fix: choose --snat-ports outside them"),
        "{snat}"
    );
}

#[test]
fn a_foreign_xdp_program_is_a_failing_line_with_its_name_and_removal() {
    let lab = lab("dxdp", &[]);
    let _foreign = in_netns(&lab.host("lb").ns.name, || -> anyhow::Result<aya::Ebpf> {
        let mut ebpf = aya::Ebpf::load_file(lab_object())?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut("lab_pass")
            .ok_or_else(|| anyhow::anyhow!("no lab_pass"))?
            .try_into()?;
        prog.load()?;
        prog.attach(c"eth0", aya::programs::XdpMode::Driver)?;
        Ok(ebpf)
    })
    .unwrap()
    .unwrap();
    let (code, out) = doctor(&lab, &run_args(&[]));
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "fail xdp-program: ");
    assert!(
        l.starts_with("fail xdp-program: eth0 already has XDP program lab_pass (id ")
            && l.contains("attached, not by this xvip; fix: "),
        "{l}"
    );
    assert!(l.contains("bpftool link show id"), "{l}");
    assert!(
        lab.has_xdp("lb").unwrap(),
        "the foreign program was touched"
    );
}

#[test]
fn kube_ipvs0_holding_the_vip_fails() {
    let lab = lab("dipvs", &[]);
    let ns = &lab.host("lb").ns;
    // No dummy driver on every kernel: a veth of that name holds the address as well.
    ns.ip(&[
        "link",
        "add",
        "kube-ipvs0",
        "type",
        "veth",
        "peer",
        "name",
        "kipvs-peer",
    ])
    .unwrap();
    ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "kube-ipvs0"])
        .unwrap();
    let (code, out) = doctor(&lab, &run_args(&[]));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        line(&out, "fail kube-ipvs0: "),
        format!(
            "fail kube-ipvs0: kube-ipvs0 holds {VIP}: kube-proxy (IPVS mode) answers for it; fix: keep the VIP out of every Service's externalIPs/loadBalancerIP, add it to kube-proxy's ipvs.excludeCIDRs, and set ipvs.strictARP: true"
        )
    );
    line(&out, "ok   vip-local: ");
}

#[test]
fn a_certificate_without_the_vip_fails_and_one_near_its_end_warns() {
    let lab = lab(
        "dcert",
        &[("m1", &[]), ("m2", &["--san", VIP, "--valid-days", "10"])],
    );
    let (code, out) = doctor(&lab, &run_args(&[]));
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "fail master-cert: 192.0.2.11:6443: ");
    assert!(
        l.starts_with(&format!(
            "fail master-cert: 192.0.2.11:6443: certificate does not name {VIP} (SANs: 192.0.2.11, localhost)"
        )) && l.contains("certSANs"),
        "{l}"
    );
    let l = line(&out, "warn master-cert: 192.0.2.12:6443: ");
    assert!(
        l.contains("certificate expires on ") && l.contains("days)"),
        "{l}"
    );
    assert!(l.contains("fix: `kubeadm certs renew apiserver`"), "{l}");
    line(&out, "ok   master-cert: 192.0.2.13:6443: ");
    line(&out, "ok   master-readyz: 192.0.2.11:6443: ");
}

#[test]
fn a_vrrp_router_of_another_version_on_our_vrid_fails() {
    let lab = lab("dvrrp", &[]);
    // m1 plays a keepalived in VRRPv2 on VRID 51, advertising every 200 ms until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let (ns, flag) = (lab.host("m1").ns.name.clone(), Arc::clone(&stop));
    let sender = std::thread::spawn(move || {
        in_netns(&ns, move || -> anyhow::Result<()> {
            use xvip::{
                announce::vrrp::VrrpSocket,
                wire::vrrp::{Advert, MULTICAST},
                wire::vrrp::{Auth, Version},
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let iface = xvip::net::iface::Interface::lookup("eth0")?;
                let sock = VrrpSocket::open("eth0", iface.index, IpAddr::V4(iface.ipv4))?;
                let msg = Advert {
                    version: Version::V2,
                    vrid: 51,
                    priority: 200,
                    max_adver_int_cs: 100,
                    addrs: vec![VIP.parse()?],
                    auth: Auth::NONE,
                }
                .encode(iface.ipv4, MULTICAST);
                while !flag.load(Ordering::Relaxed) {
                    sock.send(&msg, IpAddr::V4(MULTICAST))?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(())
            })
        })
    });
    let (code, out) = doctor(&lab, &run_args(&["--vrrp-vrid", "51"]));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap().unwrap().unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        line(&out, "fail vrrp-adverts: "),
        "fail vrrp-adverts: 192.0.2.11 advertises VRID 51 in VRRPv2, this node speaks VRRPv3; fix: the same --vrrp-version on every router of the group (keepalived: vrrp_version), or give this group a --vrrp-vrid no other router on the segment uses"
    );
}

#[test]
fn a_master_of_another_ca_fails_its_readyz_and_the_issuers_differ() {
    let files = TempDir::new("doctor-ca");
    let mut paths = Vec::new();
    for name in ["cluster CA", "other CA"] {
        let (key, cert) = ca(name).unwrap();
        let tag = name.replace(' ', "-");
        std::fs::write(files.path(&format!("{tag}.key")), key).unwrap();
        std::fs::write(files.path(&format!("{tag}.crt")), cert).unwrap();
        paths.push((
            files.str(&format!("{tag}.key")),
            files.str(&format!("{tag}.crt")),
        ));
    }
    let signed = |i: usize, name| {
        [
            "--san",
            VIP,
            "--ca-key",
            paths[i].0.as_str(),
            "--ca-name",
            name,
        ]
    };
    let (ours, other) = (signed(0, "cluster CA"), signed(1, "other CA"));
    let lab = lab("dca", &[("m1", &ours), ("m2", &ours), ("m3", &other)]);
    let (code, out) = doctor(&lab, &run_args(&["--ca-file", &paths[0].1]));
    assert_eq!(code, Some(1), "{out}");
    line(
        &out,
        "ok   master-readyz: 192.0.2.11:6443: GET /readyz answered in ",
    );
    line(
        &out,
        "ok   master-readyz: 192.0.2.12:6443: GET /readyz answered in ",
    );
    let l = line(
        &out,
        "fail master-readyz: 192.0.2.13:6443: GET /readyz: TLS error: ",
    );
    assert!(l.contains("fix: check --ca-file"), "{l}");
    assert_eq!(
        line(&out, "warn master-ca: "),
        "warn master-ca: the masters' certificates come from different issuers: \"CN=cluster CA\" (192.0.2.11:6443, 192.0.2.12:6443); \"CN=other CA\" (192.0.2.13:6443); fix: sign every API server's certificate with the cluster CA (kubeadm: the same /etc/kubernetes/pki/ca.{crt,key} on every master, e.g. `kubeadm join --control-plane` with --certificate-key)"
    );
}

#[test]
fn ipv6_turned_off_on_the_interface_fails_for_ipv6_vips() {
    let lab = lab("dok6", &[]);
    let args = [
        "--interface",
        "eth0",
        "--vip",
        "[2001:db8::100]:6443",
        "--backend",
        "[2001:db8::11]:6443",
    ];
    wait_link_local(&lab, "lb");
    let (_, out) = doctor(&lab, &args);
    line(&out, "ok   ipv6: eth0: IPv6 on, link-local fe80::");
    let mut off = lab.host("lb").ns.cmd("sysctl");
    off.args(["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
    tests::lab::sh(&mut off).unwrap();
    let (code, out) = doctor(&lab, &args);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        line(&out, "fail ipv6:"),
        "fail ipv6: eth0: net.ipv6.conf.eth0.disable_ipv6=1, but IPv6 VIPs are configured; fix: sysctl -w net.ipv6.conf.eth0.disable_ipv6=0 (and set it in /etc/sysctl.d)"
    );
}

#[test]
fn kube_proxy_in_ipvs_mode_without_strict_arp_warns_from_its_configmap_until_fixed() {
    let files = TempDir::new("dokkp");
    let conf = files.str("kube-proxy.conf");
    // kubeadm's defaults with mode ipvs, as in the seed's kubeadm config.
    std::fs::write(
        &conf,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: null\n  strictARP: false\nmode: ipvs\n",
    )
    .unwrap();
    let flags: &[&str] = &["--san", VIP, "--kube-proxy-config", &conf];
    let lab = lab("dokkp", &[("m1", flags), ("m2", flags), ("m3", flags)]);
    let kc = files.str("admin.conf");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://192.0.2.11:6443\n    insecure-skip-tls-verify: true\n\
         users:\n- name: admin\n  user:\n    token: lab-token\ncontexts:\n- name: admin@lab\n  context:\n    cluster: lab\n    user: admin\n\
         current-context: admin@lab\n",
    )
    .unwrap();
    let args = run_args(&["--discover-from-kubeconfig", &kc]);
    let (code, out) = doctor(&lab, &args);
    assert_eq!(code, Some(0), "a warning only: {out}");
    assert_eq!(
        line(&out, "warn kube-proxy:"),
        "warn kube-proxy: mode ipvs: ipvs.strictARP is false (kube-proxy answers ARP for its service addresses on every interface); ipvs.excludeCIDRs lacks 192.0.2.100/32 (its IPVS cleanup may remove the VIP); fix: set ipvs.strictARP: true and add 192.0.2.100/32 to ipvs.excludeCIDRs in the kube-proxy ConfigMap (kubectl -n kube-system edit configmap kube-proxy), then restart kube-proxy"
    );
    std::fs::write(
        &conf,
        "kind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: [\"192.0.2.100/32\"]\n  strictARP: true\nmode: ipvs\n",
    )
    .unwrap();
    let (_, out) = doctor(&lab, &args);
    line(
        &out,
        "ok   kube-proxy: mode ipvs with strictARP and the VIPs in excludeCIDRs",
    );
}

#[test]
fn another_group_on_our_vrid_over_ipv6_fails() {
    let lab = lab("dvrrp6", &[]);
    // m1 advertises VRID 51 for another IPv6 address, from its link-local to ff02::12.
    let stop = Arc::new(AtomicBool::new(false));
    let (ns, flag) = (lab.host("m1").ns.name.clone(), Arc::clone(&stop));
    let sender = std::thread::spawn(move || {
        in_netns(&ns, move || -> anyhow::Result<()> {
            use xvip::{
                announce::{ndp, vrrp::VrrpSocket},
                wire::vrrp::{Advert, Auth, MULTICAST6, Version},
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let iface = xvip::net::iface::Interface::lookup("eth0")?;
                // The link-local address appears after the kernel's DAD (about a second).
                let end = std::time::Instant::now() + Duration::from_secs(5);
                let ll = loop {
                    if let Some(ll) = ndp::link_local(&ndp::interface_addresses("eth0")) {
                        break ll;
                    }
                    anyhow::ensure!(std::time::Instant::now() < end, "no link-local address");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let sock = VrrpSocket::open("eth0", iface.index, IpAddr::V6(ll))?;
                let msg = Advert {
                    version: Version::V3,
                    vrid: 51,
                    priority: 200,
                    max_adver_int_cs: 20,
                    addrs: vec!["2001:db8::200".parse()?],
                    auth: Auth::NONE,
                }
                .encode(ll, MULTICAST6);
                while !flag.load(Ordering::Relaxed) {
                    sock.send(&msg, IpAddr::V6(MULTICAST6))?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(())
            })
        })
    });
    let args = [
        "--interface",
        "eth0",
        "--vip",
        "[2001:db8::100]:6443",
        "--backend",
        "[2001:db8::11]:6443",
        "--vrrp-vrid",
        "51",
    ];
    wait_link_local(&lab, "lb");
    let (code, out) = doctor(&lab, &args);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap().unwrap().unwrap();
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "fail vrrp-adverts: fe80::");
    assert!(
        l.ends_with(" advertises VRID 51 for 2001:db8::200, not 2001:db8::100: another VRRP group uses our VRID; fix: the same VIPs on every router of the group, or give this group a --vrrp-vrid no other router on the segment uses"),
        "{l}"
    );
}

#[test]
fn a_host_holding_the_ipv6_vip_answers_the_dad_probe_and_fails_naming_its_mac() {
    let lab = lab("dndp", &[]);
    let args = [
        "--interface",
        "eth0",
        "--vip",
        "[2001:db8::100]:6443",
        "--backend",
        "[2001:db8::11]:6443",
    ];
    wait_link_local(&lab, "lb");
    let (_, out) = doctor(&lab, &args);
    line(
        &out,
        "ok   vip-ndp: no host on eth0 answers a DAD probe for 2001:db8::100",
    );
    // m1 takes the VIP (no DAD of its own, so it is usable at once).
    lab.host("m1")
        .ns
        .ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8::100/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let (code, out) = doctor(&lab, &args);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        line(&out, "fail vip-ndp:"),
        format!(
            "fail vip-ndp: 2001:db8::100 is advertised on eth0 by {M1_MAC}: another host holds the VIP; fix: find the host with that MAC (`ip -6 neigh`, the switch's MAC table) and remove the VIP from it, or choose a free VIP"
        )
    );
}

/// Sends a sync heartbeat (an empty, signed records message, as every running xvip does each
/// second) from `host` to 224.0.0.18:8849 every 200 ms until `stop`.
fn heartbeats(
    lab: &Lab,
    host: &str,
    key: &[u8],
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use xvip::wire::sync::{Header, Kind, SyncKey, encode, wall_ms};
    let h = lab.host(host);
    // A route for the group inside the host's namespace (the lab's hosts have none).
    h.ns.ip(&["route", "replace", "224.0.0.0/4", "dev", "eth0"])
        .unwrap();
    let (ns, ip) = (h.ns.name.clone(), h.ip);
    let (key, flag) = (SyncKey::new(key), Arc::clone(stop));
    std::thread::spawn(move || {
        in_netns(&ns, move || -> anyhow::Result<()> {
            let sock = std::net::UdpSocket::bind((ip, 0))?;
            sock.set_multicast_ttl_v4(1)?;
            let epoch = u64::from(std::process::id()) << 16;
            for counter in 1.. {
                if flag.load(Ordering::Relaxed) || counter > 600 {
                    break;
                }
                let h = Header {
                    kind: Kind::Records,
                    last: false,
                    epoch,
                    seq: counter,
                    nonce: 0,
                    part: 0,
                    sender: ip,
                    recipient: xvip::sync::SYNC_GROUP,
                    time_ms: wall_ms(),
                    counter,
                };
                sock.send_to(&encode(&key, &h, &[]), ("224.0.0.18", 8849))?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
    })
}

#[test]
fn a_peer_whose_multicast_is_dropped_is_named_while_the_other_is_heard() {
    let lab = lab("dpeers", &[]);
    let dir = TempDir::new("dpeers");
    let key = b"0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path("sync.key"), key).unwrap();
    std::fs::set_permissions(
        dir.path("sync.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // m1 and m2 play the other nodes of the group; m3 signs with another key (a forger, or
    // a node of another group).
    let stop = Arc::new(AtomicBool::new(false));
    let senders = [
        heartbeats(&lab, "m1", key, &stop),
        heartbeats(&lab, "m2", key, &stop),
        heartbeats(&lab, "m3", b"another key of 32 bytes or more..", &stop),
    ];
    let key_file = dir.str("sync.key");
    let with_peers = |peers: &'static str| -> Vec<String> {
        run_args(&["--vrrp-vrid", "51", "--vrrp-peer", peers, "--sync-key-file"])
            .into_iter()
            .map(String::from)
            .chain([key_file.clone()])
            .collect()
    };
    let args = with_peers("192.0.2.11,192.0.2.12");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = doctor(&lab, &args);
    assert_eq!(
        line(&out, "ok   group-peers: "),
        "ok   group-peers: heard every --vrrp-peer: 192.0.2.11, 192.0.2.12"
    );
    assert_eq!(code, Some(0), "{out}");

    // m3's heartbeats do not count: not authenticated with our key.
    let three = with_peers("192.0.2.11,192.0.2.12,192.0.2.13");
    let three: Vec<&str> = three.iter().map(String::as_str).collect();
    let (code, out) = doctor(&lab, &three);
    let fails: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("fail group-peers: "))
        .collect();
    assert_eq!(
        fails,
        [
            "fail group-peers: nothing from 192.0.2.13 in 3s while 192.0.2.11, 192.0.2.12 were heard: its VRRP and sync traffic does not reach this node; fix: let IP protocol 112 and UDP sync from 192.0.2.13 reach this node (firewall, nftables, the switch's IGMP snooping) and check xvip runs there"
        ],
        "{out}"
    );
    assert_eq!(code, Some(1), "{out}");

    // The lb's firewall drops m2's multicast.
    let nft = |rule: &str| {
        let out = lab.host("lb").ns.cmd("nft").arg(rule).output().unwrap();
        assert!(out.status.success(), "nft {rule}: {out:?}");
    };
    nft("add table ip xvipdoc");
    nft("add chain ip xvipdoc in { type filter hook input priority 0; }");
    nft("add rule ip xvipdoc in ip saddr 192.0.2.12 ip daddr 224.0.0.0/4 drop");
    let (code, out) = doctor(&lab, &args);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(
        line(&out, "fail group-peers: "),
        "fail group-peers: nothing from 192.0.2.12 in 3s while 192.0.2.11 was heard: its VRRP and sync traffic does not reach this node; fix: let IP protocol 112 and UDP sync from 192.0.2.12 reach this node (firewall, nftables, the switch's IGMP snooping) and check xvip runs there"
    );
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn a_certificate_without_the_control_plane_endpoint_fails_naming_it() {
    let with = ["--san", VIP, "--san", "cp.example"];
    // m1's certificate names the VIP but not the endpoint.
    let lab = lab("dcpe", &[("m2", &with), ("m3", &with)]);
    let (code, out) = doctor(
        &lab,
        &run_args(&["--control-plane-endpoint", "CP.example:6443"]),
    );
    assert_eq!(
        line(&out, "fail master-cert: "),
        "fail master-cert: 192.0.2.11:6443: certificate does not name the controlPlaneEndpoint cp.example (SANs: 192.0.2.11, 192.0.2.100, localhost): clients of cp.example (kubeconfigs, kubelets) get \"x509: certificate is valid for ..., not cp.example\"; fix: add cp.example to kubeadm's apiServer.certSANs, then regenerate the certificate: move /etc/kubernetes/pki/apiserver.{crt,key} away and run `kubeadm init phase certs apiserver --config FILE`"
    );
    for m in ["192.0.2.12", "192.0.2.13"] {
        line(
            &out,
            &format!(
                "ok   master-cert: {m}:6443: certificate names the controlPlaneEndpoint cp.example"
            ),
        );
    }
    assert_eq!(code, Some(1), "{out}");

    // Not a host name: status 2, nothing checked.
    let (code, out) = doctor(&lab, &run_args(&["--control-plane-endpoint", "cp example"]));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn a_service_pool_holding_the_vip_or_the_node_fails_naming_it() {
    let lab = lab("dpool", &[]);
    let services = |pool: &str| -> Vec<String> {
        run_args(&[
            "--services",
            "--services-kubeconfig",
            "/nonexistent/admin.conf",
            "--services-pool",
        ])
        .into_iter()
        .map(String::from)
        .chain([pool.to_string()])
        .collect()
    };
    let args = services("192.0.2.96/28");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = doctor(&lab, &args);
    assert_eq!(
        line(&out, "fail services-pools: "),
        "fail services-pools: pool default: 192.0.2.100 (in 192.0.2.96-192.0.2.111) is a VIP: a Service given it takes its traffic; fix: leave 192.0.2.100 out of pool default (--services-pool, [[services.pool]])"
    );
    assert_eq!(code, Some(1), "{out}");
    // The lb's own address (192.0.2.2, also the default SNAT address: one line).
    let args = services("192.0.2.0-192.0.2.7");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = doctor(&lab, &args);
    let fails: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("fail services-pools: "))
        .collect();
    assert_eq!(fails.len(), 1, "{out}");
    assert!(
        fails[0].starts_with(
            "fail services-pools: pool default: 192.0.2.2 (in 192.0.2.0-192.0.2.7) is "
        ),
        "{out}"
    );
    assert_eq!(code, Some(1), "{out}");
    let args = services("198.51.100.0/29");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, out) = doctor(&lab, &args);
    line(&out, "ok   services-pools: 1 pool(s), 1 range(s): ");
}
