//! Exactly one owner of the VIP, seen from the wire: two xvip nodes that cannot hear each
//! other's VRRP (filtered on the switch) both become master by their election, but their
//! ARP frames and neighbour advertisements say who they are, and the one that is outranked
//! stops answering at once; a foreign host claiming the VIP is reported and not fought;
//! forged marks never leave the VIP without its owner.

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

mod common;

use common::*;
use tests::lab::{Lab, sh};

/// Drops VRRP (IP protocol 112) between the switch's ports: the nodes cannot hear each
/// other's adverts (a multicast-filtering switch, a firewall rule), everything else flows.
struct VrrpFilter(String);

impl VrrpFilter {
    fn on(lab: &Lab) -> Self {
        let ns = &lab.switch.name;
        for rule in [
            "add table bridge xvip_test",
            "add chain bridge xvip_test block { type filter hook forward priority 0 ; }",
            "add rule bridge xvip_test block ip protocol 112 drop",
            "add rule bridge xvip_test block ip6 nexthdr 112 drop",
        ] {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]).args(rule.split(' '));
            sh(&mut c).expect("nft");
        }
        Self(ns.clone())
    }
}

impl Drop for VrrpFilter {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(["delete", "table", "bridge", "xvip_test"])
            .status();
    }
}

#[test]
fn two_xvip_that_cannot_hear_each_other_leave_one_arp_owner() {
    let mut lab = lab("own2", 2, None);
    start_node(&mut lab, "lb1", 150, &[]);
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let sampler = ArpSampler::start(&lab);
    let filter = VrrpFilter::on(&lab);
    let cut = Instant::now();
    // VRRP deaf: lb2's election makes it master too ...
    wait_for(Duration::from_secs(3), "lb2 master by its election", || {
        state(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_secs(3));
    // ... but lb1's frames outrank it: lb2 does not answer.
    assert_eq!(state(&lab, "lb1"), "master");
    assert_eq!(state(&lab, "lb2"), "master", "VRRP stays deaf");
    let st2 = status(&lab, "lb2").expect("lb2 status");
    assert!(!st2.announcing, "lb2 yielded to lb1");
    let lb1_mac = mac_of(&lab, "lb1");
    let claims = st2.claims.expect("lb2's claims");
    assert_eq!(claims.yielded_to.as_deref(), Some(lb1_mac.trim()));
    assert!(
        claims
            .claimants
            .iter()
            .any(|c| c.kind == "xvip" && c.priority == Some(150)),
        "{claims:?}"
    );
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb1"));
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(3),
    )
    .expect("through lb1 while VRRP is deaf");
    let samples = sampler.stop();
    let lb1 = mac_of(&lab, "lb1");
    // From one second after lb2 became master, one owner in every sample: lb1.
    let settle = cut + Duration::from_millis(1500);
    let late: Vec<_> = samples.iter().filter(|s| s.at > settle).collect();
    assert!(late.len() >= 20, "{} samples", late.len());
    let two = late.iter().filter(|s| s.owners.len() > 1).count();
    let none = late.iter().filter(|s| s.owners.is_empty()).count();
    let other = late
        .iter()
        .filter(|s| s.owners.len() == 1 && !s.owners.contains(&lb1))
        .count();
    let early_two = samples
        .iter()
        .filter(|s| s.at > cut && s.at <= settle && s.owners.len() > 1)
        .count();
    println!(
        "VRRP filtered: {} samples after the settle, two owners {two}, none {none}, another {other}; {early_two} samples with two owners before it",
        late.len()
    );
    assert_eq!((two, none, other), (0, 0, 0));

    // lb1 dies while VRRP is still deaf: lb2, hearing nobody answer its probes, takes over.
    let i = xvip_index(&lab, "lb1");
    lab.procs[i].signal(libc::SIGKILL);
    lab.procs[i].wait_timeout(Duration::from_secs(5));
    wait_for(Duration::from_secs(5), "lb2 answers again", || {
        status(&lab, "lb2").is_some_and(|s| s.announcing)
    });
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .expect("through lb2");
    assert_eq!(client_vip_mac(&lab), mac_of(&lab, "lb2"));
    drop(filter);
}

/// A gratuitous ARP reply for `vip` from `host`'s eth0 with its own MAC and no mark: a
/// server someone configured the VIP on.
fn foreign_garp(lab: &Lab, host: &str, vip: std::net::Ipv4Addr) {
    let mac = mac_bytes(&mac_of(lab, host));
    let path = format!("/var/run/netns/{}", lab.host(host).ns.name);
    thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&vip.octets());
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&vip.octets());
        // SAFETY: plain socket calls on a descriptor closed below.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            for _ in 0..3 {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
            }
            libc::close(fd);
        }
    })
    .join()
    .expect("garp thread");
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.trim().split(':')) {
        *b = u8::from_str_radix(p, 16).expect("mac");
    }
    m
}

