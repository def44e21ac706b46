//! The namespace lab: hosts on one L2 segment (a bridge in its own namespace), each with
//! one veth `eth0`, plus helpers to start the daemon, lab API servers and clients in them.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    sh(Command::new("ip").args(args))
}

/// How long a started xvip may take to attach (see [`Lab::wait_attached`]).
pub const ATTACH_BOUND: Duration = Duration::from_secs(30);

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn new(name: String) -> Result<Self> {
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A command that enters only the network namespace (`nsenter --net`): unlike
    /// `ip netns exec` it keeps the host's mounts, so bpffs pins made by it outlive it.
    pub fn cmd_net_only(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.name))
            .arg(program);
        c
    }

    /// The namespace's inode: what xvip keys its pins by (`<pin-root>/<inode>/<if>`).
    pub fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/var/run/netns/{}", self.name);
        Ok(std::fs::metadata(&path)
            .with_context(|| format!("stat {path}"))?
            .ino())
    }

    /// Runs `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&ip(&full)?.stdout).to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // What an xvip in it recorded for `xvip status --interface` (keyed by namespace).
        if let Ok(ino) = self.inode() {
            let _ = std::fs::remove_dir_all(format!("/run/xvip/{ino}"));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// One host of the lab.
pub struct Host {
    pub name: String,
    pub ns: Netns,
    pub ip: Ipv4Addr,
}

/// A child process killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `timeout` for the process to exit; returns its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait_timeout(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Hosts on one segment. Dropping it kills the processes, then deletes the namespaces.
pub struct Lab {
    /// Processes first: they must die before their namespaces go.
    pub procs: Vec<Proc>,
    /// The pass-through XDP program on the switch ports (see `attach_port_programs`).
    port_programs: Option<aya::Ebpf>,
    /// The same, on ports of hosts made again by `recreate_host`.
    recreated_ports: Vec<aya::Ebpf>,
    /// Further segments (`add_segment`): their port programs, then their switch.
    segments: Vec<(aya::Ebpf, Netns)>,
    pub hosts: Vec<Host>,
    pub switch: Netns,
    pub prefix: String,
}

/// Runs `f` on a thread that has entered network namespace `name`.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on this thread only, with a valid namespace file.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {name} panicked"))?
}

/// The lab's helper XDP object (`lab-ebpf`'s `lab-xdp`): `XVIP_LAB_EBPF_OBJ` (set by
/// `cargo xtask test` and `bench`), else next to the daemon's object.
pub fn lab_object() -> PathBuf {
    if let Some(p) = std::env::var_os("XVIP_LAB_EBPF_OBJ") {
        return PathBuf::from(p);
    }
    let obj = std::env::var_os("XVIP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/bpfel-unknown-none/release/lb-ebpf")
        });
    obj.with_file_name("lab-xdp")
}

/// Attaches `lab_pass` to the switch ports: a veth only receives frames that its peer sends
/// with `XDP_TX` when it runs an XDP program itself (GRO alone did not do it on 6.18).
fn attach_port_programs(ports: &[String]) -> Result<aya::Ebpf> {
    let path = lab_object();
    let mut ebpf =
        aya::Ebpf::load_file(&path).with_context(|| format!("loading {}", path.display()))?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut("lab_pass")
        .context("lab_pass not in lab-xdp")?
        .try_into()?;
    prog.load()?;
    for port in ports {
        let name = std::ffi::CString::new(port.as_str())?;
        prog.attach(name.as_c_str(), aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching lab_pass to {port}"))?;
    }
    Ok(ebpf)
}

/// Path of a binary the tests start: from the environment (set by `cargo xtask test`) or
/// next to the test executable.
pub fn bin(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .skip(1)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug")
                .join(name)
        })
}

/// The `xvip` binary.
pub fn xvip_bin() -> PathBuf {
    bin("XVIP_BIN", "xvip")
}

/// The `lab-apiserver` binary.
pub fn apiserver_bin() -> PathBuf {
    bin("XVIP_LAB_APISERVER", "lab-apiserver")
}

