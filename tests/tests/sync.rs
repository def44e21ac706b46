//! Conntrack sync between xvip nodes (`--sync-key-file`): two and three VRRP nodes in full
//! NAT with SNAT to the VIP. A server-push stream (the client sends nothing after its
//! request, like a Kubernetes watch) across a SIGKILL of the master loses no line; 1,000
//! idle keep-alive connections opened before the takeover all answer a request after it,
//! and after a preempt back to the first node. Forged and replayed sync messages change no
//! map and are counted; replayed with spoofed sources they draw no datagram to anyone and
//! do not fill the peer table; a key holder's records never take a live flow's tuple. The same across a SIGKILL with an IPv6 VIP (IPv6 flows synced).
//! The API servers speak plain HTTP (`--plain`, health checks over
//! TCP) so the test can hold a thousand connections with std sockets.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    os::unix::fs::PermissionsExt,
    process::Stdio,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

mod common;

use common::*;
use tests::lab::{Lab, TempDir, apiserver_bin, in_netns};
use xvip::{
    config::sync::SYNC_PORT,
    sync::SyncStatus,
    wire::sync::{self as wire, AnyRecord, Event, Header, Kind, Record, SyncKey},
};

/// Idle keep-alive connections held across the takeovers.
const IDLE: usize = 1000;
/// Bound on the first election of a lab: the nodes' start (map preallocation and program
/// load, ~5 s with two labs starting at once on the shared 2-core machine), the 3 s
/// start-up listen, then the election itself.
const START_ELECTION: Duration = Duration::from_secs(20);

/// client, lb1..lbN, m1..m3 serving plain HTTP on 6443.
fn sync_lab(tag: &str, lbs: u8) -> Lab {
    plain_lab(tag, lbs, &[])
}

/// A key file of 32 random bytes, mode 0600.
fn key_file(dir: &TempDir) -> String {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("urandom");
    let p = dir.path("sync.key");
    std::fs::write(&p, key).expect("key file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    dir.str("sync.key")
}

fn start(lab: &mut Lab, host: &str, priority: u8, key: &str) {
    start_node(
        lab,
        host,
        priority,
        &["--health", "tcp", "--sync-key-file", key],
    );
}

fn sync_of(lab: &Lab, host: &str) -> Option<SyncStatus> {
    let ns = lab.host(host).ns.name.clone();
    in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(xvip::api::client::fetch(METRICS.parse().expect("addr")))
            .ok()?
            .sync
    })
    .ok()
    .flatten()
}

/// Waits until every host in `hosts` has a dump from `from` and has installed at least
/// `flows` records.
fn wait_synced(lab: &Lab, hosts: &[&str], from: &str, flows: u64) {
    let ip = lab.host(from).ip.to_string();
    wait_for(
        Duration::from_secs(20),
        &format!("{hosts:?} synced from {from} with {flows} flows"),
        || {
            hosts.iter().all(|h| {
                sync_of(lab, h).is_some_and(|s| {
                    s.installed >= flows && s.peers.iter().any(|p| p.address == ip && p.synced)
                })
            })
        },
    );
}

