//! The BPF fixture harness shared by `tests/bpf_fixtures.rs` (IPv4) and
//! `tests/bpf_fixtures_v6.rs`: the daemon's XDP object loaded as is, frames run through it
//! with `BPF_PROG_TEST_RUN`, fixture rows, costs, counters and a seeded generator. Each test
//! file adds its own family's standard setup on top of [`Dp`].

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    CONFIG_FLAG_FAST_PATH_ONLY, CONFIG_FLAG_ICMP_ECHO, Config, Counters, PROGRAM_NAME, Reason,
    VipKey, map_names,
};

use crate::packets::LB_MAC;

/// XDP verdicts, as `BPF_PROG_TEST_RUN` returns them.
pub const XDP_ABORTED: u32 = 0;
/// See [`XDP_ABORTED`].
pub const XDP_DROP: u32 = 1;
/// See [`XDP_ABORTED`].
pub const XDP_PASS: u32 = 2;
/// See [`XDP_ABORTED`].
pub const XDP_TX: u32 = 3;
/// See [`XDP_ABORTED`].
pub const XDP_REDIRECT: u32 = 4;

/// The tc entry's verdicts (`xvip_tc`), as `BPF_PROG_TEST_RUN` returns them: pass is
/// `TC_ACT_UNSPEC` (-1, the interface's next program), drop `TC_ACT_SHOT`, `XDP_TX` and
/// redirects `TC_ACT_REDIRECT`.
pub const TC_NEXT: u32 = u32::MAX;
/// See [`TC_NEXT`].
pub const TC_SHOT: u32 = 2;
/// See [`TC_NEXT`].
pub const TC_REDIRECT: u32 = 7;
/// The tc entry's name in the object.
pub const TC_PROGRAM: &str = "xvip_tc";

/// The tc verdict that stands for XDP verdict `xdp`.
pub fn tc_verdict(xdp: u32) -> u32 {
    match xdp {
        XDP_PASS => TC_NEXT,
        XDP_TX | XDP_REDIRECT => TC_REDIRECT,
        _ => TC_SHOT,
    }
}

/// The daemon's XDP object: `XVIP_EBPF_OBJ`, else where `cargo xtask build` puts it.
pub fn object() -> PathBuf {
    std::env::var_os("XVIP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/bpfel-unknown-none/release/lb-ebpf")
        })
}

/// Sets the family's bit in `addr`'s `BACKEND_SLOTS` slot, as the daemon does for every
/// backend it writes.
pub fn mark_backend_slot<A: lb_common::Addr>(ebpf: &mut Ebpf, addr: A) {
    let mut m: Array<_, u32> =
        Array::try_from(ebpf.map_mut(map_names::BACKEND_SLOTS).unwrap()).unwrap();
    let slot = addr.backend_slot();
    let v = m.get(&slot, 0).unwrap() | A::BACKEND_SLOT_BIT;
    m.set(slot, &v, 0).unwrap();
}

