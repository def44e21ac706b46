//! `--attach`: xvip beside a CNI-like XDP neighbour (lab-ebpf's `lab_neighbour_pass` and
//! `lab_neighbour_drop`) on its interface. `auto` serves the VIP through tc while the
//! neighbour keeps XDP, sees the traffic and applies its own policy; stopping xvip leaves
//! the neighbour as it was; `tc` pins its link and a restart adopts it; `xdp` still refuses
//! the neighbour in one line with exit status 2; tc mode translates frames whose checksums
//! the sender left to offload (`CHECKSUM_PARTIAL`); beside a program xdp-loader installed;
//! a restart from tc to XDP; tc on an interface named like a VLAN and 802.1Q-tagged frames
//! (handed on, counted); tc/auto refuse several interfaces.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use aya::maps::PerCpuArray;
use tests::lab::{Lab, TempDir, in_netns, lab_object, sh, xvip_bin};

/// This test's own pin root (under the host's bpffs, which `cmd_net_only` shares) and
/// status records, removed after the lab (declared before it).
struct Cleanup {
    root: PathBuf,
    netns: Vec<u64>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        for ns in &self.netns {
            let _ = std::fs::remove_dir_all(Path::new("/run/xvip").join(ns.to_string()));
        }
    }
}

/// One test of this file at a time: each verifies xvip's programs at start, which on a
/// loaded two-core machine takes long enough already without three others doing the same.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lab(tag: &str) -> (Cleanup, Lab) {
    let hosts = [
        ("client", Ipv4Addr::new(192, 0, 2, 10)),
        ("lb", Ipv4Addr::new(192, 0, 2, 2)),
        ("m1", Ipv4Addr::new(192, 0, 2, 11)),
    ];
    let _ = std::fs::create_dir_all("/sys/fs/bpf");
    let mut lab = Lab::new(tag, &hosts).unwrap();
    let cleanup = Cleanup {
        root: Path::new("/sys/fs/bpf").join(format!("{}-pins", lab.prefix)),
        netns: vec![lab.host("lb").ns.inode().unwrap()],
    };
    lab.start_apiserver("m1", 6443, None).unwrap();
    (cleanup, lab)
}

const VIP: &str = "192.0.2.100";

fn whoami() -> String {
    format!("https://{VIP}:6443/whoami")
}

/// `xvip run` on the lb entering only its network namespace (pins in `c.root` survive the
/// process), stderr to `log`.
fn start(lab: &mut Lab, c: &Cleanup, attach: &str, log: &Path) {
    let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
    cmd.arg("run")
        .args([
            "--interface",
            "eth0",
            "--backend",
            "192.0.2.11",
            "--vip",
            VIP,
        ])
        .args(["--attach", attach, "--pin-root"])
        .arg(&c.root)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    lab.spawn("xvip-lb", cmd).unwrap();
}

/// [`start`], then waits until that xvip is attached (its status endpoint answers).
fn start_attached(lab: &mut Lab, c: &Cleanup, attach: &str, log: &Path) {
    start(lab, c, attach, log);
    if let Err(e) = lab.wait_attached("lb") {
        panic!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default());
    }
}

/// A neighbour from lab-ebpf attached in native XDP to the lb's eth0; `drop_port` set in
/// its map. Kept alive by the returned handle (the test's own, never xvip's).
fn neighbour(lab: &Lab, program: &'static str, drop_port: u16) -> aya::Ebpf {
    in_netns(
        &lab.host("lb").ns.name,
        move || -> anyhow::Result<aya::Ebpf> {
            let mut ebpf = aya::Ebpf::load_file(lab_object())?;
            let mut port: aya::maps::Array<_, u16> =
                aya::maps::Array::try_from(ebpf.map_mut("NEIGHBOUR_DROP_PORT").unwrap())?;
            port.set(0, &drop_port, 0)?;
            let prog: &mut aya::programs::Xdp = ebpf.program_mut(program).unwrap().try_into()?;
            prog.load()?;
            prog.attach(c"eth0", aya::programs::XdpMode::Driver)?;
            Ok(ebpf)
        },
    )
    .unwrap()
    .unwrap()
}

/// `NEIGHBOUR_COUNTS[slot]` summed over the CPUs.
fn count(ebpf: &aya::Ebpf, slot: u32) -> u64 {
    let m: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("NEIGHBOUR_COUNTS").unwrap()).unwrap();
    m.get(&slot, 0).unwrap().iter().sum()
}

