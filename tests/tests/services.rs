//! Services of type LoadBalancer (`--services`) in the namespace lab: the lab API server
//! keeps Services (list, watch, the status subresource with its resourceVersion
//! precondition, events), each xvip node runs nftables DNAT for the Service address as
//! kube-proxy would (to m2's API server, masqueraded), and the client reaches the Service
//! through whichever node answers ARP for its address.

use std::{
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

mod common;

use common::*;
use serde_json::{Value, json};
use tests::lab::{Lab, TempDir as Files, apiserver_bin, sh};

/// The Service pool: free in the lab (the ARP sampler asks from .200-.249).
const POOL: &str = "192.0.2.160/29";
const FIRST: &str = "192.0.2.160";
/// The Service API server: m1, another port than the masters' 6443.
const API: &str = "192.0.2.11:7443";
/// kube-proxy's stand-in sends the Service port here.
const POD: &str = "192.0.2.12:6443";

fn kubeconfig(files: &Files) -> String {
    let kc = files.str("services.conf");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{API}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: xvip\n  user:\n    token: lab-token\ncontexts:\n- name: xvip@lab\n  context:\n    cluster: lab\n    user: xvip\n\
             current-context: xvip@lab\n"
        ),
    )
    .unwrap();
    kc
}

fn start_service_api(lab: &mut Lab) {
    let mut cmd = lab.host("m1").ns.cmd(apiserver_bin());
    cmd.args(["--listen", API, "--name", "svc-api", "--services"]);
    lab.spawn_apiserver("svc-api", cmd)
        .expect("service API server");
}

/// One API call from m1 (curl): the status code and the JSON body.
fn api(lab: &Lab, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut c = lab.host("m1").ns.cmd("curl");
    c.args([
        "-sk",
        "--max-time",
        "3",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    if let Some(b) = body {
        c.args([
            "-H",
            "Content-Type: application/json",
            "--data",
            &b.to_string(),
        ]);
    }
    c.arg(format!("https://{API}{path}"));
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn create(lab: &Lab, name: &str, annotations: Value, spec: Value) {
    let mut s = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "xvip.io/lb",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}});
    for (k, v) in spec.as_object().into_iter().flatten() {
        s["spec"][k] = v.clone();
    }
    let (code, body) = api(lab, "POST", "/api/v1/namespaces/default/services", Some(&s));
    assert_eq!(code, 201, "create {name}: {body}");
}

