//! Floods for the namespace lab: frames sent from an `AF_PACKET` socket on one lab host's
//! `eth0` ([`RawGen`]), on a thread of its own, until stopped or a bound is reached.
//!
//! Not the benchmarks' live-frames generator (`lab_gen` run by `BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES`): the lab kernel (6.18) refuses live-frames runs with
//! `EPERM` for any program, so every flood failed before sending a frame.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

use crate::{
    bench::{
        frame::TcpFrame,
        raw_gen::{RAW_BATCH, RawGen},
        xdp_lab::{GenSpec, enter_netns},
    },
    lab::Lab,
};

/// Frames per round of an unpaced flood (between checks of the stop flag and the bounds).
const RAW_ROUND: u64 = 4096;

/// What to send.
#[derive(Clone, Copy, Debug)]
pub struct FloodSpec {
    /// Source addresses `src_base + i / port_span`, ports `first_port + i % port_span`.
    pub src_base: Ipv4Addr,
    pub addresses: u32,
    pub first_port: u16,
    pub port_span: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// TCP flags of every frame.
    pub flags: u8,
    /// Every frame's TCP checksum wrong (the receiver drops it silently).
    pub bad_checksum: bool,
    /// Stop after this many frames (rounded up to a generator call).
    pub max_frames: u64,
    /// Stop after this long.
    pub max_time: Duration,
    /// Frames per second at most (`None`: as fast as the generator goes).
    pub max_rate: Option<f64>,
}

/// A running flood; stopped (and its thread joined) on drop.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
    started: Instant,
}

/// The MAC of `host`'s `eth0`.
pub fn mac_of(lab: &Lab, host: &str) -> Result<[u8; 6]> {
    let out = lab.host(host).ns.ip(&["-o", "link", "show", "eth0"])?;
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC in {out:?}"))?;
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(word.split(':')) {
        *b = u8::from_str_radix(part, 16).with_context(|| format!("MAC {word:?}"))?;
    }
    Ok(mac)
}

impl Flood {
    /// Starts sending `spec` from `from`'s `eth0` to `to`'s MAC.
    pub fn start(lab: &Lab, from: &str, to: &str, spec: FloodSpec) -> Result<Self> {
        let ns = lab.host(from).ns.name.clone();
        let t = TcpFrame {
            src_mac: mac_of(lab, from)?,
            dst_mac: mac_of(lab, to)?,
            src: spec.src_base,
            dst: spec.dst,
            sport: spec.first_port,
            dport: spec.dport,
            flags: spec.flags,
            ttl: 64,
            payload: 0,
        };
        let gen_spec = GenSpec {
            flows: spec.addresses.max(1) * u32::from(spec.port_span.max(1)),
            src_base: spec.src_base,
            first_port: spec.first_port,
            port_span: spec.port_span,
            flags: spec.flags,
            dst: spec.dst,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let frame = t.build();
        let thread = std::thread::spawn(move || -> Result<()> {
            enter_netns(&ns)?;
            let mut generator = RawGen::open("eth0", gen_spec, frame, spec.bad_checksum)?;
            let start = Instant::now();
            let end = start + spec.max_time;
            // Paced: 100 ms of traffic per round at most, then wait for the schedule.
            let per_round = spec
                .max_rate
                .map_or(RAW_ROUND, |r| ((r / 10.0) as u64).clamp(1, RAW_ROUND));
            while !stop2.load(Ordering::Relaxed)
                && Instant::now() < end
                && sent2.load(Ordering::Relaxed) < spec.max_frames
            {
                let done = sent2.load(Ordering::Relaxed);
                if let Some(rate) = spec.max_rate {
                    let due = start + Duration::from_secs_f64(done as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait.min(Duration::from_millis(50)));
                        continue;
                    }
                }
                let mut left = per_round.min(spec.max_frames - done).max(1);
                while left > 0 {
                    let n = left.min(RAW_BATCH as u64) as usize;
                    let took = generator.send(n)?;
                    sent2.fetch_add(took as u64, Ordering::Relaxed);
                    left -= n as u64;
                    if took < n {
                        // The transmit path is full: give it a moment.
                        std::thread::yield_now();
                    }
                }
            }
            Ok(())
        });
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
            started: Instant::now(),
        })
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether the flood has stopped by itself (its bound reached).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops it; returns the frames sent and the rate (frames per second).
    pub fn stop(mut self) -> Result<(u64, f64)> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("flood thread panicked"))??;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        Ok((self.sent(), self.sent() as f64 / secs))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