/// The XDP program id on the lb's eth0, as `ip link` shows it.
fn xdp_prog(lab: &Lab) -> Option<u32> {
    let out = lab
        .host("lb")
        .ns
        .ip(&["link", "show", "dev", "eth0"])
        .ok()?;
    let rest = &out[out.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The names of the tcx ingress programs on the lb's eth0.
fn tc_progs(lab: &Lab) -> Vec<String> {
    tc_progs_on(lab, c"eth0")
}

/// ... on the lb's `ifname`.
fn tc_progs_on(lab: &Lab, ifname: &'static std::ffi::CStr) -> Vec<String> {
    in_netns(&lab.host("lb").ns.name, move || {
        aya::programs::SchedClassifier::query_tcx(ifname, aya::programs::TcAttachType::Ingress)
            .map(|(_, p)| {
                p.iter()
                    .map(|i| i.name_as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    })
    .unwrap()
}

fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Sends `n` UDP datagrams from the client to the lb's address, port `port`.
fn udp_to_lb(lab: &Lab, port: u16, n: usize) {
    in_netns(&lab.host("client").ns.name, move || {
        let s = std::net::UdpSocket::bind("192.0.2.10:0").unwrap();
        for _ in 0..n {
            s.send_to(b"x", ("192.0.2.2", port)).unwrap();
        }
    })
    .unwrap();
}

fn stop(lab: &mut Lab) {
    let i = lab.proc_index("xvip-lb").unwrap();
    lab.procs[i].signal(libc::SIGTERM);
    let status = lab.procs[i].wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "xvip did not stop cleanly: {status:?}"
    );
    lab.stop("xvip-lb");
}

#[test]
fn auto_beside_a_port_dropping_xdp_neighbour_serves_through_tc_and_leaves_it_untouched() {
    let _one = serial();
    let dir = TempDir::new("atauto");
    let (c, mut lab) = lab("atauto");
    let n = neighbour(&lab, "lab_neighbour_drop", 9999);
    let id = xdp_prog(&lab).expect("the neighbour is attached");
    let log = dir.path("xvip.log");
    start_attached(&mut lab, &c, "auto", &log);
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap()));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("--attach auto"))
        .collect();
    assert_eq!(lines.len(), 1, "one line says where and why: {text}");
    assert!(
        lines[0].contains("lab_neighbour_d") && lines[0].contains("tc ingress"),
        "{}",
        lines[0]
    );
    assert_eq!(lab.xvip_status("lb").unwrap().xdp_mode, "tc");
    assert_eq!(xdp_prog(&lab), Some(id), "xvip replaced the neighbour");
    assert_eq!(tc_progs(&lab), vec!["xvip_tc".to_string()]);

    // The neighbour still sees the VIP's traffic first, and drops its own port.
    let seen = count(&n, 1);
    lab.curl("client", &whoami(), Duration::from_secs(5))
        .unwrap();
    assert!(
        count(&n, 1) > seen,
        "the neighbour no longer sees the traffic"
    );
    let dropped = count(&n, 2);
    udp_to_lb(&lab, 9999, 5);
    udp_to_lb(&lab, 9998, 5);
    assert!(
        wait_until(Duration::from_secs(5), || count(&n, 2) >= dropped + 5),
        "the neighbour's policy no longer applies"
    );
    assert_eq!(count(&n, 2), dropped + 5, "dropped more than its port");

    // xvip gone: the neighbour is as it was, nothing of xvip's is left on the interface.
    stop(&mut lab);
    assert_eq!(
        xdp_prog(&lab),
        Some(id),
        "stopping xvip touched the neighbour"
    );
    assert!(tc_progs(&lab).is_empty(), "the tc program stayed");
    let seen = count(&n, 1);
    udp_to_lb(&lab, 9998, 3);
    assert!(wait_until(Duration::from_secs(5), || count(&n, 1) >= seen + 3));
}

#[test]
fn attach_tc_pins_its_link_serves_while_xvip_is_down_and_a_restart_adopts_it() {
    let _one = serial();
    let dir = TempDir::new("attc");
    let (c, mut lab) = lab("attc");
    let n = neighbour(&lab, "lab_neighbour_pass", 0);
    let id = xdp_prog(&lab).unwrap();
    start_attached(&mut lab, &c, "tc", &dir.path("1.log"));
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(dir.path("1.log")).unwrap()
            )
        });
    let pins = c.root.join(c.netns[0].to_string()).join("eth0");
    assert!(
        pins.join("tc").exists(),
        "the tc link is not pinned in {}",
        pins.display()
    );
    assert!(!pins.join("link").exists());

    // Killed: the pinned link keeps serving.
    lab.kill("xvip-lb").unwrap();
    assert_eq!(tc_progs(&lab), vec!["xvip_tc".to_string()]);
    lab.curl("client", &whoami(), Duration::from_secs(5))
        .expect("the pinned tc program stopped serving with xvip down");

    let log = dir.path("2.log");
    start_attached(&mut lab, &c, "tc", &log);
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("replaced the pinned tc program in place"),
        "{text}"
    );
    assert!(text.contains("adopted the pinned state"), "{text}");
    assert_eq!(
        tc_progs(&lab),
        vec!["xvip_tc".to_string()],
        "two tc programs"
    );
    assert_eq!(xdp_prog(&lab), Some(id));
    assert!(count(&n, 0) > 0);

    stop(&mut lab);
    assert!(tc_progs(&lab).is_empty());
    assert!(!pins.exists(), "pins left after the stop");
    assert_eq!(xdp_prog(&lab), Some(id));
}

