//! Routed mode (`--announce route`): two xvip nodes each put the VIP's /32 in table 200,
//! their BIRD exports it over BGP to a router (BIRD, ECMP with `merge paths`), a client on
//! another subnet behind the router reaches the masters through both nodes; SIGTERM and
//! all-backends-down withdraw a node's route.
//!
//! ```text
//!  client 198.51.100.10 --- router 198.51.100.1 / 192.0.2.1 --- segment 192.0.2.0/24:
//!                                                     n1 .2, n2 .3 (xvip + BIRD), m1-m3 .11-.13
//! ```
//! VIP 203.0.113.100 is on no subnet: only the routes make it reachable.

use std::{
    net::Ipv4Addr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tests::lab::{Lab, Netns, TempDir, sh};

const VIP: &str = "203.0.113.100";
const TABLE: &str = "200";
const NODES: [(&str, &str); 2] = [("n1", "192.0.2.2"), ("n2", "192.0.2.3")];
/// Outside the kernel's ephemeral ports: the SNAT address is the node's own.
const SNAT_PORTS: &str = "20000-32767";

struct Routed {
    lab: Lab,
    /// The client's namespace, joined to the router by its own veth pair.
    client: Netns,
    dir: TempDir,
}

/// BFD on the segment: a dead node is noticed in 3 x 100 ms, not the 3 s hold time.
const BFD: &str = "protocol bfd { interface \"eth0\" { min rx interval 100 ms; \
                   min tx interval 100 ms; multiplier 3; }; }\n";

fn router_conf() -> String {
    let c = String::from(
        "router id 192.0.2.1;\nlog stderr { warning, error, fatal };\n\
         protocol device { scan time 1; }\n{BFD}\
         protocol kernel { ipv4 { import none; export all; }; merge paths on; }\n",
    );
    let mut c = c.replace("{BFD}", BFD);
    for (name, ip) in NODES {
        c += &format!(
            "protocol bgp {name} {{ local 192.0.2.1 as 65000; neighbor {ip} as 65001; \
             hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
             error wait time 1, 2; bfd on; ipv4 {{ import all; export none; }}; }}\n"
        );
    }
    c
}