impl Lab {
    /// Creates the switch and one host per `(name, address)`, all in 192.0.2.0/24-style
    /// subnets given by the caller (prefix length 24).
    pub fn new(tag: &str, hosts: &[(&str, Ipv4Addr)]) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("xv{}-{tag}{n}", std::process::id());
        let switch = Netns::new(format!("{prefix}-sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut lab = Self {
            procs: Vec::new(),
            port_programs: None,
            recreated_ports: Vec::new(),
            segments: Vec::new(),
            hosts: Vec::new(),
            switch,
            prefix,
        };
        for (i, (name, addr)) in hosts.iter().enumerate() {
            lab.add_host(name, *addr, i)?;
        }
        let ports: Vec<String> = (0..hosts.len()).map(|i| format!("p{i}")).collect();
        lab.port_programs = Some(in_netns(&lab.switch.name, move || {
            attach_port_programs(&ports)
        })??);
        Ok(lab)
    }

    fn add_host(&mut self, name: &str, addr: Ipv4Addr, i: usize) -> Result<()> {
        let ns = Netns::new(format!("{}-{name}", self.prefix))?;
        self.plug(&ns, addr, i)?;
        // The host must not send anything by itself to the documentation ranges beyond
        // the lab: no default route is added.
        self.hosts.push(Host {
            name: name.into(),
            ns,
            ip: addr,
        });
        Ok(())
    }

