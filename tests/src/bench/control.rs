//! The control-plane part of the bench: Maglev table build times, and the memory the
//! flow maps take per flow.

use std::{net::Ipv4Addr, time::Instant};

use super::ctx::Ctx;
use crate::bench::{
    report::{MaglevRow, MemRow, Report},
    stats::Summary,
};
use anyhow::{Result, bail};
use lb_common::CtEntry;
use xvip::{
    control::maglev::{BackendId, MaglevBackend, build_table},
    dataplane::Dataplane,
};

/// The `maglev` part: table build times for 3, 100 and 1,000 backends.
pub fn maglev_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    const M: u32 = 65_537;
    for n in [3u32, 100, 1000] {
        let backends: Vec<MaglevBackend> = (0..n)
            .map(|i| MaglevBackend {
                id: BackendId {
                    addr: Ipv4Addr::new(198, 51, 100, (1 + i % 250) as u8).into(),
                    port: 6443 + (i / 250) as u16,
                },
                index: i,
                weight: 1,
            })
            .collect();
        let mut ms = Vec::new();
        for _ in 0..ctx.runs.max(5) {
            let t = Instant::now();
            let table = build_table(&backends, M)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(table);
        }
        report.maglev.push(MaglevRow {
            backends: n,
            table_size: M,
            ms: Summary::of(&ms),
        });
    }
    Ok(())
}

/// (map type, max entries, value size, memlock bytes) of every BPF map this process holds.
fn bpf_maps_memlock() -> Vec<(u32, u64, u64, u64)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return v;
    };
    for e in dir.flatten() {
        let link = std::fs::read_link(e.path()).unwrap_or_default();
        if link.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |k: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|x| x.trim_start_matches(':').trim().parse().ok())
                .unwrap_or(0)
        };
        v.push((
            field("map_type") as u32,
            field("max_entries"),
            field("value_size"),
            field("memlock"),
        ));
    }
    v
}

/// The `memory` part: what the two flow maps of a million entries lock per flow.
pub fn memory_part(ctx: &Ctx, report: &mut Report) -> Result<()> {
    const FLOWS: u32 = 1_000_000;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    // IPv4 only: `Dataplane::load` sizes the IPv6 confirmed maps like IPv4's (as the
    // daemon does once an IPv6 VIP is configured), which made four maps of a million here.
    let dp = Dataplane::load_pinned(&ctx.obj, FLOWS, false, None)?;
    let maps: Vec<_> = bpf_maps_memlock()
        .into_iter()
        .filter(|m| m.0 == BPF_MAP_TYPE_LRU_HASH && m.1 == FLOWS as u64)
        .collect();
    drop(dp);
    if maps.len() != 2 {
        bail!("expected the two flow maps of {FLOWS} entries, found {maps:?}");
    }
    let ct_size = size_of::<CtEntry>() as u64;
    let (ct, rev) = if maps[0].2 == ct_size {
        (maps[0].3, maps[1].3)
    } else {
        (maps[1].3, maps[0].3)
    };
    report.memory.push(MemRow {
        flows: FLOWS as u64,
        conntrack_bytes: ct,
        reverse_bytes: rev,
        bytes_per_flow: (ct + rev) as f64 / FLOWS as f64,
    });
    Ok(())
}