/// A `curl -N` of `/watch` from the client, its lines timestamped as they arrive.
struct Stream {
    name: String,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Stream {
    fn start(lab: &mut Lab, name: &str) -> Self {
        Self::start_url(lab, name, &format!("http://{VIP}:6443/watch"))
    }

    fn start_url(lab: &mut Lab, name: &str, url: &str) -> Self {
        let mut cmd = lab.host("client").ns.cmd("curl");
        cmd.args(["-sN", "-g", "--max-time", "120", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let p = lab.spawn(name, cmd).expect("curl");
        let out = p.child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push((Instant::now(), line));
            }
        });
        Self {
            name: name.into(),
            lines,
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Stops curl; checks that the ticks came from one server, numbered without a hole,
    /// and kept coming for a while after `event`. Returns the longest pause between two
    /// lines around the event.
    fn finish(self, lab: &mut Lab, event: Instant, what: &str) -> Duration {
        let after = |lines: &[(Instant, String)]| lines.iter().filter(|(t, _)| *t > event).count();
        // Twenty lines (2 s of ticks) past the event show the stream carries on.
        wait_for(
            Duration::from_secs(15),
            &format!("{what}: stream goes on"),
            || after(&self.lines.lock().unwrap()) >= 20,
        );
        lab.stop(&self.name);
        let lines = self.lines.lock().unwrap().clone();
        let ticks: Vec<(Instant, String, u64)> = lines
            .iter()
            .filter_map(|(t, l)| {
                let mut w = l.split_whitespace();
                let server = w.next()?.to_string();
                (w.next()? == "tick").then_some(())?;
                Some((*t, server, w.next()?.parse().ok()?))
            })
            .collect();
        assert!(ticks.len() >= 20, "{what}: {lines:?}");
        for (i, (_, server, n)) in ticks.iter().enumerate() {
            assert_eq!(server, &ticks[0].1, "{what}: one server throughout");
            assert_eq!(
                *n,
                ticks[0].2 + i as u64,
                "{what}: tick {i} lost or out of order"
            );
        }
        let pause = ticks
            .windows(2)
            .filter(|w| w[1].0 > event - Duration::from_millis(200))
            .map(|w| w[1].0.duration_since(w[0].0))
            .max()
            .unwrap_or_default();
        println!(
            "{what}: {} ticks from {}, {} after the event, longest pause {} ms",
            ticks.len(),
            ticks[0].1,
            after(&lines),
            pause.as_millis()
        );
        pause
    }
}

/// Raises the open-file limit for a thousand sockets.
fn allow_files(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid struct (we are root).
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// Opens `n` keep-alive connections to VIP:6443 from the client, one request on each.
fn open_idle(lab: &Lab, n: usize) -> Vec<TcpStream> {
    let ns = lab.host("client").ns.name.clone();
    let mut conns = in_netns(&ns, move || {
        (0..n)
            .map(|_| {
                let s = TcpStream::connect_timeout(
                    &SocketAddrV4::new(VIP, 6443).into(),
                    Duration::from_secs(3),
                )
                .expect("connect through the VIP");
                s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .expect("client netns");
    let ok = request_all(&mut conns);
    assert_eq!(ok, n, "every idle connection answers before the takeover");
    conns
}

/// One `GET /whoami` on every connection (all sent first, then read); how many answered.
fn request_all(conns: &mut [TcpStream]) -> usize {
    for c in conns.iter_mut() {
        let _ = c.write_all(b"GET /whoami HTTP/1.1\r\nHost: vip\r\n\r\n");
    }
    conns.iter_mut().map(read_response).filter(|ok| *ok).count()
}

fn read_response(c: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
        if head.len() > 4096 {
            return false;
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return false;
    };
    let mut body = vec![0u8; len];
    head.starts_with("http/1.1 200") && c.read_exact(&mut body).is_ok()
}

/// `lbs` nodes; lb1 (highest priority) is master, killed; lb2 takes over; lb1 comes back
/// and preempts. Streams and idle connections across both changes.
fn takeover_keeps_every_flow(tag: &str, lbs: u8) {
    allow_files(8192);
    let dir = TempDir::new(tag);
    let key = key_file(&dir);
    let mut lab = sync_lab(tag, lbs);
    let names: Vec<String> = (1..=lbs).map(|i| format!("lb{i}")).collect();
    let prio = |i: usize| 150 - 25 * i as u8;
    for (i, n) in names.iter().enumerate() {
        start(&mut lab, n, prio(i), &key);
    }
    let backups: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    wait_master(&lab, "lb1", &backups, START_ELECTION);
    lab.curl_until_ok(
        "client",
        &format!("http://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .expect("through the VIP");

    let stream = Stream::start(&mut lab, "watch-1");
    let mut idle = open_idle(&lab, IDLE);
    wait_synced(&lab, &backups, "lb1", IDLE as u64 + 1);
    wait_for(Duration::from_secs(5), "stream running", || {
        stream.count() >= 10
    });

    // SIGKILL of the master: lb2 takes over with every flow already in its maps.
    let i = lab.proc_index("xvip-lb1").expect("xvip-lb1");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    let seen = wait_for(Duration::from_secs(3), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    lab.kill("xvip-lb1").ok();
    let pause = stream.finish(&mut lab, kill, &format!("{lbs} nodes, SIGKILL of lb1"));
    println!(
        "{lbs} nodes: lb2 master {} ms after the kill; stream pause {} ms",
        seen.as_millis(),
        pause.as_millis()
    );
    // The pause is the takeover plus the backend's next retransmission (measured ~300 ms,
    // docs/failover.md); the bound is the one every takeover test here keeps.
    assert!(pause < TAKEOVER_BOUND, "stream paused {pause:?}");
    let ok = request_all(&mut idle);
    println!("{lbs} nodes: {ok} of {IDLE} idle connections answered after the takeover");
    assert_eq!(ok, IDLE, "idle connections after the takeover");
    let st = sync_of(&lab, "lb2").expect("lb2 status");
    println!(
        "lb2 sync: installed {} skipped {:?} rejected {:?}",
        st.installed, st.skipped, st.rejected
    );

    // lb1 comes back (empty maps: its pins went with it), gets a dump from the others,
    // and preempts after its start-up listen.
    let stream = Stream::start(&mut lab, "watch-2");
    wait_for(Duration::from_secs(5), "stream running", || {
        stream.count() >= 10
    });
    start(&mut lab, "lb1", prio(0), &key);
    wait_synced(&lab, &["lb1"], "lb2", IDLE as u64 + 2);
    let back = wait_master(&lab, "lb1", &backups, Duration::from_secs(10));
    let preempt = Instant::now() - Duration::from_millis(100);
    println!(
        "{lbs} nodes: lb1 master again after {} ms",
        back.as_millis()
    );
    let pause = stream.finish(
        &mut lab,
        preempt,
        &format!("{lbs} nodes, preempt back to lb1"),
    );
    assert!(pause < TAKEOVER_BOUND, "stream paused {pause:?}");
    let ok = request_all(&mut idle);
    println!("{lbs} nodes: {ok} of {IDLE} idle connections answered after the preempt back");
    assert_eq!(ok, IDLE, "idle connections after the preempt back");
}

#[test]
fn two_nodes_keep_every_flow_across_a_kill_and_a_preempt_back() {
    takeover_keeps_every_flow("sync2", 2);
}

#[test]
fn three_nodes_keep_every_flow_across_a_kill_and_a_preempt_back() {
    takeover_keeps_every_flow("sync3", 3);
}

/// The UDP payload of the first sync records message from `src` with at least one record
/// that reaches `host`'s eth0 within `within`.
fn capture_records(lab: &Lab, host: &str, src: Ipv4Addr, within: Duration) -> Option<Vec<u8>> {
    capture_sync(lab.host(host).ns.name.clone(), src, 1, 1, within)
}

/// The UDP payload of the first sync message of type `kind` from `src` with at least
/// `min_records` records that reaches the eth0 of namespace `ns` within `within`.
fn capture_sync(
    ns: String,
    src: Ipv4Addr,
    kind: u8,
    min_records: u16,
    within: Duration,
) -> Option<Vec<u8>> {
    in_netns(&ns, move || {
        // SAFETY: a packet socket we own and close; buffers we own.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                (libc::ETH_P_IP as u16).to_be() as i32,
            );
            assert!(fd >= 0, "packet socket");
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            );
            let end = Instant::now() + within;
            let mut buf = [0u8; 2048];
            let mut found = None;
            while Instant::now() < end && found.is_none() {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 28 {
                    continue;
                }
                let p = &buf[..n as usize];
                let ihl = usize::from(p[0] & 0xf) * 4;
                if p[9] != 17 || p[12..16] != src.octets() || p.len() < ihl + 8 {
                    continue;
                }
                let dport = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
                let payload = &p[ihl + 8..];
                if dport == SYNC_PORT
                    && payload.len() > wire::HEADER_LEN
                    && payload[4] == kind
                    && u16::from_be_bytes([payload[6], payload[7]]) >= min_records
                {
                    found = Some(payload.to_vec());
                }
            }
            libc::close(fd);
            found
        }
    })
    .expect("netns")
}

/// Sends `payload` as UDP from `src` (spoofed, raw socket) to `dst`:SYNC_PORT, from the
/// client namespace.
fn send_udp(lab: &Lab, src: Ipv4Addr, dst: Ipv4Addr, payload: Vec<u8>) {
    let ns = lab.host("client").ns.name.clone();
    in_netns(&ns, move || {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&SYNC_PORT.to_be_bytes());
        p.extend_from_slice(&SYNC_PORT.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum
        p.extend_from_slice(&payload);
        // SAFETY: a raw socket we own and close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket");
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from(dst).to_be();
            let n = libc::sendto(
                fd,
                p.as_ptr().cast(),
                p.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(n, p.len() as isize, "{}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .expect("client netns");
}

#[test]
fn forged_and_replayed_sync_messages_change_no_map() {
    let dir = TempDir::new("syncforge");
    let key = key_file(&dir);
    let mut lab = sync_lab("syncforge", 2);
    start(&mut lab, "lb1", 150, &key);
    start(&mut lab, "lb2", 100, &key);
    wait_master(&lab, "lb1", &["lb2"], START_ELECTION);
    let url = format!("http://{VIP}:6443/whoami");
    lab.curl_until_ok("client", &url, Duration::from_secs(5))
        .expect("through the VIP");
    wait_synced(&lab, &["lb2"], "lb1", 1);

    // A real records message from lb1, captured on lb2's side while a connection is made.
    let cap = {
        let ns_lab = &lab;
        thread::scope(|s| {
            let h = s.spawn(|| capture_records(ns_lab, "lb2", lb_ip(1), Duration::from_secs(5)));
            thread::sleep(Duration::from_millis(300));
            ns_lab
                .curl("client", &url, Duration::from_secs(2))
                .expect("curl");
            h.join().expect("capture")
        })
    }
    .expect("a records message from lb1");
    thread::sleep(Duration::from_millis(300));
    let before = sync_of(&lab, "lb2").expect("lb2 sync status");
    let rejected = |s: &SyncStatus, r: &str| s.rejected.get(r).copied().unwrap_or(0);

    // 1. The captured message again, from lb1's address: an old sequence number.
    send_udp(&lab, lb_ip(1), lb_ip(2), cap.clone());
    // 2. A message that would redirect a client's flow, signed with another key.
    let forged = Record {
        event: Some(Event::Confirmed),
        key: lb_common::FlowKey {
            src_addr: lb_common::ip_raw(CLIENT.octets()),
            dst_addr: lb_common::ip_raw(VIP.octets()),
            src_port: lb_common::port_raw(44444),
            dst_port: lb_common::port_raw(6443),
            proto: 6,
            _pad: [0; 3],
        },
        state: lb_common::ct_state::TCP_ESTABLISHED,
        backend_addr: lb_common::ip_raw([192, 0, 2, 12]),
        backend_port: lb_common::port_raw(6443),
        snat_addr: lb_common::ip_raw(VIP.octets()),
        snat_port: lb_common::port_raw(30000),
        client_mac: [2, 0, 0, 0, 0, 66],
        client_vlan: 0,
        age_ms: 0,
    };
    let h = Header {
        kind: Kind::Records,
        last: false,
        epoch: 1,
        seq: u64::MAX / 2,
        nonce: 0,
        part: 0,
        sender: lb_ip(1),
        recipient: xvip::sync::SYNC_GROUP,
        time_ms: wire::wall_ms(),
        counter: 1,
    };
    let wrong = wire::encode(&SyncKey::new(&[0x55; 32]), &h, &[forged.into()]);
    send_udp(&lab, lb_ip(1), lb_ip(2), wrong);
    // 3. The captured message with a bit flipped in a record (tag no longer matches).
    let mut flipped = cap.clone();
    flipped[wire::HEADER_LEN + 5] ^= 1;
    send_udp(&lab, lb_ip(1), lb_ip(2), flipped);
    // 4. A truncated one.
    send_udp(&lab, lb_ip(1), lb_ip(2), cap[..20].to_vec());

    let after = wait_for_status(&lab, "lb2", |s| {
        rejected(s, "replay") > rejected(&before, "replay")
            && rejected(s, "bad_tag") >= rejected(&before, "bad_tag") + 2
            && rejected(s, "malformed") > rejected(&before, "malformed")
    });
    println!(
        "lb2 sync before: installed {} rejected {:?}; after: installed {} rejected {:?}",
        before.installed, before.rejected, after.installed, after.rejected
    );
    assert_eq!(after.installed, before.installed, "nothing installed");
    assert_eq!(after.skipped, before.skipped, "no record even looked at");
    // The forged flow is not in lb2's maps: lb2 has nothing for it to take over, so after
    // a takeover its first packet starts a new flow (checked by the counters above: the
    // only path to a map write is an accepted message).
}

fn wait_for_status(lab: &Lab, host: &str, cond: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
    let mut last = None;
    wait_for(Duration::from_secs(5), "sync counters", || {
        last = sync_of(lab, host);
        last.as_ref().is_some_and(&cond)
    });
    last.expect("status")
}

/// The control: the same stream without sync stalls after the takeover (the new master
/// drops the backend's packets until the client happens to send, and it never does).
#[test]
fn without_sync_a_silent_stream_stalls_after_a_takeover() {
    let mut lab = sync_lab("nosync", 2);
    start_node(&mut lab, "lb1", 150, &["--health", "tcp"]);
    start_node(&mut lab, "lb2", 100, &["--health", "tcp"]);
    wait_master(&lab, "lb1", &["lb2"], START_ELECTION);
    lab.curl_until_ok(
        "client",
        &format!("http://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .expect("through the VIP");
    let stream = Stream::start(&mut lab, "watch");
    wait_for(Duration::from_secs(5), "stream running", || {
        stream.count() >= 10
    });
    let kill = Instant::now();
    lab.kill("xvip-lb1").expect("kill lb1");
    wait_for(Duration::from_secs(3), "lb2 master", || {
        state(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_secs(3));
    let after = stream
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > kill + Duration::from_millis(200))
        .count();
    println!("without sync: {after} lines in the 3 s after the takeover");
    assert!(after < 5, "the stream should have stalled: {after} lines");
    lab.stop("watch");
}

/// With unicast VRRP peers (`--vrrp-peer`) sync goes to the same peers, and a datagram
/// from any other address is dropped unread (`not_peer`).
#[test]
fn unicast_peers_sync_and_others_are_not_heard() {
    let dir = TempDir::new("syncuni");
    let key = key_file(&dir);
    let mut lab = sync_lab("syncuni", 2);
    let (p1, p2) = (lb_ip(2).to_string(), lb_ip(1).to_string());
    for (host, prio, peer) in [("lb1", 150, &p1), ("lb2", 100, &p2)] {
        start_node(
            &mut lab,
            host,
            prio,
            &[
                "--health",
                "tcp",
                "--sync-key-file",
                &key,
                "--vrrp-peer",
                peer,
            ],
        );
    }
    wait_master(&lab, "lb1", &["lb2"], START_ELECTION);
    lab.curl_until_ok(
        "client",
        &format!("http://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .expect("through the VIP");
    let stream = Stream::start(&mut lab, "watch");
    wait_synced(&lab, &["lb2"], "lb1", 2);
    wait_for(Duration::from_secs(5), "stream running", || {
        stream.count() >= 10
    });
    let st = sync_of(&lab, "lb2").expect("status");
    assert!(st.transport.starts_with("unicast"), "{}", st.transport);
    let before = st.rejected.get("not_peer").copied().unwrap_or(0);
    send_udp(&lab, CLIENT, lb_ip(2), vec![0; 80]);
    wait_for_status(&lab, "lb2", |s| {
        s.rejected.get("not_peer").copied().unwrap_or(0) > before
    });
    let kill = Instant::now();
    lab.kill("xvip-lb1").expect("kill lb1");
    let pause = stream.finish(&mut lab, kill, "unicast peers, SIGKILL of lb1");
    assert!(pause < TAKEOVER_BOUND, "stream paused {pause:?}");
}

/// The IPv6 VIP of `ipv6_vip_keeps_a_stream_across_a_sigkill`.
const VIP6: &str = "2001:db8::100";

/// A lab host's IPv6 address (192.0.2.11 -> 2001:db8::11), as tests/ipv6.rs gives them.
fn v6_of(ip: Ipv4Addr) -> String {
    format!("2001:db8::{}", ip.octets()[3])
}

/// Two nodes serving only an IPv6 VIP (VRRP over IPv6, sync, when `key` is given, over
/// the nodes' IPv4 addresses) in front of three IPv6 masters; lb1 master, a server-push
/// stream through the VIP running. Returns the lab and the stream.
fn v6_lab_with_stream(tag: &str, key: Option<&str>) -> (Lab, Stream) {
    let mut hosts = vec![("client".to_string(), CLIENT)];
    for i in 1..=2 {
        hosts.push((format!("lb{i}"), lb_ip(i)));
    }
    for i in 1..=3u8 {
        hosts.push((format!("m{i}"), Ipv4Addr::new(192, 0, 2, 10 + i)));
    }
    let refs: Vec<(&str, Ipv4Addr)> = hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let mut lab = Lab::new(tag, &refs).expect("lab");
    // IPv6 addresses without DAD (tentative ones cannot be bound).
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
    let masters: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| v6_of(lab.host(m).ip))
        .collect();
    for (m, addr) in ["m1", "m2", "m3"].iter().zip(&masters) {
        let listen = format!("[{addr}]:6443");
        let mut cmd = lab.host(m).ns.cmd(apiserver_bin());
        cmd.args(["--listen", &listen, "--name", m, "--plain"]);
        lab.spawn_apiserver(&format!("apiserver6-{m}"), cmd)
            .expect("v6 apiserver");
    }
    let vip = format!("[{VIP6}]:6443");
    let backends: Vec<String> = masters.iter().map(|a| format!("[{a}]:6443")).collect();
    for (host, prio) in [("lb1", "150"), ("lb2", "100")] {
        let mut args = vec![
            "--interface",
            "eth0",
            "--vip",
            &vip,
            "--metrics-addr",
            METRICS,
            "--vrrp-vrid",
            "51",
            "--vrrp-priority",
            prio,
            "--health",
            "tcp",
        ];
        if let Some(k) = key {
            args.extend(["--sync-key-file", k]);
        }
        for b in &backends {
            args.extend(["--backend", b.as_str()]);
        }
        lab.start_xvip(host, &args).expect("start xvip");
        wait_attached(&lab, host);
    }
    wait_for(START_ELECTION, "lb1 master (v6)", || {
        state6(&lab, "lb1") == "master" && state6(&lab, "lb2") == "backup"
    });
    lab.curl_until_ok(
        "client",
        &format!("http://[{VIP6}]:6443/whoami"),
        Duration::from_secs(10),
    )
    .expect("through the v6 VIP");
    let stream = Stream::start_url(&mut lab, "watch6", &format!("http://[{VIP6}]:6443/watch"));
    wait_for(Duration::from_secs(5), "v6 stream running", || {
        stream.count() >= 10
    });
    (lab, stream)
}

/// The state of `host`'s IPv6 VRRP instance (`down` when xvip does not answer).
fn state6(lab: &Lab, host: &str) -> String {
    let ns = lab.host(host).ns.name.clone();
    in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(xvip::api::client::fetch(METRICS.parse().expect("addr")))
            .ok()?
            .vrrp6
            .map(|v| v.state)
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| "down".into())
}

/// IPv6 flows are synced too: a server-push stream through an IPv6 VIP across a SIGKILL
/// of the master loses no line, the backup having installed the flow into its
/// `CONNTRACK6` and `REVERSE6` before the kill (the control below: without sync it stalls).
#[test]
fn ipv6_vip_keeps_a_stream_across_a_sigkill() {
    let tag = "sync6";
    let dir = TempDir::new(tag);
    let key = key_file(&dir);
    let (mut lab, stream) = v6_lab_with_stream(tag, Some(&key));
    // lb2 has a dump from lb1 and the stream's flow (an IPv6 record) installed.
    wait_synced(&lab, &["lb2"], "lb1", 1);
    let st = sync_of(&lab, "lb2").expect("lb2 status");
    assert!(
        !st.skipped.contains_key("unknown_vip") && !st.skipped.contains_key("unknown_backend"),
        "lb2 knows the v6 VIP and backends: {:?}",
        st.skipped
    );

    let i = lab.proc_index("xvip-lb1").expect("xvip-lb1");
    let kill = Instant::now();
    lab.procs[i].signal(libc::SIGKILL);
    let seen = wait_for(Duration::from_secs(3), "lb2 master (v6)", || {
        state6(&lab, "lb2") == "master"
    });
    lab.kill("xvip-lb1").ok();
    let pause = stream.finish(&mut lab, kill, "IPv6 VIP, SIGKILL of lb1");
    println!(
        "IPv6 VIP: lb2 master {} ms after the kill; stream pause {} ms",
        seen.as_millis(),
        pause.as_millis()
    );
    assert!(pause < TAKEOVER_BOUND, "stream paused {pause:?}");
    let st = sync_of(&lab, "lb2").expect("lb2 status");
    println!(
        "lb2 sync: installed {} skipped {:?} rejected {:?}",
        st.installed, st.skipped, st.rejected
    );
    assert_eq!(st.rejected.get("malformed"), None, "{st:?}");
}

/// The control of the test above: the same IPv6 lab without sync, and the stream stops at
/// the kill (the new master has no entry for the backend's packets).
#[test]
fn ipv6_without_sync_a_silent_stream_stalls_after_a_takeover() {
    let (mut lab, stream) = v6_lab_with_stream("nosync6", None);
    let kill = Instant::now();
    lab.kill("xvip-lb1").expect("kill lb1");
    wait_for(Duration::from_secs(3), "lb2 master (v6)", || {
        state6(&lab, "lb2") == "master"
    });
    thread::sleep(Duration::from_secs(3));
    let after = stream
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > kill + Duration::from_millis(200))
        .count();
    println!("IPv6 without sync: {after} lines in the 3 s after the takeover");
    assert!(after < 5, "the stream should have stalled: {after} lines");
    lab.stop("watch6");
}

/// A UDP socket bound to SYNC_PORT in `host`'s namespace (a victim's or an attacker's
/// ear), reads timing out after 100 ms.
fn ear(lab: &Lab, host: &str) -> UdpSocket {
    let ns = lab.host(host).ns.name.clone();
    in_netns(&ns, || {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SYNC_PORT)).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    })
    .expect("netns")
}

/// Datagrams `sock` receives within `within` (bounded: it reads until then).
fn heard(sock: &UdpSocket, within: Duration) -> usize {
    let end = Instant::now() + within;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while Instant::now() < end {
        if sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// Sends `host` a copy of `datagram` with its tag broken (from the client) and waits until
/// `host` counts it (`bad_tag`): its receiver, one thread reading in order, has then
/// handled every datagram sent before. The status then.
fn marked(lab: &Lab, host: &str, datagram: &[u8]) -> SyncStatus {
    let before = count(&sync_of(lab, host).expect("status").rejected, "bad_tag");
    let mut bad = datagram.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    send_udp(lab, CLIENT, lab.host(host).ip, bad);
    wait_for_status(lab, host, |s| count(&s.rejected, "bad_tag") > before)
}

fn count(m: &std::collections::BTreeMap<String, u64>, r: &str) -> u64 {
    m.get(r).copied().unwrap_or(0)
}

/// Captured messages replayed with spoofed sources (issue #21): a dump request "from" a
/// victim, or from the attacker itself, makes no node send anything there (before: the
/// whole flow table went to that address); a records message from the attacker's address
/// installs nothing and draws no dump request to it; the real sender's request replayed is
/// answered once only.
#[test]
fn replayed_messages_with_spoofed_sources_reflect_and_disclose_nothing() {
    let victim = Ipv4Addr::new(192, 0, 2, 60);
    let dir = TempDir::new("syncspoof");
    let key = key_file(&dir);
    let mut lab = plain_lab("syncspoof", 2, &[("victim", victim)]);
    start(&mut lab, "lb1", 150, &key);
    // lb1 running (and its sync listening) before lb2 asks: it answers that request.
    wait_master(&lab, "lb1", &[], START_ELECTION);
    // lb2's start-up dump request to the group, captured on lb1's side.
    let ns1 = lab.host("lb1").ns.name.clone();
    let capture = thread::spawn(move || capture_sync(ns1, lb_ip(2), 2, 0, Duration::from_secs(20)));
    thread::sleep(Duration::from_millis(200)); // the packet socket open before lb2 starts
    start(&mut lab, "lb2", 100, &key);
    let req = capture
        .join()
        .expect("capture")
        .expect("lb2's dump request");
    wait_master(&lab, "lb1", &["lb2"], START_ELECTION);
    let url = format!("http://{VIP}:6443/whoami");
    lab.curl_until_ok("client", &url, Duration::from_secs(5))
        .expect("through the VIP");
    wait_synced(&lab, &["lb2"], "lb1", 1);
    let victim_ear = ear(&lab, "victim");
    let attacker_ear = ear(&lab, "client");
    let before1 = sync_of(&lab, "lb1").expect("lb1 status");
    let before2 = sync_of(&lab, "lb2").expect("lb2 status");

    // 1. lb2's dump request replayed to lb1 "from" the victim, and from the attacker.
    send_udp(&lab, victim, lb_ip(1), req.clone());
    send_udp(&lab, CLIENT, lb_ip(1), req.clone());
    // 2. The same from lb2's own address: answered once already.
    send_udp(&lab, lb_ip(2), lb_ip(1), req.clone());
    // 3. A records message of lb1 (captured at lb2) replayed to lb2 from the attacker.
    let cap = {
        let ns2 = lab.host("lb2").ns.name.clone();
        let h = thread::spawn(move || capture_sync(ns2, lb_ip(1), 1, 1, Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(200));
        lab.curl("client", &url, Duration::from_secs(2))
            .expect("curl");
        h.join()
            .expect("capture")
            .expect("a records message from lb1")
    };
    let installed = sync_of(&lab, "lb2").expect("lb2").installed;
    send_udp(&lab, CLIENT, lb_ip(2), cap.clone());
    // A marker after them (a datagram failing its tag): once it is counted, the receiver
    // (one thread, in order) has handled everything before it.
    let after1 = marked(&lab, "lb1", &cap);
    let after2 = marked(&lab, "lb2", &cap);
    // Anything the nodes were made to send would leave within their 10 ms loop.
    let to_victim = heard(&victim_ear, Duration::from_secs(2));
    let to_attacker = heard(&attacker_ear, Duration::from_millis(500));
    println!(
        "lb1 rejected {:?}, dumps sent {} -> {}; lb2 rejected {:?}; datagrams to the victim \
         {to_victim}, to the attacker {to_attacker}",
        after1.rejected, before1.dumps_sent, after1.dumps_sent, after2.rejected
    );
    assert_eq!(to_victim, 0, "a dump reflected to the victim");
    assert_eq!(to_attacker, 0, "a dump or a request sent to the attacker");
    assert_eq!(
        count(&after1.rejected, "source_mismatch"),
        count(&before1.rejected, "source_mismatch") + 2
    );
    // (a replay of an answered request; stale once 30 s old)
    assert_eq!(
        count(&after1.rejected, "replay") + count(&after1.rejected, "stale"),
        count(&before1.rejected, "replay") + count(&before1.rejected, "stale") + 1
    );
    assert_eq!(
        count(&after2.rejected, "source_mismatch"),
        count(&before2.rejected, "source_mismatch") + 1
    );
    assert_eq!(
        after1.dumps_sent, before1.dumps_sent,
        "no dump for a replay"
    );
    assert_eq!(
        sync_of(&lab, "lb2").expect("lb2").installed,
        installed,
        "nothing installed from the spoofed records"
    );
}

/// Captured messages replayed from 70 spoofed sources (more than the peer table's 64) in
/// multicast mode: none becomes a peer (before: they filled the table and a node that
/// joined later was never synced from); a third node started afterwards syncs with both.
#[test]
fn spoofed_sources_do_not_fill_the_peer_table_and_a_later_node_syncs() {
    let dir = TempDir::new("syncfill");
    let key = key_file(&dir);
    let mut lab = sync_lab("syncfill", 3);
    start(&mut lab, "lb1", 150, &key);
    start(&mut lab, "lb2", 125, &key);
    wait_master(&lab, "lb1", &["lb2"], START_ELECTION);
    let url = format!("http://{VIP}:6443/whoami");
    lab.curl_until_ok("client", &url, Duration::from_secs(5))
        .expect("through the VIP");
    wait_synced(&lab, &["lb2"], "lb1", 1);
    let cap = {
        let ns2 = lab.host("lb2").ns.name.clone();
        let h = thread::spawn(move || capture_sync(ns2, lb_ip(1), 1, 1, Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(200));
        lab.curl("client", &url, Duration::from_secs(2))
            .expect("curl");
        h.join()
            .expect("capture")
            .expect("a records message from lb1")
    };
    let before = sync_of(&lab, "lb2").expect("lb2");
    let spoofed = 70u8;
    for i in 0..spoofed {
        send_udp(
            &lab,
            Ipv4Addr::new(192, 0, 2, 150 + i),
            lb_ip(2),
            cap.clone(),
        );
    }
    let after = marked(&lab, "lb2", &cap);
    println!(
        "lb2 after {spoofed} spoofed sources: {} peers, rejected {:?}",
        after.peers.len(),
        after.rejected
    );
    assert_eq!(
        after
            .peers
            .iter()
            .map(|p| p.address.as_str())
            .collect::<Vec<_>>(),
        vec![lb_ip(1).to_string()],
        "only the real peer"
    );
    // A node that joins later is synced from by both.
    start(&mut lab, "lb3", 100, &key);
    wait_synced(&lab, &["lb1", "lb2"], "lb3", 0);
    wait_synced(&lab, &["lb3"], "lb1", 1);
    assert_eq!(
        count(&after.rejected, "source_mismatch"),
        count(&before.rejected, "source_mismatch") + u64::from(spoofed)
    );
}

/// A host holding the key, synced as a peer, sends records that reuse a live flow's tuple
/// (backend, SNAT address and port) and one for a VIP the nodes do not serve: neither is
/// installed (`tuple_in_use`, `unknown_vip`) on the master nor on the backup, and the live
/// connection keeps answering (before: its reverse entry was overwritten and the backend's
/// replies went to the hostile record's client). A benign record from it is installed: the
/// hostile ones did reach the install checks.
#[test]
fn a_key_holder_cannot_take_a_live_flows_tuple() {
    let evil = Ipv4Addr::new(192, 0, 2, 50);
    let dir = TempDir::new("synctuple");
    let key = key_file(&dir);
    let sync_key = xvip::config::sync::load_key(std::path::Path::new(&key)).expect("the key");
    let mut lab = plain_lab("synctuple", 2, &[("evil", evil)]);
    start(&mut lab, "lb1", 150, &key);
    start(&mut lab, "lb2", 100, &key);
    wait_master(&lab, "lb1", &["lb2"], START_ELECTION);
    lab.curl_until_ok(
        "client",
        &format!("http://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .expect("through the VIP");

    // The live flow, and its tuple as the backend sees it (source VIP:SNAT port).
    let masters: Vec<(String, Ipv4Addr)> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| (lab.host(m).ns.name.clone(), lab.host(m).ip))
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let watchers: Vec<_> = masters
        .into_iter()
        .map(|(ns, ip)| {
            let tx = tx.clone();
            thread::spawn(move || {
                if let Some(port) = first_tcp_from(ns, VIP, 6443, Duration::from_secs(5)) {
                    let _ = tx.send((ip, port));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300)); // the packet sockets open
    let mut live = open_idle(&lab, 1);
    let (backend, snat_port) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the flow's tuple at its backend");
    for w in watchers {
        w.join().unwrap();
    }
    wait_synced(&lab, &["lb2"], "lb1", 1);
    println!("live flow: backend {backend}, SNAT port {snat_port}");

    let record = |client: [u8; 4], cport: u16, vip: Ipv4Addr, port: u16| -> AnyRecord {
        Record {
            event: Some(Event::Confirmed),
            key: lb_common::FlowKey {
                src_addr: lb_common::ip_raw(client),
                dst_addr: lb_common::ip_raw(vip.octets()),
                src_port: lb_common::port_raw(cport),
                dst_port: lb_common::port_raw(6443),
                proto: 6,
                _pad: [0; 3],
            },
            state: lb_common::ct_state::TCP_ESTABLISHED,
            backend_addr: lb_common::ip_raw(backend.octets()),
            backend_port: lb_common::port_raw(6443),
            snat_addr: lb_common::ip_raw(vip.octets()),
            snat_port: lb_common::port_raw(port),
            client_mac: [2, 0, 0, 0, 0, 0x66],
            client_vlan: 0,
            age_ms: 0,
        }
        .into()
    };
    let other_port = if snat_port < 65000 {
        snat_port + 7
    } else {
        snat_port - 7
    };
    let records = vec![
        record([192, 0, 2, 66], 55555, VIP, snat_port),
        record(
            [192, 0, 2, 66],
            55556,
            Ipv4Addr::new(192, 0, 2, 200),
            other_port,
        ),
        record([192, 0, 2, 77], 40000, VIP, other_port),
    ];
    let befores: Vec<SyncStatus> = ["lb1", "lb2"]
        .iter()
        .map(|h| sync_of(&lab, h).expect("status"))
        .collect();

    // The key holder as a peer: a heartbeat to each node draws a dump request, answered
    // with the records above.
    let sock = ear(&lab, "evil");
    let epoch = 0x6576_696c;
    let counter = std::sync::atomic::AtomicU64::new(0);
    let head = |kind, to: Ipv4Addr, nonce, last| Header {
        kind,
        last,
        epoch,
        seq: 1,
        nonce,
        part: 0,
        sender: evil,
        recipient: to,
        time_ms: wire::wall_ms(),
        counter: counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    };
    let mut answered = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while answered.len() < 2 && Instant::now() < end {
        for to in [lb_ip(1), lb_ip(2)] {
            if !answered.contains(&to) {
                let b = wire::encode(&sync_key, &head(Kind::Records, to, 0, false), &[]);
                sock.send_to(&b, SocketAddrV4::new(to, SYNC_PORT)).unwrap();
            }
        }
        let mut buf = [0u8; 2048];
        let t = Instant::now() + Duration::from_millis(500);
        while Instant::now() < t {
            let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = wire::decode(&sync_key, &buf[..n]) else {
                continue;
            };
            if m.header.kind == Kind::DumpRequest && !answered.contains(from.ip()) {
                let b = wire::encode(
                    &sync_key,
                    &head(Kind::DumpPart, *from.ip(), m.header.nonce, true),
                    &records,
                );
                sock.send_to(&b, from).unwrap();
                answered.push(*from.ip());
            }
        }
    }
    assert_eq!(
        answered.len(),
        2,
        "both nodes asked the key holder for a dump"
    );
    // The dump was used: its benign record is installed on both.
    let afters: Vec<SyncStatus> = ["lb1", "lb2"]
        .iter()
        .zip(&befores)
        .map(|(host, before)| wait_for_status(&lab, host, |s| s.installed > before.installed))
        .collect();
    // The live connection still answers: its replies still go to its client.
    for c in &mut live {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    assert_eq!(request_all(&mut live), 1, "the live flow still answers");
    for ((host, before), after) in ["lb1", "lb2"].iter().zip(&befores).zip(&afters) {
        println!(
            "{host}: installed {} -> {}, skipped {:?}",
            before.installed, after.installed, after.skipped
        );
        for reason in ["tuple_in_use", "unknown_vip"] {
            assert_eq!(
                count(&after.skipped, reason),
                count(&before.skipped, reason) + 1,
                "{host}: {reason}"
            );
        }
    }
}

/// The source port of the first TCP packet from `src` to port `dport` seen on the eth0 of
/// namespace `ns` within `within`.
fn first_tcp_from(ns: String, src: Ipv4Addr, dport: u16, within: Duration) -> Option<u16> {
    in_netns(&ns, move || {
        // SAFETY: a packet socket we own and close; buffers we own.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                (libc::ETH_P_IP as u16).to_be() as i32,
            );
            assert!(fd >= 0, "packet socket");
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            );
            let end = Instant::now() + within;
            let mut buf = [0u8; 2048];
            let mut found = None;
            while Instant::now() < end && found.is_none() {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 40 {
                    continue;
                }
                let p = &buf[..n as usize];
                let ihl = usize::from(p[0] & 0xf) * 4;
                if p[9] != 6 || p[12..16] != src.octets() || p.len() < ihl + 4 {
                    continue;
                }
                if u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]) == dport {
                    found = Some(u16::from_be_bytes([p[ihl], p[ihl + 1]]));
                }
            }
            libc::close(fd);
            found
        }
    })
    .expect("netns")
}
