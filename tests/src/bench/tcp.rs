//! TCP load: one new connection per request (plain HTTP to `lab-apiserver --plain`), from
//! a pool of threads in the client namespace. Gives connections/s and request latency.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};

use super::xdp_lab::{enter_netns, with_netns};

/// The request: the API server's liveness endpoint, connection closed by the server.
pub const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on requests per worker and run (far above what a run can do).
const MAX_REQUESTS_PER_WORKER: usize = 10_000_000;

/// One measured run of the TCP load.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpSample {
    /// Completed requests (each on its own connection) per second.
    pub conns_per_s: f64,
    /// Median time from connect to the server's close, in microseconds.
    pub p50_us: f64,
    /// 99th percentile of the same.
    pub p99_us: f64,
    /// Failed connections or requests.
    pub errors: u64,
    /// Completed requests.
    pub ok: u64,
}

/// Connects, sends [`REQUEST`], reads the answer to the end; fails unless it is a 200.
pub fn one_request(target: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(REQUEST)?;
    let mut buf = [0u8; 2048];
    let mut head = Vec::new();
    // A bounded read loop: the answer is a few hundred bytes.
    for _ in 0..64 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 12 {
            head.extend_from_slice(&buf[..n]);
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("unexpected answer {:?}", String::from_utf8_lossy(&head));
    }
    Ok(())
}

/// Retries [`one_request`] from namespace `ns` until it succeeds or `within` passes.
pub fn wait_ready(ns: &str, target: SocketAddr, within: Duration) -> Result<()> {
    with_netns(ns, || {
        let end = Instant::now() + within;
        let mut last = anyhow!("never tried");
        while Instant::now() < end {
            match one_request(target) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.context(format!("{target} did not answer within {within:?}")))
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64
}

/// Runs `workers` closed-loop clients in namespace `ns` against `target` for `dur`.
pub fn load(
    ns: &str,
    target: SocketAddr,
    dur: Duration,
    workers: usize,
    stop: &AtomicBool,
) -> Result<TcpSample> {
    let start = Instant::now();
    let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(move || -> Result<(Vec<u32>, u64)> {
                    enter_netns(ns)?;
                    let end = start + dur;
                    let mut lat = Vec::with_capacity(4096);
                    let mut errors = 0;
                    for _ in 0..MAX_REQUESTS_PER_WORKER {
                        if Instant::now() >= end || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let t = Instant::now();
                        match one_request(target) {
                            Ok(()) => {
                                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32)
                            }
                            Err(_) => {
                                errors += 1;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    Ok((lat, errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("load thread panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let wall = start.elapsed().as_secs_f64();
    let mut all: Vec<u32> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    all.sort_unstable();
    Ok(TcpSample {
        conns_per_s: all.len() as f64 / wall,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        errors: results.iter().map(|(_, e)| e).sum(),
        ok: all.len() as u64,
    })
}
