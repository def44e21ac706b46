//! VIP failover between xvip nodes with VRRPv3: one master, takeover on SIGKILL (measured
//! from the client: last connection before the kill to the first after) and on SIGTERM
//! (priority 0), preempt on and off, the health-gated priority, forged advertisements, an
//! established connection across a takeover, and interop with keepalived (VRRPv3). The
//! VRRPv2 / keepalived-guide tests are in `keepalived.rs`.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

mod common;

use common::*;
use tests::lab::{Lab, in_netns};
use xvip::wire::vrrp::{Advert, Auth, Version};

#[test]
fn two_nodes_elect_one_master_and_a_killed_master_is_replaced_within_a_second() {
    let mut lab = lab("vrrp2", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let url = format!("https://{VIP}:6443/whoami");
    assert_eq!(
        client_vip_mac(&lab),
        mac_of(&lab, "lb1"),
        "only the master answers ARP"
    );
    let table = tests::lab::sh(lab.host("lb1").ns.cmd(tests::lab::xvip_bin()).args([
        "status",
        "--metrics-addr",
        METRICS,
    ]))
    .expect("xvip status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("vrrp vrid 51: MASTER (master 192.0.2.2), priority 150/150"),
        "{table}"
    );

    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(500));
    let i = xvip_index(&lab, "lb1");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    let seen = wait_for(Duration::from_secs(3), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_millis(800));
    let outage = prober.outage(kill);
    println!(
        "SIGKILL takeover: lb2 reports master {} ms after the kill, client outage {} ms",
        seen.as_millis(),
        outage.as_millis()
    );
    assert!(outage < TAKEOVER_BOUND, "outage {outage:?}");
    assert_eq!(
        client_vip_mac(&lab),
        mac_of(&lab, "lb2"),
        "the new master's GARP"
    );
    lab.curl("client", &url, Duration::from_secs(2))
        .expect("through the new master");
}

#[test]
fn three_nodes_elect_one_master_and_the_next_best_takes_over() {
    let mut lab = lab("vrrp3", 3, None);
    start_node(&mut lab, "lb1", 200, &[]);
    start_node(&mut lab, "lb2", 150, &[]);
    start_node(&mut lab, "lb3", 100, &[]);
    serving(&lab, "lb1", &["lb2", "lb3"]);
    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let i = xvip_index(&lab, "lb1");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    wait_master(&lab, "lb2", &["lb3"], Duration::from_secs(3));
    thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(kill);
    println!(
        "three nodes, SIGKILL takeover: client outage {} ms",
        outage.as_millis()
    );
    assert!(outage < TAKEOVER_BOUND, "outage {outage:?}");
    assert_eq!(state(&lab, "lb3"), "backup");
}

