//! The daemon in the namespace lab: health checks taking masters out of rotation and back,
//! ARP and gratuitous ARP for the VIP, restart without losing connections, reloads.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use tests::lab::{Lab, TempDir as Files, VIP, run_args, sh, xvip_bin};

const LB_MAC: &str = "02:00:00:00:02:02";

fn healthy(s: &xvip::api::document::Status, addr: &str) -> Option<bool> {
    s.backends
        .iter()
        .find(|b| b.addr == addr)
        .map(|b| b.healthy)
}

#[test]
fn a_master_failing_readyz_leaves_rotation_within_a_second_and_comes_back() {
    let files = Files::new("readyz");
    let mut lab = Lab::standard("ready", Some(&files.0)).unwrap();
    lab.start_xvip_and_wait(&run_args(&[])).unwrap();

    // Streams held open to every master while m2 goes away must not be reset.
    for i in 0..6 {
        lab.start_stream(
            &format!("watch{i}"),
            "client",
            &format!("https://{VIP}:6443/watch"),
            Duration::from_secs(5),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));

    std::fs::write(files.path("m2.notready"), b"").unwrap();
    let took = lab
        .wait_status("lb", Duration::from_secs(3), |s| {
            healthy(s, "192.0.2.12:6443") == Some(false)
        })
        .expect("m2 marked down");
    println!(
        "m2 out of rotation {:.0} ms after /readyz started failing",
        took.as_secs_f64() * 1e3
    );
    // fall 3 x interval 200 ms, plus one check in flight and the status poll.
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    let s = lab.xvip_status("lb").unwrap();
    assert_eq!(
        s.backends
            .iter()
            .find(|b| b.addr == "192.0.2.12:6443")
            .unwrap()
            .slots,
        0
    );
    assert!(s.last_detection_ms.is_some());

    let seen = lab.spread("client", 24);
    assert!(
        !seen.contains_key("m2"),
        "new connections reached m2 after it failed: {seen:?}"
    );
    assert!(seen.keys().all(|k| k == "m1" || k == "m3"), "{seen:?}");

    std::fs::remove_file(files.path("m2.notready")).unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        healthy(s, "192.0.2.12:6443") == Some(true)
    })
    .expect("m2 back");
    let seen = lab.spread("client", 30);
    assert!(
        seen.contains_key("m2"),
        "m2 got no new connection after coming back: {seen:?}"
    );

    for i in 0..6 {
        let (code, out) = lab
            .finish_stream(&format!("watch{i}"), Duration::from_secs(8))
            .unwrap();
        let ticks = out.lines().count();
        // curl exits 28 when --max-time ends the stream; a reset would be 56 or 18.
        assert_eq!(
            code,
            Some(28),
            "stream {i} ended by something else than its time limit: {out}"
        );
        assert!(
            ticks >= 40,
            "stream {i} delivered only {ticks} lines in 5 s: {out}"
        );
    }
}

#[test]
fn a_stopped_master_is_taken_out_and_its_return_puts_it_back() {
    let files = Files::new("stop");
    let mut lab = Lab::standard("stop", Some(&files.0)).unwrap();
    lab.start_xvip_and_wait(&run_args(&[])).unwrap();
    lab.stop("apiserver-m3");
    let took = lab
        .wait_status("lb", Duration::from_secs(3), |s| {
            healthy(s, "192.0.2.13:6443") == Some(false)
        })
        .expect("m3 marked down");
    println!(
        "stopped m3 out of rotation after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_millis(1200));
    let seen = lab.spread("client", 24);
    assert_eq!(seen.get("m3"), None, "{seen:?}");
    assert!(
        seen.keys().all(|k| !k.starts_with("error")),
        "connections failed after m3 stopped: {seen:?}"
    );
    lab.start_apiserver("m3", 6443, None).unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        healthy(s, "192.0.2.13:6443") == Some(true)
    })
    .expect("m3 back");
}

