//! Exactly one owner of the VIP, seen from the wire: two xvip nodes that cannot hear each
//! other's VRRP (filtered on the switch) both become master by their election, but their
//! ARP frames say who they are, and the one that is outranked stops answering at once; a
//! foreign host claiming the VIP is reported and not fought.

use std::{
    os::fd::AsRawFd,
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
    wait_for(Duration::from_secs(8), "lb1 master", || {
        state(&lab, "lb1") == "master"
    });
    foreign_garp(&lab, "m1", VIP);
    let m1 = mac_of(&lab, "m1");
    wait_for(Duration::from_secs(3), "the claim reported", || {
        std::fs::read_to_string(dir.path("lb1.log"))
            .is_ok_and(|l| l.contains("a host that is not xvip") && l.contains(m1.trim()))
    });
    // Not fought, not given up: still master, announcing, and answering requests.
    let st = status(&lab, "lb1").expect("status");
    assert!(st.announcing);
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
