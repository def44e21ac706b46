//! IPv6 and dual stack in namespaces (only 2001:db8::/32 and link-local addresses): the
//! client learns the v6 VIP's neighbour entry from xvip's NDP answers (no static entry),
//! DAD probes of other addresses are left alone and the VIP is defended, health checks
//! reach IPv6 masters, two xvip nodes hand the v6 VIP over after a SIGKILL (seen in the
//! client's neighbour table), xvip and keepalived elect one master over IPv6 VRRPv3, and
//! `--announce none` answers nothing, a local backend is served through the VIP on `lo`.
//! The forwarding tests (HTTPS and ping through the v6
//! VIP, rotation, the node itself, dual stack) need the IPv6 data path.

mod common;

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use common::*;
use tests::lab::{Lab, TempDir, apiserver_bin, in_netns, sh};
use xvip::api::document::Status;

const VIP6: &str = "2001:db8::100";

/// A lab host's IPv6 address: 2001:db8:: and the digits of its IPv4 address's last octet
/// (192.0.2.11 -> 2001:db8::11).
fn v6_of(ip: Ipv4Addr) -> String {
    format!("2001:db8::{}", ip.octets()[3])
}

fn v6_host(lab: &Lab, host: &str) -> String {
    v6_of(lab.host(host).ip)
}

fn vip6_url(path: &str) -> String {
    format!("https://[{VIP6}]:6443{path}")
}

/// Gives every host its 2001:db8::N/64 (no DAD) and waits until no address is tentative
/// (the link-local ones went through DAD when the links came up).
fn add_v6(lab: &Lab) {
    for h in &lab.hosts {
        h.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", v6_of(h.ip)),
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("ip -6 addr add");
    }
    for h in &lab.hosts {
        wait_for(Duration::from_secs(5), "no tentative address", || {
            h.ns.ip(&["-6", "addr", "show", "dev", "eth0", "tentative"])
                .is_ok_and(|o| o.trim().is_empty())
        });
    }
}

/// A lab API server named like the master on its IPv6 address (`--not-ready-file` for m1
/// when given).
fn start_v6_apiservers(lab: &mut Lab, not_ready: Option<&std::path::Path>) {
    for m in ["m1", "m2", "m3"] {
        let listen = format!("[{}]:6443", v6_host(lab, m));
        let mut cmd = lab.host(m).ns.cmd(apiserver_bin());
        cmd.args(["--listen", &listen, "--name", m]);
        if let (Some(f), "m1") = (not_ready, m) {
            cmd.arg("--not-ready-file").arg(f);
        }
        lab.spawn_apiserver(&format!("apiserver6-{m}"), cmd)
            .expect("v6 apiserver");
    }
}

/// `--vip` and `--backend` flags for the IPv6 VIP and the three IPv6 masters.
fn v6_args(lab: &Lab) -> Vec<String> {
    let mut v = vec![
        "--interface".into(),
        "eth0".into(),
        "--vip".into(),
        format!("[{VIP6}]:6443"),
    ];
    for m in ["m1", "m2", "m3"] {
        v.push("--backend".into());
        v.push(format!("[{}]:6443", v6_host(lab, m)));
    }
    v
}

/// Starts xvip on `host` and waits until it is attached (see `common::wait_attached`).
fn start(lab: &mut Lab, host: &str, args: &[String]) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_xvip(host, &a).expect("start xvip");
    wait_attached(lab, host);
}

/// `host`'s status on the test metrics address, `None` when xvip does not answer.
fn status(lab: &Lab, host: &str) -> Option<Status> {
    let ns = lab.host(host).ns.name.clone();
    in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(xvip::api::client::fetch(METRICS.parse().expect("addr")))
            .ok()
    })
    .ok()
    .flatten()
}

fn state6(lab: &Lab, host: &str) -> String {
    status(lab, host)
        .and_then(|s| s.vrrp6)
        .map_or_else(|| "down".into(), |v| v.state)
}

fn backend_healthy(s: &Status, addr: &str) -> Option<bool> {
    s.backends
        .iter()
        .find(|b| b.addr == addr)
        .map(|b| b.healthy)
}

/// `host`'s link-local address on eth0.
fn link_local(lab: &Lab, host: &str) -> String {
    let out = lab
        .host(host)
        .ns
        .ip(&["-6", "addr", "show", "dev", "eth0", "scope", "link"])
        .expect("ip -6 addr");
    out.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("a link-local address")
        .to_string()
}

/// The client's neighbour entry for the v6 VIP: (lladdr, the rest of the line).
fn client_vip6_neigh(lab: &Lab) -> (Option<String>, String) {
    let line = lab
        .host("client")
        .ns
        .ip(&["-6", "neigh", "show", VIP6, "dev", "eth0"])
        .unwrap_or_default();
    let mac = line
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string);
    (mac, line)
}

