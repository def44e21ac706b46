//! xvip joining the keepalived group of the kubeadm HA guide as it is written: VRRPv2, PASS
//! authentication, `advert_int` 1 (keepalived's default), `state MASTER` with priority 101.
//! The Debian keepalived runs the guide's `keepalived.conf` and `check_apiserver.sh`
//! (`tests/fixtures/kubeadm`, placeholders filled in as the guide says). Throughout, an
//! [`ArpSampler`] on the client asks who has the VIP every 50 ms: no sample may have two
//! owners, and outside a failover every sample has exactly the expected one.

mod common;

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use common::*;
use tests::lab::{Lab, TempDir};

/// The password the guide suggests (`${AUTH_PASS}`, "e.g. 42").
const PASS: &str = "42";
/// A sample sent this close before a kill, a SIGTERM or a preemption may be answered after
/// it: only samples sent earlier must show the old owner. (That no sample ever shows two
/// owners holds throughout.)
const EVENT_MARGIN: Duration = Duration::from_millis(100);
/// RFC 3768 Master_Down_Interval of a priority-100 backup with 1 s adverts: 3 s + 156/256 s.
const V2_DOWN_INTERVAL: Duration = Duration::from_millis(3609);
/// What load on the shared test machine may add to a takeover.
const SLACK: Duration = Duration::from_millis(1000);

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/kubeadm")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The guide's keepalived.conf and check script for `host`, placeholders filled in.
fn guide_conf(dir: &Path, state: &str, priority: u8) -> String {
    let script = dir.join("check_apiserver.sh");
    let check = fixture("check_apiserver.sh")
        .replace("${APISERVER_DEST_PORT}", "6443")
        .replace("${APISERVER_VIP}", "192.0.2.100");
    std::fs::write(&script, check).expect("check script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    fixture("keepalived.conf")
        .replace(
            "/etc/keepalived/check_apiserver.sh",
            &script.to_string_lossy(),
        )
        .replace("${STATE}", state)
        .replace("${INTERFACE}", "eth0")
        .replace("${ROUTER_ID}", "51")
        .replace("${PRIORITY}", &priority.to_string())
        .replace("${AUTH_PASS}", PASS)
        .replace("${APISERVER_VIP}", "192.0.2.100")
}

/// lb1 is a keepalived node of the guide: an API server on *:6443 (the check script's
/// `https://localhost:6443/`, and the VIP while keepalived holds it).
fn guide_lab(tag: &str, lbs: u8) -> Lab {
    let mut lab = lab(tag, lbs, None);
    let ns = lab.host("lb1").ns.name.clone();
    let mut cmd = lab.host("lb1").ns.cmd(tests::lab::apiserver_bin());
    cmd.args(["--listen", "0.0.0.0:6443", "--name", "ka"]);
    lab.spawn_apiserver("apiserver-ka", cmd).expect(&ns);
    lab
}

/// SIGKILL to keepalived (the node dies: its VIP goes with it).
fn node_dies(lab: &mut Lab, dir: &Path, run: &str) {
    kill_keepalived(lab, dir, run);
    let _ = lab
        .host("lb1")
        .ns
        .ip(&["addr", "del", "192.0.2.100/32", "dev", "eth0"]);
}

/// `xvip import keepalived` of the guide's files for a node in `state` with `priority`
/// (haproxy in front of the lab's three masters), checked with `xvip check-config`; returns
/// the path of the TOML file.
fn import_guide(dir: &TempDir, state: &str, priority: u8) -> String {
    let ka = dir.path("import-keepalived.conf");
    std::fs::write(&ka, guide_conf(&dir.0, state, priority)).expect("conf");
    let servers: String = (1..=3)
        .map(|i| format!("        server m{i} 192.0.2.1{i}:6443 check\n"))
        .collect();
    let hap = fixture("haproxy.cfg")
        .replace("${APISERVER_DEST_PORT}", "6443")
        .replace("${APISERVER_SRC_PORT}", "6443")
        .replace(
            "        server ${HOST1_ID} ${HOST1_ADDRESS}:6443 check\n",
            &servers,
        );
    let hap_path = dir.path("haproxy.cfg");
    std::fs::write(&hap_path, hap).expect("haproxy.cfg");
    let out = std::process::Command::new(tests::lab::xvip_bin())
        .args(["import", "keepalived"])
        .arg(&ka)
        .arg("--haproxy")
        .arg(&hap_path)
        .output()
        .expect("xvip import");
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notes}");
    println!("xvip import keepalived notes:\n{notes}");
    let toml = dir.path("imported.toml");
    std::fs::write(&toml, &out.stdout).expect("toml");
    let check = std::process::Command::new(tests::lab::xvip_bin())
        .args(["check-config", "--config"])
        .arg(&toml)
        .output()
        .expect("xvip check-config");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    toml.to_string_lossy().into_owned()
}

