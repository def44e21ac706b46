//! The benchmark harness behind `cargo xtask bench` (the `xvip-bench` binary): a veth lab
//! driven by an XDP traffic generator, kernel baselines (nftables, haproxy), TCP load,
//! control-plane timings, and the report writers: a module per part of the bench
//! (`control`, `cost`, `passive`, `pps`, `pps_tc`, `nft`, `tcp_paths`, `sync`, `startup`, `peers`, `flows`, `storm`) over the shared `ctx` and
//! `setup`; the binary keeps the command line and the targets. Nothing here runs in CI.

pub mod control;
pub mod cost;
pub mod ctx;
pub mod flows;
pub mod frame;
pub mod nft;
pub mod passive;
pub mod peers;
pub mod pps;
pub mod pps_tc;
pub mod raw_gen;
pub mod report;
pub mod setup;
pub mod startup;
pub mod stats;
pub mod storm;
pub mod sync;
pub mod tcp;
pub mod tcp_paths;
pub mod xdp_lab;