/// Makes the client solicit the VIP's link-layer address: a TCP connect (its SYN needs a
/// neighbour entry; the connection itself is not needed).
fn client_touches_vip6(lab: &Lab) {
    let _ = lab.curl("client", &vip6_url("/readyz"), Duration::from_millis(500));
}

/// Waits until the client's neighbour entry for the VIP holds `mac`; returns how long.
fn wait_client_mac(lab: &Lab, mac: &str, within: Duration) -> Duration {
    wait_for(within, &format!("client's neighbour entry = {mac}"), || {
        client_vip6_neigh(lab).0.as_deref() == Some(mac)
    })
}

/// `host`'s eth0 IPv6 address line for `addr`, if any.
fn addr_line(lab: &Lab, host: &str, addr: &str) -> Option<String> {
    lab.host(host)
        .ns
        .ip(&["-6", "addr", "show", "dev", "eth0"])
        .ok()?
        .lines()
        .find(|l| l.contains(&format!("inet6 {addr}/")))
        .map(str::to_string)
}

#[test]
fn ndp_gives_the_client_xvip_s_mac_for_the_v6_vip_and_health_checks_reach_v6_masters() {
    let dir = TempDir::new("v6ndp");
    let not_ready = dir.path("m1.notready");
    let mut lab = lab("v6ndp", 1, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, Some(&not_ready));
    let mut args = v6_args(&lab);
    // A SNAT address that is not the node's own: xvip answers NDP for it too.
    let snat = "2001:db8::200";
    args.extend(["--metrics-addr", METRICS, "--snat-ip", snat].map(String::from));
    start(&mut lab, "lb1", &args);
    let m1 = format!("[{}]:6443", v6_host(&lab, "m1"));
    wait_for(Duration::from_secs(10), "three healthy v6 backends", || {
        status(&lab, "lb1").is_some_and(|s| {
            s.announcing6 == Some(true)
                && s.backends.iter().filter(|b| b.healthy).count() == 3
                && s.vips == [format!("[{VIP6}]:6443")]
        })
    });

    // The client resolves the VIP by NDP: xvip's MAC, a dynamic entry.
    client_touches_vip6(&lab);
    let lb = mac_of(&lab, "lb1");
    wait_client_mac(&lab, &lb, Duration::from_secs(3));
    let (_, line) = client_vip6_neigh(&lab);
    assert!(!line.contains("PERMANENT"), "a learnt entry: {line}");
    // A master resolves the SNAT address (where the replies go) to xvip too.
    let _ = lab.curl(
        "m1",
        &format!("https://[{snat}]:6443/"),
        Duration::from_millis(500),
    );
    wait_for(
        Duration::from_secs(3),
        "m1's entry for the SNAT address",
        || {
            lab.host("m1")
                .ns
                .ip(&["-6", "neigh", "show", snat, "dev", "eth0"])
                .is_ok_and(|l| l.contains(&lb))
        },
    );

    // A master failing /readyz is seen down, and up again.
    std::fs::write(&not_ready, "").expect("not ready");
    let took = wait_for(Duration::from_secs(5), "m1 (v6) down", || {
        status(&lab, "lb1").and_then(|s| backend_healthy(&s, &m1)) == Some(false)
    });
    println!(
        "v6 master failing /readyz seen down after {} ms",
        took.as_millis()
    );
    std::fs::remove_file(&not_ready).expect("ready again");
    wait_for(Duration::from_secs(5), "m1 (v6) up", || {
        status(&lab, "lb1").and_then(|s| backend_healthy(&s, &m1)) == Some(true)
    });

    // DAD of an address that is not ours is left alone ...
    let other = "2001:db8::55";
    lab.host("m2")
        .ns
        .ip(&["-6", "addr", "add", &format!("{other}/64"), "dev", "eth0"])
        .expect("addr add");
    wait_for(
        Duration::from_secs(5),
        "DAD of another address ends",
        || addr_line(&lab, "m2", other).is_some_and(|l| !l.contains("tentative")),
    );
    let l = addr_line(&lab, "m2", other).expect("address");
    assert!(!l.contains("dadfailed"), "xvip answered a DAD probe: {l}");
    // ... and the VIP is defended against a host that would take it.
    lab.host("m3")
        .ns
        .ip(&["-6", "addr", "add", &format!("{VIP6}/64"), "dev", "eth0"])
        .expect("addr add");
    wait_for(Duration::from_secs(5), "the VIP's DAD fails on m3", || {
        addr_line(&lab, "m3", VIP6).is_some_and(|l| l.contains("dadfailed"))
    });
    let _ = lab
        .host("m3")
        .ns
        .ip(&["-6", "addr", "del", &format!("{VIP6}/64"), "dev", "eth0"]);
    let s = status(&lab, "lb1").expect("status");
    println!(
        "reasons: {:?}",
        s.reasons
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect::<Vec<_>>()
    );
}

