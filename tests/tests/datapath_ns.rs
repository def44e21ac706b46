//! The data path with real TCP in the namespace lab: DNAT mode (the masters see the
//! client's own address) and a long-lived stream that survives a Maglev table change.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tests::lab::{Lab, MASTERS, TempDir, VIP, run_args};

const CLIENT: &str = "192.0.2.10";
const LB: &str = "192.0.2.2";

/// Lines of a `curl -N` stream from the client, collected with their arrival time.
struct Stream {
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Stream {
    fn open(lab: &mut Lab, url: &str) -> Self {
        let mut cmd = lab.host("client").ns.cmd("curl");
        cmd.args(["-skN", "--max-time", "60", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let p = lab.spawn("watch", cmd).expect("curl");
        let out = p.child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), l));
            }
        });
        Self { lines }
    }

    /// Waits for the first line; returns the name of the master that sends it.
    fn server(&self, within: Duration) -> String {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some((_, l)) = self.lines.lock().unwrap().first() {
                return l.split_whitespace().next().unwrap_or_default().to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no line from the stream within {within:?}");
    }

    fn snapshot(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }
}

#[test]
fn dnat_mode_masters_see_the_client_address() {
    let mut lab = Lab::standard("dnat", None).unwrap();
    for m in MASTERS {
        lab.host(m)
            .ns
            .ip(&["route", "add", &format!("{CLIENT}/32"), "via", LB])
            .expect("route to the client via the LB");
    }
    lab.start_xvip("lb", &run_args(&["--mode", "dnat"]))
        .expect("xvip");
    let url = format!("https://{VIP}:6443/whoami");
    lab.curl_until_ok("client", &url, Duration::from_secs(10))
        .expect("first request through the VIP in dnat mode");
    for _ in 0..6 {
        let body = lab
            .curl("client", &url, Duration::from_secs(3))
            .expect("request through the VIP");
        assert!(MASTERS.contains(&body.trim()), "{body:?}");
    }

    // A stream stays open: its master's socket must have the client itself as peer.
    let stream = Stream::open(&mut lab, &format!("https://{VIP}:6443/watch"));
    let master = stream.server(Duration::from_secs(5));
    let ss = lab
        .host(&master)
        .ns
        .cmd("ss")
        .args(["-Htn", "state", "established", "( sport = :6443 )"])
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(
        ss.lines().any(|l| l.contains(&format!("{CLIENT}:"))),
        "{master} should see {CLIENT} as the peer: {ss}"
    );
    // Full NAT would show the SNAT address (the VIP by default); the LB's own address
    // is there too at times, as the health checker's.
    assert!(
        !ss.contains(&format!("{VIP}:")),
        "{master} sees the SNAT address: {ss}"
    );
}

#[test]
fn a_stream_survives_a_table_change_that_keeps_its_backend() {
    let dir = TempDir::new("dp-notready");
    let mut lab = Lab::standard("stream", Some(&dir.0)).unwrap();
    lab.start_xvip("lb", &run_args(&[])).expect("xvip");
    let url = format!("https://{VIP}:6443/whoami");
    lab.curl_until_ok("client", &url, Duration::from_secs(10))
        .expect("first request through the VIP");

    let stream = Stream::open(&mut lab, &format!("https://{VIP}:6443/watch"));
    let master = stream.server(Duration::from_secs(5));
    let other = MASTERS.iter().find(|m| **m != master).unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));

    // Another master goes unready: the health checks take it out of the table.
    let changed = Instant::now();
    std::fs::write(dir.path(&format!("{other}.notready")), b"").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        if let Ok(b) = lab.curl("client", &url, Duration::from_secs(3)) {
            seen.insert(b.trim().to_string());
        }
    }
    assert!(
        !seen.contains(&other),
        "{other} is unready, yet new connections still reach it: {seen:?}"
    );

    let lines = stream.snapshot();
    assert!(
        lines
            .iter()
            .all(|(_, l)| l.starts_with(&format!("{master} tick"))),
        "the stream moved: {:?}",
        lines.iter().map(|(_, l)| l).collect::<Vec<_>>()
    );
    let after = lines.iter().filter(|(t, _)| *t > changed).count();
    assert!(
        after >= 15,
        "only {after} lines in the {:?} after the change",
        changed.elapsed()
    );
    let ticks: Vec<u64> = lines
        .iter()
        .filter_map(|(_, l)| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks not consecutive: {ticks:?}"
    );
    let gap = lines
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(
        gap < Duration::from_millis(600),
        "the stream stalled for {gap:?}"
    );
}
