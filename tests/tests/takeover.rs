//! After a takeover, the clients in the flow table learn the new owner at once (issue #23),
//! IPv6: a client that ignores unsolicited neighbour advertisements to all nodes (dropped
//! by its own rule) and holds a fresh REACHABLE entry for the v6 VIP switches to the new
//! master's MAC through the unicast advertisement the new master sends it (its flow is in
//! the new master's table, synced), without waiting for its neighbour timers. The IPv4
//! counterpart (ARP, `arp_accept=0`) is `ownership::a_client_in_the_flow_table_learns_the_new_owner_at_once`.

use std::{
    thread,
    time::{Duration, Instant},
};

mod common;

use common::*;
use tests::lab::{Lab, apiserver_bin, in_netns, sh};

const VIP6: &str = "2001:db8::100";

/// 192.0.2.N -> 2001:db8::N (as `ipv6.rs` numbers the lab).
fn v6_host(lab: &Lab, host: &str) -> String {
    format!("2001:db8::{}", lab.host(host).ip.octets()[3])
}

/// Every host's 2001:db8::N/64 (no DAD), and no address tentative.
fn add_v6(lab: &Lab) {
    for h in &lab.hosts {
        let a = format!("{}/64", v6_host(lab, &h.name));
        h.ns.ip(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"])
            .expect("ip -6 addr add");
    }
    for h in &lab.hosts {
        wait_for(Duration::from_secs(5), "no tentative address", || {
            h.ns.ip(&["-6", "addr", "show", "dev", "eth0", "tentative"])
                .is_ok_and(|o| o.trim().is_empty())
        });
    }
}

/// `host`'s IPv6 election state ("down" when xvip does not answer).
fn state6(lab: &Lab, host: &str) -> String {
    status(lab, host)
        .and_then(|s| s.vrrp6)
        .map_or_else(|| "down".into(), |v| v.state)
}

/// The MAC and NUD state of the client's neighbour entry for the v6 VIP ("" when none).
fn client_vip6(lab: &Lab) -> (String, String) {
    let out = lab
        .host("client")
        .ns
        .ip(&["-6", "neigh", "show", VIP6, "dev", "eth0"])
        .unwrap_or_default();
    let w: Vec<&str> = out.split_whitespace().collect();
    let mac = w.iter().skip_while(|x| **x != "lladdr").nth(1);
    (
        mac.unwrap_or(&"").to_string(),
        w.last().unwrap_or(&"").to_string(),
    )
}

fn nft(lab: &Lab, host: &str, rule: &str) -> String {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", &lab.host(host).ns.name, "nft"])
        .args(rule.split(' '));
    let out = sh(&mut c).expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_v6_client_in_the_flow_table_learns_the_new_owner_from_the_unicast_advertisement() {
    let dir = tests::lab::TempDir::new("tk6");
    let key = sync_key_file(&dir);
    let mut lab = lab("tk6", 2, None);
    add_v6(&lab);
    for m in ["m1", "m2", "m3"] {
        let listen = format!("[{}]:6443", v6_host(&lab, m));
        let mut cmd = lab.host(m).ns.cmd(apiserver_bin());
        cmd.args(["--listen", &listen, "--name", m]);
        lab.spawn_apiserver(&format!("apiserver6-{m}"), cmd)
            .expect("v6 apiserver");
    }
    let vip = format!("[{VIP6}]:6443");
    let backends: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| format!("[{}]:6443", v6_host(&lab, m)))
        .collect();
    for (host, prio) in [("lb1", "150"), ("lb2", "100")] {
        let mut args = vec![
            "--interface",
            "eth0",
            "--vip",
            &vip,
            "--metrics-addr",
            METRICS,
            "--vrrp-vrid",
            "51",
            "--vrrp-priority",
            prio,
            "--sync-key-file",
            &key,
        ];
        for b in &backends {
            args.extend(["--backend", b.as_str()]);
        }
        lab.start_xvip(host, &args).expect("start xvip");
        wait_attached(&lab, host);
    }
    wait_for(
        Duration::from_secs(8),
        "lb1 master, lb2 backup (v6)",
        || state6(&lab, "lb1") == "master" && state6(&lab, "lb2") == "backup",
    );

    // The client drops unsolicited advertisements to all nodes: only a unicast one can
    // move its entry.
    nft(&lab, "client", "add table ip6 xvip_test");
    nft(
        &lab,
        "client",
        "add chain ip6 xvip_test incoming { type filter hook input priority 0 ; }",
    );
    nft(
        &lab,
        "client",
        "add rule ip6 xvip_test incoming ip6 daddr ff02::1 icmpv6 type nd-neighbor-advert counter drop",
    );

    // The client's flow: a connection held open through lb1, synced to lb2.
    let ns = lab.host("client").ns.name.clone();
    let to: std::net::SocketAddr = vip.parse().expect("VIP address");
    let conn = in_netns(&ns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })
    .expect("client netns")
    .expect("connect through the v6 VIP");
    wait_for(
        Duration::from_secs(20),
        "lb2 holds the client's flow",
        || {
            status(&lab, "lb2")
                .and_then(|s| s.sync)
                .is_some_and(|s| s.installed >= 1)
        },
    );

    // A fresh REACHABLE entry for the VIP (flushed, resolved again by a connection).
    let (lb1, lb2) = (
        mac_of(&lab, "lb1").trim().to_string(),
        mac_of(&lab, "lb2").trim().to_string(),
    );
    lab.host("client")
        .ns
        .ip(&["-6", "neigh", "flush", "dev", "eth0"])
        .expect("flush");
    let again = in_netns(&ns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })
    .expect("client netns")
    .expect("connect again");
    drop(again);
    wait_for(Duration::from_secs(3), "a REACHABLE entry for lb1", || {
        client_vip6(&lab) == (lb1.clone(), "REACHABLE".into())
    });
    // Past Linux's `locktime` (1 s), as in the IPv4 test.
    thread::sleep(Duration::from_millis(1200));

    let i = xvip_index(&lab, "lb1");
    let t0 = Instant::now();
    lab.procs[i].signal(libc::SIGTERM);
    let (mut master_at, mut client_at) = (None, None);
    // Both watched until both are seen (a status poll takes longer than the neighbour
    // table's: the client may be seen switched before lb2 is seen master).
    while t0.elapsed() < Duration::from_secs(10) && (client_at.is_none() || master_at.is_none()) {
        if master_at.is_none() && state6(&lab, "lb2") == "master" {
            master_at = Some(t0.elapsed());
        }
        if client_at.is_none() && client_vip6(&lab).0 == lb2 {
            client_at = Some(t0.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let dropped = nft(&lab, "client", "list table ip6 xvip_test");
    println!(
        "after SIGTERM to lb1: lb2 master (v6) at {master_at:?}, the client on lb2's MAC at {client_at:?}; client's rule: {}",
        dropped.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let master_at = master_at.expect("lb2 master (v6)");
    let client_at = client_at.expect("the client learns lb2 within 10 s");
    assert!(
        client_at < master_at + TAKEOVER_BOUND,
        "the client learnt lb2 {client_at:?} after the SIGTERM, lb2 was master at {master_at:?}"
    );
    // The unsolicited advertisements did reach the client and were dropped by its rule.
    assert!(
        !dropped.contains("counter packets 0 "),
        "no unsolicited advertisement was dropped: {dropped}"
    );
    let ndp = status(&lab, "lb2")
        .and_then(|s| s.ndp)
        .expect("lb2's NDP status");
    assert!(ndp.takeover_notices >= 1, "{ndp:?}");
    drop(conn);
}
