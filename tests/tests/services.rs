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
    let hold = Duration::from_secs(5);
    while gone.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(250));
    }
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

#[test]
fn routed_mode_puts_the_service_routes_beside_the_vips_and_takes_them_out_on_delete() {
    let files = Files::new("svc3");
    let mut lab = lab("svc3", 1, None);
    start_service_api(&mut lab);
    let kc = kubeconfig(&files);
    let vip = "203.0.113.100";
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
        "192.0.2.2",
        "--snat-ports",
        "20000-32767",
        "--metrics-addr",
        METRICS,
    ];
    args.extend(services_args(POOL, &kc));
    args.extend(["--services-node-name", "lb1"]);
    lab.start_xvip("lb1", &args).expect("xvip");
    wait_attached(&lab, "lb1");
    let routes = |lab: &Lab| {
        lab.host("lb1")
            .ns
            .ip(&["route", "show", "table", "200"])
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(10), "the VIP's route", || {
        routes(&lab).contains(vip)
    });
    create(&lab, "web", json!({}), json!({}));
    let took = wait_for(Duration::from_secs(10), "the Service's route", || {
        routes(&lab).contains(&format!("{FIRST} dev eth0"))
    });
    println!(
        "routed mode: the Service /32 in table 200 {} ms after it was created",
        took.as_millis()
    );
    assert!(svc_status(&lab, "lb1", FIRST).is_some_and(|(_, a, _)| a));
    let (code, _) = api(
        &lab,
        "DELETE",
        "/api/v1/namespaces/default/services/web",
        None,
    );
    assert_eq!(code, 200);
    wait_for(
        Duration::from_secs(5),
        "the Service's route withdrawn",
        || !routes(&lab).contains(FIRST),
    );
    assert!(
        routes(&lab).contains(vip),
        "the VIP's route stays: {}",
        routes(&lab)
    );

    // externalTrafficPolicy Local: the route only while this node has a ready endpoint.
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
    let (code, body) = api(
        &lab,
        "PUT",
        &format!("{slices}/loc-1"),
        Some(&slice("elsewhere")),
    );
    assert_eq!(code, 200, "{body}");
    wait_for(
        Duration::from_secs(5),
        "the endpoint moved away: no route",
        || !routes(&lab).contains(FIRST),
    );
}
