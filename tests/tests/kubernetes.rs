//! xvip in a Kubernetes control plane, in the namespace lab: bootstrap before any API server
//! exists, master discovery from the `kubernetes` EndpointSlices, kubectl through the VIP,
//! per-node mode (`--announce none`), and the capabilities the static pod grants.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tests::lab::{Lab, TempDir as Files, VIP, apiserver_bin, sh, xvip_bin};

const MASTERS: [(&str, &str); 3] = [
    ("m1", "192.0.2.11"),
    ("m2", "192.0.2.12"),
    ("m3", "192.0.2.13"),
];

/// client, lb and three masters; no API server started yet.
fn lab(tag: &str) -> Lab {
    Lab::segment(tag).expect("lab")
}

/// Starts the lab API server on `host`:6443 with a not-ready file and, when given, the
/// EndpointSlices file; waits for its banner.
fn start_apiserver(lab: &mut Lab, host: &str, files: &Files, slices: Option<&Path>) {
    start_apiserver_gone(lab, host, files, slices, None);
}

/// [`start_apiserver`], answering EndpointSlice watches 410 Gone while `gone` exists.
fn start_apiserver_gone(
    lab: &mut Lab,
    host: &str,
    files: &Files,
    slices: Option<&Path>,
    gone: Option<&Path>,
) {
    let h = lab.host(host);
    let mut cmd = h.ns.cmd(apiserver_bin());
    cmd.args(["--listen", &format!("{}:6443", h.ip), "--name", host])
        .arg("--not-ready-file")
        .arg(files.path(&format!("{host}.notready")));
    if let Some(s) = slices {
        cmd.arg("--endpointslices-file").arg(s);
    }
    if let Some(g) = gone {
        cmd.arg("--gone-file").arg(g);
    }
    lab.spawn_apiserver(&format!("apiserver-{host}"), cmd)
        .expect("apiserver");
}

fn all_backends() -> Vec<&'static str> {
    MASTERS
        .iter()
        .flat_map(|(_, ip)| ["--backend", ip])
        .collect()
}

fn who(lab: &Lab, host: &str) -> String {
    lab.curl(
        host,
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(1),
    )
    .map(|b| b.trim().to_string())
    .unwrap_or_else(|_| "error".into())
}

fn spread(lab: &Lab, host: &str, n: usize) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(who(lab, host)).or_insert(0) += 1;
    }
    seen
}

fn backend_set(s: &xvip::api::document::Status) -> BTreeSet<String> {
    s.backends.iter().map(|b| b.addr.clone()).collect()
}

fn set(addrs: &[&str]) -> BTreeSet<String> {
    addrs.iter().map(|a| format!("{a}:6443")).collect()
}

#[test]
fn xvip_serves_before_any_api_server_exists_and_picks_up_the_first_one() {
    let files = Files::new("boot");
    let mut lab = lab("boot");
    let mut args = vec!["--interface", "eth0", "--vip", VIP];
    args.extend(all_backends());
    lab.start_xvip("lb", &args).unwrap();
    // Every check fails (nothing listens): all down, the table fails open.
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.fail_open && s.backends.iter().all(|b| !b.healthy && b.mac.is_some())
    })
    .expect("all masters down, failing open");

    // `kubeadm init` on m1: its API server comes up. "Picked up" means m1 is in rotation on
    // its own merit: healthy and the table out of fail-open. A streak of answers from m1 is
    // no proof of that: the fail-open table holds m1 too, so a few requests in a row can
    // reach it by chance before its first checks have passed.
    start_apiserver(&mut lab, "m1", &files, None);
    let took = lab
        .wait_status("lb", Duration::from_secs(5), |s| {
            !s.fail_open
                && s.backends
                    .iter()
                    .all(|b| b.healthy == (b.addr == format!("{}:6443", MASTERS[0].1)))
        })
        .expect("m1 healthy and the table out of fail-open within 5 s");
    println!(
        "first API server picked up: m1 healthy and alone in the table {:.0} ms after it started",
        took.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // The status is rendered after the table swap: every request now reaches m1.
    let seen = spread(&lab, "client", 12);
    assert_eq!(seen.get("m1"), Some(&12), "{seen:?}");
}

