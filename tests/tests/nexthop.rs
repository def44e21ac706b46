//! Next hops from the kernel: masters behind a gateway, and masters on a second interface
//! (`--interface` repeated), with no static neighbour entry anywhere: every MAC xvip uses
//! comes from the kernel's neighbour table, which the kernel filled itself.

use std::{net::Ipv4Addr, time::Duration};

use tests::lab::{Lab, TempDir, VIP, sh, xvip_bin};

const MASTERS_B: [(&str, Ipv4Addr); 3] = [
    ("m1", Ipv4Addr::new(198, 51, 100, 11)),
    ("m2", Ipv4Addr::new(198, 51, 100, 12)),
    ("m3", Ipv4Addr::new(198, 51, 100, 13)),
];

/// `host`'s MAC on `dev`, as `ip` prints it.
fn mac_of(lab: &Lab, host: &str, dev: &str) -> String {
    let out = lab
        .host(host)
        .ns
        .ip(&["-br", "link", "show", "dev", dev])
        .unwrap();
    out.split_whitespace()
        .nth(2)
        .expect("ip -br link: a MAC")
        .to_string()
}

/// Fails when any namespace of the lab has a static (permanent) neighbour entry.
fn assert_no_static_neighbours(lab: &Lab) {
    for h in &lab.hosts {
        let perm = h.ns.ip(&["neigh", "show", "nud", "permanent"]).unwrap();
        assert!(
            perm.trim().is_empty(),
            "{}: static entries {perm:?}",
            h.name
        );
    }
}

/// The kernel's entry for `addr` on `host` (`ip neigh show ADDR`): learnt, not static.
fn kernel_entry(lab: &Lab, host: &str, addr: Ipv4Addr) -> String {
    let e = lab
        .host(host)
        .ns
        .ip(&["neigh", "show", &addr.to_string()])
        .unwrap();
    assert!(
        e.contains("lladdr"),
        "{host}: no resolved entry for {addr}: {e:?}"
    );
    assert!(!e.contains("PERMANENT"), "{host}: {e:?}");
    e
}

fn start_masters(lab: &mut Lab, not_ready: &TempDir) {
    for (m, _) in MASTERS_B {
        let f = not_ready.path(&format!("{m}.notready"));
        lab.start_apiserver(m, 6443, Some(&f)).unwrap();
    }
}

fn backend_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["--vip".into(), VIP.into()];
    for (_, a) in MASTERS_B {
        v.push("--backend".into());
        v.push(a.to_string());
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Waits for every backend to be healthy with a MAC, then checks that new connections
/// reach several masters; then a master failing `/readyz` leaves the rotation.
fn serves_then_drops_a_failing_master(lab: &Lab, not_ready: &TempDir) {
    if let Err(e) = lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(15),
    ) {
        let st = lab.xvip_status("lb").map(|s| s.to_table());
        panic!("HTTPS through the VIP: {e:#}; status: {st:?}");
    }
    lab.wait_status("lb", Duration::from_secs(10), |s| {
        s.backends.len() == 3 && s.backends.iter().all(|b| b.healthy && b.mac.is_some())
    })
    .expect("every backend healthy with a next hop");
    let seen = lab.spread("client", 24);
    assert!(
        seen.keys()
            .all(|k| ["m1", "m2", "m3"].contains(&k.as_str())),
        "{seen:?}"
    );
    assert!(
        seen.len() >= 2,
        "24 connections reach one master only: {seen:?}"
    );

    std::fs::write(not_ready.path("m2.notready"), "").unwrap();
    lab.wait_status("lb", Duration::from_secs(15), |s| {
        s.backends
            .iter()
            .any(|b| b.addr.starts_with("198.51.100.12:") && !b.healthy)
    })
    .expect("m2 marked down");
    let seen = lab.spread("client", 12);
    assert!(!seen.contains_key("m2"), "m2 still in rotation: {seen:?}");
    assert!(
        seen.keys().all(|k| ["m1", "m3"].contains(&k.as_str())),
        "{seen:?}"
    );
}

