//! A real TCP (HTTPS) connection from a client namespace through xvip to lab API servers.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use tests::lab::{Lab, VIP, run_args};

#[test]
fn requests_through_the_vip_reach_several_masters() {
    let mut lab = Lab::standard("skel", None).unwrap();
    lab.start_xvip("lb", &run_args(&["--metrics-addr", "127.0.0.1:9106"]))
        .unwrap();
    let url = format!("https://{VIP}:6443/whoami");
    lab.curl_until_ok("client", &url, Duration::from_secs(10))
        .expect("first request through the VIP");

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..24 {
        let body = lab
            .curl("client", &url, Duration::from_secs(3))
            .expect("request through the VIP");
        *seen.entry(body.trim().to_string()).or_default() += 1;
    }
    assert!(
        seen.keys()
            .all(|k| ["m1", "m2", "m3"].contains(&k.as_str())),
        "{seen:?}"
    );
    assert!(
        seen.len() >= 2,
        "24 connections should reach more than one master: {seen:?}"
    );
    assert!(lab.has_xdp("lb").unwrap());
    let s = lab.xvip_status("lb").unwrap();
    assert_eq!(s.vip_traffic[0].vip, format!("{VIP}:6443"));
    assert!(s.vip_traffic[0].new_flows >= 25, "{:?}", s.vip_traffic);
    let per_backend: u64 = s.backends.iter().map(|b| b.new_flows).sum();
    assert_eq!(
        per_backend, s.vip_traffic[0].new_flows,
        "VIP and backend counters disagree"
    );

    // Clean stop detaches the program.
    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGTERM);
    let status = lab.procs[i]
        .wait_timeout(Duration::from_secs(5))
        .expect("xvip exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        !lab.has_xdp("lb").unwrap(),
        "program left attached after SIGTERM"
    );
}

#[test]
fn bad_arguments_exit_2_name_the_value_and_attach_nothing() {
    let lab = Lab::new("badarg", &[("lb", Ipv4Addr::new(192, 0, 2, 2))]).expect("lab");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--interface",
                "nosuch0",
                "--vip",
                VIP,
                "--backend",
                "192.0.2.11",
            ],
            "nosuch0",
        ),
        (
            &[
                "--interface",
                "eth0",
                "--vip",
                "192.0.2.300",
                "--backend",
                "192.0.2.11",
            ],
            "192.0.2.300",
        ),
        (
            &[
                "--interface",
                "eth0",
                "--vip",
                VIP,
                "--backend",
                "192.0.2.11:70000",
            ],
            "192.0.2.11:70000",
        ),
        (&["--interface", "eth0", "--vip", VIP], "--backend"),
    ];
    for (args, named) in cases {
        let out = lab
            .host("lb")
            .ns
            .cmd(tests::lab::xvip_bin())
            .arg("run")
            .args(*args)
            .output()
            .expect("run xvip");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?}: stderr {stderr:?} should name {named:?}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
        assert!(
            !lab.has_xdp("lb").unwrap(),
            "{args:?} left a program attached"
        );
    }
}

#[test]
fn a_snat_address_of_its_own_is_announced_and_serves_the_replies() {
    let mut lab = Lab::standard("snat", None).unwrap();
    lab.start_xvip_and_wait(&run_args(&["--snat-ip", "192.0.2.200"]))
        .unwrap();
    let seen = lab.spread("client", 12);
    assert!(
        seen.keys()
            .all(|k| ["m1", "m2", "m3"].contains(&k.as_str())),
        "{seen:?}"
    );
    // The masters learned the SNAT address's MAC from xvip (it is nobody's interface address).
    let n = lab
        .host("m1")
        .ns
        .ip(&["neigh", "show", "192.0.2.200"])
        .unwrap();
    assert!(n.contains("02:00:00:00:02:02"), "{n}");
}