fn slices_json(endpoints: &[(&str, bool)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(ip, ready)| format!(r#"{{"addresses":["{ip}"],"conditions":{{"ready":{ready}}}}}"#))
        .collect();
    format!(
        r#"{{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{{"resourceVersion":"1"}},"items":[{{"metadata":{{"name":"kubernetes","namespace":"default","labels":{{"kubernetes.io/service-name":"kubernetes"}}}},"addressType":"IPv4","endpoints":[{}],"ports":[{{"name":"https","port":6443,"protocol":"TCP"}}]}}]}}"#,
        eps.join(",")
    )
}

/// A kubeconfig like kubeadm's admin.conf, pointing at `server`.
fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: admin\n  user:\n    token: lab-token\ncontexts:\n- name: admin@lab\n  context:\n    cluster: lab\n    user: admin\n\
         current-context: admin@lab\n"
    )
}

#[test]
fn discovery_follows_the_kubernetes_endpointslices_and_keeps_the_last_set_without_the_api() {
    let files = Files::new("disc");
    let mut lab = lab("disc");
    let slices = files.path("slices.json");
    std::fs::write(
        &slices,
        slices_json(&[("192.0.2.11", true), ("192.0.2.12", true)]),
    )
    .unwrap();
    for (m, _) in MASTERS {
        start_apiserver(&mut lab, m, &files, Some(&slices));
    }
    // The kubeconfig does not exist yet (before `kubeadm init`): the static list serves.
    let kc = files.str("admin.conf");
    lab.start_xvip(
        "lb",
        &[
            "--interface",
            "eth0",
            "--vip",
            VIP,
            "--backend",
            "192.0.2.11",
            "--discover-from-kubeconfig",
            &kc,
        ],
    )
    .unwrap();
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let s = lab.xvip_status("lb").unwrap();
    assert_eq!(backend_set(&s), set(&["192.0.2.11"]));
    let d = s.discovery.expect("discovery in the status");
    assert_eq!(d.polls_ok, 0);
    assert!(d.last_error.unwrap().contains("admin.conf"));

    // The server named is the VIP, which xvip's own node cannot reach through itself:
    // discovery asks the healthy backends first.
    std::fs::write(&kc, kubeconfig(&format!("https://{VIP}:6443"))).unwrap();
    let wait = |lab: &Lab, want: BTreeSet<String>, what: &str| {
        let took = lab
            .wait_status("lb", Duration::from_secs(8), |s| backend_set(s) == want)
            .unwrap_or_else(|e| {
                panic!(
                    "{what}: {e}; status {:?}",
                    lab.xvip_status("lb").map(|s| backend_set(&s))
                )
            });
        println!(
            "{what}: backends {want:?} after {:.1} s",
            took.as_secs_f64()
        );
    };
    wait(
        &lab,
        set(&["192.0.2.11", "192.0.2.12"]),
        "kubeconfig written",
    );

    std::fs::write(
        &slices,
        slices_json(&[
            ("192.0.2.11", true),
            ("192.0.2.12", true),
            ("192.0.2.13", true),
        ]),
    )
    .unwrap();
    wait(
        &lab,
        set(&["192.0.2.11", "192.0.2.12", "192.0.2.13"]),
        "m3 joined",
    );
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.backends.iter().all(|b| b.healthy && b.mac.is_some())
    })
    .unwrap();
    let seen = spread(&lab, "client", 30);
    assert!(
        seen.contains_key("m3"),
        "the joined master gets no connection: {seen:?}"
    );

    std::fs::write(
        &slices,
        slices_json(&[("192.0.2.11", true), ("192.0.2.13", true)]),
    )
    .unwrap();
    wait(&lab, set(&["192.0.2.11", "192.0.2.13"]), "m2 left");
    let seen = spread(&lab, "client", 18);
    assert!(
        !seen.contains_key("m2") && !seen.contains_key("error"),
        "{seen:?}"
    );

    std::fs::write(
        &slices,
        slices_json(&[
            ("192.0.2.11", true),
            ("192.0.2.12", true),
            ("192.0.2.13", false),
        ]),
    )
    .unwrap();
    wait(
        &lab,
        set(&["192.0.2.11", "192.0.2.12"]),
        "m3 not ready, m2 back",
    );

    // The API answers errors (503: no list), then nothing at all: the last set stays.
    std::fs::remove_file(&slices).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        backend_set(&lab.xvip_status("lb").unwrap()),
        set(&["192.0.2.11", "192.0.2.12"])
    );
    for (m, _) in MASTERS {
        lab.stop(&format!("apiserver-{m}"));
    }
    std::thread::sleep(Duration::from_secs(5));
    let s = lab.xvip_status("lb").unwrap();
    assert_eq!(
        backend_set(&s),
        set(&["192.0.2.11", "192.0.2.12"]),
        "the set changed without the API"
    );
    assert!(
        s.backends.iter().all(|b| !b.healthy),
        "health checks still run"
    );
    let d = s.discovery.unwrap();
    println!(
        "discovery without the API: {:?}, last answer {:?} s ago",
        d.last_error, d.last_success_age_s
    );
    assert_eq!(d.masters, ["192.0.2.11:6443", "192.0.2.12:6443"]);
    assert!(d.polls_ok >= 4 && d.polls_failed >= 4, "{d:?}");
    assert!(d.last_success_age_s.unwrap() > 8.0, "{d:?}");
}

