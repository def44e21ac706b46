//! The benchmark harness behind `cargo xtask bench` (the `xvip-bench` binary): a veth lab
//! driven by an XDP traffic generator, kernel baselines (nftables, haproxy), TCP load,
//! control-plane timings, and the report writers. Nothing here runs in CI.

pub mod frame;
pub mod raw_gen;
pub mod report;
pub mod stats;
pub mod sync;
pub mod tcp;
pub mod xdp_lab;
