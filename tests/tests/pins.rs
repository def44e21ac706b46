//! Pins belong to their interface: xvip in two namespaces with the default pin root, a
//! namespace deleted under a killed xvip, a foreign XDP program, and VIPs removed from the
//! configuration across a pinned restart.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tests::lab::{Lab, TempDir, in_netns, lab_object, xvip_bin};

const ROOT: &str = xvip::config::DEFAULT_PIN_ROOT;

/// Removes exactly this test's pins and status records (its namespaces' directories under
/// the default pin root), never anything else there. Declared before the lab, so it runs
/// after the lab's processes have stopped.
#[derive(Default)]
struct OwnPins(Vec<u64>);

impl Drop for OwnPins {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = std::fs::remove_dir_all(Path::new(ROOT).join(ns.to_string()));
            let _ = std::fs::remove_dir_all(Path::new("/run/xvip").join(ns.to_string()));
        }
    }
}

/// Removes a test's own pin root.
struct RemoveRoot(PathBuf);

impl Drop for RemoveRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pins_of(ns: u64) -> PathBuf {
    Path::new(ROOT).join(ns.to_string()).join("eth0")
}

/// `xvip run ARGS` on `host` entering only its network namespace (so it shares the host's
/// bpffs and default pin root), stderr to `log` when given.
fn start(lab: &mut Lab, host: &str, args: &[&str], log: Option<&Path>) {
    let mut cmd = lab.host(host).ns.cmd_net_only(xvip_bin());
    cmd.arg("run")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    if let Some(l) = log {
        cmd.stderr(std::fs::File::create(l).unwrap());
    }
    lab.spawn(&format!("xvip-{host}"), cmd).unwrap();
}

fn args(vips: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["--interface", "eth0", "--backend", "192.0.2.11"];
    for vip in vips {
        v.extend(["--vip", vip]);
    }
    v
}

/// The id of the XDP program on `host`'s eth0, as `ip link` shows it.
fn xdp_prog(lab: &Lab, host: &str) -> Option<u32> {
    prog_in(
        &lab.host(host)
            .ns
            .ip(&["link", "show", "dev", "eth0"])
            .ok()?,
    )
}