#[test]
fn the_client_resolves_the_vip_to_xvips_mac_and_garp_corrects_a_stale_entry() {
    let files = Files::new("arp");
    let mut lab = Lab::standard("arp", Some(&files.0)).unwrap();
    let client = &lab.host("client").ns;
    // A stale, wrong entry, as left by a previous holder of the VIP.
    client
        .ip(&[
            "neigh",
            "replace",
            VIP,
            "lladdr",
            "02:de:ad:be:ef:00",
            "dev",
            "eth0",
            "nud",
            "stale",
        ])
        .unwrap();
    lab.start_xvip("lb", &run_args(&["--garp-interval", "200ms"]))
        .unwrap();
    lab.wait_attached("lb").unwrap();
    let start = Instant::now();
    loop {
        let n = lab.host("client").ns.ip(&["neigh", "show", VIP]).unwrap();
        if n.contains(LB_MAC) {
            println!(
                "client's entry for the VIP corrected after {:.0} ms: {}",
                start.elapsed().as_secs_f64() * 1e3,
                n.trim()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "gratuitous ARP did not correct {n:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A request for the VIP from scratch resolves it by ARP to xvip's MAC.
    lab.host("client")
        .ns
        .ip(&["neigh", "flush", "dev", "eth0"])
        .unwrap();
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .unwrap();
    let n = lab.host("client").ns.ip(&["neigh", "show", VIP]).unwrap();
    assert!(n.contains(LB_MAC), "{n}");
    // Nobody answers for an address that is not a VIP.
    let out = lab
        .host("client")
        .ns
        .cmd("ping")
        .args(["-c1", "-W1", "192.0.2.101"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Starts xvip on the lb host entering only its network namespace, so its pins (under
/// `pin_root`) outlive it.
fn start_pinned(lab: &mut Lab, pin_root: &str) {
    start_pinned_logged(lab, pin_root, &[], None);
}

/// [`start_pinned`] with `extra` arguments, its log (`RUST_LOG=info`) to `log` when given.
fn start_pinned_logged(
    lab: &mut Lab,
    pin_root: &str,
    extra: &[&str],
    log: Option<&std::path::Path>,
) {
    let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
    cmd.arg("run")
        .args(run_args(extra))
        .args(["--pin-root", pin_root]);
    if let Some(l) = log {
        cmd.env("RUST_LOG", "info")
            .stderr(std::fs::File::create(l).unwrap());
    }
    lab.spawn("xvip-lb", cmd).unwrap();
    lab.wait_attached("lb").unwrap();
}

/// Removes the test's pin directory even when the test fails.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(xvip_bin())
            .args(["detach", "--interface", "eth0", "--pin-root"])
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sigkill_and_restart_keep_an_open_stream_and_detach_removes_everything() {
    let files = Files::new("restart");
    let mut lab = Lab::standard("rst", Some(&files.0)).unwrap();
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/xvip-test-{}", lab.prefix));
    let _guard = PinGuard(pin_root.clone());
    let pin = pin_root.to_str().unwrap().to_string();
    // Conntrack sync on (a key and a VRRP group of one, no peer needed): the program writes
    // its ring, which the restarted daemon must read from the adopted program.
    let key = files.path("sync.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let sync = [
        "--vrrp-vrid",
        "61",
        "--vrrp-priority",
        "200",
        "--sync-key-file",
        key.to_str().unwrap(),
    ];
    start_pinned_logged(&mut lab, &pin, &sync, Some(&files.path("first.log")));
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )
    .unwrap();
    lab.start_stream(
        "watch",
        "client",
        &format!("https://{VIP}:6443/watch"),
        Duration::from_secs(6),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1000));

    lab.kill("xvip-lb").unwrap();
    assert!(
        lab.has_xdp("lb").unwrap(),
        "the pinned program must stay attached while xvip is down"
    );
    std::thread::sleep(Duration::from_millis(1000));

    // The same binary restarted adopts the program still attached: no verifier.
    let log = files.0.join("restart.log");
    start_pinned_logged(&mut lab, &pin, &sync, Some(&log));
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.backends.iter().all(|b| b.mac.is_some())
    })
    .unwrap();
    let s = lab.xvip_status("lb").unwrap();
    assert!(s.conntrack_entries >= 1, "adopted conntrack is empty");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let started = text
        .lines()
        .find(|l| l.contains("started in"))
        .unwrap_or_else(|| panic!("no start-up line: {text}"));
    assert!(
        started.contains("program adopted") && !started.contains("the verifier"),
        "{text}"
    );
    assert!(
        text.contains("eth0: kept the running program (adopted)"),
        "{text}"
    );
    let (code, out) = lab.finish_stream("watch", Duration::from_secs(10)).unwrap();
    let ticks = out.lines().count();
    assert_eq!(code, Some(28), "the stream was broken: {out}");
    assert!(ticks >= 50, "only {ticks} lines in 6 s: {out}");
    // New connections work after the restart, and their sync events reach the daemon
    // through the adopted program's ring.
    // `events`: the program's SYNC_COUNTS; `sent_records`: records read from its ring.
    let events = |lab: &Lab| {
        lab.xvip_status("lb")
            .ok()
            .and_then(|s| s.sync)
            .map_or((0, 0), |s| (s.events, s.sent_records))
    };
    let before = events(&lab);
    lab.curl(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(2),
    )
    .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let grew = |now: (u64, u64)| now.0 > before.0 && now.1 > before.1;
    while !grew(events(&lab)) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = events(&lab);
    assert!(
        grew(now),
        "sync after the adopted restart: (events, records sent) {before:?} -> {now:?}"
    );

    // A detach while xvip serves the interface is refused (its instance lock), and changes
    // nothing.
    let detach = |lab: &Lab| {
        let mut c = lab.host("lb").ns.cmd_net_only(xvip_bin());
        c.args(["detach", "--interface", "eth0", "--pin-root", &pin]);
        c
    };
    let refused = detach(&lab).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("served by another xvip"), "{err}");
    assert!(lab.has_xdp("lb").unwrap(), "a refused detach detached");
    // Stop the daemon without detaching, then detach explicitly.
    lab.kill("xvip-lb").unwrap();
    let out = sh(&mut detach(&lab)).unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !lab.has_xdp("lb").unwrap(),
        "detach left the program attached"
    );
    let ns = lab.host("lb").ns.inode().unwrap().to_string();
    assert!(!pin_root.join(ns).join("eth0").exists(), "detach left pins");
}

#[test]
fn a_bad_config_file_exits_2_and_names_the_field() {
    let files = Files::new("cfg");
    let path = files.path("xvip.toml");
    std::fs::write(&path, "interface = \"eth0\"\nvips = [\"192.0.2.100\"]\nbackends = [\"192.0.2.11\"]\nfall = \"three\"\n").unwrap();
    let out = std::process::Command::new(xvip_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fall"), "{err}");
    std::fs::write(
        &path,
        "interface = \"eth0\"\nvips = [\"192.0.2.100\"]\nbackends = [\"192.0.2.11@7\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(xvip_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_snat_address_with_ports_in_the_ephemeral_range_exits_2_naming_both() {
    let lab = Lab::new("snat", &[("lb", std::net::Ipv4Addr::new(192, 0, 2, 2))]).unwrap();
    let ns = &lab.host("lb").ns;
    // The namespace's own ephemeral range, read by xvip in its namespace.
    sh(ns.cmd("sh").args([
        "-c",
        "echo 40000 50000 > /proc/sys/net/ipv4/ip_local_port_range",
    ]))
    .unwrap();
    let xvip = |cmd: &str, ports: &str| {
        ns.cmd(xvip_bin())
            .args([
                cmd,
                "--interface",
                "eth0",
                "--vip",
                VIP,
                "--backend",
                "192.0.2.11",
            ])
            .args(["--snat-ip", "192.0.2.2", "--snat-ports", ports])
            .output()
            .unwrap()
    };
    for cmd in ["check-config", "run"] {
        let out = xvip(cmd, "20000-59999");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        let last = err.trim().lines().last().unwrap_or("");
        println!("{cmd}: {last}");
        assert!(
            last.contains("20000-59999")
                && last.contains("40000-50000")
                && last.contains("--snat-ports"),
            "{err}"
        );
    }
    assert!(!lab.has_xdp("lb").unwrap(), "the refused run attached");
    let out = xvip("check-config", "20000-39999");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_reloads_the_backend_list_without_dropping_flows() {
    let files = Files::new("hup");
    let mut lab = Lab::standard("hup", Some(&files.0)).unwrap();
    let path = files.path("xvip.toml");
    std::fs::write(
        &path,
        "backends = [\"192.0.2.11\", \"192.0.2.12\", \"192.0.2.13\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap().to_string();
    lab.start_xvip("lb", &["--interface", "eth0", "--vip", VIP, "--config", &p])
        .unwrap();
    // The start-up (the verifier: seconds on a loaded machine) is not what the budget
    // below is for.
    lab.wait_attached("lb").unwrap();
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )
    .unwrap();
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.backends.len() == 3 && s.backends.iter().all(|b| b.mac.is_some())
    })
    .unwrap();
    std::fs::write(&path, "backends = [\"192.0.2.11\", \"192.0.2.13\"]\n").unwrap();
    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGHUP);
    lab.wait_status("lb", Duration::from_secs(3), |s| s.backends.len() == 2)
        .expect("reloaded");
    let seen = lab.spread("client", 18);
    assert!(!seen.contains_key("m2"), "{seen:?}");
    assert!(seen.keys().all(|k| !k.starts_with("error")), "{seen:?}");
}

#[test]
fn pinned_state_of_another_layout_is_refused_and_left_serving() {
    let files = Files::new("mismatch");
    let mut lab = Lab::standard("mism", Some(&files.0)).unwrap();
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/xvip-test-{}", lab.prefix));
    let _guard = PinGuard(pin_root.clone());
    let pin = pin_root.to_str().unwrap().to_string();
    start_pinned(&mut lab, &pin);
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )
    .unwrap();
    lab.kill("xvip-lb").unwrap();

    // Another conntrack size is another map layout: refused, nothing replaced.
    let out = lab
        .host("lb")
        .ns
        .cmd_net_only(xvip_bin())
        .arg("run")
        .args(run_args(&["--conntrack-size", "4096"]))
        .args(["--pin-root", &pin])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        last.contains("does not match") && last.contains("xvip detach"),
        "{err}"
    );
    assert!(
        lab.has_xdp("lb").unwrap(),
        "the pinned program must keep serving"
    );
    assert!(
        pin_root
            .join(lab.host("lb").ns.inode().unwrap().to_string())
            .join("eth0/CONNTRACK")
            .exists(),
        "the refused run removed the pinned state"
    );
    // The state was left whole: the original configuration adopts it again.
    start_pinned(&mut lab, &pin);
    lab.wait_status("lb", Duration::from_secs(5), |s| s.conntrack_entries > 0)
        .expect("adopted again");
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .unwrap();
}