/// Declares the test file's `struct Dp(tests::fixture::Dp)`, dereferencing to the shared
/// harness, so the file adds its family's standard setup as methods of its own `Dp`.
#[macro_export]
macro_rules! fixture_dp {
    () => {
        /// The loaded program and its maps, with this file's standard setup.
        struct Dp($crate::fixture::Dp);

        impl ::std::ops::Deref for Dp {
            type Target = $crate::fixture::Dp;
            fn deref(&self) -> &$crate::fixture::Dp {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for Dp {
            fn deref_mut(&mut self) -> &mut $crate::fixture::Dp {
                &mut self.0
            }
        }
    };
}

/// The loaded program and its maps, nothing configured.
pub struct Dp {
    /// The object, its XDP program loaded (not attached).
    pub ebpf: Ebpf,
}

impl Dp {
    /// Loads the object with `conntrack_size` entries in `CONNTRACK` and `REVERSE` (small, so
    /// loading is quick) and has the verifier check the program.
    ///
    /// # Panics
    /// When the object cannot be loaded or the verifier refuses the program.
    pub fn load(conntrack_size: u32) -> Self {
        let path = object();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::CONNTRACK, conntrack_size)
            .map_max_entries(map_names::REVERSE, conntrack_size)
            .load_file(&path)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .expect("program")
            .try_into()
            .expect("xdp");
        if let Err(e) = prog.load() {
            panic!("the verifier refused the program: {e:?}");
        }
        let tc: &mut SchedClassifier = ebpf
            .program_mut(TC_PROGRAM)
            .expect("tc program")
            .try_into()
            .expect("sched_cls");
        if let Err(e) = tc.load() {
            panic!("the verifier refused the tc program: {e:?}");
        }
        Self { ebpf }
    }

    /// Runs one frame through the tc entry (an skb built from it); returns the verdict and
    /// the frame as the program left it.
    pub fn run_tc(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let prog: &SchedClassifier = self.ebpf.program(TC_PROGRAM).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 64];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Mean cost in ns of `frame` run `repeat` times through the tc entry.
    pub fn cost_repeat_tc(&self, frame: &[u8], repeat: u32) -> u128 {
        let prog: &SchedClassifier = self.ebpf.program(TC_PROGRAM).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 64];
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .expect("tc test run")
        .duration
        .as_nanos()
    }

    /// Writes `CONFIG`: SNAT ports `min..=max`, ICMP echo answered, the LB's MAC.
    pub fn config(&mut self, min: u16, max: u16) {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
        let c = Config {
            snat_port_min: min,
            snat_port_max: max,
            flags: CONFIG_FLAG_ICMP_ECHO,
            if_mac: LB_MAC,
            _pad: [0; 2],
        };
        m.set(0, &c, 0).unwrap();
    }

    /// The XDP program.
    pub fn prog(&self) -> &Xdp {
        self.ebpf.program(PROGRAM_NAME).unwrap().try_into().unwrap()
    }

    /// Runs one frame; returns the verdict and the frame as the program left it.
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 64];
        let r = self
            .prog()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .expect("test run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// Mean cost in ns of `frame` run `repeat` times in the kernel (the frame as rewritten
    /// by the previous run is what the next one sees).
    pub fn cost_repeat(&self, frame: &[u8], repeat: u32) -> u128 {
        let mut out = vec![0u8; frame.len() + 64];
        self.prog()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })
            .expect("test run")
            .duration
            .as_nanos()
    }

    /// Mean of the kernel-measured cost of `n` single runs of the original frame.
    pub fn cost_single(&self, frame: &[u8], n: u32) -> u128 {
        (0..n).map(|_| self.cost_repeat(frame, 1)).sum::<u128>() / u128::from(n)
    }

    /// Packets counted for `r` over all CPUs.
    pub fn reason(&self, r: Reason) -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(map_names::REASONS).unwrap()).unwrap();
        m.get(&(r as u32), 0).unwrap().iter().sum()
    }

    /// A backend's handshake counters (`PASSIVE`) over all CPUs.
    pub fn passive(&self, backend_idx: u32) -> lb_common::Passive {
        let m: PerCpuArray<_, lb_common::Passive> =
            PerCpuArray::try_from(self.ebpf.map(map_names::PASSIVE).unwrap()).unwrap();
        m.get(&backend_idx, 0)
            .unwrap()
            .iter()
            .fold(lb_common::Passive::default(), |a, c| lb_common::Passive {
                syns: a.syns + c.syns,
                answered: a.answered + c.answered,
                refused: a.refused + c.refused,
            })
    }

    /// Sets (`on`) or clears one `CONFIG` flag, the others kept: the fast path's test hooks
    /// (`CONFIG_FLAG_NO_FAST_PATH`, `CONFIG_FLAG_FAST_PATH_ONLY`).
    pub fn config_flag(&mut self, flag: u32, on: bool) {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
        let mut c = m.get(&0, 0).unwrap();
        if on {
            c.flags |= flag;
        } else {
            c.flags &= !flag;
        }
        m.set(0, &c, 0).unwrap();
    }

    /// Runs one frame as [`Dp::run`] does, and tells whether the established fast path
    /// took it: first with `CONFIG_FLAG_FAST_PATH_ONLY` (a frame the fast path declines
    /// comes back `XDP_ABORTED`, untouched and uncounted), then, when declined, again
    /// without (where the fast path declines it again and the full path runs). Verdict,
    /// bytes and counters are those of one run with the fast path on.
    pub fn run_noting_fast(&mut self, frame: &[u8]) -> (u32, Vec<u8>, bool) {
        self.config_flag(CONFIG_FLAG_FAST_PATH_ONLY, true);
        let (v, out) = self.run(frame);
        self.config_flag(CONFIG_FLAG_FAST_PATH_ONLY, false);
        if v != XDP_ABORTED {
            return (v, out, true);
        }
        assert_eq!(out, frame, "a frame the fast path declined was changed");
        let (v, out) = self.run(frame);
        (v, out, false)
    }

    /// Every reason's count and the traffic counters of VIPs and backends `0..n`, summed
    /// over the CPUs: two runs of the same frames must end with the same.
    pub fn counters(&self, n: u32) -> (Vec<u64>, Vec<Counters>) {
        let reasons = Reason::ALL.iter().map(|r| self.reason(*r)).collect();
        let mut traffic = Vec::new();
        for name in [map_names::VIP_STATS, map_names::BACKEND_STATS] {
            let m: PerCpuArray<_, Counters> =
                PerCpuArray::try_from(self.ebpf.map(name).unwrap()).unwrap();
            for i in 0..n {
                traffic.push(
                    m.get(&i, 0)
                        .unwrap()
                        .iter()
                        .fold(Counters::default(), |a, c| Counters {
                            packets: a.packets + c.packets,
                            bytes: a.bytes + c.bytes,
                            new_flows: a.new_flows + c.new_flows,
                        }),
                );
            }
        }
        (reasons, traffic)
    }

    /// Writes `VIP_KEYS[index]` alone (the daemon writes it after the VIP's `VIPS` entry).
    pub fn set_vip_index_key(&mut self, index: u32, key: VipKey) {
        let mut keys: Array<_, VipKey> =
            Array::try_from(self.ebpf.map_mut(map_names::VIP_KEYS).unwrap()).unwrap();
        keys.set(index, &key, 0).unwrap();
    }
}

/// One row: a frame, what the program must do with it and why.
pub struct Fixture {
    /// What the row is about, in failure messages.
    pub name: &'static str,
    /// The frame fed to the program.
    pub input: Vec<u8>,
    /// The verdict expected.
    pub verdict: u32,
    /// The frame after the program; None: unchanged.
    pub output: Option<Vec<u8>>,
    /// The reason counted.
    pub reason: Reason,
}

/// A row whose frame leaves the program unchanged.
pub fn row(name: &'static str, input: Vec<u8>, verdict: u32, reason: Reason) -> Fixture {
    Fixture {
        name,
        input,
        verdict,
        output: None,
        reason,
    }
}

/// A row whose frame goes back out (`XDP_TX`) as `output`.
pub fn tx(name: &'static str, input: Vec<u8>, output: Vec<u8>, reason: Reason) -> Fixture {
    Fixture {
        name,
        input,
        verdict: XDP_TX,
        output: Some(output),
        reason,
    }
}

/// `b` in hex, for failure messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// splitmix64: tiny, seeded, reproducible (a failure can be replayed from its seed).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
