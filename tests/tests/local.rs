//! Serving the node itself: processes on the load balancer reaching the VIP (cgroup
//! `connect4` hook), and a load balancer that is also one of the masters (VIP on `lo`).

use std::{net::Ipv4Addr, time::Duration};

use tests::lab::{Lab, VIP, apiserver_bin, run_args};

#[test]
fn processes_on_the_node_reach_the_vip_balanced_over_healthy_masters() {
    let dir = std::env::temp_dir().join(format!("xvip-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab::new(
        "lconn",
        &[
            ("lb", Ipv4Addr::new(192, 0, 2, 2)),
            ("m1", Ipv4Addr::new(192, 0, 2, 11)),
            ("m2", Ipv4Addr::new(192, 0, 2, 12)),
            ("m3", Ipv4Addr::new(192, 0, 2, 13)),
        ],
    )
    .unwrap();
    for m in ["m1", "m2", "m3"] {
        lab.start_apiserver(m, 6443, Some(&dir.join(format!("{m}.notready"))))
            .unwrap();
    }
    lab.start_xvip("lb", &run_args(&[])).unwrap();
    lab.wait_status("lb", Duration::from_secs(10), |s| {
        s.backends.iter().all(|b| b.healthy && b.mac.is_some())
    })
    .unwrap();
    let seen = lab.spread("lb", 24);
    assert!(
        seen.keys()
            .all(|k| ["m1", "m2", "m3"].contains(&k.as_str())),
        "{seen:?}"
    );
    assert!(seen.len() >= 2, "{seen:?}");

    std::fs::write(dir.join("m1.notready"), b"").unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        s.backends
            .iter()
            .any(|b| b.addr.starts_with("192.0.2.11:") && !b.healthy)
    })
    .unwrap();
    let seen = lab.spread("lb", 24);
    assert!(!seen.contains_key("m1"), "{seen:?}");
    assert!(seen.keys().all(|k| k == "m2" || k == "m3"), "{seen:?}");
    let s = lab.xvip_status("lb").unwrap();
    assert!(
        s.reasons.get("sock_connect_balanced").copied().unwrap_or(0) >= 48,
        "{:?}",
        s.reasons
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_load_balancer_that_is_also_a_master_serves_its_share_locally() {
    let mut lab = Lab::new(
        "lself",
        &[
            ("client", Ipv4Addr::new(192, 0, 2, 10)),
            ("lb", Ipv4Addr::new(192, 0, 2, 2)),
            ("m2", Ipv4Addr::new(192, 0, 2, 12)),
            ("m3", Ipv4Addr::new(192, 0, 2, 13)),
        ],
    )
    .unwrap();
    for m in ["m2", "m3"] {
        lab.start_apiserver(m, 6443, None).unwrap();
    }
    // The local API server listens on every address, as kube-apiserver does by default.
    let mut cmd = lab.host("lb").ns.cmd(apiserver_bin());
    cmd.args(["--listen", "0.0.0.0:6443", "--name", "lb"]);
    lab.spawn_apiserver("apiserver-lb", cmd).unwrap();

    lab.start_xvip(
        "lb",
        &[
            "--interface",
            "eth0",
            "--vip",
            VIP,
            "--backend",
            "192.0.2.2",
            "--backend",
            "192.0.2.12",
            "--backend",
            "192.0.2.13",
        ],
    )
    .unwrap();
    lab.wait_status("lb", Duration::from_secs(10), |s| {
        s.backends.iter().all(|b| b.healthy && b.mac.is_some())
    })
    .unwrap();
    let seen = lab.spread("client", 30);
    assert!(
        seen.keys()
            .all(|k| ["lb", "m2", "m3"].contains(&k.as_str())),
        "{seen:?}"
    );
    assert!(
        seen.contains_key("lb"),
        "the local master got no connection: {seen:?}"
    );
    assert!(seen.len() >= 2, "{seen:?}");
    let s = lab.xvip_status("lb").unwrap();
    assert!(
        s.reasons.get("pass_local_backend").copied().unwrap_or(0) > 0,
        "{:?}",
        s.reasons
    );
    // The kernel must not answer ARP for the VIP on lo: only xvip does, with eth0's MAC.
    let n = lab.host("client").ns.ip(&["neigh", "show", VIP]).unwrap();
    assert!(n.contains("02:00:00:00:02:02"), "{n}");

    // A clean stop takes the VIP off lo again.
    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGTERM);
    lab.procs[i].wait_timeout(Duration::from_secs(5)).unwrap();
    let addrs = lab
        .host("lb")
        .ns
        .ip(&["addr", "show", "dev", "lo"])
        .unwrap();
    assert!(!addrs.contains(VIP), "{addrs}");
}
