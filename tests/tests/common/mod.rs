//! Helpers shared by the VRRP namespace tests (`vrrp.rs`, `keepalived.rs`): the lab of
//! client, load balancers and masters, starting xvip and keepalived, reading the VRRP
//! status, a TCP prober and an ARP sampler that counts who answers for the VIP.
#![allow(dead_code, reason = "each test file uses a part of the helpers")]

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tests::lab::{Lab, apiserver_bin, in_netns};
use xvip::announce::vrrp::VrrpStatus;

pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const METRICS: &str = "127.0.0.1:9106";
pub const VRID: u8 = 51;
/// Bound on any takeover with the default 100 ms advertisement interval.
pub const TAKEOVER_BOUND: Duration = Duration::from_secs(1);

pub fn lb_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1 + i)
}

/// client, lb1..lbN (192.0.2.2..), m1..m3 running lab API servers.
pub fn lab(tag: &str, lbs: u8, not_ready: Option<&std::path::Path>) -> Lab {
    let mut hosts = vec![("client".to_string(), CLIENT)];
    for i in 1..=lbs {
        hosts.push((format!("lb{i}"), lb_ip(i)));
    }
    for i in 1..=3u8 {
        hosts.push((format!("m{i}"), Ipv4Addr::new(192, 0, 2, 10 + i)));
    }
    let refs: Vec<(&str, Ipv4Addr)> = hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let mut lab = Lab::new(tag, &refs).expect("lab");
    for m in ["m1", "m2", "m3"] {
        let nr = if m == "m1" { not_ready } else { None };
        lab.start_apiserver(m, 6443, nr).expect("apiserver");
    }
    lab
}

/// Starts xvip with VRRP on `host`; `extra` may replace the default backends (m1..m3).
pub fn start_node(lab: &mut Lab, host: &str, priority: u8, extra: &[&str]) {
    let vip = VIP.to_string();
    let prio = priority.to_string();
    let vrid = VRID.to_string();
    let mut args = vec![
        "--interface",
        "eth0",
        "--vip",
        &vip,
        "--metrics-addr",
        METRICS,
        "--vrrp-vrid",
        &vrid,
        "--vrrp-priority",
        &prio,
    ];
    if !extra.contains(&"--backend") {
        args.extend(["--backend", "192.0.2.11", "--backend", "192.0.2.12"]);
        args.extend(["--backend", "192.0.2.13"]);
    }
    args.extend_from_slice(extra);
    lab.start_xvip(host, &args).expect("start xvip");
    wait_attached(lab, host);
}

/// Waits until `host`'s xvip is attached and its election has started (its status
/// answers), so that the callers' election budgets measure the election, not the
/// start-up (map preallocation and program load: seconds on a loaded machine).
pub fn wait_attached(lab: &Lab, host: &str) {
    lab.wait_attached(host).expect("attached");
}

/// Waits until `master` is master and the others backups, then until the client gets an
/// answer through the VIP.
pub fn serving(lab: &Lab, master: &str, backups: &[&str]) {
    wait_master(lab, master, backups, Duration::from_secs(8));
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/whoami"),
        Duration::from_secs(5),
    )
    .expect("through the VIP");
}

/// `host`'s status document, `None` when xvip does not answer (not started, not attached
/// yet, or gone).
pub fn status(lab: &Lab, host: &str) -> Option<xvip::api::document::Status> {
    let ns = lab.host(host).ns.name.clone();
    in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(xvip::api::client::fetch(METRICS.parse().expect("addr")))
            .ok()
    })
    .ok()
    .flatten()
}

/// The VRRP part of `host`'s status, `None` when xvip does not answer.
pub fn vrrp(lab: &Lab, host: &str) -> Option<VrrpStatus> {
    status(lab, host)?.vrrp
}