#[test]
fn import_of_a_malformed_keepalived_conf_exits_2_naming_file_and_line() {
    let dir = TempDir::new("ka-import-bad");
    let bad = dir.path("keepalived.conf");
    std::fs::write(&bad, "vrrp_instance VI_1 {\n    interface eth0\n").expect("conf");
    let out = std::process::Command::new(tests::lab::xvip_bin())
        .args(["import", "keepalived"])
        .arg(&bad)
        .output()
        .expect("xvip import");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("keepalived.conf line 1:") && err.contains("never closed"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

fn wait_keepalived_master(lab: &Lab, within: Duration) -> Duration {
    wait_for(within, "keepalived holds the VIP", || has_vip(lab, "lb1"))
}

#[test]
fn xvip_joins_the_guides_keepalived_group_silently_takes_over_and_is_preempted_back() {
    let dir = TempDir::new("ka-guide");
    let mut lab = guide_lab("kaguide", 2);
    let ka_mac = mac_of(&lab, "lb1");
    let xvip_mac = mac_of(&lab, "lb2");

    spawn_keepalived(
        &mut lab,
        "lb1",
        &guide_conf(&dir.0, "MASTER", 101),
        &dir.0,
        "a",
    );
    wait_keepalived_master(&lab, Duration::from_secs(10));
    // The xvip node runs what `xvip import keepalived` makes of the guide's BACKUP node's
    // keepalived.conf (priority 100) and haproxy.cfg.
    let toml = import_guide(&dir, "BACKUP", 100);
    let log = dir.path("xvip.log");
    start_xvip_logged(&mut lab, "lb2", &["--config", &toml], &[], &log);
    let arp = ArpSampler::start(&lab);
    wait_for(
        Duration::from_secs(8),
        "xvip backup under keepalived",
        || {
            vrrp(&lab, "lb2").is_some_and(|v| {
                v.state == "backup"
                    && v.master.as_deref() == Some("192.0.2.2")
                    && v.adverts_received >= 2
            })
        },
    );
    // Past the start-up listen and a whole Master_Down_Interval: xvip stays silent.
    thread::sleep(V2_DOWN_INTERVAL + Duration::from_millis(500));
    let v = vrrp(&lab, "lb2").expect("lb2");
    assert_eq!(
        (v.state.as_str(), v.version, v.auth.as_str()),
        ("backup", 2, "pass"),
        "{v:?}"
    );
    assert!(!v.guard_holding && v.conflicts.is_empty(), "{v:?}");
    assert_eq!(
        v.priority, 100,
        "healthy backends (/healthz from haproxy.cfg): no penalty"
    );
    for r in [
        "checksum",
        "auth_pass",
        "auth_type",
        "version_mismatch",
        "interval_mismatch",
    ] {
        assert_eq!(v.drops[r], 0, "{r}: {v:?}");
    }
    let samples = arp.stop();
    let (gap, n) = assert_one_arp_owner(&samples, |_| Some(ka_mac.clone()));
    assert_eq!(gap, Duration::ZERO);
    println!("keepalived master, xvip v2 backup: {n} ARP samples, all answered by keepalived only");
    assert_eq!(
        lab.curl_until_ok(
            "client",
            "https://192.0.2.100:6443/whoami",
            Duration::from_secs(3)
        )
        .expect("via keepalived")
        .trim(),
        "ka"
    );

    // keepalived's node dies: xvip takes over within the RFC 3768 Master_Down_Interval.
    let arp = ArpSampler::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let kill = Instant::now();
    node_dies(&mut lab, &dir.0, "a");
    let took = wait_for(Duration::from_secs(8), "xvip master", || {
        state(&lab, "lb2") == "master"
    });
    let answered = wait_for(Duration::from_secs(3), "client through xvip", || {
        lab.curl(
            "client",
            "https://192.0.2.100:6443/whoami",
            Duration::from_secs(1),
        )
        .is_ok_and(|b| b.trim().starts_with('m'))
    });
    thread::sleep(Duration::from_millis(300));
    let samples = arp.stop();
    let (gap, n) = assert_one_arp_owner(&samples, |t| {
        if t + EVENT_MARGIN < kill {
            Some(ka_mac.clone())
        } else if t > kill + took + Duration::from_millis(100) {
            Some(xvip_mac.clone())
        } else {
            None
        }
    });
    println!(
        "keepalived SIGKILL -> xvip master after {} ms (RFC 3768 Master_Down_Interval {} ms), \
         client answered {} ms later; {n} ARP samples, longest without an owner {} ms",
        took.as_millis(),
        V2_DOWN_INTERVAL.as_millis(),
        answered.as_millis(),
        gap.as_millis()
    );
    // The down timer runs from keepalived's last advert, up to one interval before the kill.
    assert!(
        took >= V2_DOWN_INTERVAL - Duration::from_millis(1100),
        "{took:?}: before the down interval"
    );
    assert!(took < V2_DOWN_INTERVAL + SLACK, "{took:?}");
    lab.stop("keepalived-a");

    // keepalived comes back with the higher priority: it preempts, xvip steps down.
    let arp = ArpSampler::start(&lab);
    let back = Instant::now();
    spawn_keepalived(
        &mut lab,
        "lb1",
        &guide_conf(&dir.0, "MASTER", 101),
        &dir.0,
        "b",
    );
    let took = wait_keepalived_master(&lab, Duration::from_secs(10));
    wait_master_is(&lab, "lb2", "backup", "192.0.2.2");
    let stepped = back.elapsed();
    thread::sleep(Duration::from_millis(1500));
    let samples = arp.stop();
    // keepalived sends its advert and assigns the VIP at once (vrrp.c
    // `vrrp_state_master_tx`); xvip stops answering when the advert reaches it: one sample
    // may catch both in that moment, never more.
    let (from, to) = (
        back + took.saturating_sub(Duration::from_millis(200)),
        back + stepped + Duration::from_millis(100),
    );
    let (_, n, both) = assert_one_arp_owner_but_handover(
        &samples,
        |t| {
            if t + EVENT_MARGIN < from {
                Some(xvip_mac.clone())
            } else if t > to {
                Some(ka_mac.clone())
            } else {
                None
            }
        },
        Some((from, to)),
    );
    println!(
        "keepalived back at priority 101: VIP on lb1 after {} ms, xvip backup after {} ms; \
         {n} ARP samples, {both} answered by both at the preemption",
        took.as_millis(),
        stepped.as_millis()
    );
    assert_eq!(state(&lab, "lb2"), "backup");

    // `systemctl stop keepalived` (SIGTERM): it resigns with priority 0 and removes the VIP;
    // xvip takes over after its Skew_Time instead of the down interval.
    let arp = ArpSampler::start(&lab);
    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let k = lab.proc_index("keepalived-b").expect("keepalived");
    let term = Instant::now();
    lab.procs[k].signal(libc::SIGTERM);
    let took = wait_for(Duration::from_secs(5), "xvip master", || {
        state(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(term);
    let samples = arp.stop();
    let (gap, n) = assert_one_arp_owner(&samples, |t| {
        if t + EVENT_MARGIN < term {
            Some(ka_mac.clone())
        } else if t > term + took + Duration::from_millis(100) {
            Some(xvip_mac.clone())
        } else {
            None
        }
    });
    println!(
        "keepalived SIGTERM (priority 0) -> xvip master after {} ms, client outage {} ms; \
         {n} ARP samples, longest without an owner {} ms",
        took.as_millis(),
        outage.as_millis(),
        gap.as_millis()
    );
    // Skew_Time of priority 100 in v2 is 609 ms; the down interval would be 3.6 s.
    assert!(took < Duration::from_millis(1600), "{took:?}");
    let text = std::fs::read_to_string(&log).expect("xvip log");
    assert!(
        !text.contains(&format!("pass {PASS}")) && !text.contains("\"42\""),
        "{text}"
    );
}

/// Waits until `host` is in `want` naming `master`.
fn wait_master_is(lab: &Lab, host: &str, want: &str, master: &str) {
    wait_for(Duration::from_secs(5), &format!("{host} {want}"), || {
        vrrp(lab, host).is_some_and(|v| v.state == want && v.master.as_deref() == Some(master))
    });
}

#[test]
fn an_xvip_master_resigning_with_sigterm_hands_the_vip_to_keepalived_at_once() {
    let dir = TempDir::new("ka-term");
    let mut lab = guide_lab("katerm", 2);
    let ka_mac = mac_of(&lab, "lb1");
    let xvip_mac = mac_of(&lab, "lb2");
    // The guide's BACKUP node (priority 100) next to an xvip at 150, PASS from the TOML file.
    spawn_keepalived(
        &mut lab,
        "lb1",
        &guide_conf(&dir.0, "BACKUP", 100),
        &dir.0,
        "a",
    );
    let toml = dir.path("xvip.toml");
    std::fs::write(
        &toml,
        format!("vrrp_version = 2\nvrrp_auth_pass = \"{PASS}\"\n"),
    )
    .expect("toml");
    let args = node_args(150, &["--config", &toml.to_string_lossy()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_xvip_logged(&mut lab, "lb2", &args, &[], &dir.path("xvip.log"));
    serving(&lab, "lb2", &[]);
    wait_for(Duration::from_secs(5), "keepalived hears xvip", || {
        !has_vip(&lab, "lb1")
    });
    thread::sleep(Duration::from_millis(1500));
    assert!(
        !has_vip(&lab, "lb1"),
        "keepalived took the VIP from a higher xvip master"
    );

    let arp = ArpSampler::start(&lab);
    let prober = Prober::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let i = xvip_index(&lab, "lb2");
    let term = Instant::now();
    lab.procs[i].signal(libc::SIGTERM);
    let took = wait_keepalived_master(&lab, Duration::from_secs(8));
    let status = lab.procs[i]
        .wait_timeout(Duration::from_secs(5))
        .expect("xvip exits");
    assert!(status.success(), "{status:?}");
    thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(term);
    let samples = arp.stop();
    let (gap, n) = assert_one_arp_owner(&samples, |t| {
        if t + EVENT_MARGIN < term {
            Some(xvip_mac.clone())
        } else if t > term + took + Duration::from_millis(100) {
            Some(ka_mac.clone())
        } else {
            None
        }
    });
    println!(
        "xvip SIGTERM (priority 0) -> keepalived holds the VIP after {} ms (its down interval \
         would be {} ms), client outage {} ms; {n} ARP samples, longest without an owner {} ms",
        took.as_millis(),
        V2_DOWN_INTERVAL.as_millis(),
        outage.as_millis(),
        gap.as_millis()
    );
    // Priority 0 cuts keepalived's wait to Skew_Time (156/256 s for priority 100).
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn an_xvip_on_v3_or_with_a_wrong_password_never_answers_arp_beside_the_group() {
    let dir = TempDir::new("ka-guard");
    let mut lab = guide_lab("kaguard", 3);
    let ka_mac = mac_of(&lab, "lb1");
    spawn_keepalived(
        &mut lab,
        "lb1",
        &guide_conf(&dir.0, "MASTER", 101),
        &dir.0,
        "a",
    );
    wait_keepalived_master(&lab, Duration::from_secs(10));
    let arp = ArpSampler::start(&lab);
    // Both would win an election (priority 200) if they heard keepalived properly.
    let v3 = node_args(200, &[]);
    let v3: Vec<&str> = v3.iter().map(String::as_str).collect();
    start_xvip_logged(&mut lab, "lb2", &v3, &[], &dir.path("v3.log"));
    let wrong = node_args(200, &["--vrrp-version", "2"]);
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    start_xvip_logged(
        &mut lab,
        "lb3",
        &wrong,
        &[("XVIP_VRRP_AUTH_PASS", "wr0ngpw")],
        &dir.path("wrong.log"),
    );
    let held = |host: &str, reason: &str| {
        wait_for(
            Duration::from_secs(8),
            &format!("{host} guard ({reason})"),
            || {
                vrrp(&lab, host).is_some_and(|v| {
                    v.guard_holding
                        && v.conflicts.iter().any(|c| {
                            c.peer == "192.0.2.2"
                                && c.reason == reason
                                && c.version == 2
                                && c.active
                        })
                })
            },
        )
    };
    held("lb2", "version_mismatch");
    held("lb3", "auth_pass");
    // Well past the start-up listen and their own down intervals.
    thread::sleep(Duration::from_secs(5));
    for host in ["lb2", "lb3"] {
        let v = vrrp(&lab, host).expect(host);
        assert_eq!(v.state, "backup", "{host}: {v:?}");
        assert_eq!(v.transitions, 1, "{host} never left backup: {v:?}");
        assert!(v.guard_holding, "{host}: {v:?}");
        let metrics = endpoint(&lab, host, "/metrics");
        assert!(metrics.contains("xvip_vrrp_guard_holding 1"), "{metrics}");
        assert!(
            metrics.contains("xvip_vrrp_conflict_adverts_total{peer=\"192.0.2.2\""),
            "{metrics}"
        );
        let status = endpoint(&lab, host, "/status");
        for text in [&metrics, &status] {
            assert!(!text.contains("wr0ngpw"), "{host}: the password leaked");
        }
    }
    let v = vrrp(&lab, "lb3").expect("lb3");
    assert!(v.drops["auth_pass"] >= 4, "{v:?}");
    let v = vrrp(&lab, "lb2").expect("lb2");
    assert!(v.drops["version_mismatch"] >= 4, "{v:?}");
    let samples = arp.stop();
    let (_, n) = assert_one_arp_owner(&samples, |_| Some(ka_mac.clone()));
    println!(
        "keepalived with a v3 xvip and a wrong-password xvip beside it: {n} ARP samples, all keepalived"
    );
    // One error line per peer, naming it, the version it speaks and the flag to set.
    let v3_log = std::fs::read_to_string(dir.path("v3.log")).expect("log");
    let lines: Vec<&str> = v3_log
        .lines()
        .filter(|l| l.contains("another router owns"))
        .collect();
    assert_eq!(lines.len(), 1, "{v3_log}");
    assert!(
        lines[0].contains("192.0.2.2")
            && lines[0].contains("VRRPv2")
            && lines[0].contains("--vrrp-version 2"),
        "{}",
        lines[0]
    );
    let wrong_log = std::fs::read_to_string(dir.path("wrong.log")).expect("log");
    let lines: Vec<&str> = wrong_log
        .lines()
        .filter(|l| l.contains("another router owns"))
        .collect();
    assert_eq!(lines.len(), 1, "{wrong_log}");
    assert!(
        lines[0].contains("another password") && lines[0].contains("--vrrp-auth-pass"),
        "{}",
        lines[0]
    );
    assert!(!wrong_log.contains("wr0ngpw"), "{wrong_log}");
}