#[test]
fn version_names_the_build_and_the_kernel_features_and_man_pages_cover_every_setting() {
    let out = std::process::Command::new(xvip_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let long = String::from_utf8_lossy(&out.stdout);
    let first = long.lines().next().unwrap_or("");
    // "xvip 0.1.0 (0123456789ab)": the commit of a release build ("dev" in debug builds,
    // which do not track HEAD; `cargo xtask dist` checks the release binary's commit).
    let commit = first
        .split_once('(')
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or("");
    assert!(
        first.starts_with(concat!("xvip ", env!("CARGO_PKG_VERSION"), " ("))
            && (commit == "dev"
                || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()))),
        "{long}"
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        long.contains(&format!("kernel {}", release.trim())),
        "{long}"
    );
    assert!(
        long.contains("XDP through bpf_link") && long.contains("tcx"),
        "{long}"
    );
    let out = std::process::Command::new(xvip_bin())
        .arg("-V")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);

    let files = Files::new("man");
    let dir = files.path("man");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(xvip_bin())
        .args(["manifest", "man", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_to_string(dir.join("xvip-run.8")).unwrap();
    assert!(
        run.starts_with(".ie") || run.contains(".TH xvip-run 8"),
        "{run:.200}"
    );
    // Every flag of `xvip run --help` is in its page (roff escapes '-' as '\-').
    let help = std::process::Command::new(xvip_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    // Each `--flag` named in the help (its own line or mentioned in another's text).
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter_map(|w| {
            let name = w.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                .unwrap_or(name.len());
            (end > 0).then(|| &w[..end + 2])
        })
        .collect();
    assert!(flags.len() > 30, "{help}");
    let page = run.replace("\\-", "-");
    for f in flags {
        assert!(page.contains(f), "{f} is not in xvip-run.8");
    }
    for sub in [
        "xvip.8",
        "xvip-doctor.8",
        "xvip-check-config.8",
        "xvip-manifest-pod.8",
    ] {
        assert!(dir.join(sub).is_file(), "{sub} missing");
    }
}

#[test]
fn the_packaged_example_config_is_valid() {
    // dist/xvip.toml is what the .deb installs as /etc/xvip/xvip.toml.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/xvip.toml");
    let out = std::process::Command::new(xvip_bin())
        .args(["check-config", "--config", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