    /// Gives `ns` its `eth0` (address `addr`), plugged into switch port `p{i}`.
    fn plug(&self, ns: &Netns, addr: Ipv4Addr, i: usize) -> Result<()> {
        let port = format!("p{i}");
        let mac = format!("02:00:00:00:{:02x}:{:02x}", i + 1, addr.octets()[3]);
        ns.ip(&[
            "link",
            "add",
            "eth0",
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        // Frames the lab's hosts generate carry partial checksums on veth; a real NIC would
        // have completed them. Have the kernel complete them before they leave.
        sh(ns.cmd("ethtool").args(["-K", "eth0", "tx", "off"]))
            .context("ethtool is needed for the lab (Debian package ethtool)")?;
        Ok(())
    }

    /// Waits (at most 10 s) until switch port `port` is gone after its peer was deleted.
    fn wait_port_gone(&self, port: &str) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(10);
        while self.switch.ip(&["link", "show", port]).is_ok() {
            if Instant::now() > end {
                bail!("{port} still exists 10 s after its peer was deleted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Attaches `lab_pass` to a switch port plugged in again (see `attach_port_programs`).
    fn reattach_port(&mut self, port: String) -> Result<()> {
        let ports = vec![port];
        let programs = in_netns(&self.switch.name, move || attach_port_programs(&ports))??;
        self.recreated_ports.push(programs);
        Ok(())
    }

    /// Deletes `name`'s eth0 (its switch port goes with it) and makes it again, same MAC
    /// and address, in the same namespace: a veth, VLAN or bond recreated under a daemon.
    pub fn recreate_eth0(&mut self, name: &str) -> Result<()> {
        let i = self
            .hosts
            .iter()
            .position(|h| h.name == name)
            .with_context(|| format!("no host {name}"))?;
        let port = format!("p{i}");
        self.hosts[i].ns.ip(&["link", "del", "eth0"])?;
        self.wait_port_gone(&port)?;
        self.plug(&self.hosts[i].ns, self.hosts[i].ip, i)?;
        self.reattach_port(port)
    }

    /// Deletes `name`'s namespace (its veth and switch port go with it), waits until the
    /// kernel has destroyed them, and creates the host again: same name, address and MAC.
    pub fn recreate_host(&mut self, name: &str) -> Result<()> {
        let i = self
            .hosts
            .iter()
            .position(|h| h.name == name)
            .with_context(|| format!("no host {name}"))?;
        let port = format!("p{i}");
        let addr = self.hosts.remove(i).ip;
        self.wait_port_gone(&port)?;
        self.add_host(name, addr, i)?;
        let h = self.hosts.pop().expect("just added");
        self.hosts.insert(i, h);
        self.reattach_port(port)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Starts `cmd` (already built with `Host.ns.cmd`), keeping it until the lab drops.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<&mut Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        self.procs.push(Proc {
            name: name.into(),
            child,
        });
        Ok(self.procs.last_mut().expect("just pushed"))
    }

    /// Index of the process called `name`.
    pub fn proc_index(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.name == name)
    }

    /// Stops (SIGTERM, then SIGKILL) and forgets the process called `name`.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.proc_index(name) {
            drop(self.procs.remove(i));
        }
    }

    /// Sends SIGKILL to the process called `name`, waits for it and forgets it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self
            .proc_index(name)
            .with_context(|| format!("no process {name}"))?;
        self.procs[i].signal(libc::SIGKILL);
        self.procs[i]
            .wait_timeout(Duration::from_secs(2))
            .with_context(|| format!("{name} did not die"))?;
        self.procs.remove(i);
        Ok(())
    }

    /// Starts a lab API server on `host`:port and waits until it listens.
    pub fn start_apiserver(
        &mut self,
        host: &str,
        port: u16,
        not_ready_file: Option<&std::path::Path>,
    ) -> Result<()> {
        let h = self.host(host);
        let mut cmd = h.ns.cmd(apiserver_bin());
        cmd.args(["--listen", &format!("{}:{port}", h.ip), "--name", host]);
        if let Some(f) = not_ready_file {
            cmd.arg("--not-ready-file").arg(f);
        }
        self.spawn_apiserver(&format!("apiserver-{host}"), cmd)
    }

    /// Starts a lab API server from `cmd` (any flags) as process `name`, and waits for its
    /// "listening" banner; its output is drained afterwards so it never blocks on the pipe.
    pub fn spawn_apiserver(&mut self, name: &str, mut cmd: Command) -> Result<()> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let p = self.spawn(name, cmd)?;
        let stdout = p.child.stdout.take().context("apiserver stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut sink = String::new();
            while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .with_context(|| format!("{name} did not start in 10 s"))?;
        if !line.contains("listening") {
            bail!("{name} said {line:?}");
        }
        Ok(())
    }

    /// Starts `xvip run ARGS` on `host` (logs to stderr), named "xvip-HOST".
    pub fn start_xvip(&mut self, host: &str, args: &[&str]) -> Result<()> {
        let h = self.host(host);
        let mut cmd = h.ns.cmd(xvip_bin());
        cmd.arg("run").args(args).env(
            "RUST_LOG",
            std::env::var("XVIP_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.stdout(Stdio::null());
        self.spawn(&format!("xvip-{host}"), cmd)?;
        Ok(())
    }

    /// The status document of the xvip running on `host` (default metrics address).
    pub fn xvip_status(&self, host: &str) -> Result<xvip::api::document::Status> {
        let out = sh(self
            .host(host)
            .ns
            .cmd(xvip_bin())
            .args(["status", "--json"]))?;
        serde_json::from_slice(&out.stdout).context("parsing xvip status --json")
    }

    /// Waits until the xvip on `host` is attached: its status endpoint answers, which it
    /// starts once the program is attached and the first table written. From exec that
    /// takes ~2 s on an idle machine and more when others load it (map preallocation,
    /// program load), so the budgets tests set for what they measure start after it.
    pub fn wait_attached(&self, host: &str) -> Result<Duration> {
        let start = Instant::now();
        self.wait_status(host, Duration::ZERO, |_| true)?;
        Ok(start.elapsed())
    }

    /// Polls `cond` on `host`'s status every 20 ms until it holds or `within` passes;
    /// returns how long it took. While the xvip on `host` has not answered yet (it is
    /// still starting: see [`Lab::wait_attached`]), the clock does not run: `within` is
    /// the budget of what the caller waits for, not of the start-up.
    pub fn wait_status(
        &self,
        host: &str,
        within: Duration,
        cond: impl Fn(&xvip::api::document::Status) -> bool,
    ) -> Result<Duration> {
        let first = Instant::now();
        let mut start: Option<Instant> = None;
        loop {
            if let Ok(s) = self.xvip_status(host) {
                let since = *start.get_or_insert_with(Instant::now);
                if cond(&s) {
                    return Ok(since.elapsed());
                }
            }
            match start {
                Some(since) if since.elapsed() > within => {
                    bail!("status condition not met within {within:?}")
                }
                None if first.elapsed() > ATTACH_BOUND => {
                    bail!("xvip on {host} did not answer within {ATTACH_BOUND:?}")
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `curl -N` on `host` reading a stream for at most `max` (e.g. `/watch`).
    pub fn start_stream(&mut self, name: &str, host: &str, url: &str, max: Duration) -> Result<()> {
        let mut cmd = self.host(host).ns.cmd("curl");
        cmd.args(["-skN", "--max-time", &format!("{}", max.as_secs_f64()), url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        self.spawn(name, cmd)?;
        Ok(())
    }

    /// Waits for the stream started as `name` to end; returns curl's exit code and output.
    pub fn finish_stream(&mut self, name: &str, within: Duration) -> Result<(Option<i32>, String)> {
        let i = self.proc_index(name).context("no such stream")?;
        let mut p = self.procs.remove(i);
        let status = p
            .wait_timeout(within)
            .context("stream did not end in time")?;
        let mut out = String::new();
        if let Some(mut o) = p.child.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_string(&mut out);
        }
        Ok((status.code(), out))
    }

    /// One HTTPS GET from `host` with curl; returns the body or the error.
    pub fn curl(&self, host: &str, url: &str, timeout: Duration) -> Result<String> {
        let h = self.host(host);
        let out =
            h.ns.cmd("curl")
                .args([
                    "-sk",
                    "--max-time",
                    &format!("{:.1}", timeout.as_secs_f64()),
                    url,
                ])
                .output()
                .context("running curl")?;
        if !out.status.success() {
            bail!("curl {url} from {host}: exit {:?}", out.status.code());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Retries `curl` until it succeeds or `within` passes.
    pub fn curl_until_ok(&self, host: &str, url: &str, within: Duration) -> Result<String> {
        let end = Instant::now() + within;
        loop {
            match self.curl(host, url, Duration::from_secs(1)) {
                Ok(b) => return Ok(b),
                Err(e) if Instant::now() > end => {
                    return Err(e.context(format!("no answer within {within:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Whether `host`'s eth0 has an XDP program attached.
    pub fn has_xdp(&self, host: &str) -> Result<bool> {
        Ok(self
            .host(host)
            .ns
            .ip(&["link", "show", "dev", "eth0"])?
            .contains("xdp"))
    }
}

/// The VIP of the standard lab.
pub const VIP: &str = "192.0.2.100";
/// The masters of the standard lab.
pub const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
/// The standard lab's hosts: client 192.0.2.10, lb 192.0.2.2, masters m1-m3 192.0.2.11-13.
pub const STANDARD_HOSTS: [(&str, Ipv4Addr); 5] = [
    ("client", Ipv4Addr::new(192, 0, 2, 10)),
    ("lb", Ipv4Addr::new(192, 0, 2, 2)),
    ("m1", Ipv4Addr::new(192, 0, 2, 11)),
    ("m2", Ipv4Addr::new(192, 0, 2, 12)),
    ("m3", Ipv4Addr::new(192, 0, 2, 13)),
];

/// `xvip run` arguments for the standard lab (eth0, the VIP, the three masters), then `extra`.
pub fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--backend",
        "192.0.2.11",
        "--backend",
        "192.0.2.12",
        "--backend",
        "192.0.2.13",
    ];
    v.extend_from_slice(extra);
    v
}

impl Lab {
    /// The standard lab: client 192.0.2.10, lb 192.0.2.2, masters m1-m3 192.0.2.11-13 each
    /// running a lab API server on :6443 (with a not-ready file `DIR/NAME.notready` when
    /// `not_ready_dir` is given).
    pub fn standard(tag: &str, not_ready_dir: Option<&std::path::Path>) -> Result<Self> {
        let mut lab = Lab::segment(tag)?;
        for m in MASTERS {
            let file = not_ready_dir.map(|d| d.join(format!("{m}.notready")));
            lab.start_apiserver(m, 6443, file.as_deref())?;
        }
        Ok(lab)
    }

    /// The standard lab's hosts, with no API server started.
    pub fn segment(tag: &str) -> Result<Self> {
        Lab::new(tag, &STANDARD_HOSTS)
    }

    /// Starts a plain-HTTP lab API server on `host`:6443 for load (the benchmarks), its
    /// output discarded; not waited for.
    pub fn start_plain_apiserver(&mut self, host: &str) -> Result<()> {
        let h = self.host(host);
        let mut cmd = h.ns.cmd(apiserver_bin());
        cmd.args([
            "--listen",
            &format!("{}:6443", h.ip),
            "--name",
            host,
            "--plain",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.spawn(&format!("apiserver-{host}"), cmd)?;
        Ok(())
    }

    /// Starts `xvip run ARGS` on the lb host and waits until the client gets an answer
    /// through the VIP and every backend is healthy with a known MAC.
    pub fn start_xvip_and_wait(&mut self, args: &[&str]) -> Result<()> {
        self.start_xvip("lb", args)?;
        self.wait_attached("lb")?;
        self.curl_until_ok(
            "client",
            &format!("https://{VIP}:6443/readyz"),
            Duration::from_secs(10),
        )?;
        self.wait_status("lb", Duration::from_secs(5), |s| {
            s.backends.iter().all(|b| b.healthy && b.mac.is_some())
        })?;
        Ok(())
    }

    /// `n` new connections from `from` to the VIP's `/whoami`: which server answered how
    /// often (failures counted under "error: ...").
    pub fn spread(&self, from: &str, n: usize) -> std::collections::BTreeMap<String, u32> {
        let url = format!("https://{VIP}:6443/whoami");
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..n {
            let who = self
                .curl(from, &url, Duration::from_secs(2))
                .map(|b| b.trim().to_string())
                .unwrap_or_else(|e| format!("error: {e}"));
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/xvip-test-TAG-PID`.
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("xvip-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Self(d)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A path inside the directory, as a string (for command lines).
    pub fn str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Lab {
    /// Adds another L2 segment (its own bridge namespace, no route to anything else): each
    /// `(host, interface, address)` plugs `interface` of `host` into it with `address/24`,
    /// creating the host when there is none of that name (its `ip` is then `address`).
    /// Frames reach the new ports' veths by `XDP_TX` or a redirect as on the first segment.
    pub fn add_segment(&mut self, tag: &str, ports: &[(&str, &str, Ipv4Addr)]) -> Result<()> {
        let seg = self.segments.len() + 2;
        let switch = Netns::new(format!("{}-{tag}", self.prefix))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut names = Vec::new();
        for (i, (host, dev, addr)) in ports.iter().enumerate() {
            if !self.hosts.iter().any(|h| h.name == *host) {
                let ns = Netns::new(format!("{}-{host}", self.prefix))?;
                self.hosts.push(Host {
                    name: (*host).into(),
                    ns,
                    ip: *addr,
                });
            }
            let port = format!("s{seg}p{i}");
            let mac = format!("02:00:{seg:02x}:00:{:02x}:{:02x}", i + 1, addr.octets()[3]);
            let ns = &self.host(host).ns;
            ns.ip(&[
                "link",
                "add",
                dev,
                "address",
                &mac,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &switch.name,
            ])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
            switch.ip(&["link", "set", &port, "master", "br0", "up"])?;
            sh(ns.cmd("ethtool").args(["-K", dev, "tx", "off"]))?;
            names.push(port);
        }
        let programs = in_netns(&switch.name, move || attach_port_programs(&names))??;
        self.segments.push((programs, switch));
        Ok(())
    }
}

/// A lab CA's parameters: common name `name`, allowed to sign. Built alike by [`ca`] (the
/// certificate a client trusts) and by `lab-apiserver --ca-key --ca-name` (the issuer of its
/// certificate), so the two names match byte for byte.
pub fn ca_params(name: &str) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A new lab CA named `name`: its key and its certificate, both PEM.
pub fn ca(name: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params(name)?.self_signed(&key)?;
    Ok((key.serialize_pem(), cert.pem()))
}