/// The XDP program id in `ip link show` output.
fn prog_in(out: &str) -> Option<u32> {
    let rest = &out[out.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn lab(tag: &str, own: &mut OwnPins, lbs: &[(&str, Ipv4Addr)]) -> Lab {
    let mut hosts = vec![("client", Ipv4Addr::new(192, 0, 2, 10))];
    hosts.extend_from_slice(lbs);
    hosts.push(("m1", Ipv4Addr::new(192, 0, 2, 11)));
    let mut lab = Lab::new(tag, &hosts).unwrap();
    for (name, _) in lbs {
        own.0.push(lab.host(name).ns.inode().unwrap());
    }
    lab.start_apiserver("m1", 6443, None).unwrap();
    lab
}

fn whoami(vip: &str) -> String {
    format!("https://{vip}:6443/whoami")
}

#[test]
fn two_xvip_in_two_namespaces_with_the_default_pin_root_keep_to_their_own_interface() {
    let mut own = OwnPins::default();
    let mut lab = lab(
        "two",
        &mut own,
        &[
            ("lb1", Ipv4Addr::new(192, 0, 2, 2)),
            ("lb2", Ipv4Addr::new(192, 0, 2, 3)),
        ],
    );
    let (ns1, ns2) = (own.0[0], own.0[1]);
    start(&mut lab, "lb1", &args(&["192.0.2.100"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    let p1 = xdp_prog(&lab, "lb1").expect("lb1 has its program");

    start(&mut lab, "lb2", &args(&["192.0.2.101"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.101"), Duration::from_secs(10))
        .unwrap();
    let p2 = xdp_prog(&lab, "lb2").expect("lb2 has its own program");
    assert_ne!(p1, p2);
    assert_eq!(
        xdp_prog(&lab, "lb1"),
        Some(p1),
        "the second xvip changed the first one's program"
    );
    assert!(pins_of(ns1).join("link").exists() && pins_of(ns2).join("link").exists());
    println!(
        "pins side by side: {} and {}",
        pins_of(ns1).display(),
        pins_of(ns2).display()
    );

    // `xvip status --interface eth0` finds the daemon of its own namespace.
    for (host, vip) in [("lb1", "192.0.2.100:6443"), ("lb2", "192.0.2.101:6443")] {
        let out = tests::lab::sh(lab.host(host).ns.cmd(xvip_bin()).args([
            "status",
            "--interface",
            "eth0",
            "--json",
        ]))
        .unwrap();
        let s: xvip::api::document::Status = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(s.vips, [vip], "{host}");
    }

    // lb1 killed and started again adopts its own link and the program in it (the same
    // binary: no verifier), and leaves lb2's alone.
    lab.kill("xvip-lb1").unwrap();
    assert_eq!(xdp_prog(&lab, "lb1"), Some(p1), "pinned: stays attached");
    let files = TempDir::new("pins-two");
    let log = files.path("lb1.log");
    start(&mut lab, "lb1", &args(&["192.0.2.100"]), Some(&log));
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!("adopted the running program {p1} "))
        }),
        "lb1 did not adopt its own program: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let p1_new = xdp_prog(&lab, "lb1").expect("lb1 attached");
    assert_eq!(p1_new, p1, "the adopted program stays in lb1's link");
    assert_eq!(xdp_prog(&lab, "lb2"), Some(p2), "lb1's restart touched lb2");
    for vip in ["192.0.2.100", "192.0.2.101"] {
        lab.curl_until_ok("client", &whoami(vip), Duration::from_secs(5))
            .unwrap();
    }
}

#[test]
fn after_sigkill_and_its_namespace_recreated_xvip_run_starts_and_serves() {
    let mut own = OwnPins::default();
    let mut lab = lab("recr", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let old = own.0[0];
    start(&mut lab, "lb", &args(&["192.0.2.100"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    lab.kill("xvip-lb").unwrap();
    assert!(pins_of(old).join("link").exists());

    lab.recreate_host("lb").unwrap();
    let new = lab.host("lb").ns.inode().unwrap();
    own.0.push(new);
    let files = TempDir::new("pins-recr");
    let log = files.path("lb.log");
    let t = Instant::now();
    start(&mut lab, "lb", &args(&["192.0.2.100"]), Some(&log));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    println!(
        "served through the recreated namespace {:.0} ms after start (namespace inode {old} -> {new})",
        t.elapsed().as_secs_f64() * 1e3
    );
    // Another xvip starting meanwhile (tests run in parallel) may have swept the defunct
    // pins first: then this one logs nothing about them, and the state below still holds.
    let text = std::fs::read_to_string(&log).unwrap();
    match text.lines().find(|l| l.contains("interface is gone")) {
        Some(line) => println!("{line}"),
        None => println!("the stale pins were gone already: {text}"),
    }
    assert!(xdp_prog(&lab, "lb").is_some());
    assert!(pins_of(new).join("link").exists());
    if new != old {
        assert!(
            !pins_of(old).exists(),
            "the vanished namespace's pins stayed"
        );
    }
}

/// Attaches the lab's `lab_pass` to `host`'s eth0 (the returned object keeps it attached).
fn attach_lab_pass(lab: &Lab, host: &str) -> aya::Ebpf {
    in_netns(&lab.host(host).ns.name, || -> anyhow::Result<aya::Ebpf> {
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
    .unwrap()
}

#[test]
fn a_foreign_xdp_program_on_the_interface_exits_2_naming_it() {
    let mut own = OwnPins::default();
    let mut lab = lab("forn", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let ns = own.0[0];
    let _foreign = attach_lab_pass(&lab, "lb");
    let id = xdp_prog(&lab, "lb").expect("lab_pass attached");

    let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
    cmd.arg("run")
        .args(args(&["192.0.2.100"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let p = lab.spawn("xvip-lb", cmd).unwrap();
    let status = p.wait_timeout(Duration::from_secs(10)).expect("xvip exits");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut p.child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    let last = err.trim().lines().last().unwrap_or("");
    println!("{last}");
    assert!(
        last.contains("lab_pass") && last.contains(&format!("id {id}")),
        "{err}"
    );
    assert!(
        last.contains("bpftool link") || last.contains("ip link set dev eth0"),
        "{err}"
    );
    assert_eq!(
        xdp_prog(&lab, "lb"),
        Some(id),
        "the foreign program was touched"
    );
    assert!(!pins_of(ns).exists(), "the refused run left pins");
}

#[test]
fn a_vip_removed_from_the_configuration_is_not_balanced_after_a_pinned_restart() {
    let mut own = OwnPins::default();
    let mut lab = lab("vipgone", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    // The client keeps sending to xvip's MAC whatever ARP says.
    lab.host("client")
        .ns
        .ip(&[
            "neigh",
            "replace",
            "192.0.2.101",
            "lladdr",
            "02:00:00:00:02:02",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    start(&mut lab, "lb", &args(&["192.0.2.100", "192.0.2.101"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.101"), Duration::from_secs(10))
        .unwrap();
    // The node's own processes reach it through the connect4 hook.
    lab.curl("lb", &whoami("192.0.2.101"), Duration::from_secs(2))
        .unwrap();

    lab.kill("xvip-lb").unwrap();
    start(&mut lab, "lb", &args(&["192.0.2.100"]), None);
    lab.wait_status("lb", Duration::from_secs(10), |s| s.vips.len() == 1)
        .unwrap();
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    assert!(
        lab.curl("client", &whoami("192.0.2.101"), Duration::from_secs(2))
            .is_err(),
        "the removed VIP is still balanced by XDP"
    );
    assert!(
        lab.curl("lb", &whoami("192.0.2.101"), Duration::from_secs(2))
            .is_err(),
        "the removed VIP is still balanced by the connect4 hook"
    );
}

#[test]
fn pins_of_an_older_xvip_at_root_ifname_are_moved_and_adopted_when_their_link_is_this_interfaces() {
    let files = TempDir::new("pins-legacy");
    let mut lab = lab(
        "legacy",
        &mut OwnPins::default(),
        &[("lb", Ipv4Addr::new(192, 0, 2, 2))],
    );
    // A pin root of its own: the older layout `<root>/eth0` must not meet anyone else's.
    let root = PathBuf::from(format!("/sys/fs/bpf/xvip-test-{}", lab.prefix));
    let _root_guard = RemoveRoot(root.clone());
    let ns = lab.host("lb").ns.inode().unwrap();
    let pin_root = root.to_str().unwrap().to_string();
    let mut a = args(&["192.0.2.100"]);
    a.extend(["--pin-root", &pin_root]);
    start(&mut lab, "lb", &a, None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    lab.kill("xvip-lb").unwrap();
    let prog = xdp_prog(&lab, "lb").expect("pinned program stays");
    // What an older xvip left: the same pins at `<root>/eth0`.
    std::fs::rename(root.join(ns.to_string()).join("eth0"), root.join("eth0")).unwrap();
    let _ = std::fs::remove_dir(root.join(ns.to_string()));

    let log = files.path("lb.log");
    start(&mut lab, "lb", &a, Some(&log));
    // The program marker moved with the pins: the same binary adopts the program.
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("kept the running program (adopted)")),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("moved an earlier xvip's pins"), "{text}");
    assert!(!root.join("eth0").exists());
    assert!(root.join(ns.to_string()).join("eth0/link").exists());
    assert_eq!(xdp_prog(&lab, "lb"), Some(prog), "adopted, not replaced");
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(5))
        .unwrap();
}

#[test]
fn a_pinned_link_whose_interface_moved_to_another_namespace_is_refused_and_left_alone() {
    let mut own = OwnPins::default();
    let mut lab = lab("moved", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let ns = own.0[0];
    start(&mut lab, "lb", &args(&["192.0.2.100"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    lab.kill("xvip-lb").unwrap();
    let prog = xdp_prog(&lab, "lb").expect("pinned program stays");

    // The interface (with the link) moves to another namespace; a new eth0 appears here.
    let other = tests::lab::Netns::new(format!("{}-other", lab.prefix)).unwrap();
    lab.host("lb")
        .ns
        .ip(&["link", "set", "eth0", "netns", &other.name])
        .unwrap();
    let lb = &lab.host("lb").ns;
    lb.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    lb.ip(&["link", "set", "eth0", "up"]).unwrap();
    let moved = other.ip(&["link", "show", "dev", "eth0"]).unwrap();

    let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
    cmd.arg("run")
        .args(args(&["192.0.2.100"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let p = lab.spawn("xvip-lb", cmd).unwrap();
    let status = p.wait_timeout(Duration::from_secs(10)).expect("xvip exits");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut p.child.stderr.take().unwrap(), &mut err).unwrap();
    let last = err.trim().lines().last().unwrap_or("").to_string();
    println!("{last}");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(last.contains("xvip detach --interface eth0"), "{err}");
    assert!(xdp_prog(&lab, "lb").is_none(), "attached to the new eth0");
    assert!(pins_of(ns).join("link").exists(), "the pins were removed");
    // The link went with the device; it still runs the killed xvip's program, untouched.
    assert_eq!(prog_in(&moved), Some(prog), "{moved}");
    assert_eq!(
        prog_in(&other.ip(&["link", "show", "dev", "eth0"]).unwrap()),
        Some(prog),
        "the moved interface's program was changed"
    );
    println!("moved interface: {}", moved.trim());
}

#[test]
fn an_interface_recreated_under_a_killed_xvip_gets_a_fresh_attach_with_one_log_line() {
    let files = TempDir::new("pins-relink");
    let mut lab = lab(
        "relink",
        &mut OwnPins::default(),
        &[("lb", Ipv4Addr::new(192, 0, 2, 2))],
    );
    // A pin root of its own: no other test's xvip sweeps these defunct pins first.
    let root = PathBuf::from(format!("/sys/fs/bpf/xvip-test-{}", lab.prefix));
    let _root_guard = RemoveRoot(root.clone());
    let pins = root
        .join(lab.host("lb").ns.inode().unwrap().to_string())
        .join("eth0");
    let pin_root = root.to_str().unwrap().to_string();
    let mut a = args(&["192.0.2.100"]);
    a.extend(["--pin-root", &pin_root]);
    start(&mut lab, "lb", &a, None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    lab.kill("xvip-lb").unwrap();
    lab.recreate_eth0("lb").unwrap();
    assert_eq!(xdp_prog(&lab, "lb"), None, "a new eth0 has no program");

    let log = files.path("lb.log");
    start(&mut lab, "lb", &a, Some(&log));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", std::fs::read_to_string(&log).unwrap()));
    let text = std::fs::read_to_string(&log).unwrap();
    let stale: Vec<&str> = text.lines().filter(|l| l.contains("defunct")).collect();
    assert_eq!(stale.len(), 1, "{text}");
    println!("{}", stale[0]);
    assert!(!text.contains("adopted the pinned state"), "{text}");
    assert!(xdp_prog(&lab, "lb").is_some());
    assert!(pins.join("link").exists());
}

#[test]
fn an_interface_named_with_a_dot_like_a_vlan_is_pinned_and_adopted_across_a_restart() {
    let mut own = OwnPins::default();
    let mut lab = lab("dot", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let ns = own.0[0];
    // `eth0.100` is what a VLAN interface is called; bpffs refuses names with a dot.
    let h = lab.host("lb");
    for args in [
        &["link", "set", "eth0", "down"][..],
        &["link", "set", "eth0", "name", "eth0.100"],
        &["link", "set", "eth0.100", "up"],
    ] {
        h.ns.ip(args).unwrap();
    }
    let args = [
        "--interface",
        "eth0.100",
        "--backend",
        "192.0.2.11",
        "--vip",
        "192.0.2.100",
    ];
    start(&mut lab, "lb", &args, None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    let dir = Path::new(ROOT).join(ns.to_string()).join("eth0%2e100");
    assert!(
        dir.join("link").exists(),
        "no link pin in {}",
        dir.display()
    );
    // A SIGKILL leaves the pinned program serving; the next xvip adopts it.
    lab.kill("xvip-lb").unwrap();
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(3))
        .expect("the pinned program serves while no xvip runs");
    let log = TempDir::new("dotlog");
    let log_path = log.path("xvip.log");
    start(&mut lab, "lb", &args, Some(&log_path));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    // The pinned program answers before the new xvip has loaded (the verifier may take
    // seconds under load): wait for its adoption line.
    let ok = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("adopted the pinned state"))
    });
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}

/// `(id, max_entries)` of the map pinned at `path`.
fn pinned_map(path: &Path) -> (u32, u32) {
    let info =
        aya::maps::MapInfo::from_pin(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (info.id(), info.max_entries())
}

#[test]
fn the_first_ipv6_vip_grows_the_idle_ipv6_flow_maps_and_keeps_the_ipv4_flows() {
    let mut own = OwnPins::default();
    let mut lab = lab("v6grow", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let pins = pins_of(own.0[0]);
    start(&mut lab, "lb", &args(&["192.0.2.100"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    // IPv4 only: the IPv6 flow maps are small (LRU maps are preallocated).
    let (ct4, ct4_size) = pinned_map(&pins.join("CONNTRACK"));
    assert_eq!(ct4_size, lb_common::DEFAULT_CONNTRACK_SIZE);
    for m in ["CONNTRACK6", "REVERSE6", "UNCONFIRMED6", "UNCONFIRMED_REV6"] {
        assert_eq!(
            pinned_map(&pins.join(m)).1,
            xvip::dataplane::IDLE_V6_FLOWS,
            "{m}"
        );
    }
    lab.kill("xvip-lb").unwrap();

    // Restarted with an IPv6 VIP as well: the IPv6 flow maps get their full size, and the
    // IPv4 state (the same CONNTRACK map) is adopted, not rebuilt.
    let files = TempDir::new("pins-v6grow");
    let log = files.path("lb.log");
    let mut a = args(&["192.0.2.100"]);
    a.extend([
        "--vip",
        "[2001:db8::100]:6443",
        "--backend",
        "[2001:db8::11]:6443",
    ]);
    start(&mut lab, "lb", &a, Some(&log));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    // The pinned program serves while the new xvip starts: wait for its attach.
    wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("attached to"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("adopted the pinned state"), "{text}");
    assert_eq!(pinned_map(&pins.join("CONNTRACK")).0, ct4, "{text}");
    assert_eq!(
        pinned_map(&pins.join("CONNTRACK6")).1,
        lb_common::DEFAULT_CONNTRACK_SIZE
    );
    assert_eq!(
        pinned_map(&pins.join("UNCONFIRMED6")).1,
        lb_common::UNCONFIRMED_SIZE
    );
}

/// `host`'s eth0 MAC, as `ip link` shows it.
fn mac_of(lab: &Lab, host: &str) -> String {
    let out = lab
        .host(host)
        .ns
        .ip(&["link", "show", "dev", "eth0"])
        .unwrap();
    let rest = &out[out.find("link/ether ").expect("an Ethernet interface") + 11..];
    rest.split_whitespace().next().unwrap().to_string()
}

/// Spawns `xvip run ARGS` on `host` (its network namespace only) as process `name`,
/// stderr to `log`; returns its pid.
fn spawn_logged(lab: &mut Lab, host: &str, name: &str, args: &[&str], log: &Path) -> u32 {
    let mut cmd = lab.host(host).ns.cmd_net_only(xvip_bin());
    cmd.arg("run")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    lab.spawn(name, cmd).unwrap().child.id()
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn a_second_xvip_on_a_served_interface_exits_2_naming_the_first_and_touches_nothing() {
    let mut own = OwnPins::default();
    let mut lab = lab("dup", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let ns = own.0[0];
    let files = TempDir::new("pins-dup");
    let (log1, log2) = (files.path("first.log"), files.path("second.log"));
    let first = spawn_logged(&mut lab, "lb", "xvip-lb", &args(&["192.0.2.100"]), &log1);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read(&log1)));
    let prog = xdp_prog(&lab, "lb").expect("the first is attached");

    let t = Instant::now();
    spawn_logged(
        &mut lab,
        "lb",
        "xvip-second",
        &args(&["192.0.2.100"]),
        &log2,
    );
    let i = lab.proc_index("xvip-second").unwrap();
    // Before the lock, the second ran beside the first for good: never exited.
    let status = lab.procs[i].wait_timeout(Duration::from_secs(30));
    let waited = t.elapsed();
    let err = read(&log2);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "the second xvip did not exit 2: {err}"
    );
    let last = err.trim().lines().last().unwrap_or("");
    println!("second run exited 2 after {waited:.1?}: {last}");
    assert!(last.contains(&format!("pid {first}")), "{err}");
    assert!(
        !err.contains("adopted the pinned state"),
        "the second touched the pins: {err}"
    );

    assert_eq!(
        xdp_prog(&lab, "lb"),
        Some(prog),
        "the first's program was replaced"
    );
    assert!(pins_of(ns).join("link").exists(), "the first's pins went");
    let i = lab.proc_index("xvip-lb").unwrap();
    assert!(
        lab.procs[i].child.try_wait().unwrap().is_none(),
        "the first xvip stopped: {}",
        read(&log1)
    );
    for _ in 0..3 {
        lab.curl("client", &whoami("192.0.2.100"), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("the first stopped serving: {e:#}"));
    }
}

#[test]
fn a_run_started_during_a_graceful_stop_waits_for_it_and_takes_over() {
    let mut own = OwnPins::default();
    let mut lab = lab("handover", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let ns = own.0[0];
    // Routed mode (2 s of forwarding after SIGTERM): no ARP, so the client is told where
    // the VIP is.
    let mac = mac_of(&lab, "lb");
    lab.host("client")
        .ns
        .ip(&[
            "neigh",
            "replace",
            "192.0.2.100",
            "lladdr",
            &mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    let mut a = args(&["192.0.2.100"]);
    // Routed full NAT takes the node's own address as SNAT source, ports clear of the
    // kernel's ephemeral ones.
    a.extend([
        "--announce",
        "route",
        "--route-table",
        "200",
        "--snat-ip",
        "192.0.2.2",
        "--snat-ports",
        "20000-32767",
    ]);
    let files = TempDir::new("pins-handover");
    let (log1, log2) = (files.path("first.log"), files.path("second.log"));
    spawn_logged(&mut lab, "lb", "xvip-first", &a, &log1);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read(&log1)));
    let prog = xdp_prog(&lab, "lb").expect("the first is attached");

    let i = lab.proc_index("xvip-first").unwrap();
    lab.procs[i].signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log1)
            .contains("route withdrawn")),
        "the first did not start stopping: {}",
        read(&log1)
    );
    let t = Instant::now();
    spawn_logged(&mut lab, "lb", "xvip-second", &a, &log2);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log2)
            .contains("waiting up to")),
        "the second did not wait for the stopping first: {}",
        read(&log2)
    );
    let i = lab.proc_index("xvip-first").unwrap();
    let status = lab.procs[i].wait_timeout(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", read(&log1));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\nsecond: {}", read(&log2)));
    println!(
        "served by the second {:.1?} after it started during the first's stop",
        t.elapsed()
    );
    let i = lab.proc_index("xvip-second").unwrap();
    assert!(
        lab.procs[i].child.try_wait().unwrap().is_none(),
        "the second exited: {}",
        read(&log2)
    );
    let now = xdp_prog(&lab, "lb").expect("the second is attached");
    assert_ne!(now, prog, "still the first's program");
    assert!(
        pins_of(ns).join("link").exists(),
        "the second's link is not pinned"
    );
    let text = read(&log2);
    assert!(!text.contains("cannot pin"), "{text}");
    for _ in 0..3 {
        lab.curl("client", &whoami("192.0.2.100"), Duration::from_secs(5))
            .unwrap();
    }
}

#[test]
fn pinned_counters_of_another_shape_are_replaced_and_the_flow_maps_adopted() {
    let mut own = OwnPins::default();
    let mut lab = lab("ctrshape", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let pins = pins_of(own.0[0]);
    start(&mut lab, "lb", &args(&["192.0.2.100"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    let (ct, _) = pinned_map(&pins.join("CONNTRACK"));
    lab.kill("xvip-lb").unwrap();
    // An older (or newer) xvip's REASONS: a counter map of another shape (here
    // BACKEND_STATS' entries and value size, linked in its place on the bpffs).
    let reasons = pins.join("REASONS");
    std::fs::remove_file(&reasons).unwrap();
    std::fs::hard_link(pins.join("BACKEND_STATS"), &reasons).unwrap();
    let (old_reasons, old_entries) = pinned_map(&reasons);
    assert_ne!(old_entries, lb_common::stats::REASON_COUNT);

    let log = TempDir::new("ctrshapelog");
    let log_path = log.path("xvip.log");
    start(&mut lab, "lb", &args(&["192.0.2.100"]), Some(&log_path));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
    // The pinned program answered the client already; the new xvip says when it adopted
    // the pins (the verifier may take seconds under load).
    let adopted = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("adopted the pinned state"))
    });
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        adopted && log_text.contains("REASONS: the pinned counters"),
        "{log_text}"
    );
    // The state was adopted (same flow map), only the counters were replaced.
    assert_eq!(pinned_map(&pins.join("CONNTRACK")).0, ct);
    let (new_reasons, entries) = pinned_map(&reasons);
    assert_ne!(new_reasons, old_reasons);
    assert_eq!(entries, lb_common::stats::REASON_COUNT);
}

/// The program marker in `dir` (`program-<object hash>-<tag>`), if there is exactly one.
fn marker(dir: &Path) -> Option<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("program-"))
        .collect();
    match names.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Restarts `xvip-lb` after a SIGKILL, logging to `log`; returns the log once the
/// start-up line is in it.
fn restart_logged(lab: &mut Lab, log: &Path) -> String {
    lab.kill("xvip-lb").unwrap();
    start(lab, "lb", &args(&["192.0.2.100"]), Some(log));
    let up = wait_until(Duration::from_secs(30), || read(log).contains("started in"));
    let text = read(log);
    assert!(up, "no start-up line: {text}");
    text
}

#[test]
fn a_restart_adopts_the_running_program_only_when_the_marker_names_it() {
    let mut own = OwnPins::default();
    let mut lab = lab("marker", &mut own, &[("lb", Ipv4Addr::new(192, 0, 2, 2))]);
    let pins = pins_of(own.0[0]);
    let files = TempDir::new("pins-marker");
    start(&mut lab, "lb", &args(&["192.0.2.100"]), None);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
    let first = xdp_prog(&lab, "lb").expect("attached");
    let m = marker(&pins).expect("a fresh attach leaves one program marker");

    // A marker naming another program (its tag changed): not adopted, verified afresh,
    // the new program swapped into the link, and its own marker written.
    let parts: Vec<&str> = m.split('-').collect();
    assert_eq!(parts.len(), 4, "program-<object>-<tag>-<id>: {m}");
    assert_eq!(
        parts[3],
        first.to_string(),
        "the marker names the program id"
    );
    let forged = format!("program-{}-0123456789abcdef-{first}", parts[1]);
    std::fs::rename(pins.join(&m), pins.join(forged)).unwrap();
    let text = restart_logged(&mut lab, &files.path("tag.log"));
    assert!(
        text.contains("not adopting the running program: the marker")
            && text.contains(&format!("does not name the running program (id {first}")),
        "{text}"
    );
    assert!(
        text.contains("replaced the pinned program in place"),
        "{text}"
    );
    assert!(text.contains("the verifier"), "{text}");
    let second = xdp_prog(&lab, "lb").expect("attached");
    assert_ne!(second, first, "the fresh program is in the link");
    let m2 = marker(&pins).expect("the fresh program's marker");
    // The same object has the same tag (the kernel's hash leaves map references out); the
    // id is the new program's.
    assert_eq!(m2, format!("program-{}-{}-{second}", parts[1], parts[2]));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();

    // No marker at all (what an older xvip leaves): the same.
    std::fs::remove_dir_all(pins.join(&m2)).unwrap();
    let text = restart_logged(&mut lab, &files.path("none.log"));
    assert!(
        text.contains("not adopting the running program: no program marker"),
        "{text}"
    );
    let third = xdp_prog(&lab, "lb").expect("attached");
    assert_ne!(third, second);
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();

    // A pinned map the running program does not use (here CONFIG unpinned, so the loader
    // creates a new one): not adopted, whatever the marker says.
    std::fs::remove_file(pins.join("CONFIG")).unwrap();
    let text = restart_logged(&mut lab, &files.path("map.log"));
    assert!(
        text.contains("not adopting the running program: map ")
            && text.contains("is neither a pin of"),
        "{text}"
    );
    let fourth = xdp_prog(&lab, "lb").expect("attached");
    assert_ne!(fourth, third);

    // And with the marker right, the next restart adopts that program.
    let text = restart_logged(&mut lab, &files.path("same.log"));
    assert!(
        text.contains(&format!("adopted the running program {fourth} ")),
        "{text}"
    );
    assert!(text.contains("program adopted"), "{text}");
    assert_eq!(xdp_prog(&lab, "lb"), Some(fourth));
    lab.curl_until_ok("client", &whoami("192.0.2.100"), Duration::from_secs(10))
        .unwrap();
}