pub fn state(lab: &Lab, host: &str) -> String {
    vrrp(lab, host)
        .map(|v| v.state)
        .unwrap_or_else(|| "down".into())
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `within`.
pub fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `master` is master and every host in `backups` is backup naming it.
pub fn wait_master(lab: &Lab, master: &str, backups: &[&str], within: Duration) -> Duration {
    let ip = lab.host(master).ip.to_string();
    wait_for(
        within,
        &format!("{master} master, {backups:?} backup"),
        || {
            state(lab, master) == "master"
                && backups.iter().all(|b| {
                    vrrp(lab, b)
                        .is_some_and(|v| v.state == "backup" && v.master.as_ref() == Some(&ip))
                })
        },
    )
}

pub fn mac_of(lab: &Lab, host: &str) -> String {
    let out = lab
        .host(host)
        .ns
        .ip(&["link", "show", "eth0"])
        .expect("ip link");
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether")
        .to_string()
}

/// The MAC the client's neighbour entry for the VIP holds.
pub fn client_vip_mac(lab: &Lab) -> String {
    lab.host("client")
        .ns
        .ip(&["neigh", "show", &VIP.to_string()])
        .unwrap_or_default()
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// Opens a TCP connection to VIP:6443 every ~20 ms from the client (150 ms timeout) and
/// records when each attempt ended and whether it connected.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<(Instant, bool)>>,
}

impl Prober {
    pub fn start(lab: &Lab) -> Self {
        Self::start_to(lab, SocketAddr::V4(SocketAddrV4::new(VIP, 6443)))
    }

    /// The same to another address (a Service's).
    pub fn start_to(lab: &Lab, to: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/var/run/netns/{}", lab.host("client").ns.name);
        let s = stop.clone();
        let thread = thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns file");
            // SAFETY: setns on this thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let mut out = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let began = Instant::now();
                let ok = TcpStream::connect_timeout(&to, Duration::from_millis(150)).is_ok();
                out.push((Instant::now(), ok));
                if let Some(rest) = Duration::from_millis(20).checked_sub(began.elapsed()) {
                    thread::sleep(rest);
                }
            }
            out
        });
        Self { stop, thread }
    }

    /// Stops and returns every attempt: when it ended and whether it connected.
    pub fn samples(self) -> Vec<(Instant, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("prober")
    }

    /// Stops and returns the client-visible outage around `event`: the longest time
    /// without a successful connection that ends after it.
    pub fn outage(self, event: Instant) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().expect("prober");
        let ok: Vec<Instant> = samples
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(t, _)| *t)
            .collect();
        assert!(
            ok.iter().any(|t| *t <= event),
            "no successful connection before the event"
        );
        assert!(
            ok.iter().any(|t| *t > event),
            "no successful connection after the event"
        );
        // The longest gap between two successes that ends after the event (an attempt that
        // began before the event may still succeed just after it).
        ok.windows(2)
            .filter(|w| w[1] > event)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

pub fn xvip_index(lab: &Lab, host: &str) -> usize {
    lab.proc_index(&format!("xvip-{host}")).expect("xvip proc")
}

/// Runs `lab-apiserver` named `name` on `host` listening on the VIP itself (non-local bind):
/// it answers when keepalived holds the VIP on that host.
pub fn start_vip_apiserver(lab: &mut Lab, host: &str, name: &str) {
    let ns = lab.host(host).ns.name.clone();
    tests::lab::sh(
        lab.host(host)
            .ns
            .cmd("sysctl")
            .args(["-qw", "net.ipv4.ip_nonlocal_bind=1"]),
    )
    .expect(&ns);
    let mut cmd = lab.host(host).ns.cmd(apiserver_bin());
    cmd.args(["--listen", &format!("{VIP}:6443"), "--name", name]);
    lab.spawn_apiserver(&format!("apiserver-{name}"), cmd)
        .expect("apiserver");
}

/// SIGKILL to keepalived's VRRP child first (the parent's death would make it resign
/// cleanly with priority 0), then to the parent.
pub fn kill_keepalived(lab: &mut Lab, dir: &std::path::Path, run: &str) {
    let pid: i32 = std::fs::read_to_string(dir.join(format!("vrrp-{run}.pid")))
        .expect("keepalived VRRP pid file")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) on keepalived's VRRP child, started by this test.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let k = lab
        .proc_index(&format!("keepalived-{run}"))
        .expect("keepalived");
    lab.procs[k].signal(libc::SIGKILL);
}

pub fn has_vip(lab: &Lab, host: &str) -> bool {
    lab.host(host)
        .ns
        .ip(&["-4", "addr", "show", "dev", "eth0"])
        .unwrap_or_default()
        .contains(&format!("{VIP}/32"))
}

/// Starts keepalived in `host`'s namespace in the foreground with the configuration text
/// `conf`, files (config, pid files, log) in `dir` under `run`.
pub fn spawn_keepalived(lab: &mut Lab, host: &str, conf: &str, dir: &Path, run: &str) {
    let path = dir.join(format!("keepalived-{run}.conf"));
    std::fs::write(&path, conf).expect("keepalived.conf");
    let log = std::fs::File::create(dir.join(format!("keepalived-{run}.log"))).expect("log");
    let mut cmd = lab.host(host).ns.cmd("keepalived");
    cmd.args(["-n", "-l", "-D", "-P", "-f"])
        .arg(&path)
        .arg("-p")
        .arg(dir.join(format!("keepalived-{run}.pid")))
        .arg("-r")
        .arg(dir.join(format!("vrrp-{run}.pid")))
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    lab.spawn(&format!("keepalived-{run}"), cmd)
        .expect("keepalived (Debian package keepalived)");
}