#[test]
fn announce_none_answers_no_neighbour_solicitation_for_the_v6_vip() {
    let mut lab = lab("v6none", 1, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    let mut args = v6_args(&lab);
    args.extend([
        "--metrics-addr".into(),
        METRICS.into(),
        "--announce".into(),
        "none".into(),
    ]);
    start(&mut lab, "lb1", &args);
    wait_for(Duration::from_secs(10), "xvip up, not announcing", || {
        status(&lab, "lb1").is_some_and(|s| s.announcing6 == Some(false))
    });
    client_touches_vip6(&lab);
    thread::sleep(Duration::from_millis(1500));
    let (mac, line) = client_vip6_neigh(&lab);
    assert_eq!(mac, None, "nobody answers for the VIP: {line}");
}

#[test]
fn two_xvip_nodes_hand_the_v6_vip_over_after_a_sigkill() {
    let mut lab = lab("v6ha", 2, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    for (host, prio) in [("lb1", "150"), ("lb2", "100")] {
        let mut args = v6_args(&lab);
        args.extend(
            [
                "--metrics-addr",
                METRICS,
                "--vrrp-vrid",
                "51",
                "--vrrp-priority",
                prio,
            ]
            .map(String::from),
        );
        start(&mut lab, host, &args);
    }
    let ll1 = link_local(&lab, "lb1");
    wait_for(
        Duration::from_secs(8),
        "lb1 master, lb2 backup (v6)",
        || {
            state6(&lab, "lb1") == "master"
                && status(&lab, "lb2")
                    .and_then(|s| s.vrrp6)
                    .is_some_and(|v| v.state == "backup" && v.master.as_deref() == Some(&ll1))
        },
    );
    let v = status(&lab, "lb2")
        .and_then(|s| s.vrrp6)
        .expect("lb2 vrrp6");
    assert!(v.adverts_received > 0 && v.drops["checksum"] == 0, "{v:?}");
    // The IPv6 instance's priority follows the IPv6 backends' health: no penalty here.
    wait_for(Duration::from_secs(3), "unpenalized priorities", || {
        status(&lab, "lb1")
            .and_then(|s| s.vrrp6)
            .is_some_and(|v| v.priority == 150)
            && status(&lab, "lb2")
                .and_then(|s| s.vrrp6)
                .is_some_and(|v| v.priority == 100)
    });
    assert_eq!(
        v.address,
        link_local(&lab, "lb2"),
        "advertises from link-local"
    );
    client_touches_vip6(&lab);
    wait_client_mac(&lab, &mac_of(&lab, "lb1"), Duration::from_secs(3));

    let lb2 = mac_of(&lab, "lb2");
    let kill = Instant::now();
    lab.kill("xvip-lb1").expect("kill lb1");
    wait_for(
        Duration::from_secs(5),
        "client's entry moves to lb2",
        || client_vip6_neigh(&lab).0.as_deref() == Some(lb2.as_str()),
    );
    let took = kill.elapsed();
    println!(
        "v6 VIP handover after SIGKILL: client's neighbour entry is lb2's MAC after {} ms",
        took.as_millis()
    );
    assert!(took < TAKEOVER_BOUND, "{took:?}");
    assert_eq!(state6(&lab, "lb2"), "master");
}

#[test]
fn unicast_link_local_peers_elect_one_master_and_fail_over() {
    let mut lab = lab("v6uc", 2, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    let (ll1, ll2) = (link_local(&lab, "lb1"), link_local(&lab, "lb2"));
    for (host, prio, peer) in [("lb1", "150", &ll2), ("lb2", "100", &ll1)] {
        let mut args = v6_args(&lab);
        args.extend(
            [
                "--metrics-addr",
                METRICS,
                "--vrrp-vrid",
                "51",
                "--vrrp-priority",
                prio,
                "--vrrp-peer",
                peer,
            ]
            .map(String::from),
        );
        start(&mut lab, host, &args);
    }
    wait_for(
        Duration::from_secs(8),
        "lb1 master over unicast (v6)",
        || {
            state6(&lab, "lb1") == "master"
                && status(&lab, "lb2")
                    .and_then(|s| s.vrrp6)
                    .is_some_and(|v| v.state == "backup" && v.master.as_deref() == Some(&ll1))
        },
    );
    lab.kill("xvip-lb1").expect("kill");
    let took = wait_for(Duration::from_secs(3), "lb2 master", || {
        state6(&lab, "lb2") == "master"
    });
    println!(
        "v6 unicast peers: lb2 master {} ms after the kill",
        took.as_millis()
    );
    assert!(took < TAKEOVER_BOUND, "{took:?}");
}

#[test]
fn sighup_reloads_the_v6_backends_from_the_config_file() {
    let dir = TempDir::new("v6hup");
    let mut lab = lab("v6hup", 1, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    let [m1, m2, m3] = ["m1", "m2", "m3"].map(|m| format!("[{}]:6443", v6_host(&lab, m)));
    let conf = dir.path("xvip.toml");
    let write = |backends: &[String]| {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        std::fs::write(
            &conf,
            format!(
                "interface = \"eth0\"\nvips = [\"[{VIP6}]:6443\"]\nbackends = [{}]\nmetrics_addr = \"{METRICS}\"\n",
                list.join(", ")
            ),
        )
        .expect("config");
    };
    write(&[m1.clone(), m2.clone()]);
    let args = vec!["--config".to_string(), conf.to_string_lossy().into_owned()];
    start(&mut lab, "lb1", &args);
    let healthy = |lab: &Lab| -> Vec<String> {
        status(lab, "lb1")
            .map(|s| {
                s.backends
                    .into_iter()
                    .filter(|x| x.healthy && x.checks_ok > 0)
                    .map(|x| x.addr)
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(10), "m1, m2 checked healthy", || {
        healthy(&lab) == [m1.clone(), m2.clone()]
    });
    write(&[m2.clone(), m3.clone()]);
    let i = xvip_index(&lab, "lb1");
    lab.procs[i].signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "m2, m3 after SIGHUP", || {
        let s = status(&lab, "lb1").expect("status");
        let all: Vec<String> = s.backends.iter().map(|x| x.addr.clone()).collect();
        all == [m2.clone(), m3.clone()] && healthy(&lab) == all
    });
}

/// The `kubernetes` EndpointSlices of an IPv6-only cluster: `ips` ready at :6443.
fn v6_slices(ips: &[String]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!(r#"{{"addresses":["{ip}"],"conditions":{{"ready":true}}}}"#))
        .collect();
    format!(
        r#"{{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{{"resourceVersion":"1"}},"items":[{{"metadata":{{"name":"kubernetes","namespace":"default","labels":{{"kubernetes.io/service-name":"kubernetes"}}}},"addressType":"IPv6","endpoints":[{}],"ports":[{{"name":"https","port":6443,"protocol":"TCP"}}]}}]}}"#,
        eps.join(",")
    )
}

#[test]
fn discovery_follows_an_ipv6_clusters_endpointslices() {
    let dir = TempDir::new("v6disc");
    let mut lab = lab("v6disc", 1, None);
    add_v6(&lab);
    let slices = dir.path("slices.json");
    let [a1, a2, a3] = ["m1", "m2", "m3"].map(|m| v6_host(&lab, m));
    std::fs::write(&slices, v6_slices(&[a1.clone(), a2.clone()])).expect("slices");
    for m in ["m1", "m2", "m3"] {
        let listen = format!("[{}]:6443", v6_host(&lab, m));
        let mut cmd = lab.host(m).ns.cmd(apiserver_bin());
        cmd.args(["--listen", &listen, "--name", m])
            .arg("--endpointslices-file")
            .arg(&slices);
        lab.spawn_apiserver(&format!("apiserver6-{m}"), cmd)
            .expect("v6 apiserver");
    }
    let kc = dir.path("admin.conf");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://[{VIP6}]:6443\n    insecure-skip-tls-verify: true\n\
             users:\n- name: admin\n  user:\n    token: lab-token\ncontexts:\n- name: admin@lab\n  context:\n    cluster: lab\n    user: admin\n\
             current-context: admin@lab\n"
        ),
    )
    .expect("kubeconfig");
    let args: Vec<String> = [
        "--interface",
        "eth0",
        "--vip",
        &format!("[{VIP6}]:6443"),
        "--backend",
        &format!("[{a1}]:6443"),
        "--metrics-addr",
        METRICS,
        "--discover-from-kubeconfig",
        &kc.to_string_lossy(),
    ]
    .map(String::from)
    .to_vec();
    start(&mut lab, "lb1", &args);
    let backends = |lab: &Lab| -> Vec<String> {
        status(lab, "lb1")
            .map(|s| s.backends.into_iter().map(|b| b.addr).collect())
            .unwrap_or_default()
    };
    let want =
        |ips: &[&String]| -> Vec<String> { ips.iter().map(|a| format!("[{a}]:6443")).collect() };
    wait_for(Duration::from_secs(10), "the two listed v6 masters", || {
        backends(&lab) == want(&[&a1, &a2])
    });
    std::fs::write(&slices, v6_slices(&[a1.clone(), a2.clone(), a3.clone()])).expect("slices");
    let took = wait_for(Duration::from_secs(5), "the third v6 master", || {
        backends(&lab) == want(&[&a1, &a2, &a3])
    });
    println!(
        "IPv6 EndpointSlice change applied after {} ms",
        took.as_millis()
    );
    let d = status(&lab, "lb1")
        .and_then(|s| s.discovery)
        .expect("discovery");
    assert_eq!(d.masters.len(), 3, "{d:?}");
}

/// keepalived's IPv6 VRRPv3 instance (its own instance: one family per VRID), 100 ms.
fn start_keepalived6(lab: &mut Lab, host: &str, priority: u8, dir: &std::path::Path, run: &str) {
    let conf = format!(
        "global_defs {{\n  router_id {host}\n  vrrp_version 3\n  enable_script_security\n}}\n\
         vrrp_instance xvip6 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n  \
         priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP6}/128 dev eth0\n  }}\n}}\n"
    );
    spawn_keepalived(lab, host, &conf, dir, run);
}

fn has_vip6(lab: &Lab, host: &str) -> bool {
    addr_line(lab, host, VIP6).is_some()
}

#[test]
fn keepalived_ipv6_vrrpv3_and_xvip_elect_one_master_and_take_over_from_each_other() {
    let dir = TempDir::new("v6ka");
    let mut lab = lab("v6ka", 2, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    let mut args = v6_args(&lab);
    args.extend(
        [
            "--metrics-addr",
            METRICS,
            "--vrrp-vrid",
            "51",
            "--vrrp-priority",
            "100",
        ]
        .map(String::from),
    );

    // keepalived (150) on lb1, xvip (100) on lb2: keepalived is master, xvip hears it.
    start_keepalived6(&mut lab, "lb1", 150, &dir.0, "a");
    start(&mut lab, "lb2", &args);
    let ka = link_local(&lab, "lb1");
    wait_for(
        Duration::from_secs(8),
        "keepalived master, xvip backup",
        || {
            has_vip6(&lab, "lb1")
                && status(&lab, "lb2")
                    .and_then(|s| s.vrrp6)
                    .is_some_and(|v| v.state == "backup" && v.master.as_deref() == Some(&ka))
        },
    );
    let t = status(&lab, "lb2")
        .and_then(|s| s.vrrp6)
        .expect("vrrp6")
        .transitions;
    thread::sleep(Duration::from_millis(1000));
    let v = status(&lab, "lb2").and_then(|s| s.vrrp6).expect("vrrp6");
    assert!(
        has_vip6(&lab, "lb1") && v.state == "backup" && v.transitions == t,
        "{v:?}"
    );
    assert_eq!(
        v.drops["checksum"], 0,
        "keepalived's v6 checksum is accepted: {v:?}"
    );
    assert_eq!(v.drops["ttl"], 0, "hop limit 255: {v:?}");

    // keepalived dies (its VIP with its node): xvip takes over, the client follows.
    client_touches_vip6(&lab);
    wait_client_mac(&lab, &mac_of(&lab, "lb1"), Duration::from_secs(3));
    let kill = Instant::now();
    kill_keepalived(&mut lab, &dir.0, "a");
    let _ = lab
        .host("lb1")
        .ns
        .ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "eth0"]);
    wait_client_mac(&lab, &mac_of(&lab, "lb2"), Duration::from_secs(3));
    let took = kill.elapsed();
    println!(
        "keepalived -> xvip (IPv6): client's neighbour entry moved after {} ms",
        took.as_millis()
    );
    assert!(took < TAKEOVER_BOUND, "{took:?}");
    assert_eq!(state6(&lab, "lb2"), "master");
    lab.stop("keepalived-a");

    // keepalived comes back lower (50): it hears xvip and stays backup.
    start_keepalived6(&mut lab, "lb1", 50, &dir.0, "b");
    let t = status(&lab, "lb2")
        .and_then(|s| s.vrrp6)
        .expect("vrrp6")
        .transitions;
    thread::sleep(Duration::from_millis(1500));
    assert!(
        !has_vip6(&lab, "lb1"),
        "keepalived took the VIP from a higher xvip master"
    );
    let v = status(&lab, "lb2").and_then(|s| s.vrrp6).expect("vrrp6");
    assert_eq!((v.state.as_str(), v.transitions), ("master", t), "{v:?}");

    // xvip dies: keepalived takes over.
    let i = xvip_index(&lab, "lb2");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    let took = wait_for(Duration::from_secs(3), "keepalived master", || {
        has_vip6(&lab, "lb1")
    });
    println!(
        "xvip -> keepalived (IPv6): VIP on lb1 after {} ms",
        took.as_millis()
    );
    let _ = kill;
    drop(lab);
}

#[test]
fn a_local_v6_backend_is_served_through_the_v6_vip_on_lo() {
    let mut lab = lab("v6local", 1, None);
    add_v6(&lab);
    // lb1 is itself a master: its API server listens on every address (the VIP on lo too).
    let mut cmd = lab.host("lb1").ns.cmd(apiserver_bin());
    cmd.args(["--listen", "[::]:6443", "--name", "lb1"]);
    lab.spawn_apiserver("apiserver6-lb1", cmd)
        .expect("apiserver");
    let own = format!("[{}]:6443", v6_host(&lab, "lb1"));
    let args: Vec<String> = [
        "--interface",
        "eth0",
        "--vip",
        &format!("[{VIP6}]:6443"),
        "--backend",
        &own,
        "--metrics-addr",
        METRICS,
    ]
    .map(String::from)
    .to_vec();
    start(&mut lab, "lb1", &args);
    let on_lo = |lab: &Lab| {
        lab.host("lb1")
            .ns
            .ip(&["-6", "addr", "show", "dev", "lo"])
            .unwrap_or_default()
            .contains(&format!("{VIP6}/128"))
    };
    wait_for(
        Duration::from_secs(10),
        "the v6 VIP on lo, backend up",
        || {
            on_lo(&lab)
                && status(&lab, "lb1").is_some_and(|s| backend_healthy(&s, &own) == Some(true))
        },
    );
    let body = lab
        .curl_until_ok("client", &vip6_url("/whoami"), Duration::from_secs(5))
        .expect("through the v6 VIP to the local API server");
    assert_eq!(body.trim(), "lb1");
    lab.stop("xvip-lb1");
    assert!(!on_lo(&lab), "the VIP left lo with xvip");
}

#[test]
fn dual_stack_runs_one_vrrp_instance_per_family_and_announces_both() {
    let mut lab = lab("v6dsv", 2, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    for (host, prio) in [("lb1", "150"), ("lb2", "100")] {
        let mut args = v6_args(&lab);
        args.extend(
            [
                "--metrics-addr",
                METRICS,
                "--vip",
                "192.0.2.100:6443",
                "--backend",
                "192.0.2.11",
                "--backend",
                "192.0.2.12",
                "--vrrp-vrid",
                "51",
                "--vrrp-priority",
                prio,
            ]
            .map(String::from),
        );
        start(&mut lab, host, &args);
    }
    let (ll1, ip1) = (link_local(&lab, "lb1"), lab.host("lb1").ip.to_string());
    wait_for(
        Duration::from_secs(8),
        "lb1 master of both instances",
        || {
            status(&lab, "lb2").is_some_and(|s| {
                s.vrrp
                    .as_ref()
                    .is_some_and(|v| v.state == "backup" && v.master.as_deref() == Some(&ip1))
                    && s.vrrp6
                        .as_ref()
                        .is_some_and(|v| v.state == "backup" && v.master.as_deref() == Some(&ll1))
            }) && status(&lab, "lb1").is_some_and(|s| {
                s.announcing
                    && s.announcing6 == Some(true)
                    && s.vips == ["192.0.2.100:6443".to_string(), format!("[{VIP6}]:6443")]
            })
        },
    );
    // The IPv4 VIP forwards; the client finds both VIPs at lb1.
    let body = lab
        .curl_until_ok(
            "client",
            "https://192.0.2.100:6443/whoami",
            Duration::from_secs(5),
        )
        .expect("v4 VIP");
    assert!(body.trim().starts_with('m'), "{body}");
    client_touches_vip6(&lab);
    let lb1 = mac_of(&lab, "lb1");
    wait_client_mac(&lab, &lb1, Duration::from_secs(3));
    assert_eq!(client_vip_mac(&lab), lb1);
    // lb1 dies: lb2 takes both families over.
    lab.kill("xvip-lb1").expect("kill");
    let lb2 = mac_of(&lab, "lb2");
    wait_client_mac(&lab, &lb2, Duration::from_secs(3));
    wait_for(Duration::from_secs(3), "lb2 master of both", || {
        status(&lab, "lb2").is_some_and(|s| s.announcing && s.announcing6 == Some(true))
    });
    lab.curl_until_ok(
        "client",
        "https://192.0.2.100:6443/whoami",
        Duration::from_secs(3),
    )
    .expect("v4 VIP through lb2");
    assert_eq!(client_vip_mac(&lab), lb2);
}

/// Sends each of `msgs` from `host`'s eth0 on a raw IPv6 socket of protocol `proto` to the
/// link-local multicast `dst`, with hop limit `hops` (ICMPv6: the kernel adds the checksum).
fn send_raw6(lab: &Lab, host: &str, proto: i32, hops: i32, dst: &str, msgs: Vec<Vec<u8>>) {
    let ns = lab.host(host).ns.name.clone();
    let dst: std::net::Ipv6Addr = dst.parse().expect("dst");
    in_netns(&ns, move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, proto);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            for (opt, v) in [
                (libc::IPV6_MULTICAST_HOPS, hops),
                (libc::IPV6_MULTICAST_IF, ifindex as i32),
            ] {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    opt,
                    (&raw const v).cast(),
                    size_of::<i32>() as u32,
                );
            }
            let mut to: libc::sockaddr_in6 = std::mem::zeroed();
            to.sin6_family = libc::AF_INET6 as u16;
            to.sin6_addr.s6_addr = dst.octets();
            to.sin6_scope_id = ifindex;
            for m in &msgs {
                libc::sendto(
                    fd,
                    m.as_ptr().cast(),
                    m.len(),
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                );
            }
            libc::close(fd);
        }
    })
    .expect("in netns");
}

