//! `cargo xtask demo`: a throw-away lab (a client, a load balancer, three masters serving
//! HTTPS on :6443 with /readyz), xvip in front of them, real requests through the VIP, and
//! a master failing and coming back. Everything is torn down on exit and on Ctrl-C.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tests::lab::{Lab, VIP, run_args, xvip_bin};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: tearing the lab down");
    }
    Ok(())
}

fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_stop()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn requests(lab: &Lab, n: usize) -> Result<BTreeMap<String, u32>> {
    let url = format!("https://{VIP}:6443/whoami");
    let mut seen = BTreeMap::new();
    for i in 1..=n {
        check_stop()?;
        let t = Instant::now();
        let who = match lab.curl("client", &url, Duration::from_secs(2)) {
            Ok(body) => body.trim().to_string(),
            Err(e) => format!("FAILED ({e})"),
        };
        println!(
            "  request {i:>2}: client 192.0.2.10 -> {VIP}:6443 answered by {who:<4} in {:>5.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        *seen.entry(who).or_default() += 1;
    }
    Ok(seen)
}

fn status(lab: &Lab) -> Result<()> {
    let out = lab
        .host("lb")
        .ns
        .cmd(xvip_bin())
        .arg("status")
        .output()
        .context("xvip status")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  | {line}");
    }
    Ok(())
}

fn demo() -> Result<()> {
    println!(
        "== building the lab: client 192.0.2.10, load balancer 192.0.2.2, masters m1-m3 192.0.2.11-13, VIP {VIP}"
    );
    let mut lab = Lab::standard("demo", None)?;
    check_stop()?;
    println!(
        "== starting xvip on the load balancer (HTTPS /readyz checks every 200 ms, fall 3, rise 2)"
    );
    lab.start_xvip("lb", &run_args(&[]))?;
    lab.curl_until_ok(
        "client",
        &format!("https://{VIP}:6443/readyz"),
        Duration::from_secs(10),
    )?;
    pause(Duration::from_millis(500))?;

    println!("== 12 new connections through the VIP");
    let seen = requests(&lab, 12)?;
    println!("  spread: {seen:?}");
    status(&lab)?;

    println!("== stopping master m2's API server");
    let t = Instant::now();
    lab.stop("apiserver-m2");
    pause(Duration::from_millis(1500))?;
    println!("== {:.1} s later:", t.elapsed().as_secs_f64());
    status(&lab)?;
    let seen = requests(&lab, 12)?;
    println!("  spread: {seen:?}");
    if seen.contains_key("m2") {
        bail!("m2 still got traffic after being stopped");
    }

    println!("== starting m2 again");
    lab.start_apiserver("m2", 6443, None)?;
    pause(Duration::from_millis(1500))?;
    let seen = requests(&lab, 12)?;
    println!("  spread: {seen:?}");
    status(&lab)?;
    println!("== done: tearing the lab down");
    Ok(())
}

fn main() -> ExitCode {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvip-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
