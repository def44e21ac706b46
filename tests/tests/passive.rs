//! Passive health in the namespace lab: masters that fail live traffic's handshakes while
//! their `/readyz` still answers the check (the check comes from the lb's own address, the
//! balanced flows from the SNAT address, so nftables can fail one and not the other) leave
//! rotation from the data path's counters, and the check's rise brings them back.

use std::{
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tests::lab::{Lab, VIP, in_netns, run_args, sh};

const M2: &str = "192.0.2.12:6443";
const M3: &str = "192.0.2.13:6443";

/// An nftables table in `host`'s namespace failing the SYNs that come from the VIP (the
/// SNAT address) to :6443 with `verdict`; gone with the namespace.
fn fail_syns(lab: &Lab, host: &str, verdict: &str) {
    for rule in [
        "add table inet xvip_passive".to_string(),
        "add chain inet xvip_passive in { type filter hook input priority 0 ; }".to_string(),
        format!(
            "add rule inet xvip_passive in ip saddr {VIP} tcp dport 6443 tcp flags & (syn | ack) == syn {verdict}"
        ),
    ] {
        let mut c = lab.host(host).ns.cmd("nft");
        c.args(rule.split(' '));
        sh(&mut c).unwrap_or_else(|e| panic!("nft {rule} on {host}: {e}"));
    }
}

fn unfail_syns(lab: &Lab, host: &str) {
    let mut c = lab.host(host).ns.cmd("nft");
    c.args(["delete", "table", "inet", "xvip_passive"]);
    sh(&mut c).unwrap_or_else(|e| panic!("nft delete on {host}: {e}"));
}

/// Live traffic from the client: a new TCP connection to the VIP every 10 ms (each on a
/// thread of its own, given up after 300 ms: a dropped SYN does not hold the next one back),
/// for at most `max` or until `stop`. Plain connects, no TLS and no process per connection:
/// the rate holds on a loaded machine. Returns how many were started.
fn connect_load(lab: &Lab, stop: Arc<AtomicBool>, max: Duration) -> std::thread::JoinHandle<u32> {
    let ns = lab.host("client").ns.name.clone();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let vip: SocketAddr = format!("{VIP}:6443").parse().unwrap();
            let start = Instant::now();
            let mut threads = Vec::new();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < max {
                // Threads inherit the namespace of the thread that starts them.
                threads.push(std::thread::spawn(move || {
                    let _ = TcpStream::connect_timeout(&vip, Duration::from_millis(300));
                }));
                std::thread::sleep(Duration::from_millis(10));
            }
            let n = threads.len() as u32;
            for t in threads {
                let _ = t.join();
            }
            n
        })
        .unwrap()
    })
}

fn backend<'a>(
    s: &'a xvip::api::document::Status,
    addr: &str,
) -> &'a xvip::api::document::BackendStatus {
    s.backends
        .iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("{addr} not in the status"))
}

#[test]
fn masters_refusing_or_ignoring_syns_leave_rotation_from_live_traffic_and_the_check_brings_them_back()
 {
    let mut lab = Lab::standard("pasv", None).unwrap();
    // rise 10 x 200 ms: a master taken out stays out 2 s, long enough to look at.
    lab.start_xvip_and_wait(&run_args(&["--rise", "10"]))
        .unwrap();

    // m2 ignores the balanced flows' SYNs, m3 refuses them; both still pass the check.
    fail_syns(&lab, "m2", "drop");
    fail_syns(&lab, "m3", "reject with tcp reset");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let load = connect_load(&lab, Arc::clone(&stop), Duration::from_secs(5));

    let (mut m2_out, mut m3_out) = (None, None);
    while (m2_out.is_none() || m3_out.is_none()) && start.elapsed() < Duration::from_secs(5) {
        if let Ok(s) = lab.xvip_status("lb") {
            if m2_out.is_none() && backend(&s, M2).passive_down {
                m2_out = Some(start.elapsed());
            }
            if m3_out.is_none() && backend(&s, M3).passive_down {
                m3_out = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let started = load.join().unwrap();
    let (m2_out, m3_out) = (
        m2_out.expect("m2 (SYNs dropped) out of rotation within 5 s"),
        m3_out.expect("m3 (SYNs refused) out of rotation within 5 s"),
    );
    println!("{started} connections started");
    println!(
        "passive: refused (RST) out after {:.0} ms, the check would need >= 600 ms (fall 3 x 200 ms) for a refused connection; \
         ignored (no SYN-ACK, 300 ms timeout) out after {:.0} ms, the check needs ~900 ms (fall 3 x 300 ms timeout) for a silent host",
        m3_out.as_secs_f64() * 1e3,
        m2_out.as_secs_f64() * 1e3
    );
    // Three RSTs at ~1/3 of 100 new flows/s, then a 100 ms tick.
    assert!(m3_out < Duration::from_millis(1000), "refused: {m3_out:?}");
    // The 300 ms timeout (3 ticks), three unanswered SYNs, a tick.
    assert!(m2_out < Duration::from_millis(1500), "ignored: {m2_out:?}");

    let s = lab.xvip_status("lb").unwrap();
    for (addr, what) in [(M2, "ignored"), (M3, "refused")] {
        let b = backend(&s, addr);
        assert!(!b.healthy && b.slots == 0, "{what}: {b:?}");
        assert_eq!(b.checks_failed, 0, "{what}: the check never failed: {b:?}");
        assert!(b.passive_ejections >= 1, "{b:?}");
    }
    assert!(backend(&s, M3).handshakes_refused >= 3, "{s:?}");
    assert!(backend(&s, M2).handshakes_unanswered >= 3, "{s:?}");
    let seen = lab.spread("client", 6);
    assert_eq!(seen.get("m1"), Some(&6), "while m2, m3 are out: {seen:?}");

    // Fixed: the check's rise (10 x 200 ms) brings both back.
    unfail_syns(&lab, "m2");
    unfail_syns(&lab, "m3");
    lab.wait_status("lb", Duration::from_secs(6), |s| {
        [M2, M3].iter().all(|a| {
            let b = backend(s, a);
            b.healthy && !b.passive_down && b.slots > 0
        })
    })
    .expect("m2 and m3 back after the check's rise");
}