#[test]
fn masters_behind_a_gateway_are_reached_through_the_gateways_mac() {
    let not_ready = TempDir::new("nh-gw");
    let mut lab = Lab::new(
        "nhgw",
        &[
            ("client", Ipv4Addr::new(192, 0, 2, 10)),
            ("lb", Ipv4Addr::new(192, 0, 2, 2)),
            ("gw", Ipv4Addr::new(192, 0, 2, 1)),
        ],
    )
    .unwrap();
    let mut ports = vec![("gw", "eth1", Ipv4Addr::new(198, 51, 100, 1))];
    ports.extend(MASTERS_B.iter().map(|(m, a)| (*m, "eth0", *a)));
    lab.add_segment("b", &ports).unwrap();
    sh(lab
        .host("gw")
        .ns
        .cmd("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"]))
    .unwrap();
    lab.host("lb")
        .ns
        .ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.1"])
        .unwrap();
    for (m, _) in MASTERS_B {
        lab.host(m)
            .ns
            .ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"])
            .unwrap();
    }
    start_masters(&mut lab, &not_ready);
    let args = backend_args(&[
        "--interface",
        "eth0",
        "--fall",
        "2",
        "--health-interval",
        "200ms",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_xvip("lb", &args).unwrap();

    serves_then_drops_a_failing_master(&lab, &not_ready);
    let gw_mac = mac_of(&lab, "gw", "eth0");
    let s = lab.xvip_status("lb").unwrap();
    for b in &s.backends {
        assert_eq!(
            b.mac.as_deref(),
            Some(gw_mac.as_str()),
            "{}: the next hop is the gateway",
            b.addr
        );
    }
    kernel_entry(&lab, "lb", Ipv4Addr::new(192, 0, 2, 1));
    assert_no_static_neighbours(&lab);
}

/// Client and lb on 192.0.2.0/24 (lb's eth0), the masters on 198.51.100.0/24 with lb's
/// eth1: no gateway, no routes, each side on-link to the lb only.
fn two_interface_lab(tag: &str, not_ready: &TempDir) -> Lab {
    let mut lab = Lab::new(
        tag,
        &[
            ("client", Ipv4Addr::new(192, 0, 2, 10)),
            ("lb", Ipv4Addr::new(192, 0, 2, 2)),
        ],
    )
    .unwrap();
    let mut ports = vec![("lb", "eth1", Ipv4Addr::new(198, 51, 100, 2))];
    ports.extend(MASTERS_B.iter().map(|(m, a)| (*m, "eth0", *a)));
    lab.add_segment("b", &ports).unwrap();
    start_masters(&mut lab, not_ready);
    lab
}

/// The SNAT address is on the masters' subnet: they answer it on-link, xvip answers ARP
/// for it there, and the replies come back through eth1's program.
fn two_interface_args(extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--interface",
        "eth0",
        "--interface",
        "eth1",
        "--snat-ip",
        "198.51.100.100",
        "--fall",
        "2",
        "--health-interval",
        "200ms",
    ];
    v.extend_from_slice(extra);
    backend_args(&v)
}

fn has_xdp(lab: &Lab, dev: &str) -> bool {
    let l = lab.host("lb").ns.ip(&["link", "show", "dev", dev]).unwrap();
    l.contains("xdp")
}

#[test]
fn clients_on_one_interface_and_masters_on_another_are_joined_by_redirects() {
    let not_ready = TempDir::new("nh-2if");
    let mut lab = two_interface_lab("nh2if", &not_ready);
    let args = two_interface_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_xvip("lb", &args).unwrap();

    serves_then_drops_a_failing_master(&lab, &not_ready);
    let s = lab.xvip_status("lb").unwrap();
    for (m, addr) in MASTERS_B {
        let b = s
            .backends
            .iter()
            .find(|b| b.addr.starts_with(&format!("{addr}:")))
            .unwrap();
        assert_eq!(
            b.mac.as_deref(),
            Some(mac_of(&lab, m, "eth0").as_str()),
            "{m}"
        );
        assert!(kernel_entry(&lab, "lb", addr).contains("dev eth1"));
    }
    assert_eq!(s.interface, "eth0,eth1", "status names both interfaces");
    let reasons = &s.reasons;
    assert!(reasons["redirect_forward"] > 0, "{reasons:?}");
    assert!(reasons["redirect_reply"] > 0, "{reasons:?}");
    assert_no_static_neighbours(&lab);
    // The client only ever sees eth0's MAC for the VIP.
    let vip_entry = kernel_entry(&lab, "client", VIP.parse().unwrap());
    assert!(
        vip_entry.contains(&mac_of(&lab, "lb", "eth0")),
        "{vip_entry}"
    );
    assert!(has_xdp(&lab, "eth0") && has_xdp(&lab, "eth1"));

    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGTERM);
    let status = lab.procs[i]
        .wait_timeout(Duration::from_secs(8))
        .expect("exits");
    assert!(status.success(), "{status:?}");
    for dev in ["eth0", "eth1"] {
        let l = lab.host("lb").ns.ip(&["link", "show", "dev", dev]).unwrap();
        assert!(
            !l.contains("xdp"),
            "{dev} still attached after SIGTERM: {l}"
        );
    }
}