#[test]
fn a_foreign_host_claiming_the_vip_is_reported_and_not_fought() {
    let dir = tests::lab::TempDir::new("ownforeign");
    let mut lab = lab("ownf", 1, None);
    let args = node_args(150, &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    start_xvip_logged(&mut lab, "lb1", &a, &[], &dir.path("lb1.log"));
    wait_attached(&lab, "lb1");
    // Master, and announcing: past the takeover probe's 30 ms (`TAKEOVER_PROBE`).
    wait_for(Duration::from_secs(8), "lb1 master and announcing", || {
        status(&lab, "lb1")
            .is_some_and(|s| s.announcing && s.vrrp.is_some_and(|v| v.state == "master"))
    });
    foreign_garp(&lab, "m1", VIP);
    let m1 = mac_of(&lab, "m1");
    wait_for(Duration::from_secs(3), "the claim reported", || {
        std::fs::read_to_string(dir.path("lb1.log"))
            .is_ok_and(|l| l.contains("a host that is not xvip") && l.contains(m1.trim()))
    });
    // Not fought, not given up: still master, announcing, and answering requests.
    let st = status(&lab, "lb1").expect("status");
    assert!(
        st.announcing,
        "{}",
        std::fs::read_to_string(dir.path("lb1.log")).unwrap_or_default()
    );
    let claims = st.claims.expect("claims");
    assert!(
        claims
            .claimants
            .iter()
            .any(|c| c.kind == "foreign" && c.mac == m1.trim()),
        "{claims:?}"
    );
    assert_eq!(claims.yielded_to, None);
    let sampler = ArpSampler::start(&lab);
    thread::sleep(Duration::from_millis(600));
    let samples = sampler.stop();
    let lb1 = mac_of(&lab, "lb1");
    assert!(
        samples.iter().any(|s| s.owners.contains(&lb1)),
        "lb1 answers ARP"
    );
}

/// Runs `nft` in `host`'s namespace.
fn nft(lab: &Lab, host: &str, rule: &str) {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", &lab.host(host).ns.name, "nft"])
        .args(rule.split(' '));
    sh(&mut c).expect("nft");
}

/// Runs `sysctl -w` in `host`'s namespace.
fn sysctl(lab: &Lab, host: &str, kv: &str) {
    let mut c = std::process::Command::new("ip");
    c.args([
        "netns",
        "exec",
        &lab.host(host).ns.name,
        "sysctl",
        "-qw",
        kv,
    ]);
    sh(&mut c).expect("sysctl");
}

/// After a takeover, a client that ignores gratuitous ARP (dropped by its own rule, as some
/// hosts and switches do; `arp_accept=0`) and holds a fresh REACHABLE entry for the VIP
/// learns the new owner at once: its flow is in the new master's flow table (synced), so
/// the new master tells it with a unicast reply. A second such client without a flow
/// (only pings, which tracks no flow) keeps the old owner until its own timers run out:
/// the time without.
#[test]
fn a_client_in_the_flow_table_learns_the_new_owner_at_once() {
    let dir = tests::lab::TempDir::new("owntell");
    let key = sync_key_file(&dir);
    let quiet_ip = std::net::Ipv4Addr::new(192, 0, 2, 20);
    let mut lab = plain_lab("ownt", 2, &[("quiet", quiet_ip)]);
    let extra = ["--health", "tcp", "--sync-key-file", key.as_str()];
    start_node(&mut lab, "lb1", 150, &extra);
    start_node(&mut lab, "lb2", 100, &extra);
    wait_master(&lab, "lb1", &["lb2"], Duration::from_secs(8));
    for h in ["client", "quiet"] {
        sysctl(&lab, h, "net.ipv4.conf.eth0.arp_accept=0");
        nft(&lab, h, "add table arp xvip_test");
        nft(
            &lab,
            h,
            "add chain arp xvip_test incoming { type filter hook input priority 0 ; }",
        );
        // Gratuitous ARP names the VIP as target (request and reply): ignored.
        nft(
            &lab,
            h,
            &format!("add rule arp xvip_test incoming arp daddr ip {VIP} drop"),
        );
    }
    // The quiet client's timers short enough to measure the time without in seconds:
    // REACHABLE for 3-9 s, then 1 s of DELAY, then unicast probes to the old owner.
    sysctl(
        &lab,
        "quiet",
        "net.ipv4.neigh.eth0.base_reachable_time_ms=6000",
    );
    sysctl(
        &lab,
        "quiet",
        "net.ipv4.neigh.eth0.delay_first_probe_time=1",
    );

    // The client's flow: a connection held open through lb1, synced to lb2.
    let ns = lab.host("client").ns.name.clone();
    let conn = tests::lab::in_netns(&ns, || {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddrV4::new(VIP, 6443).into(),
            Duration::from_secs(3),
        )
    })
    .expect("client netns")
    .expect("connect through the VIP");
    wait_for(
        Duration::from_secs(20),
        "lb2 holds the client's flow",
        || {
            status(&lab, "lb2")
                .and_then(|s| s.sync)
                .is_some_and(|s| s.installed >= 1)
        },
    );

    // Fresh REACHABLE entries for the VIP on both (flushed, resolved again by one ping).
    for h in ["client", "quiet"] {
        let ns = &lab.host(h).ns;
        ns.ip(&["neigh", "flush", "dev", "eth0"]).expect("flush");
        let mut c = ns.cmd("ping");
        c.args(["-c1", "-W1", &VIP.to_string()]);
        sh(&mut c).expect("ping the VIP");
    }
    let lb1 = mac_of(&lab, "lb1").trim().to_string();
    let lb2 = mac_of(&lab, "lb2").trim().to_string();
    for h in ["client", "quiet"] {
        assert_eq!(
            vip_neighbour(&lab, h),
            (lb1.clone(), "REACHABLE".into()),
            "{h}"
        );
    }
    // The quiet client keeps using its entry (pings track no flow at xvip).
    let mut ping = lab.host("quiet").ns.cmd("ping");
    ping.args(["-q", "-i", "0.2", "-w", "30", &VIP.to_string()])
        .stdout(std::process::Stdio::null());
    lab.spawn("quiet-ping", ping).expect("ping");
    // Linux takes a changed address only for an entry older than `locktime` (1 s): let
    // the entries age past it, so the first round can count.
    thread::sleep(Duration::from_millis(1200));

    let i = xvip_index(&lab, "lb1");
    let t0 = Instant::now();
    lab.procs[i].signal(libc::SIGTERM);
    let (mut master_at, mut client_at, mut quiet_at) = (None, None, None);
    let mut quiet_when_client = String::new();
    while t0.elapsed() < Duration::from_secs(20) && quiet_at.is_none() {
        if master_at.is_none() && state(&lab, "lb2") == "master" {
            master_at = Some(t0.elapsed());
        }
        if client_at.is_none() && vip_neighbour(&lab, "client").0 == lb2 {
            client_at = Some(t0.elapsed());
            quiet_when_client = vip_neighbour(&lab, "quiet").0;
        }
        if quiet_at.is_none() && vip_neighbour(&lab, "quiet").0 == lb2 {
            quiet_at = Some(t0.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let ms = |d: Option<Duration>| d.map_or("never".into(), |d| format!("{} ms", d.as_millis()));
    println!(
        "after SIGTERM to lb1: lb2 master at {}, the client in the flow table on lb2's MAC at {}, the quiet client at {} (within 20 s)",
        ms(master_at),
        ms(client_at),
        ms(quiet_at)
    );
    let (master_at, client_at) = (
        master_at.expect("lb2 master"),
        client_at.expect("the client learns lb2 within 20 s"),
    );
    assert_eq!(
        quiet_when_client, lb1,
        "the quiet client ignored the gratuitous ARP: it still had lb1 when the client switched"
    );
    assert!(
        client_at < master_at + TAKEOVER_BOUND,
        "the client learnt lb2 {client_at:?} after the SIGTERM, lb2 was master at {master_at:?}"
    );
    let arp = status(&lab, "lb2")
        .and_then(|s| s.arp)
        .expect("lb2's ARP status");
    assert!(arp.takeover_notices >= 1, "{arp:?}");
    drop(conn);
}

/// A SIGHUP with a new priority applies live (keepalived's reload): lb1 (150) lowered to
/// 50 hands the VIP to the preempting lb2 (100), raised to 200 it takes it back. Each
/// handover: at most one ARP sample with two owners (a preemption: the new master answers
/// before its advert reaches the old one), no longer without an owner than the master-down
/// interval and the measurement margin, and the new owner alone once the states say so.
#[test]
fn a_sighup_with_a_new_priority_hands_the_vip_over_and_back() {
    let dir = tests::lab::TempDir::new("ownhup");
    let mut lab = lab("ownh", 2, None);
    let cfg = dir.path("lb1.toml");
    let args = node_args_priority_file(&cfg, 150, &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    start_xvip_logged(&mut lab, "lb1", &a, &[], &dir.path("lb1.log"));
    wait_attached(&lab, "lb1");
    start_node(&mut lab, "lb2", 100, &[]);
    serving(&lab, "lb1", &["lb2"]);
    let (lb1, lb2) = (mac_of(&lab, "lb1"), mac_of(&lab, "lb2"));
    let i = xvip_index(&lab, "lb1");
    let sampler = ArpSampler::start(&lab);
    thread::sleep(Duration::from_millis(500));
    let mut windows = Vec::new();
    for (priority, master, backup) in [(50, "lb2", "lb1"), (200, "lb1", "lb2")] {
        std::fs::write(&cfg, format!("vrrp_priority = {priority}\n")).expect("config");
        let from = Instant::now();
        lab.procs[i].signal(libc::SIGHUP);
        let took = wait_master(&lab, master, &[backup], Duration::from_secs(5));
        // The status is polled: the daemons act on the state change a moment later.
        let to = Instant::now() + Duration::from_millis(100);
        println!("SIGHUP priority {priority}: {master} master after {took:?}");
        let v = vrrp(&lab, "lb1").expect("lb1's VRRP status");
        assert_eq!((v.configured_priority, v.priority), (priority, priority));
        lab.curl_until_ok(
            "client",
            &format!("https://{VIP}:6443/whoami"),
            Duration::from_secs(5),
        )
        .expect("through the VIP after the handover");
        thread::sleep(Duration::from_millis(700));
        windows.push((from, to));
    }
    let samples = sampler.stop();
    let log = std::fs::read_to_string(dir.path("lb1.log")).expect("lb1 log");
    assert!(log.contains("priority 150 -> 50 (reload)"), "{log}");
    assert!(log.contains("priority 50 -> 200 (reload)"), "{log}");
    assert!(!log.contains("need a restart"), "{log}");
    let (down, up) = (windows[0], windows[1]);
    let (first, second): (Vec<_>, Vec<_>) = samples.into_iter().partition(|s| s.at < up.0);
    let (gap1, n1, two1) = assert_one_arp_owner_but_handover(
        &first,
        |t| {
            (t < down.0)
                .then(|| lb1.clone())
                .or_else(|| (t > down.1).then(|| lb2.clone()))
        },
        Some(down),
    );
    let (gap2, n2, two2) =
        assert_one_arp_owner_but_handover(&second, |t| (t > up.1).then(|| lb1.clone()), Some(up));
    println!(
        "lowered: {n1} samples, longest without an owner {gap1:?}, {two1} with two; raised: {n2} samples, {gap2:?}, {two2}"
    );
    // Master-down interval of priority 100 (361 ms) + the 100 ms + the 250 ms the
    // chaos test allows its measurement (sampling period, a loaded machine).
    let bound = Duration::from_millis(361 + 100 + 250);
    assert!(gap1 <= bound && gap2 <= bound, "{gap1:?} {gap2:?}");
}

// ---------------------------------------------------------------------------------------
// IPv6: the same rule, from neighbour advertisements (`announce::claims` for NDP).

const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// A lab host's IPv6 address: 2001:db8:: and the digits of its IPv4 address's last octet
/// (192.0.2.11 -> 2001:db8::11), as `ipv6.rs` gives them.
fn v6_of(ip: std::net::Ipv4Addr) -> String {
    format!("2001:db8::{}", ip.octets()[3])
}

/// Every host's 2001:db8::N/64 (no DAD), then waits until no address is tentative.
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

/// Lab API servers on the masters' IPv6 addresses (the IPv6 election's priority follows
/// their health).
fn start_v6_apiservers(lab: &mut Lab) {
    for m in ["m1", "m2", "m3"] {
        let listen = format!("[{}]:6443", v6_of(lab.host(m).ip));
        let mut cmd = lab.host(m).ns.cmd(tests::lab::apiserver_bin());
        cmd.args(["--listen", &listen, "--name", m]);
        lab.spawn_apiserver(&format!("apiserver6-{m}"), cmd)
            .expect("v6 apiserver");
    }
}

/// A lab with `lbs` load balancers, IPv6 addresses and IPv6 masters.
fn lab6(tag: &str, lbs: u8) -> Lab {
    let mut lab = lab(tag, lbs, None);
    add_v6(&lab);
    start_v6_apiservers(&mut lab);
    lab
}

/// Starts xvip on `host` for the IPv6 VIP with VRRP at `priority`, its log in `log`.
fn start6(lab: &mut Lab, host: &str, priority: u8, log: &std::path::Path) {
    let mut args: Vec<String> = [
        "--interface",
        "eth0",
        "--vip",
        "[2001:db8::100]:6443",
        "--metrics-addr",
        METRICS,
        "--vrrp-vrid",
        "51",
        "--vrrp-priority",
    ]
    .map(String::from)
    .into();
    args.push(priority.to_string());
    for m in ["m1", "m2", "m3"] {
        args.push("--backend".into());
        args.push(format!("[{}]:6443", v6_of(lab.host(m).ip)));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    start_xvip_logged(lab, host, &a, &[], log);
    wait_attached(lab, host);
}

fn state6(lab: &Lab, host: &str) -> String {
    status(lab, host)
        .and_then(|s| s.vrrp6)
        .map_or_else(|| "down".into(), |v| v.state)
}

/// `host`'s link-local address on eth0.
fn link_local(lab: &Lab, host: &str) -> std::net::Ipv6Addr {
    let out = lab
        .host(host)
        .ns
        .ip(&["-6", "addr", "show", "dev", "eth0", "scope", "link"])
        .expect("ip -6 addr");
    out.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("a link-local address")
}

fn mac_text(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IPv6 packet socket on eth0 of the namespace this thread is in, bound, non-blocking;
/// returns it and the interface index.
fn packet_socket6() -> (i32, libc::sockaddr_ll) {
    // SAFETY: plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            i32::from(0x86ddu16.to_be()),
        )
    };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: all-zero is a valid sockaddr_ll; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = 0x86ddu16.to_be();
    // SAFETY: if_nametoindex on a NUL-terminated name.
    sll.sll_ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
    sll.sll_halen = 6;
    // SAFETY: a valid sockaddr_ll of its size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    (fd, sll)
}

fn send_frame(fd: i32, sll: &libc::sockaddr_ll, frame: &[u8]) -> bool {
    let mut to = *sll;
    to.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: sending our buffer to a valid sockaddr_ll.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    n == frame.len() as isize
}

/// Enters `host`'s network namespace on this thread.
fn enter(lab: &Lab, host: &str) -> impl FnOnce() + Send + 'static {
    let path = format!("/var/run/netns/{}", lab.host(host).ns.name);
    move || {
        let f = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    }
}

/// Sends `frames` from `host`'s eth0, `per_ms` of them a millisecond at most; returns how
/// many went out.
fn send_frames(lab: &Lab, host: &str, frames: Vec<Vec<u8>>, per_ms: usize) -> usize {
    let enter = enter(lab, host);
    thread::spawn(move || {
        enter();
        let (fd, sll) = packet_socket6();
        let mut sent = 0;
        for chunk in frames.chunks(per_ms.max(1)) {
            sent += chunk.iter().filter(|f| send_frame(fd, &sll, f)).count();
            thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
        sent
    })
    .join()
    .expect("sender thread")
}

/// Asks "who has the v6 VIP" from the client every 50 ms (a raw neighbour solicitation on
/// its eth0; the kernel's neighbour cache is not involved) and records, per solicitation,
/// the MACs whose solicited advertisement answered it. Each one asks from its own address
/// (2001:db8::2:0-49 in turn, unused in the lab) and the answers go to it, so a late answer
/// still counts for its own solicitation, up to 1 s. Also counts, while it runs, the
/// unsolicited advertisements (to all nodes) for the VIP, by MAC: the announcements.
struct NdpSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Sampled>,
}

/// What [`NdpSampler`] saw: the samples, and the unsolicited advertisements (when, MAC).
type Sampled = (Vec<ArpSample>, Vec<(Instant, String)>);

const NDP_SLOTS: u16 = 50;

impl NdpSampler {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mac = mac_bytes(&mac_of(lab, "client"));
        let enter = enter(lab, "client");
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            enter();
            let (fd, sll) = packet_socket6();
            let _ = ready_tx.send(());
            let from = |slot: u16| std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 2, slot);
            let mut out: Vec<ArpSample> = Vec::new();
            let mut unsolicited = Vec::new();
            let mut buf = [0u8; 1600];
            let mut next_send = Instant::now();
            let mut stopping: Option<Instant> = None;
            loop {
                if stopping.is_none() && s.load(Ordering::Relaxed) {
                    stopping = Some(Instant::now());
                }
                match stopping {
                    Some(t) if t.elapsed() > Duration::from_secs(1) => break,
                    Some(_) => {}
                    None if Instant::now() >= next_send => {
                        let slot = (out.len() % usize::from(NDP_SLOTS)) as u16;
                        let (ns, _) = xvip::wire::ndp::solicitation(mac, from(slot), VIP6);
                        assert!(send_frame(fd, &sll, &ns), "send the solicitation");
                        out.push(ArpSample {
                            at: Instant::now(),
                            owners: Default::default(),
                            delays: Default::default(),
                        });
                        next_send += ARP_PERIOD;
                    }
                    None => {}
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 5) } <= 0 {
                    continue;
                }
                // SAFETY: receiving into our buffer.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(n) = usize::try_from(n) else { continue };
                let Ok(na) = xvip::wire::ndp::Advertised::parse(&buf[..n]) else {
                    continue;
                };
                if na.target != VIP6 {
                    continue;
                }
                let owner = mac_text(&na.claimed_mac());
                if !na.solicited && na.dst == xvip::wire::ndp::ALL_NODES {
                    unsolicited.push((Instant::now(), owner));
                    continue;
                }
                let o = na.dst.segments();
                if o[..7] != [0x2001, 0xdb8, 0, 0, 0, 0, 2] || o[7] >= NDP_SLOTS || out.is_empty() {
                    continue;
                }
                let slot = usize::from(o[7]);
                let last = out.len() - 1;
                let k = usize::from(NDP_SLOTS);
                let back = (last % k + k - slot) % k;
                let Some(i) = last.checked_sub(back) else {
                    continue;
                };
                let delay = out[i].at.elapsed();
                if delay <= Duration::from_secs(1) {
                    out[i].delays.entry(owner.clone()).or_insert(delay);
                    out[i].owners.insert(owner);
                }
            }
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            (out, unsolicited)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("NDP sampler started");
        Self { stop, thread }
    }

    /// Stops (after late answers) and returns the samples and the unsolicited
    /// advertisements seen (when, which MAC).
    fn stop(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("NDP sampler")
    }
}