#[test]
fn attach_xdp_beside_a_neighbour_refuses_in_one_line_with_exit_2() {
    let _one = serial();
    let dir = TempDir::new("atxdp");
    let (c, mut lab) = lab("atxdp");
    let _n = neighbour(&lab, "lab_neighbour_pass", 0);
    let id = xdp_prog(&lab).unwrap();
    let log = dir.path("xvip.log");
    start(&mut lab, &c, "xdp", &log);
    let i = lab.proc_index("xvip-lb").unwrap();
    let status = lab.procs[i]
        .wait_timeout(Duration::from_secs(10))
        .expect("xvip exits");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    let last = text.trim().lines().last().unwrap_or("");
    assert!(
        last.contains("lab_neighbour_p")
            && last.contains(&format!("id {id}"))
            && last.contains("--attach auto"),
        "{last}"
    );
    assert_eq!(xdp_prog(&lab), Some(id));
    assert!(tc_progs(&lab).is_empty());
}

#[test]
fn attach_tc_translates_frames_with_checksums_left_to_offload() {
    let _one = serial();
    let dir = TempDir::new("atcsum");
    let (c, mut lab) = lab("atcsum");
    // The client's frames now carry partial checksums (veth offload) up to the lb's tc
    // hook; the lb's own eth0 completes them on the way out (tx offload off), so a wrong
    // pseudo-header update would reach m1 as a bad checksum.
    sh(lab
        .host("client")
        .ns
        .cmd("ethtool")
        .args(["-K", "eth0", "tx", "on"]))
    .unwrap();
    start_attached(&mut lab, &c, "tc", &dir.path("xvip.log"));
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(dir.path("xvip.log")).unwrap()
            )
        });
    // A body of several segments (GSO on the client).
    let body = dir.path("body");
    std::fs::write(&body, vec![b'x'; 256 * 1024]).unwrap();
    let out = lab
        .host("client")
        .ns
        .cmd("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--data-binary", &format!("@{}", body.display()), &whoami()])
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && code != "000",
        "curl exit {:?}, code {code}",
        out.status.code()
    );
    // The whole body went through the tc program (GSO super-packets made linear, none
    // dropped as truncated), and nothing was left untranslated.
    let s = lab.xvip_status("lb").unwrap();
    let get = |k: &str| s.reasons.get(k).copied().unwrap_or(0);
    for r in ["drop_truncated", "drop_internal", "pass_tc_unhandled"] {
        assert_eq!(get(r), 0, "{r}: {:?}", s.reasons);
    }
    let bytes: u64 = s.vip_traffic.iter().map(|v| v.bytes).sum();
    assert!(
        bytes > 256 * 1024,
        "only {bytes} bytes to the VIP through tc"
    );
}

/// The XDP program `xdp-loader` (xdp-tools) installs on the lb's eth0 for one object: a
/// libxdp dispatcher where the kernel lets libxdp make one, else (extension programs
/// refused, as on the lab kernel: docs/operations.md) the object's program itself.
fn xdp_loader(lab: &Lab, c: &Cleanup, args: &[&str]) -> String {
    let mut cmd = lab.host("lb").ns.cmd_net_only("xdp-loader");
    // libxdp pins its dispatcher under $LIBXDP_BPFFS/xdp: this test's own root.
    cmd.args(args).env("LIBXDP_BPFFS", &c.root);
    let out = sh(&mut cmd).unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// xdp-filter's pass-everything program, from the xdp-tools package.
fn xdp_filter_object() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|d| Some(d.ok()?.path().join("bpf/xdpfilt_alw_all.o")))
        .chain([PathBuf::from("/usr/lib/bpf/xdpfilt_alw_all.o")])
        .find(|p| p.is_file())
        .expect("xdpfilt_alw_all.o (xdp-tools) is installed")
}