#[test]
fn sigterm_resigns_with_priority_zero_and_the_backup_takes_over_without_the_down_timer() {
    let mut lab = lab("vrrpterm", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let i = xvip_index(&lab, "lb1");
    let term = Instant::now();
    lab.procs[i].signal(libc::SIGTERM);
    let took = wait_for(Duration::from_secs(2), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    let status = lab.procs[i]
        .wait_timeout(Duration::from_secs(8))
        .expect("xvip exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(term);
    println!(
        "SIGTERM handover: lb2 master {} ms after the signal, client outage {} ms",
        took.as_millis(),
        outage.as_millis()
    );
    // Master_Down_Interval would be 3 x 100 ms + skew; priority 0 cuts it to the skew.
    assert!(took < Duration::from_millis(300), "{took:?}");
    assert!(outage < TAKEOVER_BOUND, "outage {outage:?}");
}

/// keepalived's `track_interface` (`--vrrp-track-interface`): a master whose tracked
/// interface goes down enters FAULT (in status and metrics) and resigns with priority 0, so
/// the backup takes over after its skew time, not the down timer; back up, it returns as a
/// backup and, with preempt, takes the VIP back. Every change runs the notify hook with
/// keepalived's arguments and writes keepalived's FIFO line.
#[test]
fn a_tracked_interface_down_is_a_fault_and_the_backup_takes_over() {
    // Before the lab: the hook outlives the nodes (their STOP runs at teardown).
    let dir = tests::lab::TempDir::new("vrrptrk");
    let mut lab = lab("vrrptrk", 2, None);
    let lb1 = lab.host("lb1").ns.name.clone();
    let ip1 = |args: &[&str]| {
        let mut full = vec!["-n", lb1.as_str()];
        full.extend_from_slice(args);
        tests::lab::sh(std::process::Command::new("ip").args(&full)).expect("ip");
    };
    // An uplink to track: a veth pair inside lb1's namespace (no dummy driver here); its
    // far end going down takes the carrier away (IFF_RUNNING), as a pulled cable does.
    ip1(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    ip1(&["link", "set", "uplink0", "up"]);
    ip1(&["link", "set", "uplink1", "up"]);
    wait_for(Duration::from_secs(3), "uplink0 has a carrier", || {
        lab.host("lb1")
            .ns
            .ip(&["link", "show", "uplink0"])
            .is_ok_and(|o| o.contains("LOWER_UP"))
    });
    let out = dir.path("notified");
    let hook = dir.path("hook");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1 $2 $3 $4\" >> {}\n", out.display()),
    )
    .expect("hook");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let fifo = dir.path("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo(3) on a path of our own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader holds the FIFO open (non-blocking) for the whole test.
    let mut reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("fifo reader")
    };
    let (hook_s, fifo_s) = (dir.str("hook"), dir.str("fifo"));
    start_node(
        &mut lab,
        "lb1",
        150,
        &[
            "--vrrp-track-interface",
            "uplink0",
            "--notify-exec",
            &hook_s,
            "--notify-fifo",
            &fifo_s,
        ],
    );
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    assert!(endpoint(&lab, "lb1", "/metrics").contains("xvip_vrrp_fault 0"));

    ip1(&["link", "set", "uplink1", "down"]);
    let took = wait_for(Duration::from_secs(3), "lb1 fault, lb2 master", || {
        state(&lab, "lb1") == "fault" && state(&lab, "lb2") == "master"
    });
    println!(
        "tracked interface down: lb2 master after {} ms",
        took.as_millis()
    );
    // Read every 100 ms, then lb2's skew (61 ms); the down timer would be 360 ms more.
    assert!(took < TAKEOVER_BOUND, "{took:?}");
    assert!(endpoint(&lab, "lb1", "/metrics").contains("xvip_vrrp_fault 1"));
    let st = status(&lab, "lb1").expect("lb1 status");
    assert!(!st.announcing, "a node in fault does not answer ARP");
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(3),
    )
    .expect("through lb2");
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb2"));
    // Stays in fault, whatever lb2 advertises.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&lab, "lb1"), "fault");

    ip1(&["link", "set", "uplink1", "up"]);
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    assert!(endpoint(&lab, "lb1", "/metrics").contains("xvip_vrrp_fault 0"));

    // keepalived's notify arguments, in order: startup, election, fault, back, preempt.
    let want = [
        "INSTANCE vrid51 BACKUP 150",
        "INSTANCE vrid51 MASTER 150",
        "INSTANCE vrid51 FAULT 150",
        "INSTANCE vrid51 BACKUP 150",
        "INSTANCE vrid51 MASTER 150",
    ];
    wait_for(
        Duration::from_secs(5),
        "the hook ran for every change",
        || std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() >= want.len()),
    );
    let ran = std::fs::read_to_string(&out).expect("hook output");
    assert_eq!(ran.lines().collect::<Vec<_>>(), want, "{ran}");
    let mut lines = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut lines);
    let fifo_want: Vec<String> = want
        .iter()
        .map(|w| {
            let w: Vec<&str> = w.split(' ').collect();
            format!("INSTANCE \"{}\" {} {}", w[1], w[2], w[3])
        })
        .collect();
    assert_eq!(lines.lines().collect::<Vec<_>>(), fifo_want, "{lines}");
    let n = status(&lab, "lb1")
        .and_then(|s| s.notify)
        .expect("notify status");
    assert_eq!(
        (n.exec_ok, n.fifo_lines, n.fifo_dropped),
        (5, 5, 0),
        "{n:?}"
    );
}