/// The samples in [from, to) and how many had no owner, two or more, or one other than
/// `owner`.
fn tally(samples: &[ArpSample], from: Instant, to: Instant, owner: &str) -> (usize, [usize; 3]) {
    let w: Vec<_> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    let none = w.iter().filter(|s| s.owners.is_empty()).count();
    let two = w.iter().filter(|s| s.owners.len() > 1).count();
    let other = w
        .iter()
        .filter(|s| s.owners.len() == 1 && !s.owners.contains(owner))
        .count();
    (w.len(), [none, two, other])
}

#[test]
fn two_xvip_that_cannot_hear_each_other_leave_one_ndp_owner() {
    let dir = tests::lab::TempDir::new("own6two");
    let mut lab = lab6("own6", 2);
    start6(&mut lab, "lb1", 150, &dir.path("lb1.log"));
    start6(&mut lab, "lb2", 100, &dir.path("lb2.log"));
    wait_for(
        Duration::from_secs(8),
        "lb1 master, lb2 backup (v6)",
        || state6(&lab, "lb1") == "master" && state6(&lab, "lb2") == "backup",
    );
    let (lb1, lb2) = (mac_of(&lab, "lb1"), mac_of(&lab, "lb2"));
    let sampler = NdpSampler::start(&lab);
    thread::sleep(Duration::from_millis(500));
    let filter = VrrpFilter::on(&lab);
    let cut = Instant::now();
    // VRRP deaf: lb2's IPv6 election makes it master too ...
    let took = wait_for(Duration::from_secs(3), "lb2 master by its election", || {
        state6(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_secs(3));
    // ... but lb1's advertisements outrank it, and lb1 answers its probe: lb2 is silent.
    assert_eq!(state6(&lab, "lb1"), "master");
    assert_eq!(state6(&lab, "lb2"), "master", "VRRP stays deaf");
    let st2 = status(&lab, "lb2").expect("lb2 status");
    assert_eq!(st2.announcing6, Some(false), "lb2 yielded to lb1");
    let claims = st2.claims6.expect("lb2's IPv6 claims");
    assert_eq!(claims.yielded_to.as_deref(), Some(lb1.as_str()));
    assert!(
        claims
            .claimants
            .iter()
            .any(|c| c.kind == "xvip" && c.priority == Some(150) && c.mac == lb1),
        "{claims:?}"
    );
    assert!(claims.probes >= 2, "lb2 keeps asking: {claims:?}");
    let c1 = status(&lab, "lb1")
        .and_then(|s| s.claims6)
        .expect("lb1's claims");
    assert!(
        c1.claimants
            .iter()
            .any(|c| c.kind == "xvip" && c.priority == Some(100) && c.mac == lb2),
        "lb1 saw lb2's claim: {c1:?}"
    );
    assert_eq!(c1.yields, 0);
    let deaf_end = Instant::now();
    drop(filter);
    let restored = Instant::now();
    wait_for(Duration::from_secs(5), "lb2 backup again", || {
        state6(&lab, "lb2") == "backup"
    });
    wait_for(Duration::from_secs(3), "lb2's yield over", || {
        status(&lab, "lb2")
            .and_then(|s| s.claims6)
            .is_some_and(|c| c.yielded_to.is_none())
    });
    assert_eq!(state6(&lab, "lb1"), "master");
    thread::sleep(Duration::from_secs(1));
    let end = Instant::now();
    let (samples, _) = sampler.stop();
    let settle = cut + Duration::from_millis(1500);
    let (n0, before) = tally(&samples, samples[0].at, cut, &lb1);
    let (n1, deaf) = tally(&samples, settle, deaf_end, &lb1);
    let (n2, after) = tally(&samples, restored, end, &lb1);
    // When lb1 became the only owner for good.
    let last_bad = samples
        .iter()
        .filter(|s| s.at > cut && s.at < deaf_end)
        .filter(|s| s.owners.len() != 1 || !s.owners.contains(&lb1))
        .map(|s| s.at - cut)
        .max();
    let (_, early) = tally(&samples, cut, settle, &lb1);
    println!(
        "IPv6, VRRP filtered: lb2 master by its election {} ms after the cut; last sample without lb1 alone at {:?}; settle window (none, two, other) {early:?}; \
         samples (none, two, other): before {before:?} of {n0}, deaf after 1.5 s {deaf:?} of {n1}, restored {after:?} of {n2}",
        took.as_millis(),
        last_bad.map(|d| d.as_millis()),
    );
    assert!(n1 >= 20, "{n1} samples while deaf");
    assert_eq!(before, [0, 0, 0]);
    assert_eq!(deaf, [0, 0, 0], "one owner, lb1, while VRRP is deaf");
    assert_eq!(after, [0, 0, 0], "lb1 alone once VRRP is heard again");
    let log = std::fs::read_to_string(dir.path("lb2.log")).expect("lb2 log");
    assert!(
        log.contains("another xvip") && log.contains(&lb1),
        "lb2 names lb1: {log}"
    );

    // Deaf again, and lb1 dies: lb2's probes go unanswered, and it answers again.
    let filter = VrrpFilter::on(&lab);
    wait_for(Duration::from_secs(5), "lb2 yielded again", || {
        status(&lab, "lb2")
            .and_then(|s| s.claims6)
            .is_some_and(|c| c.yielded_to.as_deref() == Some(lb1.as_str()))
    });
    let sampler = NdpSampler::start(&lab);
    let i = xvip_index(&lab, "lb1");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    lab.procs[i].wait_timeout(Duration::from_secs(5));
    let back = wait_for(Duration::from_secs(5), "lb2 answers again", || {
        status(&lab, "lb2").is_some_and(|s| s.announcing6 == Some(true))
    });
    thread::sleep(Duration::from_millis(500));
    let (samples, _) = sampler.stop();
    let first = samples
        .iter()
        .find(|s| s.owners.contains(&lb2))
        .map(|s| s.at - kill);
    println!(
        "IPv6, VRRP filtered, lb1 killed: lb2 announces after {} ms, first answer seen at {:?} ms",
        back.as_millis(),
        first.map(|d| d.as_millis())
    );
    // The yield's hold (1.5 s after the last answer) and the probe period bound it.
    assert!(back < Duration::from_secs(3), "{back:?}");
    let last = samples.last().expect("samples");
    assert_eq!(
        last.owners.iter().collect::<Vec<_>>(),
        vec![&lb2],
        "lb2 alone at the end"
    );
    drop(filter);
}

/// A foreign host's unsolicited advertisement for the VIP (its own MAC, no mark).
fn foreign_na(mac: [u8; 6]) -> Vec<u8> {
    xvip::wire::ndp::Advertisement::unsolicited(VIP6, mac).to_frame()
}

#[test]
fn a_foreign_host_advertising_the_v6_vip_is_reported_and_not_fought() {
    let dir = tests::lab::TempDir::new("own6foreign");
    let mut lab = lab6("own6f", 1);
    start6(&mut lab, "lb1", 150, &dir.path("lb1.log"));
    wait_for(Duration::from_secs(8), "lb1 master (v6)", || {
        state6(&lab, "lb1") == "master"
    });
    let (lb1, m1) = (mac_of(&lab, "lb1"), mac_of(&lab, "m1"));
    let sampler = NdpSampler::start(&lab);
    thread::sleep(Duration::from_millis(300));
    // Two seconds of a foreign host advertising the VIP, 10 a second.
    let from = Instant::now();
    let frames = vec![foreign_na(mac_bytes(&m1)); 20];
    let mut sent = 0;
    for f in frames.chunks(1) {
        sent += send_frames(&lab, "m1", f.to_vec(), 1);
        thread::sleep(Duration::from_millis(100));
    }
    let to = Instant::now();
    assert_eq!(sent, 20);
    wait_for(Duration::from_secs(3), "the claim reported", || {
        std::fs::read_to_string(dir.path("lb1.log"))
            .is_ok_and(|l| l.contains("a host that is not xvip") && l.contains(&m1))
    });
    let st = status(&lab, "lb1").expect("status");
    assert_eq!(st.announcing6, Some(true), "not given up");
    let claims = st.claims6.expect("claims6");
    assert!(
        claims
            .claimants
            .iter()
            .any(|c| c.kind == "foreign" && c.mac == m1 && c.vip == VIP6.to_string()),
        "{claims:?}"
    );
    assert_eq!((claims.yielded_to, claims.yields), (None, 0));
    let ndp = st.ndp.expect("ndp status");
    assert!(ndp.advertisements >= 20, "{ndp:?}");
    let metrics = endpoint(&lab, "lb1", "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("xvip_vip6_claimants_foreign") && l.ends_with(" 1")),
        "{metrics}"
    );
    let table = lab
        .host("lb1")
        .ns
        .cmd(tests::lab::xvip_bin())
        .args(["status", "--metrics-addr", METRICS])
        .output()
        .expect("xvip status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("VIP CLAIMED: 2001:db8::100") && table.contains(&m1),
        "{table}"
    );
    let (samples, unsolicited) = sampler.stop();
    // Not fought: lb1 sent no announcement of its own against the 20 (its periodic refresh,
    // every 10 s, may fall in the window once), and answered every solicitation alone.
    let ours = unsolicited
        .iter()
        .filter(|(t, m)| *t >= from && *t <= to && *m == lb1)
        .count();
    let (n, bad) = tally(&samples, from, to, &lb1);
    println!(
        "foreign NAs: 20 in {} ms; lb1's own unsolicited NAs meanwhile {ours}; samples {n}, (none, two, other) {bad:?}",
        (to - from).as_millis()
    );
    assert!(ours <= 1, "{ours} advertisements from lb1: an NA war");
    assert!(n >= 20, "{n} samples");
    assert_eq!(bad, [0, 0, 0], "lb1 answers every solicitation alone");
}

/// The hostile case: forged advertisements carrying xvip's mark, from many MACs, in the
/// patterns that matter (outranking marks from a new MAC each, lb1's own mark from foreign
/// MACs, two claimants alternating, "answers" addressed to lb1 that it never asked for),
/// 6250 in a few seconds: the VIP always keeps its owner, lb1 never yields, the log and the
/// announcements stay bounded, and every frame is counted.
#[test]
fn forged_marked_advertisements_never_leave_the_v6_vip_without_its_owner() {
    use xvip::wire::ndp::{Advertisement, Mark};
    let dir = tests::lab::TempDir::new("own6forge");
    let mut lab = lab6("own6h", 1);
    start6(&mut lab, "lb1", 100, &dir.path("lb1.log"));
    wait_for(Duration::from_secs(8), "lb1 master (v6)", || {
        state6(&lab, "lb1") == "master"
    });
    let lb1 = mac_of(&lab, "lb1");
    let (lb1_mac, lb1_ll) = (mac_bytes(&lb1), link_local(&lab, "lb1"));
    let ours = Mark {
        priority: 100,
        primary: lb1_ll,
        vrid: 51,
    };
    let mac = |i: u32| [2, 0xf0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    let marked =
        |m: [u8; 6], mark: Mark| Advertisement::unsolicited(VIP6, m).to_frame_marked(Some(mark));
    let mut frames = Vec::new();
    for i in 0..1250u32 {
        // An outranking xvip, a new one each time.
        let high = Mark {
            priority: 255,
            primary: std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, i as u16),
            vrid: 51,
        };
        frames.push(marked(mac(i), high));
        // lb1's own mark from a foreign MAC.
        frames.push(marked(mac(100_000 + i), ours));
        // Two claimants alternating, outranking.
        let alt = Mark {
            priority: 200 + (i % 2) as u8,
            ..high
        };
        frames.push(marked(mac(200_000 + i % 2), alt));
        // An "answer" to lb1, unasked: to its link-local address and to a guessed probe
        // address.
        let mut answer = Advertisement {
            eth_dst: lb1_mac,
            eth_src: mac(300_000 + i % 2),
            dst: lb1_ll,
            target: VIP6,
            solicited: true,
        };
        frames.push(answer.to_frame_marked(Some(high)));
        answer.dst = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i as u16);
        frames.push(answer.to_frame_marked(Some(high)));
    }
    let total = frames.len();
    let sampler = NdpSampler::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let from = Instant::now();
    let sent = send_frames(&lab, "m1", frames, 2);
    let to = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    let after = Instant::now();
    let (samples, unsolicited) = sampler.stop();
    let secs = (to - from).as_secs_f64();
    let st = status(&lab, "lb1").expect("lb1 status");
    let claims = st.claims6.expect("claims6");
    let ndp = st.ndp.expect("ndp");
    let (n, bad) = tally(&samples, from, after, &lb1);
    let ours_sent = unsolicited
        .iter()
        .filter(|(t, m)| *t >= from && *t <= after && *m == lb1)
        .count();
    let log = std::fs::read_to_string(dir.path("lb1.log")).expect("lb1 log");
    let lines = log.lines().filter(|l| l.contains("VIP claim:")).count();
    println!(
        "forged NAs: {sent} of {total} sent in {secs:.1} s; samples {n} (none, two, other) {bad:?}; lb1: {} advertisements received, {} claims over budget, {} probes, {} yields, {} claimants kept, {} forgotten, {lines} log lines ({} suppressed), {ours_sent} unsolicited NAs of its own",
        ndp.advertisements,
        claims.rate_limited,
        claims.probes,
        claims.yields,
        claims.claimants.len(),
        claims.forgotten,
        claims.logs_suppressed
    );
    assert_eq!(sent, total);
    assert!(n >= 20, "{n} samples");
    assert_eq!(bad, [0, 0, 0], "lb1 alone answered every solicitation");
    assert_eq!(st.announcing6, Some(true));
    assert_eq!((claims.yields, claims.yielded_to.as_deref()), (0, None));
    assert!(claims.claimants.len() <= 16, "{}", claims.claimants.len());
    assert!(
        claims.forgotten > 0 && claims.rate_limited > 0,
        "{claims:?}"
    );
    // Every frame accounted for: received (then acted on or over budget), or dropped.
    assert!(
        ndp.advertisements as usize >= total * 9 / 10,
        "{} of {total}",
        ndp.advertisements
    );
    // Bounded: 10 log lines a minute, a probe per 500 ms and a reassertion a second.
    assert!(lines <= 10, "{lines} log lines:\n{log}");
    let window = (after - from).as_secs_f64();
    assert!(
        (claims.probes as f64) <= window * 2.0 + 2.0,
        "{} probes in {window:.1} s",
        claims.probes
    );
    assert!(
        (ours_sent as f64) <= window + 2.0,
        "{ours_sent} NAs in {window:.1} s"
    );
}