#[test]
fn auto_beside_a_program_xdp_loader_installed_serves_through_tc_and_xdp_loader_still_owns_it() {
    let _one = serial();
    let dir = TempDir::new("atxl");
    let (c, mut lab) = lab("atxl");
    std::fs::create_dir_all(&c.root).unwrap();
    let obj = xdp_filter_object();
    xdp_loader(
        &lab,
        &c,
        &["load", "-m", "native", "eth0", obj.to_str().unwrap()],
    );
    let listed = |lab: &Lab| xdp_loader(lab, &c, &["status", "eth0"]).contains("xdpfilt_alw_all");
    assert!(listed(&lab), "xdp-loader does not list its program");
    let id = xdp_prog(&lab).expect("xdp-loader attached a program");

    let log = dir.path("xvip.log");
    start_attached(&mut lab, &c, "auto", &log);
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap()));
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("--attach auto"))
        .unwrap_or_else(|| panic!("no line says where and why: {text}"));
    assert!(
        line.contains(&format!("id {id}")) && line.contains("tc ingress"),
        "{line}"
    );
    assert_eq!(
        xdp_prog(&lab),
        Some(id),
        "xvip replaced xdp-loader's program"
    );
    assert_eq!(tc_progs(&lab), vec!["xvip_tc".to_string()]);
    assert!(listed(&lab), "xdp-loader lost its program while xvip runs");

    // xvip gone: xdp-loader's program is as it was, and xdp-loader can still remove it.
    stop(&mut lab);
    assert_eq!(
        xdp_prog(&lab),
        Some(id),
        "stopping xvip touched the program"
    );
    assert!(tc_progs(&lab).is_empty(), "the tc program stayed");
    assert!(listed(&lab));
    xdp_loader(&lab, &c, &["unload", "--all", "eth0"]);
    assert_eq!(
        xdp_prog(&lab),
        None,
        "xdp-loader could not unload its program"
    );
}

#[test]
fn a_restart_from_tc_to_xdp_adopts_the_pinned_state_and_removes_the_tc_link() {
    let _one = serial();
    let dir = TempDir::new("atsw");
    let (c, mut lab) = lab("atsw");
    start_attached(&mut lab, &c, "tc", &dir.path("1.log"));
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(dir.path("1.log")).unwrap()
            )
        });
    let pins = c.root.join(c.netns[0].to_string()).join("eth0");
    assert!(pins.join("tc").exists());
    assert_eq!(xdp_prog(&lab), None);

    // Killed, restarted at XDP: the maps are adopted, the tc link goes once XDP serves.
    lab.kill("xvip-lb").unwrap();
    let log = dir.path("2.log");
    start_attached(&mut lab, &c, "xdp", &log);
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("adopted the pinned state"), "{text}");
    assert_eq!(lab.xvip_status("lb").unwrap().xdp_mode, "native");
    assert!(xdp_prog(&lab).is_some(), "not attached at XDP");
    assert!(
        wait_until(Duration::from_secs(5), || tc_progs(&lab).is_empty()),
        "the earlier mode's tc program stayed: {:?}",
        tc_progs(&lab)
    );
    assert!(!pins.join("tc").exists(), "the tc pin stayed");
    assert!(pins.join("link").exists(), "the XDP link is not pinned");

    stop(&mut lab);
    assert_eq!(xdp_prog(&lab), None);
    assert!(!pins.exists(), "pins left after the stop");
}

#[test]
fn tc_and_auto_with_two_interfaces_are_refused_in_one_line_with_exit_2() {
    for attach in ["tc", "auto"] {
        let out = std::process::Command::new(xvip_bin())
            .args(["run", "--interface", "eth0", "--interface", "eth1"])
            .args(["--backend", "192.0.2.11", "--vip", VIP, "--attach", attach])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{attach}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{attach}: {err}");
        assert!(
            lines[0].contains("--attach") && lines[0].contains(attach),
            "{attach}: {}",
            lines[0]
        );
    }
}