/// Starts `xvip run ARGS` on `host` with extra environment, its log in `log`; named
/// "xvip-HOST" like `Lab::start_xvip`.
pub fn start_xvip_logged(
    lab: &mut Lab,
    host: &str,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) {
    let f = std::fs::File::create(log).expect("xvip log");
    let mut cmd = lab.host(host).ns.cmd(tests::lab::xvip_bin());
    cmd.arg("run")
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(f);
    lab.spawn(&format!("xvip-{host}"), cmd).expect("xvip");
}

/// The xvip arguments `start_node` uses, for `start_xvip_logged`.
pub fn node_args(priority: u8, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--interface",
        "eth0",
        "--vip",
        "192.0.2.100",
        "--metrics-addr",
        METRICS,
        "--vrrp-vrid",
        "51",
        "--vrrp-priority",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(priority.to_string());
    if !extra.contains(&"--backend") {
        for b in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
            v.push("--backend".into());
            v.push(b.into());
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// [`node_args`] with `priority` in the configuration file `cfg` (`vrrp_priority`, read
/// again on SIGHUP) instead of the `--vrrp-priority` flag; writes `cfg`.
pub fn node_args_priority_file(cfg: &Path, priority: u8, extra: &[&str]) -> Vec<String> {
    std::fs::write(cfg, format!("vrrp_priority = {priority}\n")).expect("config");
    let mut args = node_args(priority, extra);
    let at = args
        .iter()
        .position(|a| a == "--vrrp-priority")
        .expect("--vrrp-priority");
    args.drain(at..at + 2);
    args.extend(["--config".into(), cfg.to_string_lossy().into_owned()]);
    args
}

/// `curl` of `path` on `host`'s status endpoint (e.g. `/metrics`, `/status`).
pub fn endpoint(lab: &Lab, host: &str, path: &str) -> String {
    lab.host(host)
        .ns
        .cmd("curl")
        .args(["-s", "--max-time", "2", &format!("http://{METRICS}{path}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One ARP probe: when it was sent and the MACs that answered it.
#[derive(Clone, Debug)]
pub struct ArpSample {
    pub at: Instant,
    pub owners: BTreeSet<String>,
    /// How long after the request each owner's first answer came.
    pub delays: std::collections::BTreeMap<String, Duration>,
}

/// Asks "who has the VIP" from the client every 50 ms (a raw ARP request on its eth0, the
/// kernel's neighbour cache is not involved) and records, per request, the MACs that
/// answered it: the ARP owners at that moment. Each request asks from its own sender
/// address (192.0.2.200-249 in turn, unused in the lab), and an answer is addressed to it,
/// so a late answer (a loaded machine) still counts for its own request, up to 1 s.
pub struct ArpSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<ArpSample>>,
}

/// The sampling period of [`ArpSampler`].
pub const ARP_PERIOD: Duration = Duration::from_millis(50);
/// Sender addresses the sampler asks from, in turn.
const ARP_SLOTS: usize = 50;
const ARP_FIRST_SENDER: u8 = 200;
/// How late an answer may come and still count.
const ARP_LATE: Duration = Duration::from_secs(1);

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).expect("mac");
    }
    m
}

fn arp_request(mac: [u8; 6], sender: Ipv4Addr) -> Vec<u8> {
    let mut req = vec![0xffu8; 6];
    req.extend_from_slice(&mac);
    req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&mac);
    req.extend_from_slice(&sender.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&VIP.octets());
    req.resize(60, 0);
    req
}

impl ArpSampler {
    pub fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/var/run/netns/{}", lab.host("client").ns.name);
        let mac = parse_mac(&mac_of(lab, "client"));
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns file");
            // SAFETY: setns on this thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            // SAFETY: plain socket calls on a descriptor closed below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                    i32::from((libc::ETH_P_ARP as u16).to_be()),
                )
            };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: if_nametoindex on a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            // SAFETY: all-zero is a valid sockaddr_ll; fields set below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            // SAFETY: a valid sockaddr_ll of its size.
            let rc = unsafe {
                libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let _ = ready_tx.send(());
            let mut out: Vec<ArpSample> = Vec::new();
            let mut buf = [0u8; 1600];
            let mut next_send = Instant::now();
            let mut stopping: Option<Instant> = None;
            loop {
                if stopping.is_none() && s.load(Ordering::Relaxed) {
                    stopping = Some(Instant::now());
                }
                match stopping {
                    // Late answers to the last requests still count.
                    Some(t) if t.elapsed() > ARP_LATE => break,
                    Some(_) => {}
                    None if Instant::now() >= next_send => {
                        let slot = out.len() % ARP_SLOTS;
                        let sender = Ipv4Addr::new(192, 0, 2, ARP_FIRST_SENDER + slot as u8);
                        let req = arp_request(mac, sender);
                        // SAFETY: sending our buffer to the bound broadcast address.
                        let n = unsafe {
                            libc::sendto(
                                fd,
                                req.as_ptr().cast(),
                                req.len(),
                                0,
                                (&sll as *const libc::sockaddr_ll).cast(),
                                size_of::<libc::sockaddr_ll>() as u32,
                            )
                        };
                        assert_eq!(n, req.len() as isize, "{}", std::io::Error::last_os_error());
                        out.push(ArpSample {
                            at: Instant::now(),
                            owners: BTreeSet::new(),
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
                if n < 42 {
                    continue;
                }
                let p = &buf[..n as usize];
                // An ARP reply from the VIP to one of our requests' senders.
                let to = p[41];
                if p[12..14] != [0x08, 0x06]
                    || p[20..22] != [0, 2]
                    || p[28..32] != VIP.octets()
                    || p[32..38] != mac
                    || p[38..41] != [192, 0, 2]
                    || !(ARP_FIRST_SENDER..ARP_FIRST_SENDER + ARP_SLOTS as u8).contains(&to)
                    || out.is_empty()
                {
                    continue;
                }
                // The latest request asked from that sender.
                let slot = usize::from(to - ARP_FIRST_SENDER);
                let last = out.len() - 1;
                let back = (last % ARP_SLOTS + ARP_SLOTS - slot) % ARP_SLOTS;
                let Some(i) = last.checked_sub(back) else {
                    continue;
                };
                let delay = out[i].at.elapsed();
                if delay <= ARP_LATE {
                    let owner = p[22..28]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":");
                    out[i].delays.entry(owner.clone()).or_insert(delay);
                    out[i].owners.insert(owner);
                }
            }
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            out
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("ARP sampler started");
        Self { stop, thread }
    }

    /// Stops (after waiting for late answers to the last requests) and returns every sample.
    pub fn stop(self) -> Vec<ArpSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("ARP sampler")
    }
}

/// Asserts that no sample has two ARP owners, and that every sample outside the failover
/// windows `gaps` (from, to) has exactly `owner_of(sample time)`; returns the longest run
/// without any owner (the failover gap a new client sees) and the number of samples.
pub fn assert_one_arp_owner(
    samples: &[ArpSample],
    owner_of: impl Fn(Instant) -> Option<String>,
) -> (Duration, usize) {
    let (gap, n, both) = assert_one_arp_owner_but_handover(samples, owner_of, None);
    assert_eq!(both, 0);
    (gap, n)
}

/// [`assert_one_arp_owner`], except that inside `handover` (from, to) at most one sample
/// may be answered by two owners: a preemption, where the new master (keepalived) sends
/// its advert and assigns the VIP at once while the old one steps down only when the advert
/// reaches it. Returns the longest run without an owner, the number of samples and the
/// number of samples with two owners.
pub fn assert_one_arp_owner_but_handover(
    samples: &[ArpSample],
    owner_of: impl Fn(Instant) -> Option<String>,
    handover: Option<(Instant, Instant)>,
) -> (Duration, usize, usize) {
    assert!(
        samples.len() >= 10,
        "too few ARP samples: {}",
        samples.len()
    );
    let mut longest = Duration::ZERO;
    let mut empty_since: Option<Instant> = None;
    let mut both = 0;
    for s in samples {
        if s.owners.len() > 1 && handover.is_some_and(|(from, to)| s.at >= from && s.at <= to) {
            both += 1;
            assert!(
                both <= 1,
                "two ARP owners in {both} samples of the handover"
            );
            continue;
        }
        assert!(
            s.owners.len() <= 1,
            "two ARP owners for the VIP at once: {:?} ({} samples)",
            s.owners,
            samples.len()
        );
        if let Some(want) = owner_of(s.at) {
            assert_eq!(
                s.owners.iter().next(),
                Some(&want),
                "ARP owner at {:?} from the start",
                s.at - samples[0].at
            );
        }
        match (s.owners.is_empty(), empty_since) {
            (true, None) => empty_since = Some(s.at),
            (false, Some(t)) => {
                longest = longest.max(s.at - t);
                empty_since = None;
            }
            _ => {}
        }
    }
    if let Some(t) = empty_since {
        longest = longest.max(samples.last().expect("samples").at - t);
    }
    (longest, samples.len(), both)
}

/// Sends raw IPv4 packets (header built here, `IPPROTO_RAW`) from the client namespace.
pub fn send_raw(lab: &Lab, packets: Vec<Vec<u8>>, dst: Ipv4Addr) {
    let ns = lab.host("client").ns.name.clone();
    in_netns(&ns, move || {
        // SAFETY: plain socket calls on a descriptor we close below.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket");
            let name = c"eth0";
            let mreqn = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: libc::if_nametoindex(name.as_ptr()) as i32,
            };
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&mreqn as *const libc::ip_mreqn).cast(),
                size_of::<libc::ip_mreqn>() as u32,
            );
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from(dst).to_be();
            for p in &packets {
                let n = libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&sin as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                );
                assert_eq!(n, p.len() as isize, "{}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    })
    .expect("client netns");
}

/// client, `extra` hosts (name, address), lb1..lbN and m1..m3 running plain-HTTP lab API
/// servers (the sync and chaos labs).
pub fn plain_lab(tag: &str, lbs: u8, extra: &[(&str, Ipv4Addr)]) -> Lab {
    let mut hosts = vec![("client".to_string(), CLIENT)];
    for (n, a) in extra {
        hosts.push((n.to_string(), *a));
    }
    for i in 1..=lbs {
        hosts.push((format!("lb{i}"), lb_ip(i)));
    }
    for i in 1..=3u8 {
        hosts.push((format!("m{i}"), Ipv4Addr::new(192, 0, 2, 10 + i)));
    }
    let refs: Vec<(&str, Ipv4Addr)> = hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let mut lab = Lab::new(tag, &refs).expect("lab");
    for m in ["m1", "m2", "m3"] {
        let h = lab.host(m);
        let mut cmd = h.ns.cmd(apiserver_bin());
        cmd.args([
            "--listen",
            &format!("{}:6443", h.ip),
            "--name",
            m,
            "--plain",
        ]);
        lab.spawn_apiserver(&format!("apiserver-{m}"), cmd)
            .expect("apiserver");
    }
    lab
}

/// A sync key file (32 random bytes, mode 0600) in `dir`; its path.
pub fn sync_key_file(dir: &tests::lab::TempDir) -> String {
    use std::{io::Read, os::unix::fs::PermissionsExt};
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("urandom");
    let p = dir.path("sync.key");
    std::fs::write(&p, key).expect("key file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    dir.str("sync.key")
}

/// The MAC and NUD state of `host`'s neighbour entry for the VIP ("" when none).
pub fn vip_neighbour(lab: &Lab, host: &str) -> (String, String) {
    let out = lab
        .host(host)
        .ns
        .ip(&["neigh", "show", &VIP.to_string()])
        .unwrap_or_default();
    let w: Vec<&str> = out.split_whitespace().collect();
    let mac = w
        .iter()
        .skip_while(|x| **x != "lladdr")
        .nth(1)
        .unwrap_or(&"")
        .to_string();
    (mac, w.last().unwrap_or(&"").to_string())
}

/// Holds `rtnl_lock` in bursts until `stop` (or 30 s): in a namespace of its own, 500 veth
/// pairs created in one batch, then the namespace deleted (its devices unregistered under
/// the lock). Returns the number of rounds.
pub fn rtnl_hog(
    lab: &Lab,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<u32> {
    let name = format!("{}-hog", lab.prefix);
    let batch: String = (0..500)
        .map(|i| format!("link add v{i} type veth peer name w{i}\n"))
        .collect();
    thread::spawn(move || {
        let file = std::env::temp_dir().join(format!("{name}.batch"));
        std::fs::write(&file, batch).expect("batch file");
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let end = Instant::now() + Duration::from_secs(30);
        let mut rounds = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            if !ip(&["netns", "add", &name]) {
                break;
            }
            let ok = ip(&["-n", &name, "-batch", &file.to_string_lossy()]);
            ip(&["netns", "del", &name]);
            if !ok {
                break;
            }
            rounds += 1;
        }
        let _ = std::fs::remove_file(&file);
        rounds
    })
}