#[test]
fn forged_v6_adverts_and_solicitations_change_nothing_and_are_counted() {
    use xvip::{
        wire::vrrp::{Advert, MULTICAST6},
        wire::vrrp::{Auth, Version},
    };
    let mut lab = lab("v6forge", 1, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    let mut args = v6_args(&lab);
    args.extend(["--metrics-addr", METRICS, "--vrrp-vrid", "51"].map(String::from));
    start(&mut lab, "lb1", &args);
    wait_for(Duration::from_secs(8), "lb1 master (v6)", || {
        state6(&lab, "lb1") == "master"
    });
    let before = status(&lab, "lb1").expect("status");
    let t = before.vrrp6.as_ref().expect("vrrp6").transitions;

    // Adverts that would take the VIP (priority 254) if accepted: routed (hop limit 64),
    // a broken checksum, another VRID.
    let src: std::net::Ipv6Addr = link_local(&lab, "client").parse().expect("ll");
    let forged = |vrid: u8| Advert {
        version: Version::V3,
        vrid,
        priority: 254,
        max_adver_int_cs: 10,
        addrs: vec![VIP6.parse::<std::net::IpAddr>().expect("vip")],
        auth: Auth::NONE,
    };
    let good = forged(51).encode(src, MULTICAST6);
    let mut bad_sum = good.clone();
    bad_sum[6] ^= 0x55;
    let rounds = 20;
    for _ in 0..rounds {
        send_raw6(&lab, "client", 112, 64, "ff02::12", vec![good.clone()]);
        send_raw6(
            &lab,
            "client",
            112,
            255,
            "ff02::12",
            vec![bad_sum.clone(), forged(52).encode(src, MULTICAST6)],
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Solicitations for the VIP that were routed (hop limit 64): never answered.
    let mut ns = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&VIP6.parse::<std::net::Ipv6Addr>().expect("vip").octets());
    send_raw6(
        &lab,
        "client",
        libc::IPPROTO_ICMPV6,
        64,
        "ff02::1:ff00:100",
        vec![ns; rounds],
    );
    thread::sleep(Duration::from_millis(300));
    let after = status(&lab, "lb1").expect("status");
    let v = after.vrrp6.as_ref().expect("vrrp6");
    assert_eq!((v.state.as_str(), v.transitions), ("master", t), "{v:?}");
    for reason in ["ttl", "checksum", "vrid"] {
        assert!(v.drops[reason] >= rounds as u64, "{reason}: {:?}", v.drops);
    }
    let (n0, n1) = (before.ndp.expect("ndp"), after.ndp.expect("ndp"));
    assert!(
        n1.dropped["hop_limit"] >= n0.dropped["hop_limit"] + rounds as u64,
        "{n1:?}"
    );
    assert_eq!(
        n1.answered, n0.answered,
        "a routed solicitation was answered"
    );
}

// ---- forwarding through the IPv6 VIP: needs the IPv6 data path ----

/// `n` new connections from `from` to the v6 VIP's `/whoami`: who answered how often.
fn spread6(lab: &Lab, from: &str, n: usize) -> std::collections::BTreeMap<String, u32> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let who = lab
            .curl(from, &vip6_url("/whoami"), Duration::from_secs(2))
            .map(|b| b.trim().to_string())
            .unwrap_or_else(|e| format!("error: {e}"));
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

/// One xvip (no VRRP) serving the v6 VIP, with the three v6 masters healthy.
fn forwarding_lab(tag: &str, not_ready: Option<&std::path::Path>, extra: &[&str]) -> Lab {
    let mut lab = lab(tag, 1, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, not_ready);
    let mut args = v6_args(&lab);
    args.extend(["--metrics-addr", METRICS].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    start(&mut lab, "lb1", &args);
    lab.curl_until_ok("client", &vip6_url("/readyz"), Duration::from_secs(10))
        .expect("through the v6 VIP");
    lab
}

#[test]
fn https_through_the_v6_vip_reaches_several_masters() {
    let lab = forwarding_lab("v6fwd", None, &[]);
    let seen = spread6(&lab, "client", 30);
    println!("v6 spread: {seen:?}");
    assert!(seen.keys().all(|k| k.starts_with('m')), "{seen:?}");
    assert!(seen.len() >= 2, "several masters: {seen:?}");
}

#[test]
fn clients_on_one_interface_and_v6_masters_on_another_with_a_snat_address_there() {
    // Client and lb on 2001:db8::/64 (lb's eth0); the masters on 2001:db8:1::/64 with lb's
    // eth1; the SNAT address 2001:db8:1::100 is no one's: xvip answers NDP for it on eth1.
    let mut lab = Lab::new(
        "v62if",
        &[
            ("client", Ipv4Addr::new(192, 0, 2, 10)),
            ("lb", Ipv4Addr::new(192, 0, 2, 2)),
        ],
    )
    .expect("lab");
    let masters = [("m1", 11u8), ("m2", 12), ("m3", 13)];
    let mut ports = vec![("lb", "eth1", Ipv4Addr::new(198, 51, 100, 2))];
    ports.extend(
        masters
            .iter()
            .map(|(m, n)| (*m, "eth0", Ipv4Addr::new(198, 51, 100, *n))),
    );
    lab.add_segment("b", &ports).expect("segment b");
    for (host, dev, addr) in [
        ("client", "eth0", "2001:db8::10"),
        ("lb", "eth0", "2001:db8::2"),
        ("lb", "eth1", "2001:db8:1::2"),
        ("m1", "eth0", "2001:db8:1::11"),
        ("m2", "eth0", "2001:db8:1::12"),
        ("m3", "eth0", "2001:db8:1::13"),
    ] {
        lab.host(host)
            .ns
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ])
            .expect("addr");
    }
    for h in &lab.hosts {
        wait_for(Duration::from_secs(5), "no tentative address", || {
            h.ns.ip(&["-6", "addr", "show", "tentative"])
                .is_ok_and(|o| o.trim().is_empty())
        });
    }
    let mut args: Vec<String> = [
        "--interface",
        "eth0",
        "--interface",
        "eth1",
        "--vip",
        &format!("[{VIP6}]:6443"),
        "--snat-ip",
        "2001:db8:1::100",
        "--metrics-addr",
        METRICS,
    ]
    .map(String::from)
    .to_vec();
    for (m, n) in masters {
        let listen = format!("[2001:db8:1::{n}]:6443");
        let mut cmd = lab.host(m).ns.cmd(apiserver_bin());
        cmd.args(["--listen", &listen, "--name", m]);
        lab.spawn_apiserver(&format!("apiserver6-{m}"), cmd)
            .expect("v6 apiserver");
        args.extend(["--backend".to_string(), listen]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_xvip("lb", &a).expect("xvip");
    lab.curl_until_ok("client", &vip6_url("/readyz"), Duration::from_secs(10))
        .expect("through the v6 VIP across the two interfaces");
    let seen = spread6(&lab, "client", 20);
    println!("v6 two-interface spread: {seen:?}");
    assert!(seen.keys().all(|k| k.starts_with('m')), "{seen:?}");
    assert!(seen.len() >= 2, "{seen:?}");
    // The masters found the SNAT address at lb's eth1 by NDP.
    let eth1 = lab
        .host("lb")
        .ns
        .ip(&["link", "show", "dev", "eth1"])
        .expect("eth1");
    let mac = eth1
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("mac")
        .to_string();
    let entry = lab
        .host("m1")
        .ns
        .ip(&["-6", "neigh", "show", "2001:db8:1::100"])
        .unwrap_or_default();
    assert!(
        entry.contains(&mac),
        "m1's entry for the SNAT address: {entry}"
    );
}

#[test]
fn ping6_of_the_vip_is_answered() {
    let lab = forwarding_lab("v6ping", None, &[]);
    sh(lab
        .host("client")
        .ns
        .cmd("ping")
        .args(["-6", "-c", "3", "-i", "0.2", "-W", "1", VIP6]))
    .expect("ping -6 of the VIP (Debian package iputils-ping)");
}

#[test]
fn a_v6_master_failing_readyz_leaves_the_rotation() {
    let dir = TempDir::new("v6rot");
    let not_ready = dir.path("m1.notready");
    let lab = forwarding_lab("v6rot", Some(&not_ready), &[]);
    std::fs::write(&not_ready, "").expect("not ready");
    let m1 = format!("[{}]:6443", v6_host(&lab, "m1"));
    let took = wait_for(Duration::from_secs(5), "m1 out", || {
        status(&lab, "lb1").and_then(|s| backend_healthy(&s, &m1)) == Some(false)
    });
    println!("v6 master out of rotation after {} ms", took.as_millis());
    let seen = spread6(&lab, "client", 20);
    assert!(!seen.contains_key("m1"), "m1 still served: {seen:?}");
    assert!(seen.keys().all(|k| k.starts_with('m')), "{seen:?}");
}

#[test]
fn the_node_itself_reaches_the_v6_vip() {
    let lab = forwarding_lab("v6self", None, &[]);
    let body = lab
        .curl("lb1", &vip6_url("/whoami"), Duration::from_secs(2))
        .expect("from the xvip node itself (connect6)");
    assert!(body.trim().starts_with('m'), "{body}");
}

#[test]
fn dual_stack_one_xvip_serves_a_v4_and_a_v6_vip() {
    let mut lab = lab("v6dual", 1, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab, None);
    let mut args = v6_args(&lab);
    args.extend(["--metrics-addr", METRICS, "--vip", "192.0.2.100:6443"].map(String::from));
    for m in ["m1", "m2", "m3"] {
        args.push("--backend".into());
        args.push(format!("{}:6443", lab.host(m).ip));
    }
    start(&mut lab, "lb1", &args);
    lab.curl_until_ok("client", &vip6_url("/whoami"), Duration::from_secs(10))
        .expect("v6 VIP");
    lab.curl_until_ok(
        "client",
        "https://192.0.2.100:6443/whoami",
        Duration::from_secs(5),
    )
    .expect("v4 VIP");
    let s = status(&lab, "lb1").expect("status");
    assert_eq!(s.backends.len(), 6, "{:?}", s.backends);
}