/// Sends `n` 802.1Q-tagged (VLAN 100) TCP SYNs from the client's eth0 to the VIP, port
/// 6443, to `dst` (the lb's MAC), through an `AF_PACKET` socket (the lab kernel has no VLAN
/// devices: `CONFIG_VLAN_8021Q` is off).
fn tagged_syns_to_vip(lab: &Lab, dst: [u8; 6], n: usize) {
    let src = tests::flood::mac_of(lab, "client").unwrap();
    in_netns(&lab.host("client").ns.name, move || {
        let mut f = Vec::with_capacity(58);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        let ip_start = f.len();
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[192, 0, 2, 10, 192, 0, 2, 100]);
        let mut sum: u32 = f[ip_start..]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[ip_start + 10..ip_start + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        // TCP: 40000 -> 6443, SYN, no options (the checksum is not what is tested).
        f.extend_from_slice(&[0x9c, 0x40, 0x19, 0x2b, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        // SAFETY: plain syscalls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&dst);
            for _ in 0..n {
                let r = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(r, f.len() as isize, "sendto");
            }
            libc::close(fd);
        }
    })
    .unwrap();
}

#[test]
fn attach_tc_on_an_interface_named_like_a_vlan_pins_it_and_passes_tagged_frames_counted() {
    let _one = serial();
    let dir = TempDir::new("atvlan");
    let (c, mut lab) = lab("atvlan");
    let lb_mac = tests::flood::mac_of(&lab, "lb").unwrap();
    // `eth0.100` is what a VLAN interface is called (bpffs refuses the dot in a pin name).
    let h = lab.host("lb");
    for args in [
        &["link", "set", "eth0", "down"][..],
        &["link", "set", "eth0", "name", "eth0.100"],
        &["link", "set", "eth0.100", "up"],
    ] {
        h.ns.ip(args).unwrap();
    }
    let run = |lab: &mut Lab, log: &Path| {
        let mut cmd = lab.host("lb").ns.cmd_net_only(xvip_bin());
        cmd.args(["run", "--interface", "eth0.100", "--backend", "192.0.2.11"])
            .args(["--vip", VIP, "--attach", "tc", "--pin-root"])
            .arg(&c.root)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        lab.spawn("xvip-lb", cmd).unwrap();
        if let Err(e) = lab.wait_attached("lb") {
            panic!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
    };
    run(&mut lab, &dir.path("1.log"));
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(dir.path("1.log")).unwrap()
            )
        });
    assert_eq!(lab.xvip_status("lb").unwrap().xdp_mode, "tc");
    assert_eq!(tc_progs_on(&lab, c"eth0.100"), vec!["xvip_tc".to_string()]);
    let pins = c.root.join(c.netns[0].to_string()).join("eth0%2e100");
    assert!(pins.join("tc").exists(), "no tc pin in {}", pins.display());

    // Tagged frames for the VIP reach tc with the tag already in the skb: handed on
    // untranslated, each counted, none forwarded.
    let reasons = |lab: &Lab| lab.xvip_status("lb").unwrap().reasons;
    let before = reasons(&lab);
    let get = |r: &std::collections::BTreeMap<String, u64>, k: &str| r.get(k).copied().unwrap_or(0);
    tagged_syns_to_vip(&lab, lb_mac, 5);
    let counted = wait_until(Duration::from_secs(5), || {
        get(&reasons(&lab), "pass_tc_unhandled") >= get(&before, "pass_tc_unhandled") + 5
    });
    let after = reasons(&lab);
    assert!(
        counted,
        "tagged frames not counted: {before:?} -> {after:?}"
    );
    assert_eq!(
        get(&after, "pass_tc_unhandled"),
        get(&before, "pass_tc_unhandled") + 5,
        "{after:?}"
    );

    // Killed: the pinned tc program keeps serving; the next xvip replaces it in place.
    lab.kill("xvip-lb").unwrap();
    lab.curl("client", &whoami(), Duration::from_secs(5))
        .expect("the pinned tc program stopped serving with xvip down");
    let log = dir.path("2.log");
    run(&mut lab, &log);
    lab.curl_until_ok("client", &whoami(), Duration::from_secs(15))
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("replaced the pinned tc program in place"),
        "{text}"
    );
    assert!(text.contains("adopted the pinned state"), "{text}");
    assert_eq!(tc_progs_on(&lab, c"eth0.100"), vec!["xvip_tc".to_string()]);

    stop(&mut lab);
    assert!(tc_progs_on(&lab, c"eth0.100").is_empty());
    assert!(!pins.exists(), "pins left after the stop");
}