/// The addresses `name`'s status holds.
fn ingress(lab: &Lab, name: &str) -> Vec<String> {
    let (_, s) = api(
        lab,
        "GET",
        &format!("/api/v1/namespaces/default/services/{name}"),
        None,
    );
    s["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(String::from))
        .collect()
}

/// The events the lab API server holds: (Service name, message).
fn events(lab: &Lab) -> Vec<(String, String)> {
    lab_stats(lab)["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["involvedObject"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn lab_stats(lab: &Lab) -> Value {
    api(lab, "GET", "/lab/services", None).1
}

/// What `host`'s xvip says of the Service address `addr`: (service, announced, why).
fn svc_status(lab: &Lab, host: &str, addr: &str) -> Option<(String, bool, Option<String>)> {
    let s = status(lab, host)?.services?;
    s.addresses
        .into_iter()
        .find(|a| a.address.as_deref() == Some(addr))
        .map(|a| (a.service, a.announced, a.why))
}

/// kube-proxy's part on `host`: Service address :443 DNATed to [`POD`], masqueraded.
fn kube_proxy(lab: &Lab, host: &str, dir: &Path, addrs: &[&str]) {
    let ns = &lab.host(host).ns;
    sh(ns.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"])).expect("ip_forward");
    let (pod_ip, pod_port) = POD.split_once(':').unwrap();
    let mut rules =
        String::from("table ip kp {\n chain pre { type nat hook prerouting priority -100;\n");
    for a in addrs {
        rules.push_str(&format!("  ip daddr {a} tcp dport 443 dnat to {POD}\n"));
    }
    rules.push_str(&format!(
        " }}\n chain post {{ type nat hook postrouting priority 100;\n  ip daddr {pod_ip} tcp dport {pod_port} masquerade\n }}\n}}\n"
    ));
    let f = dir.join(format!("kp-{host}.nft"));
    std::fs::write(&f, rules).unwrap();
    sh(ns.cmd("nft").arg("-f").arg(&f)).expect("nft (Debian package nftables)");
}

/// The MAC the client's neighbour entry for `addr` holds (after a connection attempt).
fn client_mac_for(lab: &Lab, addr: &str) -> String {
    lab.host("client")
        .ns
        .ip(&["neigh", "show", addr])
        .unwrap_or_default()
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// Whether anybody answers ARP for `addr` now: the client's entry flushed, one ping sent
/// (nobody answers the ping itself; the neighbour resolution is what counts).
fn answered(lab: &Lab, addr: &str) -> bool {
    let ns = &lab.host("client").ns;
    let _ = ns.ip(&["neigh", "flush", "to", addr]);
    let _ = ns.cmd("ping").args(["-c", "1", "-W", "1", addr]).output();
    !client_mac_for(lab, addr).is_empty()
}

fn services_args<'a>(pool: &'a str, kc: &'a str) -> [&'a str; 5] {
    [
        "--services",
        "--services-pool",
        pool,
        "--services-kubeconfig",
        kc,
    ]
}

#[test]
fn a_service_gets_the_first_free_address_once_is_reached_through_the_owner_and_fails_over_with_the_vip()
 {
    let files = Files::new("svc1");
    let mut lab = lab("svc1", 2, None);
    start_service_api(&mut lab);
    let kc = kubeconfig(&files);
    let pool_addrs = [
        "192.0.2.160",
        "192.0.2.161",
        "192.0.2.162",
        "192.0.2.163",
        "192.0.2.164",
        "192.0.2.165",
    ];
    for h in ["lb1", "lb2"] {
        kube_proxy(&lab, h, &files.0, &pool_addrs);
    }
    start_node(&mut lab, "lb1", 150, &services_args(POOL, &kc));
    start_node(&mut lab, "lb2", 100, &services_args(POOL, &kc));
    serving(&lab, "lb1", &["lb2"]);

    create(&lab, "web", json!({}), json!({}));
    let took = wait_for(Duration::from_secs(10), "web announced by lb1", || {
        svc_status(&lab, "lb1", FIRST).is_some_and(|(s, a, _)| s == "default/web" && a)
    });
    println!(
        "Service created -> announced by the owner: {} ms",
        took.as_millis()
    );
    assert_eq!(ingress(&lab, "web"), [FIRST]);
    // lb2 sees the same status and does not announce: it is not the owner.
    wait_for(Duration::from_secs(5), "lb2 knows web's address", || {
        svc_status(&lab, "lb2", FIRST)
            .is_some_and(|(_, a, why)| !a && why.is_some_and(|w| w.contains("VRRP master")))
    });
    let stats = lab_stats(&lab);
    assert_eq!(
        stats["status_writes"], 1,
        "written once by two nodes: {stats}"
    );
    let body = lab
        .curl_until_ok(
            "client",
            &format!("https://{FIRST}/whoami"),
            Duration::from_secs(5),
        )
        .expect("the Service through lb1");
    assert_eq!(body.trim(), "m2");
    assert_eq!(client_mac_for(&lab, FIRST), mac_of(&lab, "lb1").trim());

    // Two nodes planning five Services at once: one address each, none twice, each
    // status written once.
    for i in 0..5 {
        create(&lab, &format!("burst{i}"), json!({}), json!({}));
    }
    wait_for(
        Duration::from_secs(10),
        "five more Services addressed",
        || (0..5).all(|i| ingress(&lab, &format!("burst{i}")).len() == 1),
    );
    let mut all: Vec<String> = (0..5)
        .flat_map(|i| ingress(&lab, &format!("burst{i}")))
        .collect();
    all.extend(ingress(&lab, "web"));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "six distinct addresses: {all:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let stats = lab_stats(&lab);
    println!(
        "status writes {}, conflicts {}",
        stats["status_writes"], stats["conflicts"]
    );
    assert_eq!(stats["status_writes"], 6, "{stats}");

    // SIGKILL of the owner: lb2 takes the VIP and the Service address together.
    let prober = Prober::start_to(
        &lab,
        SocketAddr::V4(SocketAddrV4::new(FIRST.parse().unwrap(), 443)),
    );
    std::thread::sleep(Duration::from_millis(300));
    let kill = Instant::now();
    lab.kill("xvip-lb1").unwrap();
    let lb2_mac = mac_of(&lab, "lb2").trim().to_string();
    let moved = wait_for(
        Duration::from_secs(5),
        "lb2 answers for the Service",
        || {
            svc_status(&lab, "lb2", FIRST).is_some_and(|(_, a, _)| a)
                && client_mac_for(&lab, FIRST) == lb2_mac
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let outage = prober.outage(kill);
    println!(
        "SIGKILL of the owner: the client's entry for the Service names lb2 {} ms after, client outage {} ms",
        moved.as_millis(),
        outage.as_millis()
    );
    assert!(outage < TAKEOVER_BOUND, "Service outage {outage:?}");
    assert_eq!(client_vip_mac(&lab), lb2_mac, "the VIP moved with it");
    let body = lab
        .curl(
            "client",
            &format!("https://{FIRST}/whoami"),
            Duration::from_secs(2),
        )
        .expect("the Service through lb2");
    assert_eq!(body.trim(), "m2");
}

#[test]
fn requested_outside_taken_exhausted_deleted_and_the_api_gone() {
    let files = Files::new("svc2");
    let mut lab = lab("svc2", 1, None);
    start_service_api(&mut lab);
    let kc = kubeconfig(&files);
    kube_proxy(&lab, "lb1", &files.0, &["192.0.2.160", "192.0.2.161"]);
    let mut extra = services_args("192.0.2.160/31", &kc).to_vec();
    extra.extend(["--services-node-name", "lb1"]);
    start_node(&mut lab, "lb1", 150, &extra);
    serving(&lab, "lb1", &[]);

    create(&lab, "a", json!({}), json!({}));
    create(
        &lab,
        "b",
        json!({"xvip.io/loadbalancer-ips": "192.0.2.161"}),
        json!({}),
    );
    create(
        &lab,
        "outside",
        json!({}),
        json!({"loadBalancerIP": "198.51.100.5"}),
    );
    create(
        &lab,
        "taken",
        json!({"xvip.io/loadbalancer-ips": "192.0.2.160"}),
        json!({}),
    );
    create(&lab, "waiting", json!({}), json!({}));
    // Not ours: another class, another type.
    create(
        &lab,
        "other",
        json!({}),
        json!({"loadBalancerClass": "example.com/lb"}),
    );
    wait_for(Duration::from_secs(10), "a and b addressed", || {
        ingress(&lab, "a") == ["192.0.2.160"] && ingress(&lab, "b") == ["192.0.2.161"]
    });
    let events = || -> Vec<(String, String)> {
        lab_stats(&lab)["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["involvedObject"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    wait_for(Duration::from_secs(5), "three events", || {
        events().len() >= 3
    });
    let ev = events();
    let of = |n: &str| {
        ev.iter()
            .find(|(s, _)| s == n)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    };
    assert!(
        of("outside").contains("198.51.100.5 is in no pool"),
        "{ev:?}"
    );
    assert!(of("taken").contains("in use by default/a"), "{ev:?}");
    assert!(of("waiting").contains("no free IPv4"), "{ev:?}");
    assert!(
        of("other").is_empty() && ingress(&lab, "other").is_empty(),
        "{ev:?}"
    );
    for n in ["outside", "taken", "waiting"] {
        assert!(ingress(&lab, n).is_empty(), "{n}");
    }
    // One event per refusal, not one per pass.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(events().len(), 3, "{:?}", events());
    // externalTrafficPolicy Local on b, whose endpoint is on no node: the VIP owner refuses
    // to announce it, with an event; back to Cluster, it answers again.
    let mut b = api(&lab, "GET", "/api/v1/namespaces/default/services/b", None).1;
    b["spec"]["externalTrafficPolicy"] = "Local".into();
    let (code, body) = api(
        &lab,
        "PUT",
        "/api/v1/namespaces/default/services/b",
        Some(&b),
    );
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(5), "the owner refuses b", || {
        events()
            .iter()
            .any(|(s, m)| s == "b" && m.contains("the VIP owner (node lb1) has no ready endpoint"))
    });
    assert!(svc_status(&lab, "lb1", "192.0.2.161").is_some_and(|(_, a, _)| !a));
    assert!(
        !answered(&lab, "192.0.2.161"),
        "a refused Local address is not answered"
    );
    let mut b = api(&lab, "GET", "/api/v1/namespaces/default/services/b", None).1;
    b["spec"]["externalTrafficPolicy"] = "Cluster".into();
    api(
        &lab,
        "PUT",
        "/api/v1/namespaces/default/services/b",
        Some(&b),
    );
    wait_for(Duration::from_secs(5), "b answered again", || {
        svc_status(&lab, "lb1", "192.0.2.161").is_some_and(|(_, a, _)| a)
    });
    let st = status(&lab, "lb1").unwrap().services.unwrap();
    let pool = st.pools.first().unwrap();
    assert_eq!((pool.total, pool.used), (2, 2));
    let metrics = endpoint(&lab, "lb1", "/metrics");
    assert!(
        metrics.contains(r#"xvip_service_pool_addresses{pool="default",state="used"} 2"#),
        "{metrics}"
    );

    // The data path: Service traffic is passed to the kernel (kube-proxy's DNAT), the
    // VIP's is forwarded by XDP as before.
    let reasons = |lab: &Lab| status(lab, "lb1").unwrap().reasons;
    let count =
        |r: &std::collections::BTreeMap<String, u64>, k: &str| r.get(k).copied().unwrap_or(0);
    let before = reasons(&lab);
    for _ in 0..5 {
        let body = lab
            .curl(
                "client",
                "https://192.0.2.160/whoami",
                Duration::from_secs(2),
            )
            .expect("a's address through lb1");
        assert_eq!(body.trim(), "m2");
    }
    let mid = reasons(&lab);
    for _ in 0..5 {
        lab.curl(
            "client",
            &format!("https://{VIP}:6443/whoami"),
            Duration::from_secs(2),
        )
        .expect("the VIP");
    }
    let after = reasons(&lab);
    println!(
        "5 Service requests: pass_not_for_vip +{}, tx_forward +{}; 5 VIP requests: tx_forward +{}",
        count(&mid, "pass_not_for_vip") - count(&before, "pass_not_for_vip"),
        count(&mid, "tx_forward") - count(&before, "tx_forward"),
        count(&after, "tx_forward") - count(&mid, "tx_forward"),
    );
    assert!(count(&mid, "pass_not_for_vip") >= count(&before, "pass_not_for_vip") + 5 * 4);
    assert_eq!(
        count(&mid, "tx_forward"),
        count(&before, "tx_forward"),
        "no Service packet forwarded by XDP"
    );
    assert!(
        count(&after, "tx_forward") >= count(&mid, "tx_forward") + 5 * 4,
        "the VIP's fast path"
    );

    // a deleted: its address goes to the oldest waiting Service ("taken" asked for it).
    let (code, _) = api(
        &lab,
        "DELETE",
        "/api/v1/namespaces/default/services/a",
        None,
    );
    assert_eq!(code, 200);
    wait_for(Duration::from_secs(5), "taken gets a's address", || {
        ingress(&lab, "taken") == ["192.0.2.160"]
    });
    assert!(ingress(&lab, "waiting").is_empty());
    // taken and waiting deleted: .160 is free and nobody answers for it.
    for n in ["taken", "waiting"] {
        api(
            &lab,
            "DELETE",
            &format!("/api/v1/namespaces/default/services/{n}"),
            None,
        );
    }
    wait_for(Duration::from_secs(5), "192.0.2.160 released", || {
        svc_status(&lab, "lb1", "192.0.2.160").is_none()
    });
    assert!(
        !answered(&lab, "192.0.2.160"),
        "a released address is not answered"
    );
    assert!(answered(&lab, "192.0.2.161"), "b's still is");

    // The API server gone: what is announced stays, the VIP is untouched.
    lab.kill("svc-api").unwrap();
    let gone = Instant::now();
    wait_for(Duration::from_secs(10), "the API's absence noticed", || {
        status(&lab, "lb1")
            .and_then(|s| s.services)
            .is_some_and(|s| s.last_error.is_some())
    });
    // 30 s (the issue's bound: an API server restart or a control-plane blip), checked
    // every second: the Service address answered, the VIP announced.
    let hold = Duration::from_secs(30);
    let mut checks = 0;
    while gone.elapsed() < hold {
        assert!(
            answered(&lab, "192.0.2.161"),
            "b's address unanswered {:.1} s after the API went",
            gone.elapsed().as_secs_f64()
        );
        assert!(
            status(&lab, "lb1").is_some_and(|s| s.announcing),
            "the VIP not announced {:.1} s after the API went",
            gone.elapsed().as_secs_f64()
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(checks >= 10, "only {checks} checks in 30 s");
    let s = status(&lab, "lb1").unwrap();
    assert!(s.announcing);
    let sv = s.services.unwrap();
    assert!(
        sv.addresses
            .iter()
            .any(|a| a.address.as_deref() == Some("192.0.2.161") && a.announced),
        "{sv:?}"
    );
    let body = lab
        .curl(
            "client",
            "https://192.0.2.161/whoami",
            Duration::from_secs(2),
        )
        .expect("b without the API");
    assert_eq!(body.trim(), "m2");
    lab.curl(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(2),
    )
    .expect("the VIP without the Service API");
}

/// The routed test's router: the client's namespace runs BIRD, peers with both nodes over
/// BGP and puts what they export into its own table (both paths merged).
fn bird_router_conf() -> String {
    let mut c = String::from(
        "router id 192.0.2.10;\nlog stderr { warning, error, fatal };\n\
         protocol device { scan time 1; }\n\
         protocol kernel { ipv4 { import none; export all; }; merge paths on; }\n",
    );
    for (name, ip) in [("lb1", "192.0.2.2"), ("lb2", "192.0.2.3")] {
        c += &format!(
            "protocol bgp {name} {{ local 192.0.2.10 as 65000; neighbor {ip} as 65001; \
             hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
             ipv4 {{ import all; export none; }}; }}\n"
        );
    }
    c
}

/// A node's BIRD: learns xvip's routes of table 200 and exports only those.
fn bird_node_conf(ip: &str) -> String {
    format!(
        "router id {ip};\nlog stderr {{ warning, error, fatal }};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel xvip {{ kernel table 200; learn; scan time 1; \
         ipv4 {{ import all; export none; }}; }}\n\
         protocol bgp uplink {{ local {ip} as 65001; neighbor 192.0.2.10 as 65000; \
         hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
         ipv4 {{ import none; export where proto = \"xvip\"; }}; }}\n"
    )
}

fn start_bird(lab: &mut Lab, files: &Files, host: &str, conf: &str) {
    let path = files.path(&format!("bird-{host}.conf"));
    std::fs::write(&path, conf).unwrap();
    let mut cmd = lab.host(host).ns.cmd("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(&path)
        .arg("-s")
        .arg(files.path(&format!("bird-{host}.ctl")))
        .stdout(std::process::Stdio::null());
    lab.spawn(&format!("bird-{host}"), cmd)
        .expect("bird (Debian package bird2)");
}

/// The next hops of the router's (the client's) route to `addr`, sorted; empty without
/// a BGP-learnt route.
fn router_hops(lab: &Lab, addr: &str) -> Vec<String> {
    let out = lab
        .host("client")
        .ns
        .ip(&["route", "show", addr, "proto", "bird"])
        .unwrap_or_default();
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut hops: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

#[test]
fn routed_mode_with_bird_every_node_exports_the_service_and_local_only_where_endpoints_are() {
    let files = Files::new("svc3");
    let mut lab = lab("svc3", 2, None);
    start_service_api(&mut lab);
    let kc = kubeconfig(&files);
    let vip = "203.0.113.100";
    start_bird(&mut lab, &files, "client", &bird_router_conf());
    for (h, ip) in [("lb1", "192.0.2.2"), ("lb2", "192.0.2.3")] {
        start_bird(&mut lab, &files, h, &bird_node_conf(ip));
        let mut args = vec![
            "--interface",
            "eth0",
            "--vip",
            vip,
            "--backend",
            "192.0.2.11",
            "--backend",
            "192.0.2.12",
            "--announce",
            "route",
            "--route-table",
            "200",
            "--snat-ip",
            ip,
            "--snat-ports",
            "20000-32767",
            "--metrics-addr",
            METRICS,
        ];
        args.extend(services_args(POOL, &kc));
        args.extend(["--services-pool", POOL6, "--services-node-name", h]);
        lab.start_xvip(h, &args).expect("xvip");
    }
    wait_attached(&lab, "lb1");
    wait_attached(&lab, "lb2");
    let both = ["192.0.2.2", "192.0.2.3"];
    let took = wait_for(
        Duration::from_secs(30),
        "the router learns the VIP from both",
        || router_hops(&lab, vip) == both,
    );
    println!(
        "routed: the router has the VIP from both nodes {} ms after both attached",
        took.as_millis()
    );
    let routes = |lab: &Lab| {
        lab.host("lb1")
            .ns
            .ip(&["route", "show", "table", "200"])
            .unwrap_or_default()
    };
    let routes6 = |lab: &Lab| {
        lab.host("lb1")
            .ns
            .ip(&["-6", "route", "show", "table", "200"])
            .unwrap_or_default()
    };
    create(
        &lab,
        "web",
        json!({}),
        json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}),
    );
    let took = wait_for(Duration::from_secs(10), "the Service's route", || {
        routes(&lab).contains(&format!("{FIRST} dev eth0"))
    });
    println!(
        "routed mode: the Service /32 in table 200 {} ms after it was created",
        took.as_millis()
    );
    let took = wait_for(
        Duration::from_secs(10),
        "the router learns the Service from both",
        || router_hops(&lab, FIRST) == both,
    );
    println!(
        "routed mode: the router has the Service /32 from both nodes {} ms after it was in lb1's table",
        took.as_millis()
    );
    assert!(svc_status(&lab, "lb1", FIRST).is_some_and(|(_, a, _)| a));
    assert!(svc_status(&lab, "lb2", FIRST).is_some_and(|(_, a, _)| a));
    // The IPv6 address as a /128 beside it (BIRD here exports IPv4 only).
    wait_for(Duration::from_secs(5), "the Service's /128", || {
        routes6(&lab).contains(&format!("{FIRST6} dev eth0"))
    });
    assert!(svc_status(&lab, "lb1", FIRST6).is_some_and(|(_, a, _)| a));
    let (code, _) = api(
        &lab,
        "DELETE",
        "/api/v1/namespaces/default/services/web",
        None,
    );
    assert_eq!(code, 200);
    wait_for(
        Duration::from_secs(5),
        "the Service's routes withdrawn",
        || !routes(&lab).contains(FIRST) && !routes6(&lab).contains(FIRST6),
    );
    wait_for(
        Duration::from_secs(10),
        "the router forgets the Service",
        || router_hops(&lab, FIRST).is_empty(),
    );
    assert!(
        routes(&lab).contains(vip),
        "the VIP's route stays: {}",
        routes(&lab)
    );
    assert_eq!(router_hops(&lab, vip), both, "the router keeps the VIP");

    // externalTrafficPolicy Local: exported only by the nodes with a ready endpoint.
    create(
        &lab,
        "loc",
        json!({}),
        json!({"externalTrafficPolicy": "Local"}),
    );
    wait_for(Duration::from_secs(10), "loc addressed", || {
        ingress(&lab, "loc") == [FIRST]
    });
    wait_for(
        Duration::from_secs(5),
        "loc known and not announced",
        || {
            svc_status(&lab, "lb1", FIRST).is_some_and(|(_, a, why)| {
                !a && why.is_some_and(|w| w.contains("no ready endpoint on node lb1"))
            })
        },
    );
    assert!(!routes(&lab).contains(FIRST), "no endpoint here: no route");
    let slice = |node: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "loc-1", "labels": {"kubernetes.io/service-name": "loc"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": node, "conditions": {"ready": true}}]})
    };
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let (code, body) = api(&lab, "POST", slices, Some(&slice("lb1")));
    assert_eq!(code, 201, "{body}");
    let took = wait_for(
        Duration::from_secs(5),
        "a local endpoint: the route",
        || routes(&lab).contains(&format!("{FIRST} dev eth0")),
    );
    println!(
        "Local: route {} ms after a ready endpoint on this node",
        took.as_millis()
    );
    wait_for(
        Duration::from_secs(10),
        "the router has loc from lb1 alone",
        || router_hops(&lab, FIRST) == ["192.0.2.2"],
    );
    // lb2 knows loc and refuses it for want of an endpoint: no route there, none learnt.
    wait_for(Duration::from_secs(5), "lb2 holds loc back", || {
        svc_status(&lab, "lb2", FIRST).is_some_and(|(_, a, why)| {
            !a && why.is_some_and(|w| w.contains("no ready endpoint on node lb2"))
        })
    });
    let lb2_routes = lab
        .host("lb2")
        .ns
        .ip(&["route", "show", "table", "200"])
        .unwrap_or_default();
    assert!(!lb2_routes.contains(FIRST), "{lb2_routes}");
    assert_eq!(
        router_hops(&lab, FIRST),
        ["192.0.2.2"],
        "only where the endpoint is"
    );
    let (code, body) = api(&lab, "PUT", &format!("{slices}/loc-1"), Some(&slice("lb2")));
    assert_eq!(code, 200, "{body}");
    wait_for(
        Duration::from_secs(5),
        "the endpoint moved away: no route on lb1",
        || !routes(&lab).contains(FIRST),
    );
    wait_for(
        Duration::from_secs(10),
        "the router has loc from lb2 alone",
        || router_hops(&lab, FIRST) == ["192.0.2.3"],
    );
}

/// Gives every lab host 2001:db8::N/64 (N: its IPv4 address's last octet, as digits; no
/// DAD) and waits until none is tentative.
fn add_v6(lab: &Lab) {
    for h in &lab.hosts {
        let a = format!("2001:db8::{}/64", h.ip.octets()[3]);
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

/// kube-proxy's IPv6 part on `host`: `addr` :443 DNATed to m2's IPv6 API server,
/// masqueraded.
fn kube_proxy6(lab: &Lab, host: &str, dir: &Path, addr: &str) {
    let ns = &lab.host(host).ns;
    sh(ns
        .cmd("sysctl")
        .args(["-qw", "net.ipv6.conf.all.forwarding=1"]))
    .expect("ipv6 forwarding");
    let rules = format!(
        "table ip6 kp6 {{\n chain pre {{ type nat hook prerouting priority -100;\n  ip6 daddr {addr} tcp dport 443 dnat to [{POD6}]:6443\n }}\n \
         chain post {{ type nat hook postrouting priority 100;\n  ip6 daddr {POD6} tcp dport 6443 masquerade\n }}\n}}\n"
    );
    let f = dir.join(format!("kp6-{host}.nft"));
    std::fs::write(&f, rules).unwrap();
    sh(ns.cmd("nft").arg("-f").arg(&f)).expect("nft (Debian package nftables)");
}

/// m2 on IPv6 (the IPv6 Service's endpoint).
const POD6: &str = "2001:db8::12";
/// The IPv6 Service range: ::a0-::a7, no lab host's.
const POOL6: &str = "2001:db8::a0/125";
const FIRST6: &str = "2001:db8::a0";
/// [`FIRST6`]'s solicited-node group as `ip -6 maddr` prints it.
const GROUP6: &str = "ff02::1:ff00:a0";

/// Whether `host`'s eth0 is in multicast group `group`.
fn holds_group(lab: &Lab, host: &str, group: &str) -> bool {
    lab.host(host)
        .ns
        .ip(&["-6", "maddr", "show", "dev", "eth0"])
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == group)
}

#[test]
fn a_dual_stack_service_gets_one_address_of_each_family_both_answered_and_both_fail_over() {
    let files = Files::new("svc4");
    let mut lab = lab("svc4", 2, None);
    add_v6(&lab);
    start_service_api(&mut lab);
    let mut m2v6 = lab.host("m2").ns.cmd(apiserver_bin());
    m2v6.args(["--listen", &format!("[{POD6}]:6443"), "--name", "m2"]);
    lab.spawn_apiserver("m2-v6", m2v6).expect("m2 on IPv6");
    let kc = kubeconfig(&files);
    for (h, prio) in [("lb1", 150), ("lb2", 100)] {
        kube_proxy(&lab, h, &files.0, &[FIRST]);
        kube_proxy6(&lab, h, &files.0, FIRST6);
        let mut args = services_args(POOL, &kc).to_vec();
        args.extend(["--services-pool", POOL6, "--services-node-name", h]);
        start_node(&mut lab, h, prio, &args);
    }
    serving(&lab, "lb1", &["lb2"]);

    create(
        &lab,
        "dual",
        json!({}),
        json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}),
    );
    let took = wait_for(Duration::from_secs(10), "both addresses announced", || {
        [FIRST, FIRST6]
            .iter()
            .all(|a| svc_status(&lab, "lb1", a).is_some_and(|(s, on, _)| s == "default/dual" && on))
    });
    println!(
        "dual stack: both addresses announced {} ms after create",
        took.as_millis()
    );
    assert_eq!(
        ingress(&lab, "dual"),
        [FIRST, FIRST6],
        "one of each, in ipFamilies order"
    );
    std::thread::sleep(Duration::from_millis(500));
    let stats = lab_stats(&lab);
    assert_eq!(
        stats["status_writes"], 1,
        "both in one status write: {stats}"
    );

    // Both reached through lb1: the client's neighbour entries (ARP, NDP) name lb1.
    let lb1_mac = mac_of(&lab, "lb1").trim().to_string();
    for url in [
        format!("https://{FIRST}/whoami"),
        format!("https://[{FIRST6}]/whoami"),
    ] {
        let body = lab
            .curl_until_ok("client", &url, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{url} through lb1: {e:#}"));
        assert_eq!(body.trim(), "m2", "{url}");
    }
    assert_eq!(client_mac_for(&lab, FIRST), lb1_mac);
    assert_eq!(
        client_mac_for(&lab, FIRST6),
        lb1_mac,
        "NDP answered by the owner"
    );
    // Both nodes hold the address's solicited-node group (a snooping switch forwards its
    // solicitations to whichever becomes the owner).
    for h in ["lb1", "lb2"] {
        wait_for(
            Duration::from_secs(5),
            "the solicited-node group joined",
            || holds_group(&lab, h, GROUP6),
        );
    }
    let ndp = status(&lab, "lb1").unwrap().ndp.expect("lb1's NDP sockets");
    assert!(
        ndp.answered >= 1,
        "lb1 answered the client's solicitation: {ndp:?}"
    );

    // A Local Service whose only endpoint is on lb1: lb1 announces it; lb2 will have to
    // refuse it the moment it becomes the owner.
    create(
        &lab,
        "loc",
        json!({}),
        json!({"externalTrafficPolicy": "Local"}),
    );
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "loc-1", "labels": {"kubernetes.io/service-name": "loc"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": "lb1", "conditions": {"ready": true}}]});
    let (code, body) = api(
        &lab,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        Some(&slice),
    );
    assert_eq!(code, 201, "{body}");
    wait_for(Duration::from_secs(10), "lb1 announces loc", || {
        svc_status(&lab, "lb1", "192.0.2.161").is_some_and(|(s, on, _)| s == "default/loc" && on)
    });
    let refused_by_lb2 = |lab: &Lab| {
        events(lab).iter().any(|(s, m)| {
            s == "loc" && m.contains("the VIP owner (node lb2) has no ready endpoint")
        })
    };
    assert!(!refused_by_lb2(&lab), "lb2 is no owner yet");

    // SIGKILL of the owner: lb2 takes both, the client's entries follow its advertisements.
    let probes = [
        Prober::start_to(&lab, SocketAddr::new(FIRST.parse().unwrap(), 443)),
        Prober::start_to(&lab, SocketAddr::new(FIRST6.parse().unwrap(), 443)),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let kill = Instant::now();
    lab.kill("xvip-lb1").unwrap();
    let lb2_mac = mac_of(&lab, "lb2").trim().to_string();
    let moved = wait_for(Duration::from_secs(5), "both names lb2", || {
        client_mac_for(&lab, FIRST) == lb2_mac && client_mac_for(&lab, FIRST6) == lb2_mac
    });
    std::thread::sleep(Duration::from_millis(500));
    let [p4, p6] = probes;
    let (o4, o6) = (p4.outage(kill), p6.outage(kill));
    println!(
        "dual stack SIGKILL: entries name lb2 {} ms after; outage IPv4 {} ms, IPv6 {} ms",
        moved.as_millis(),
        o4.as_millis(),
        o6.as_millis()
    );
    assert!(o4 < TAKEOVER_BOUND, "IPv4 Service outage {o4:?}");
    assert!(o6 < TAKEOVER_BOUND, "IPv6 Service outage {o6:?}");
    // The refusal comes with the ownership, not at the next change of a Service.
    wait_for(
        Duration::from_secs(5),
        "lb2 refuses loc as the new owner",
        || refused_by_lb2(&lab),
    );
    println!(
        "Local: the new owner's refusal event {} ms after the SIGKILL",
        kill.elapsed().as_millis()
    );
    for url in [
        format!("https://{FIRST}/whoami"),
        format!("https://[{FIRST6}]/whoami"),
    ] {
        let body = lab
            .curl("client", &url, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{url} through lb2: {e:#}"));
        assert_eq!(body.trim(), "m2", "{url}");
    }
    // The Service gone: its address is no longer answered and its group is left.
    let (code, _) = api(
        &lab,
        "DELETE",
        "/api/v1/namespaces/default/services/dual",
        None,
    );
    assert_eq!(code, 200);
    wait_for(Duration::from_secs(5), "lb2 leaves the group", || {
        !holds_group(&lab, "lb2", GROUP6)
    });
    assert!(svc_status(&lab, "lb2", FIRST6).is_none());
}