#[test]
fn a_bad_second_interface_exits_2_naming_it_and_leaves_nothing_attached() {
    let lab = Lab::new("nhbad", &[("lb", Ipv4Addr::new(192, 0, 2, 2))]).unwrap();
    let lb = &lab.host("lb").ns;
    // A bridge has no native XDP: attaching it fails after eth0 is attached.
    lb.ip(&["link", "add", "dum0", "type", "bridge"]).unwrap();
    lb.ip(&["link", "set", "dum0", "up"]).unwrap();
    let base = [
        "--vip",
        VIP,
        "--backend",
        "192.0.2.11",
        "--interface",
        "eth0",
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--interface", "nosuch1"], "nosuch1"),
        (&["--interface", "eth0"], "eth0"),
        (&["--interface", "dum0", "--xdp-mode", "native"], "dum0"),
    ];
    for (extra, named) in cases {
        let out = lb
            .cmd(xvip_bin())
            .arg("run")
            .args(base)
            .args(*extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        let last = stderr.trim().lines().last().unwrap_or("");
        assert!(
            last.contains(named),
            "{extra:?}: {stderr:?} should name {named}"
        );
        for dev in ["eth0", "dum0"] {
            let l = lb.ip(&["link", "show", "dev", dev]).unwrap();
            assert!(!l.contains("xdp"), "{extra:?} left a program on {dev}: {l}");
        }
    }
}

/// Removes this test's own pin root (declared before the lab: runs after its processes).
struct RemoveRoot(std::path::PathBuf);

impl Drop for RemoveRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_restart_adopts_the_links_of_both_interfaces_and_serves_meanwhile() {
    let root = RemoveRoot(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/xvip-test-nh-{}",
        std::process::id()
    )));
    let not_ready = TempDir::new("nh-restart");
    let mut lab = two_interface_lab("nhrst", &not_ready);
    let pin_root = root.0.to_string_lossy().into_owned();
    let args = two_interface_args(&["--pin-root", &pin_root]);
    let start = |lab: &mut Lab, log: &std::path::Path| {
        // Only the network namespace: the pins must outlive the process.
        let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
        cmd.arg("run")
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        lab.spawn("xvip-lb", cmd).unwrap();
    };
    let logs = TempDir::new("nh-restart-logs");
    start(&mut lab, &logs.path("1.log"));
    let url = format!("https://{VIP}:6443/readyz");
    lab.curl_until_ok("client", &url, Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                std::fs::read_to_string(logs.path("1.log")).unwrap_or_default()
            )
        });
    let ns = lab.host("lb").ns.inode().unwrap();
    let dir = root.0.join(ns.to_string()).join("eth0");
    assert!(dir.join("link").exists(), "{}", dir.display());
    assert!(
        dir.join("link@eth1").exists(),
        "eth1's link pinned beside eth0's"
    );

    lab.kill("xvip-lb").unwrap();
    assert!(
        has_xdp(&lab, "eth0") && has_xdp(&lab, "eth1"),
        "pinned links keep both"
    );
    lab.curl_until_ok("client", &url, Duration::from_secs(15))
        .expect("served while the daemon is down");

    start(&mut lab, &logs.path("2.log"));
    let adopted = |n: usize| {
        std::fs::read_to_string(logs.path("2.log"))
            .unwrap_or_default()
            .matches("kept the running program (adopted)")
            .count()
            >= n
    };
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !adopted(2) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        adopted(2),
        "both links adopted: {}",
        std::fs::read_to_string(logs.path("2.log")).unwrap_or_default()
    );
    lab.curl_until_ok("client", &url, Duration::from_secs(10))
        .unwrap();

    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGTERM);
    lab.procs[i]
        .wait_timeout(Duration::from_secs(8))
        .expect("exits");
    assert!(
        !has_xdp(&lab, "eth0") && !has_xdp(&lab, "eth1"),
        "detached from both"
    );
    assert!(!dir.exists(), "pins removed");
}