fn node_conf(ip: &str) -> String {
    format!(
        "router id {ip};\nlog stderr {{ warning, error, fatal }};\n\
         protocol device {{ scan time 1; }}\n{BFD}\
         protocol kernel xvip {{ kernel table {TABLE}; learn; scan time 1; \
         ipv4 {{ import all; export none; }}; }}\n\
         protocol bgp uplink {{ local {ip} as 65001; neighbor 192.0.2.1 as 65000; \
         hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
         error wait time 1, 2; bfd on; ipv4 {{ import none; export where proto = \"xvip\"; }}; }}\n"
    )
}

impl Routed {
    fn new(tag: &str) -> Self {
        let mut hosts = vec![("router", Ipv4Addr::new(192, 0, 2, 1))];
        for (n, ip) in NODES {
            hosts.push((n, ip.parse().unwrap()));
        }
        for i in 1..=3u8 {
            hosts.push((
                ["m1", "m2", "m3"][i as usize - 1],
                Ipv4Addr::new(192, 0, 2, 10 + i),
            ));
        }
        let mut lab = Lab::new(tag, &hosts).expect("lab");
        for m in ["m1", "m2", "m3"] {
            lab.start_apiserver(m, 6443, None).expect("apiserver");
        }
        let client = Netns::new(format!("{}-client", lab.prefix)).expect("client netns");
        let router = &lab.host("router").ns;
        router
            .ip(&[
                "link",
                "add",
                "eth1",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &client.name,
            ])
            .expect("client veth");
        router
            .ip(&["addr", "add", "198.51.100.1/24", "dev", "eth1"])
            .unwrap();
        router.ip(&["link", "set", "eth1", "up"]).unwrap();
        client
            .ip(&["addr", "add", "198.51.100.10/24", "dev", "eth0"])
            .unwrap();
        client.ip(&["link", "set", "eth0", "up"]).unwrap();
        // Inside the client's namespace only: everything goes to the router.
        client
            .ip(&["route", "add", "default", "via", "198.51.100.1"])
            .unwrap();
        for k in [
            "net.ipv4.ip_forward=1",
            // ECMP by ports too: one client's connections spread over both nodes.
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            sh(router.cmd("sysctl").args(["-qw", k])).unwrap();
        }
        for ns in [router, &client] {
            sh(ns.cmd("ethtool").args(["-K", "eth0", "tx", "off"])).ok();
        }
        sh(router.cmd("ethtool").args(["-K", "eth1", "tx", "off"])).ok();
        let dir = TempDir::new(&format!("routed-{tag}"));
        let mut r = Self { lab, client, dir };
        r.start_bird("router", &router_conf());
        for (n, ip) in NODES {
            r.start_bird(n, &node_conf(ip));
        }
        r
    }

    fn start_bird(&mut self, host: &str, conf: &str) {
        let path = self.dir.path(&format!("{host}.conf"));
        std::fs::write(&path, conf).unwrap();
        let mut cmd = self.lab.host(host).ns.cmd("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(self.dir.path(&format!("{host}.ctl")))
            .stdout(Stdio::null());
        self.lab.spawn(&format!("bird-{host}"), cmd).expect("bird");
    }

    fn start_xvip(&mut self, node: &str, ip: &str, extra: &[&str]) {
        let mut args = vec![
            "--interface",
            "eth0",
            "--vip",
            VIP,
            "--backend",
            "192.0.2.11",
            "--backend",
            "192.0.2.12",
            "--backend",
            "192.0.2.13",
            "--announce",
            "route",
            "--route-table",
            TABLE,
            "--snat-ip",
            ip,
            "--snat-ports",
            SNAT_PORTS,
            "--health-interval",
            "100ms",
        ];
        args.extend_from_slice(extra);
        self.lab.start_xvip(node, &args).expect("start xvip");
    }

    /// The next hops of the router's kernel route to the VIP.
    fn router_hops(&self) -> Vec<String> {
        let out = self
            .lab
            .host("router")
            .ns
            .ip(&["route", "show", VIP])
            .unwrap_or_default();
        let mut hops: Vec<String> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the router's route to the VIP has exactly `hops`; how long it took.
    fn wait_hops(&self, hops: &[&str], within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.router_hops();
            if now == hops {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "router's next hops {now:?}, wanted {hops:?} within {within:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn request(client: &str, timeout: Duration) -> Result<String, String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", client, "curl", "-sk", "--max-time"])
            .arg(format!("{:.1}", timeout.as_secs_f64()))
            .arg(format!("https://{VIP}:6443/whoami"))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("curl exit {:?}", out.status.code()))
        }
    }

    fn new_flows(&self, node: &str) -> u64 {
        self.lab
            .xvip_status(node)
            .map(|s| s.vip_traffic.iter().map(|v| v.new_flows).sum())
            .unwrap_or(0)
    }

    fn route_in_table(&self, node: &str) -> bool {
        self.lab
            .host(node)
            .ns
            .ip(&["route", "show", "table", TABLE])
            .unwrap_or_default()
            .contains(VIP)
    }

    /// Both nodes up and announced, the router with both next hops.
    fn serving(&mut self) {
        for (n, ip) in NODES {
            self.start_xvip(n, ip, &[]);
        }
        for (n, _) in NODES {
            self.lab
                .wait_status(n, Duration::from_secs(10), |s| {
                    s.route.as_ref().is_some_and(|r| r.announced)
                })
                .unwrap_or_else(|e| panic!("{n} never announced: {e}"));
        }
        let t = self.wait_hops(&["192.0.2.2", "192.0.2.3"], Duration::from_secs(30));
        println!("router learnt the VIP from both nodes {t:?} after both announced");
    }
}

#[test]
fn the_router_spreads_clients_over_both_nodes_and_sigterm_withdraws_without_failures() {
    let mut r = Routed::new("ecmp");
    r.serving();
    // Routed mode answers no ARP for the VIP and puts a unicast link route in the table.
    let table = r
        .lab
        .host("n1")
        .ns
        .ip(&["route", "show", "table", TABLE, "proto", "249"])
        .unwrap();
    assert!(
        table.contains(&format!("{VIP} dev eth0")) && table.contains("scope link"),
        "{table}"
    );
    let st = r.lab.xvip_status("n1").unwrap();
    assert!(!st.announcing, "routed mode must not answer ARP");
    let metrics = sh(r
        .lab
        .host("n1")
        .ns
        .cmd("curl")
        .args(["-s", "127.0.0.1:9106/metrics"]))
    .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(
        metrics.contains("xvip_route_announced{table=\"200\",reason=\"\"} 1"),
        "{metrics}"
    );

    let before: Vec<u64> = NODES.iter().map(|(n, _)| r.new_flows(n)).collect();
    let mut answers = std::collections::BTreeMap::new();
    for i in 0..40 {
        let who = Routed::request(&r.client.name, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("request {i} through the router failed: {e}"));
        *answers.entry(who).or_insert(0) += 1;
    }
    let carried: Vec<u64> = NODES
        .iter()
        .zip(&before)
        .map(|((n, _), b)| r.new_flows(n) - b)
        .collect();
    println!(
        "40 requests: masters {answers:?}, new flows n1 {} n2 {}",
        carried[0], carried[1]
    );
    assert!(
        carried.iter().all(|c| *c > 0),
        "both nodes carry traffic: {carried:?}"
    );
    assert!(carried.iter().sum::<u64>() >= 40, "{carried:?}");

    // SIGTERM n1 while the client keeps asking.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let load = {
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        let client = r.client.name.clone();
        thread::spawn(move || {
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match Routed::request(&client, Duration::from_secs(3)) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.lock().unwrap().push((t0.elapsed(), e));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    let i = r.lab.proc_index("xvip-n1").unwrap();
    let sent = t0.elapsed();
    r.lab.procs[i].signal(libc::SIGTERM);
    let withdrawn = r.wait_hops(&["192.0.2.3"], Duration::from_secs(3));
    let switched = t0.elapsed();
    println!("SIGTERM of n1: the router dropped its next hop after {withdrawn:?}");
    let exit = r.lab.procs[i].wait_timeout(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "xvip n1 exit {exit:?}");
    assert!(!r.route_in_table("n1"), "n1's route left behind");
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let failures = failures.lock().unwrap().clone();
    println!(
        "during the SIGTERM (sent at {sent:?}, route gone at {switched:?}): {ok} requests ok, {failed} failed {failures:?}"
    );
    assert!(ok > 10, "{ok} requests");
    // A request in flight on n1 at the very moment the router moves n1's flows to n2 is
    // reset (another SNAT address: docs/routed.md); nothing else may fail.
    assert!(failed <= 1, "{failed} requests failed: {failures:?}");
    for (at, e) in &failures {
        assert!(
            at.abs_diff(switched) < Duration::from_millis(1500),
            "a request failed at {at:?}, away from the switch at {switched:?}: {e}"
        );
    }
}

#[test]
fn a_node_whose_backends_are_all_down_withdraws_and_announces_again() {
    let mut r = Routed::new("down");
    r.serving();
    // Every master unreachable from n1 only: its health checks fail, n2's do not.
    let n1 = &r.lab.host("n1").ns;
    for m in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        n1.ip(&["route", "add", "blackhole", &format!("{m}/32")])
            .unwrap();
    }
    let t = r
        .lab
        .wait_status("n1", Duration::from_secs(5), |s| {
            s.route
                .as_ref()
                .is_some_and(|r| !r.announced && r.reason.as_deref() == Some("no healthy backend"))
        })
        .expect("n1 withdraws");
    let hops = r.wait_hops(&["192.0.2.3"], Duration::from_secs(3));
    println!("all backends down on n1: withdrawn after {t:?}, router moved {hops:?} later");
    let table = sh(r
        .lab
        .host("n1")
        .ns
        .cmd(tests::lab::xvip_bin())
        .args(["status"]))
    .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("route: WITHDRAWN from table 200: no healthy backend"),
        "{table}"
    );
    for i in 0..10 {
        Routed::request(&r.client.name, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("request {i} via n2 failed: {e}"));
    }
    let n1 = &r.lab.host("n1").ns;
    for m in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        n1.ip(&["route", "del", "blackhole", &format!("{m}/32")])
            .unwrap();
    }
    r.wait_hops(&["192.0.2.2", "192.0.2.3"], Duration::from_secs(10));
}