#[test]
fn discovery_picks_up_an_endpointslice_change_through_the_watch_and_lists_again_after_410() {
    let files = Files::new("dwatch");
    let mut lab = lab("dwatch");
    let slices = files.path("slices.json");
    let gone = files.path("gone");
    std::fs::write(
        &slices,
        slices_json(&[("192.0.2.11", true), ("192.0.2.12", true)]),
    )
    .unwrap();
    for (m, _) in MASTERS {
        start_apiserver_gone(&mut lab, m, &files, Some(&slices), Some(&gone));
    }
    let kc = files.str("admin.conf");
    std::fs::write(&kc, kubeconfig(&format!("https://{VIP}:6443"))).unwrap();
    lab.start_xvip(
        "lb",
        &[
            "--interface",
            "eth0",
            "--vip",
            VIP,
            "--backend",
            "192.0.2.11",
            "--discover-from-kubeconfig",
            &kc,
        ],
    )
    .unwrap();
    lab.wait_status("lb", Duration::from_secs(10), |s| {
        backend_set(s) == set(&["192.0.2.11", "192.0.2.12"])
    })
    .expect("the listed set");
    // The watch is open once its first bookmark (1 s) counted as an answer.
    let answers = |lab: &Lab| {
        lab.xvip_status("lb")
            .ok()
            .and_then(|s| s.discovery)
            .map_or(0, |d| d.polls_ok)
    };
    let listed = answers(&lab);
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.discovery.as_ref().is_some_and(|d| d.polls_ok > listed)
    })
    .expect("a bookmark on the watch");

    // A change reaches the daemon through the watch, not at the next poll.
    let change = |lab: &Lab, eps: &[(&str, bool)], want: &[&str], what: &str| {
        std::fs::write(&slices, slices_json(eps)).unwrap();
        let took = lab
            .wait_status("lb", Duration::from_secs(8), |s| {
                backend_set(s) == set(want)
            })
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        println!(
            "{what}: picked up through the watch in {:.0} ms (the poll interval was {:?})",
            took.as_secs_f64() * 1e3,
            xvip::control::discovery::POLL_INTERVAL
        );
        took
    };
    let took = change(
        &lab,
        &[
            ("192.0.2.11", true),
            ("192.0.2.12", true),
            ("192.0.2.13", true),
        ],
        &["192.0.2.11", "192.0.2.12", "192.0.2.13"],
        "m3 joined",
    );
    assert!(
        took < xvip::control::discovery::POLL_INTERVAL / 2,
        "{took:?}"
    );

    // 410 Gone: the running watch ends with an ERROR event, new ones are refused; discovery
    // lists again (the set stays) and watches once the server has the version again.
    std::fs::write(&gone, "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        backend_set(&lab.xvip_status("lb").unwrap()),
        set(&["192.0.2.11", "192.0.2.12", "192.0.2.13"])
    );
    std::fs::remove_file(&gone).unwrap();
    let listed = answers(&lab);
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.discovery
            .as_ref()
            .is_some_and(|d| d.polls_ok > listed + 1)
    })
    .expect("listed and watching again after 410");
    let took = change(
        &lab,
        &[("192.0.2.11", true), ("192.0.2.13", true)],
        &["192.0.2.11", "192.0.2.13"],
        "m2 left after a 410",
    );
    assert!(
        took < xvip::control::discovery::POLL_INTERVAL / 2,
        "{took:?}"
    );
    let d = lab.xvip_status("lb").unwrap().discovery.unwrap();
    assert!(d.last_error.is_none(), "{d:?}");

    // A SIGHUP reloads the weights but keeps the discovered set: it does not fall back to
    // the static list (m1 only) until the API next says something.
    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGHUP);
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < end {
        assert_eq!(
            backend_set(&lab.xvip_status("lb").unwrap()),
            set(&["192.0.2.11", "192.0.2.13"]),
            "after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kubectl binary: `XVIP_KUBECTL` or `kubectl` from PATH.
fn kubectl_bin() -> String {
    std::env::var("XVIP_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// kubectl in `host`'s namespace with `kubeconfig`.
fn kubectl(lab: &Lab, host: &str, kubeconfig: &str) -> Command {
    let mut c = lab.host(host).ns.cmd(kubectl_bin());
    c.args(["--kubeconfig", kubeconfig, "--request-timeout", "5s"]);
    c
}

#[test]
fn kubectl_works_through_the_vip_and_its_watch_survives_a_master_leaving() {
    let files = Files::new("kubectl");
    let mut lab = lab("kctl");
    for (m, _) in MASTERS {
        start_apiserver(&mut lab, m, &files, None);
    }
    let mut args = vec!["--interface", "eth0", "--vip", VIP];
    args.extend(all_backends());
    lab.start_xvip_and_wait(&args).unwrap();
    let kc = files.str("client.conf");
    std::fs::write(&kc, kubeconfig(&format!("https://{VIP}:6443"))).unwrap();

    let out = sh(kubectl(&lab, "client", &kc).arg("version")).expect("kubectl version");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{}", text.trim());
    // 1.20 (Debian's kubernetes-client) prints version.Info{...}, newer ones one line.
    assert!(
        text.contains("Server Version") && text.contains("v1.31.0-xvip-lab"),
        "{text}"
    );
    let out = sh(kubectl(&lab, "client", &kc).args(["get", "--raw", "/readyz"])).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // Watches to every master, held open while one master leaves rotation.
    for i in 0..6 {
        let mut c = lab.host("client").ns.cmd("timeout");
        c.args([
            "5",
            &kubectl_bin(),
            "--kubeconfig",
            &kc,
            "get",
            "--raw",
            "/watch",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        lab.spawn(&format!("watch{i}"), c).unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(files.path("m2.notready"), b"").unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        s.backends
            .iter()
            .any(|b| b.addr == "192.0.2.12:6443" && !b.healthy)
    })
    .expect("m2 out of rotation");
    let out = sh(kubectl(&lab, "client", &kc).args(["get", "--raw", "/whoami"])).unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "m2");

    let mut servers = BTreeSet::new();
    for i in 0..6 {
        let name = format!("watch{i}");
        let idx = lab.proc_index(&name).unwrap();
        let mut p = lab.procs.remove(idx);
        let status = p
            .wait_timeout(Duration::from_secs(10))
            .expect("watch ended");
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        p.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        p.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let lines = out.lines().count();
        // timeout(1) exits 124 when it ended the watch; kubectl failing would be 1.
        assert_eq!(
            status.code(),
            Some(124),
            "watch {i} ended early: {err}\n{out}"
        );
        // A line every 100 ms for what is left of 5 s once kubectl has started (up to 2 s
        // on a loaded 2-CPU machine); exit 124 above already says the stream was alive to
        // the end, past m2 leaving rotation. The ticks must be gap-free.
        assert!(
            lines >= 20,
            "watch {i} streamed only {lines} lines in 5 s: {err}"
        );
        let ticks: Vec<u64> = out
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(
            ticks.windows(2).all(|w| w[1] == w[0] + 1),
            "watch {i} skipped lines: {ticks:?}"
        );
        servers.insert(
            out.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    println!("watches were served by {servers:?}");
}

#[test]
fn announce_none_answers_no_arp_and_sends_no_gratuitous_arp_for_the_vip() {
    let files = Files::new("noarp");
    let mut lab = lab("noarp");
    for (m, _) in MASTERS {
        start_apiserver(&mut lab, m, &files, None);
    }
    let mut args = vec![
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--announce",
        "none",
        "--garp-interval",
        "200ms",
    ];
    args.extend(all_backends());
    lab.start_xvip("lb", &args).unwrap();
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.backends.iter().all(|b| b.healthy && b.mac.is_some())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let s = lab.xvip_status("lb").unwrap();
    assert!(!s.announcing);
    // No gratuitous ARP taught the client the VIP, and nobody answers a request for it.
    let n = lab.host("client").ns.ip(&["neigh", "show", VIP]).unwrap();
    assert!(!n.contains("lladdr"), "the client learnt the VIP: {n}");
    assert!(
        lab.curl(
            "client",
            &format!("https://{VIP}:6443/whoami"),
            Duration::from_secs(2)
        )
        .is_err()
    );
    // --announce none excludes VRRP.
    let out = Command::new(xvip_bin())
        .args([
            "check-config",
            "--interface",
            "eth0",
            "--vip",
            VIP,
            "--backend",
            "192.0.2.11",
        ])
        .args(["--announce", "none", "--vrrp-vrid", "7"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--announce"));
}

/// Per-node mode (sealos' shape): xvip with `--announce none` on a node; processes on the
/// node reach VIP:6443 through the cgroup connect4 hook that rewrites the destination to a
/// healthy master. The VIP itself is never announced.
#[test]
fn per_node_mode_sends_local_connections_to_healthy_masters() {
    let files = Files::new("node");
    let mut lab = lab("node");
    for (m, _) in MASTERS {
        start_apiserver(&mut lab, m, &files, None);
    }
    // "lb" plays a worker node: xvip and the clients both run in its namespace.
    let mut args = vec!["--interface", "eth0", "--vip", VIP, "--announce", "none"];
    args.extend(all_backends());
    lab.start_xvip("lb", &args).unwrap();
    lab.wait_status("lb", Duration::from_secs(5), |s| {
        s.backends.iter().all(|b| b.healthy && b.mac.is_some())
    })
    .unwrap();
    lab.curl_until_ok(
        "lb",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(5),
    )
    .unwrap();
    let seen = spread(&lab, "lb", 30);
    assert!(seen.keys().all(|k| k.starts_with('m')), "{seen:?}");
    assert!(seen.len() >= 2, "one master got everything: {seen:?}");

    std::fs::write(files.path("m1.notready"), b"").unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        s.backends
            .iter()
            .any(|b| b.addr == "192.0.2.11:6443" && !b.healthy)
    })
    .unwrap();
    let seen = spread(&lab, "lb", 24);
    assert!(
        !seen.contains_key("m1") && !seen.contains_key("error"),
        "{seen:?}"
    );
    // Still nobody on the segment learns the VIP.
    let n = lab.host("client").ns.ip(&["neigh", "show", VIP]).unwrap();
    assert!(!n.contains("lladdr"), "{n}");
}

/// Removes the test's pin directory even when the test fails.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = Command::new(xvip_bin())
            .args(["detach", "--interface", "eth0", "--pin-root"])
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_capabilities_the_manifest_grants_are_enough_to_serve_the_vip() {
    let files = Files::new("caps");
    let mut lab = lab("caps");
    for (m, _) in MASTERS {
        start_apiserver(&mut lab, m, &files, None);
    }
    // The host's bpffs, as the pod mounts it (nsenter keeps the host's mounts).
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/xvip-test-{}", lab.prefix));
    let _guard = PinGuard(pin_root.clone());
    let caps: Vec<String> = xvip::deploy::manifest::CAPABILITIES
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let caps = format!("-all,{}", caps.join(","));
    let start = |lab: &mut Lab, log: &std::path::Path| {
        let mut cmd = lab.host("lb").ns.cmd_net_only("setpriv");
        cmd.args([
            "--inh-caps",
            &caps,
            "--ambient-caps",
            &caps,
            "--bounding-set",
            &caps,
            "--",
        ])
        .arg(xvip_bin())
        .args(["run", "--interface", "eth0", "--vip", VIP, "--pin-root"])
        .arg(&pin_root)
        .args(all_backends())
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap());
        lab.spawn("xvip-lb", cmd).unwrap();
    };
    start(&mut lab, &files.path("caps-1.log"));
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )
    .expect("xvip with only the manifest's capabilities serves the VIP");
    // The process really has nothing else.
    let pid = lab.procs.last().unwrap().child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let eff = u64::from_str_radix(eff, 16).unwrap();
    // CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(
        eff,
        (1 << 12) | (1 << 13) | (1 << 38) | (1 << 39),
        "CapEff {eff:#x}"
    );
    let seen = spread(&lab, "client", 12);
    assert!(seen.keys().all(|k| k.starts_with('m')), "{seen:?}");

    // A restart with the same capabilities (no CAP_SYS_ADMIN: nothing opened by id) adopts
    // the running program.
    lab.kill("xvip-lb").unwrap();
    let log = files.path("caps-2.log");
    start(&mut lab, &log);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !read().contains("started in") && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = read();
    assert!(
        text.lines()
            .any(|l| l.contains("started in") && l.contains("program adopted")),
        "{text}"
    );
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )
    .expect("the adopted program serves");
}

#[test]
fn xvip_manifest_prints_a_pod_and_a_unit_whose_commands_xvip_accepts() {
    let files = Files::new("manifest");
    let kc = files.str("admin.conf");
    let flags = [
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--backend",
        "192.0.2.11,192.0.2.12",
        "--discover-from-kubeconfig",
        &kc,
    ];
    // Environment variables are carried over as flags, like the command line.
    let out = sh(Command::new(xvip_bin())
        .args(["manifest", "pod", "--image", "registry.example/xvip:test"])
        .args(flags)
        .env("XVIP_FALL", "5"))
    .unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example/xvip:test"));
    let args = c.args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--fall", "5"]), "{args:?}");
    let out = sh(Command::new(xvip_bin()).arg("check-config").args(&args)).unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());

    let out = sh(Command::new(xvip_bin())
        .args(["manifest", "systemd"])
        .args(flags))
    .unwrap();
    let unit = String::from_utf8_lossy(&out.stdout);
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(exec[..2], [xvip::deploy::manifest::DEFAULT_BINARY, "run"]);
    sh(Command::new(xvip_bin())
        .arg("check-config")
        .args(&exec[2..]))
    .unwrap();

    // A bad value prints no manifest and exits 2, naming it.
    let out = Command::new(xvip_bin())
        .args([
            "manifest",
            "pod",
            "--interface",
            "eth0",
            "--vip",
            "192.0.2.300",
        ])
        .args(["--backend", "192.0.2.11"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("192.0.2.300"));
}

#[test]
fn a_kubeconfig_without_a_ca_exits_2_at_start_unless_it_opts_out_explicitly() {
    let files = Files::new("noca");
    let kc = files.path("admin.conf");
    // kubeconfig() with its explicit opt-out taken away: no CA, no insecure-skip-tls-verify.
    let no_ca =
        kubeconfig("https://192.0.2.100:6443").replace("    insecure-skip-tls-verify: true\n", "");
    std::fs::write(&kc, &no_ca).unwrap();
    let kc_s = kc.to_str().unwrap();
    let flags = [
        "--interface",
        "xvip-none0",
        "--vip",
        VIP,
        "--backend",
        "192.0.2.11",
        "--discover-from-kubeconfig",
        kc_s,
    ];
    // check-config, and run (on an interface that does not exist: it must stop at the
    // kubeconfig, before the interface is even looked up).
    for cmd in ["check-config", "run"] {
        let out = Command::new(xvip_bin())
            .arg(cmd)
            .args(flags)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
        assert!(
            err.contains(kc_s) && err.contains("\"lab\"") && err.contains("certificate-authority"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("lab-token"), "{cmd}: {err}");
        println!("{cmd}: {}", err.trim());
    }
    // The explicit opt-out is accepted (kubectl's behaviour), with a warning at run time.
    std::fs::write(&kc, kubeconfig("https://192.0.2.100:6443")).unwrap();
    let out = Command::new(xvip_bin())
        .arg("check-config")
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
