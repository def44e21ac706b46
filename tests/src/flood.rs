//! Floods for the namespace lab: the benchmarks' live-frames generator (`lab_gen`) sending
//! from one lab host's `eth0`, on a thread of its own, until stopped or a bound is reached.

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
use aya::{
    Ebpf,
    maps::Array,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};

use crate::{
    bench::{
        frame::TcpFrame,
        gen_config::GenConfig,
        xdp_lab::{GEN_BATCH, GEN_REPEAT, GenSpec, enter_netns},
    },
    lab::{Lab, lab_object},
};

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
        let thread = std::thread::spawn(move || -> Result<()> {
            enter_netns(&ns)?;
            let mut ebpf = Ebpf::load_file(lab_object()).context("loading lab-xdp")?;
            let prog: &mut Xdp = ebpf.program_mut("lab_gen").context("lab_gen")?.try_into()?;
            prog.load().context("loading lab_gen")?;
            let eth0 = std::ffi::CString::new("eth0")?;
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(eth0.as_ptr()) };
            let (mut cfg, frame) = crate::bench::xdp_lab::gen_config(&gen_spec, &t, ifindex, 1);
            if spec.bad_checksum {
                cfg.tcp_check ^= 0x5a5a;
            }
            let mut m: Array<_, GenConfig> =
                Array::try_from(ebpf.map_mut("GEN_CONFIG").context("GEN_CONFIG")?)?;
            m.set(0, &cfg, 0)?;
            let prog: &Xdp = ebpf.program("lab_gen").context("lab_gen")?.try_into()?;
            let start = Instant::now();
            let end = start + spec.max_time;
            // Paced: 100 ms of traffic per call (a call has a fixed cost of its own), then
            // wait for the schedule.
            let per_call = spec.max_rate.map_or(GEN_REPEAT as u64, |r| {
                ((r / 10.0) as u64).clamp(1, GEN_REPEAT as u64)
            });
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
                let n = per_call.min(spec.max_frames - done).max(1) as u32;
                prog.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    repeat: n,
                    attrs: TestRunAttrs::new().xdp_live_frames(GEN_BATCH),
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN (live frames) of lab_gen")?;
                sent2.fetch_add(u64::from(n), Ordering::Relaxed);
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