#[test]
fn detach_removes_the_route_a_killed_xvip_left() {
    let mut r = Routed::new("detach");
    r.start_xvip("n1", "192.0.2.2", &[]);
    r.lab
        .wait_status("n1", Duration::from_secs(10), |s| {
            s.route.as_ref().is_some_and(|r| r.announced)
        })
        .expect("announced");
    r.lab.kill("xvip-n1").unwrap();
    // A killed daemon withdraws nothing.
    assert!(r.route_in_table("n1"));
    let out = r
        .lab
        .host("n1")
        .ns
        .cmd(tests::lab::xvip_bin())
        .args(["detach", "--interface", "eth0"])
        .output()
        .unwrap();
    // Its pins went with `ip netns exec`'s private mounts: detach may find none, but the
    // route goes first all the same.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("withdrew 1 VIP routes on eth0"), "{said}");
    assert!(!r.route_in_table("n1"), "xvip detach left the route");
}

#[test]
fn routed_mode_with_vrrp_exits_2_naming_both() {
    let out = std::process::Command::new(tests::lab::xvip_bin())
        .args([
            "check-config",
            "--interface",
            "lo",
            "--vip",
            VIP,
            "--backend",
            "192.0.2.11",
            "--announce",
            "route",
            "--snat-ip",
            "192.0.2.2",
            "--vrrp-vrid",
            "5",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--announce") && err.contains("--vrrp-vrid"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_dying_node_costs_new_connects_well_under_1_5_s_with_bfd() {
    let mut r = Routed::new("bfd");
    r.serving();
    // Let BFD sessions come up before the failure.
    thread::sleep(Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    // Four clients in parallel, each asking again 20 ms after an answer: (start, ok).
    let loads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, client) = (stop.clone(), r.client.name.clone());
            thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let at = t0.elapsed();
                    let ok = Routed::request(&client, Duration::from_secs(1)).is_ok();
                    seen.push((at, ok));
                    thread::sleep(Duration::from_millis(20));
                }
                seen
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    // The node dies: its cable first (switch port p1; nothing it sends gets out, so no
    // FIN and no BGP notification reach the router), then its BIRD. Not `ip link set eth0
    // down` on the node: that deletes the route and its BIRD would withdraw at once.
    // A static FDB entry keeps the switch from flooding n1's frames to n2 once the port
    // is down: n2's XDP program would serve them (it does not look at the MAC), which no
    // real cable cut does.
    let mac = r
        .lab
        .host("n1")
        .ns
        .ip(&["-br", "link", "show", "eth0"])
        .unwrap();
    let mac = mac.split_whitespace().nth(2).expect("n1's MAC").to_string();
    sh(r.lab
        .switch
        .cmd("bridge")
        .args(["fdb", "replace", &mac, "dev", "p1", "master", "static"]))
    .unwrap();
    let down = t0.elapsed();
    r.lab.switch.ip(&["link", "set", "p1", "down"]).unwrap();
    r.lab.kill("bird-n1").unwrap();
    r.wait_hops(&["192.0.2.3"], Duration::from_secs(5));
    let gone = t0.elapsed() - down;
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(Duration, bool)> = loads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let failed: Vec<Duration> = seen
        .iter()
        .filter(|(at, ok)| !ok && *at + Duration::from_millis(50) >= down)
        .map(|(at, _)| *at)
        .collect();
    let last_failed = failed.iter().max().copied().unwrap_or(down);
    let cost = last_failed.saturating_sub(down);
    println!(
        "node n1 died: the router dropped it {gone:?} after its cable was cut; new connects failed for {cost:?} \
         ({} of {} requests failed)",
        failed.len(),
        seen.len()
    );
    assert!(
        seen.iter()
            .filter(|(at, ok)| *ok && *at > down + cost)
            .count()
            > 10,
        "clients are served after the failure"
    );
    assert!(
        cost < Duration::from_millis(1500),
        "new connects failed for {cost:?}"
    );
}

/// Detaches the XDP program on `ns`'s eth0 from outside xvip, as `bpftool link detach`
/// does: the link stays (xvip holds it), the interface runs nothing.
fn detach_link_from_outside(ns: &Netns) -> u32 {
    let out = ns.ip(&["link", "show", "dev", "eth0"]).unwrap();
    let rest = &out[out.find("prog/xdp id ").expect("xvip attached") + 12..];
    let prog: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|l| l.program_id() == prog)
        .expect("xvip's program is attached through a BPF link")
        .id();
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let mut attr = [0u64; 8];
    attr[0] = u64::from(link);
    // SAFETY: bpf(2) with an attribute buffer larger than the command's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    let mut attr = [0u64; 8];
    attr[0] = fd as u64;
    // SAFETY: as above; the descriptor is ours and closed right after.
    let rc = unsafe {
        let rc = libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        );
        libc::close(fd as i32);
        rc
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert!(
        !ns.ip(&["link", "show", "dev", "eth0"])
            .unwrap()
            .contains("prog/xdp"),
        "still attached"
    );
    prog
}

#[test]
fn a_program_detached_from_outside_withdraws_the_route() {
    let mut r = Routed::new("gone");
    r.serving();
    let prog = detach_link_from_outside(&r.lab.host("n1").ns);
    let t = Instant::now();
    r.lab
        .wait_status("n1", Duration::from_secs(5), |s| {
            s.route
                .as_ref()
                .is_some_and(|r| !r.announced && r.reason.as_deref() == Some("not attached"))
        })
        .expect("n1 withdraws once its program is detached");
    println!(
        "program {prog} detached: n1 withdrew after {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(!r.route_in_table("n1"), "the route stayed in table {TABLE}");
    let hops = r.wait_hops(&["192.0.2.3"], Duration::from_secs(10));
    println!("router down to n2 {hops:?} later");
    for i in 0..10 {
        Routed::request(&r.client.name, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("request {i} via n2 failed: {e}"));
    }
    // And it stays withdrawn: events between ticks keep the last answer.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!r.route_in_table("n1"), "re-announced while detached");
}