/// The witness (`--vrrp-track-ip`): a master that cannot reach it for `fall` probes lowers
/// its priority by the weight, below the backup's, and the backup preempts; once it answers
/// again the priority comes back and the first node takes the VIP back. The client stands
/// in for the gateway; a rule in it drops lb1's probes only (lb1 lost its uplink).
#[test]
fn a_master_that_cannot_reach_its_witness_lowers_its_priority_and_hands_over() {
    let mut lab = lab("vrrpwit", 2, None);
    let witness = CLIENT.to_string();
    start_node(
        &mut lab,
        "lb1",
        150,
        &[
            "--vrrp-track-ip",
            &witness,
            "--vrrp-track-ip-weight",
            "60",
            "--vrrp-track-ip-fall",
            "2",
        ],
    );
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        vrrp(&lab, "lb1").expect("lb1").priority,
        150,
        "the witness answers"
    );

    let client = lab.host("client").ns.name.clone();
    let nft = |rule: &str| {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &client, "nft"])
            .args(rule.split(' '));
        tests::lab::sh(&mut c).expect("nft");
    };
    nft("add table inet xvip_test");
    nft("add chain inet xvip_test in { type filter hook input priority 0 ; }");
    nft(&format!(
        "add rule inet xvip_test in ip saddr {} icmp type echo-request drop",
        lb_ip(1)
    ));
    let cut = Instant::now();
    let took = wait_master(&lab, "lb2", &["lb1"], Duration::from_secs(8));
    println!(
        "witness unreachable from lb1: lb2 master {} ms after the cut",
        took.as_millis()
    );
    assert_eq!(
        vrrp(&lab, "lb1").expect("lb1").priority,
        90,
        "150 - weight 60"
    );
    // fall 2 at one probe a second, then lb2's down interval: about 2-3 s.
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "{:?}",
        cut.elapsed()
    );

    nft("delete table inet xvip_test");
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    assert_eq!(vrrp(&lab, "lb1").expect("lb1").priority, 150);
}

#[test]
fn with_preempt_a_higher_priority_node_takes_the_vip_from_a_live_master() {
    let mut lab = lab("vrrppre", 2, None);
    start_node(&mut lab, "lb2", 100, &[]);
    wait_for(Duration::from_secs(8), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    start_node(&mut lab, "lb1", 200, &[]);
    let took = wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    println!(
        "preempt: lb1 master {} ms after it was started",
        took.as_millis()
    );
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(3),
    )
    .expect("through the VIP");
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb1"));
}

#[test]
fn without_preempt_a_higher_priority_node_leaves_a_live_master_alone() {
    let mut lab = lab("vrrpnopre", 2, None);
    start_node(&mut lab, "lb2", 100, &[]);
    wait_for(Duration::from_secs(8), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    start_node(&mut lab, "lb1", 200, &["--vrrp-preempt", "false"]);
    wait_master(&lab, "lb2", &["lb1"], Duration::from_secs(8));
    let before = vrrp(&lab, "lb2").expect("lb2").transitions;
    thread::sleep(Duration::from_millis(1500));
    wait_master(&lab, "lb2", &["lb1"], Duration::from_millis(100));
    assert_eq!(vrrp(&lab, "lb2").expect("lb2").transitions, before);
    // It still takes over when the master dies.
    let i = xvip_index(&lab, "lb2");
    lab.procs[i].signal(libc::SIGKILL);
    wait_for(Duration::from_secs(2), "lb1 master", || {
        state(&lab, "lb1") == "master"
    });
}

#[test]
fn the_vip_moves_away_from_a_node_whose_backends_all_fail_and_comes_back() {
    let dir = std::env::temp_dir().join(format!("xvip-vrrp-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let not_ready = dir.join("m1-not-ready");
    let _ = std::fs::remove_file(&not_ready);
    let mut lab = lab("vrrphealth", 2, Some(&not_ready));
    // lb1 only knows m1; lb2 knows m2 and m3.
    start_node(&mut lab, "lb1", 150, &["--backend", "192.0.2.11"]);
    start_node(
        &mut lab,
        "lb2",
        120,
        &["--backend", "192.0.2.12", "--backend", "192.0.2.13"],
    );
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    let url = format!("https://{VIP}:6443/whoami");
    assert_eq!(
        lab.curl_until_ok("client", &url, Duration::from_secs(8))
            .expect("via lb1")
            .trim(),
        "m1"
    );

    std::fs::write(&not_ready, b"").expect("not ready");
    let took = wait_master(&lab, "lb2", &["lb1"], Duration::from_secs(8));
    println!(
        "all of lb1's backends failing: VIP on lb2 after {} ms",
        took.as_millis()
    );
    assert_eq!(
        vrrp(&lab, "lb1").expect("lb1").priority,
        100,
        "150 - penalty 50"
    );
    let body = lab
        .curl_until_ok("client", &url, Duration::from_secs(3))
        .expect("via lb2");
    assert!(["m2", "m3"].contains(&body.trim()), "{body}");

    std::fs::remove_file(&not_ready).expect("ready again");
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    assert_eq!(vrrp(&lab, "lb1").expect("lb1").priority, 150);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An IPv4 packet around a VRRP message (the kernel fills in the header checksum).
fn ip_packet(ttl: u8, dst: Ipv4Addr, vrrp: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0xc0];
    p.extend_from_slice(&((20 + vrrp.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, ttl, 112, 0, 0]);
    p.extend_from_slice(&CLIENT.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(vrrp);
    p
}

#[test]
fn forged_and_malformed_advertisements_change_nothing() {
    let mut lab = lab("vrrpforge", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    let t1 = vrrp(&lab, "lb1").expect("lb1").transitions;
    let t2 = vrrp(&lab, "lb2").expect("lb2").transitions;
    let dst = xvip::wire::vrrp::MULTICAST;
    let forged = |vrid: u8| Advert {
        version: Version::V3,
        vrid,
        priority: 254,
        max_adver_int_cs: 10,
        addrs: vec![VIP.into()],
        auth: Auth::NONE,
    };
    let good = forged(VRID).encode(CLIENT, dst);
    let mut bad_sum = good.clone();
    bad_sum[6] ^= 0x55;
    let mut v4 = good.clone();
    v4[0] = 0x41;
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    let rounds = 20;
    for _ in 0..rounds {
        send_raw(
            &lab,
            vec![
                ip_packet(64, dst, &good),                            // routed: TTL != 255
                ip_packet(255, dst, &bad_sum),                        // checksum
                ip_packet(255, dst, &forged(52).encode(CLIENT, dst)), // another VRID
                ip_packet(255, dst, &v4),                             // VRRPv4
                ip_packet(255, dst, &good[..5]),                      // truncated
                ip_packet(255, dst, &long),                           // length vs count
            ],
            dst,
        );
        thread::sleep(Duration::from_millis(30));
    }
    thread::sleep(Duration::from_millis(300));
    for (host, before) in [("lb1", t1), ("lb2", t2)] {
        let v = vrrp(&lab, host).expect(host);
        assert_eq!(v.transitions, before, "{host}: {v:?}");
        for reason in ["ttl", "checksum", "vrid", "version", "truncated", "length"] {
            assert!(v.drops[reason] >= rounds, "{host} {reason}: {:?}", v.drops);
        }
    }
    wait_master(&lab, "lb1", &["lb2"], Duration::from_millis(100));

    // Control: the same sender with a valid advertisement is heard (VRRP has no
    // authentication), so the drops above were the checks at work.
    send_raw(&lab, vec![ip_packet(255, dst, &good)], dst);
    wait_for(
        Duration::from_secs(1),
        "lb1 yields to the valid forged advert",
        || vrrp(&lab, "lb1").is_some_and(|v| v.transitions > t1),
    );
    // Without further adverts from the forger the real routers elect lb1 again.
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(3));
}

#[test]
fn an_established_connection_across_a_takeover() {
    let mut lab = lab("vrrpconn", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let url = format!("https://{VIP}:6443/whoami");
    // Six requests on one kept-alive connection, 500 ms apart; lb1 dies after the second.
    let mut cmd = lab.host("client").ns.cmd("curl");
    cmd.args([
        "-sk",
        "--max-time",
        "8",
        "--rate",
        "2/s",
        "-o",
        "/dev/null",
        "-w",
        "%header{x-lab-server} %{num_connects} %{http_code}\\n",
    ]);
    for _ in 0..6 {
        cmd.arg(&url);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    lab.spawn("curl-keepalive", cmd).expect("curl");
    thread::sleep(Duration::from_millis(800));
    let i = xvip_index(&lab, "lb1");
    lab.procs[i].signal(libc::SIGKILL);
    wait_for(Duration::from_secs(3), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    let c = lab.proc_index("curl-keepalive").expect("curl");
    let mut p = lab.procs.remove(c);
    let st = p.wait_timeout(Duration::from_secs(12)).expect("curl ends");
    let mut out = String::new();
    if let Some(o) = p.child.stdout.take() {
        for l in BufReader::new(o).lines().map_while(Result::ok) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    // Each line: "<server> <new connections for this request> <status>".
    println!(
        "keep-alive connection across the takeover (curl exit {:?}):\n{out}",
        st.code()
    );
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|l| l.len() == 3) // the -w lines; later bodies go to stdout too
        .collect();
    assert!(lines.len() >= 2, "{out}");
    assert_eq!(
        lines[0][1], "1",
        "first request opens the connection: {out}"
    );
    let later_ok = lines
        .iter()
        .skip(2)
        .filter(|l| l.last() == Some(&"200"))
        .count();
    let reused_after = lines
        .iter()
        .skip(2)
        .filter(|l| l.last() == Some(&"200") && l.get(1) == Some(&"0"))
        .count();
    println!(
        "{later_ok} requests after the kill answered, {reused_after} of them on the original connection"
    );
    // The new master has no conntrack entry, but it creates one for the mid-stream packet,
    // its SNAT port's first probe comes from the flow hash and the Maglev table is the same:
    // the backend sees the same 4-tuple and the connection carries on.
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(reused_after, 4, "requests after the takeover: {out}");
    assert!(
        lines.iter().all(|l| l[0] == lines[0][0]),
        "same backend: {out}"
    );
}

/// Starts keepalived (VRRPv3, 100 ms adverts) in `host`'s namespace, foreground, files in `dir`.
fn start_keepalived(lab: &mut Lab, host: &str, priority: u8, dir: &std::path::Path, run: &str) {
    let conf = format!(
        "global_defs {{\n  router_id {host}\n  vrrp_version 3\n  enable_script_security\n}}\n\
             vrrp_instance xvip {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n  \
             priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/32 dev eth0\n  }}\n}}\n"
    );
    spawn_keepalived(lab, host, &conf, dir, run);
}

#[test]
fn keepalived_and_xvip_elect_one_master_and_take_over_from_each_other() {
    let dir = std::env::temp_dir().join(format!("xvip-vrrp-ka-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut lab = lab("vrrpka", 2, None);
    start_vip_apiserver(&mut lab, "lb1", "ka");
    let url = format!("https://{VIP}:6443/whoami");

    // keepalived (150) on lb1 and xvip (100) on lb2: keepalived is master, xvip hears it.
    start_keepalived(&mut lab, "lb1", 150, &dir, "a");
    start_node(&mut lab, "lb2", 100, &[]);
    wait_for(
        Duration::from_secs(8),
        "keepalived master, xvip backup",
        || {
            has_vip(&lab, "lb1")
                && vrrp(&lab, "lb2").is_some_and(|v| {
                    v.state == "backup" && v.master.as_deref() == Some("192.0.2.2")
                })
        },
    );
    let sent = vrrp(&lab, "lb2").expect("lb2").transitions;
    thread::sleep(Duration::from_millis(1000));
    let v = vrrp(&lab, "lb2").expect("lb2");
    assert!(
        has_vip(&lab, "lb1") && v.state == "backup" && v.transitions == sent,
        "{v:?}"
    );
    assert_eq!(
        v.drops["checksum"], 0,
        "keepalived's checksum is accepted: {v:?}"
    );
    assert_eq!(
        lab.curl_until_ok("client", &url, Duration::from_secs(3))
            .expect("via keepalived")
            .trim(),
        "ka"
    );

    // keepalived dies (the node with it: its VIP goes too) -> xvip takes over.
    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let kill = Instant::now();
    kill_keepalived(&mut lab, &dir, "a");
    // The VIP goes with its node.
    let _ = lab
        .host("lb1")
        .ns
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
    wait_for(Duration::from_secs(3), "xvip master", || {
        state(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(kill);
    println!(
        "keepalived -> xvip takeover: client outage {} ms",
        outage.as_millis()
    );
    assert!(outage < TAKEOVER_BOUND, "outage {outage:?}");
    let body = lab
        .curl("client", &url, Duration::from_secs(2))
        .expect("via xvip");
    assert!(body.trim().starts_with('m'), "{body}");
    lab.stop("keepalived-a");

    // keepalived comes back lower (50): it stays backup under the xvip master.
    start_keepalived(&mut lab, "lb1", 50, &dir, "b");
    let t = vrrp(&lab, "lb2").expect("lb2").transitions;
    thread::sleep(Duration::from_millis(1500));
    assert!(
        !has_vip(&lab, "lb1"),
        "keepalived took the VIP from a higher xvip master"
    );
    let v = vrrp(&lab, "lb2").expect("lb2");
    assert_eq!((v.state.as_str(), v.transitions), ("master", t), "{v:?}");

    // xvip dies -> keepalived takes over.
    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let i = xvip_index(&lab, "lb2");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    let took = wait_for(Duration::from_secs(3), "keepalived master", || {
        has_vip(&lab, "lb1")
    });
    thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(kill);
    println!(
        "xvip -> keepalived takeover: VIP on lb1 after {} ms, client outage {} ms",
        took.as_millis(),
        outage.as_millis()
    );
    assert!(outage < TAKEOVER_BOUND, "outage {outage:?}");
    assert_eq!(
        lab.curl("client", &url, Duration::from_secs(2))
            .expect("via keepalived")
            .trim(),
        "ka"
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unicast_peers_elect_one_master_and_fail_over() {
    let mut lab = lab("vrrpuc", 2, None);
    let (ip1, ip2) = (lb_ip(1).to_string(), lb_ip(2).to_string());
    start_node(&mut lab, "lb1", 150, &["--vrrp-peer", &ip2]);
    start_node(&mut lab, "lb2", 100, &["--vrrp-peer", &ip1]);
    serving(&lab, "lb1", &["lb2"]);
    let url = format!("https://{VIP}:6443/whoami");
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb1"));

    let i = xvip_index(&lab, "lb1");
    lab.procs[i].signal(libc::SIGKILL);
    let took = wait_for(Duration::from_secs(3), "lb2 master over unicast", || {
        state(&lab, "lb2") == "master"
    });
    println!(
        "unicast peers: lb2 master {} ms after the kill",
        took.as_millis()
    );
    assert!(took < TAKEOVER_BOUND, "{took:?}");
    lab.curl_until_ok("client", &url, Duration::from_secs(2))
        .expect("through the new master");
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb2"));
}

/// Supervision: when the master's VRRP task dies (a panic, injected here), the node stops
/// answering for the VIP and exits non-zero (so the service manager restarts it), and the
/// backup takes over. Before, the loop went on answering ARP with a dead election: two
/// nodes answered for the VIP.
#[test]
fn a_dead_vrrp_task_withdraws_the_node_and_the_backup_takes_over() {
    let mut lab = lab("vrrpdead", 2, None);
    // The backup first, so that the injected death (3 s after lb1 becomes master) cannot
    // come before the test has seen lb1 master.
    start_node(&mut lab, "lb2", 100, &[]);
    let dir = tests::lab::TempDir::new("vrrpdead");
    let args = node_args(150, &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    start_xvip_logged(
        &mut lab,
        "lb1",
        &a,
        &[(
            xvip::announce::vrrp::FAILPOINT_ENV,
            xvip::announce::vrrp::FAILPOINT_PANIC,
        )],
        &dir.path("lb1.log"),
    );
    wait_attached(&lab, "lb1");
    wait_for(Duration::from_secs(8), "lb1 master (preempting)", || {
        state(&lab, "lb1") == "master"
    });
    // The task panics 3 s after lb1 became master.
    let i = xvip_index(&lab, "lb1");
    let status = lab.procs[i]
        .wait_timeout(Duration::from_secs(15))
        .expect("lb1 exits when its VRRP task dies");
    assert!(!status.success(), "lb1 exited {status:?}");
    let log = std::fs::read_to_string(dir.path("lb1.log")).expect("lb1's log");
    assert!(
        log.contains("the VRRP task ended unexpectedly"),
        "lb1's log:\n{log}"
    );
    wait_for(Duration::from_secs(3), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(3),
    )
    .expect("through lb2");
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb2"));
}

/// A slow kernel and busy scrapes do not move the VIP: while another namespace holds
/// `rtnl_lock` again and again (veth pairs created and deleted by the thousand) and two
/// threads scrape both nodes' /metrics without pause, the master stays master and the
/// backup never takes over. VRRP runs on its own thread; next hops are resolved off the
/// event loop and without the state lock, with a receive timeout.
#[test]
fn a_stalled_netlink_and_a_scrape_loop_cause_no_takeover() {
    let mut lab = lab("vrrpstall", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let before = (
        vrrp(&lab, "lb1").expect("lb1").transitions,
        vrrp(&lab, "lb2").expect("lb2").transitions,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = rtnl_hog(&lab, stop.clone());
    let scrapers: Vec<_> = ["lb1", "lb2"]
        .into_iter()
        .map(|host| {
            let ns = lab.host(host).ns.name.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut n = 0u32;
                let end = Instant::now() + Duration::from_secs(30);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                    let ok = in_netns(&ns, || {
                        std::process::Command::new("curl")
                            .args(["-s", "-o", "/dev/null", "-m", "2"])
                            .arg(format!("http://{METRICS}/metrics"))
                            .status()
                            .is_ok_and(|s| s.success())
                    });
                    n += u32::from(ok.unwrap_or(false));
                }
                n
            })
        })
        .collect();
    // Watch for a spurious takeover while the kernel is slow.
    let end = Instant::now() + Duration::from_secs(12);
    let mut lb2_master = 0;
    while Instant::now() < end {
        if state(&lab, "lb2") == "master" {
            lb2_master += 1;
        }
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = hog.join().expect("hog");
    let scrapes: Vec<u32> = scrapers
        .into_iter()
        .map(|t| t.join().expect("scraper"))
        .collect();
    println!("rtnl hog: {rounds} rounds of 500 veth pairs; scrapes {scrapes:?}");
    assert!(rounds >= 1, "the hog never held rtnl_lock");
    assert!(scrapes.iter().all(|&n| n > 10), "scrapes {scrapes:?}");
    assert_eq!(lb2_master, 0, "lb2 reported master {lb2_master} times");
    wait_master(&lab, "lb1", &["lb2"], Duration::from_millis(500));
    assert_eq!(
        (
            vrrp(&lab, "lb1").expect("lb1").transitions,
            vrrp(&lab, "lb2").expect("lb2").transitions,
        ),
        before,
        "no transition while the kernel was slow"
    );
}

/// The VRRP interface itself is tracked (keepalived's default without `dont_track_primary`):
/// a backup whose own link goes down is in FAULT instead of becoming master on the dead
/// link, and when the link comes back it is a backup again, so the client never sees it
/// answer for the VIP beside the master. Before, it became master while the link was down
/// and answered ARP beside lb1 until lb1's next advert reached it.
#[test]
fn a_backup_whose_own_link_goes_down_is_in_fault_and_never_a_second_owner() {
    let mut lab = lab("vrrpown", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let lb1 = mac_of(&lab, "lb1");
    let sampler = ArpSampler::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let ns = &lab.host("lb2").ns;
    ns.ip(&["link", "set", "eth0", "down"]).expect("lb2 down");
    let took = wait_for(Duration::from_secs(3), "lb2 in fault", || {
        state(&lab, "lb2") == "fault"
    });
    // Longer than lb2's master-down interval (361 ms): before, it would be master by now.
    thread::sleep(Duration::from_millis(800));
    assert_eq!(
        state(&lab, "lb2"),
        "fault",
        "still in fault while its link is down"
    );
    ns.ip(&["link", "set", "eth0", "up"]).expect("lb2 up");
    wait_for(Duration::from_secs(3), "lb2 backup again", || {
        state(&lab, "lb2") == "backup"
    });
    thread::sleep(Duration::from_millis(800));
    assert_eq!(state(&lab, "lb1"), "master");
    assert_eq!(state(&lab, "lb2"), "backup");
    let samples = sampler.stop();
    let (gap, n) = assert_one_arp_owner(&samples, |_| Some(lb1.clone()));
    println!("lb2's link down: fault after {took:?}; {n} ARP samples, all lb1 alone (gap {gap:?})");
}
