//! The lab helper programs' configuration (`lab-ebpf`, object `lab-xdp`): what the bench
//! writes into `GEN_CONFIG` and `REDIRECT_TO`. Behind the `lab` feature; the daemon never
//! loads these programs.

use bytemuck::{Pod, Zeroable};

/// `GEN_CONFIG` value (single entry, key 0): what `lab_gen` writes into every frame.
///
/// Flow `i` (0 <= i < `flows`) has source address `src_base + i / port_span` and source port
/// `first_port + i % port_span`. The checksums are those of the template frame (source
/// `tmpl_src`:`tmpl_sport`), updated per packet from these constants, never from the frame:
/// a recycled frame comes back rewritten by the program under test.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GenConfig {
    /// Interface the frames are redirected to (the generator's veth), in its namespace.
    pub ifindex: u32,
    /// Number of distinct flows cycled through, at least 1.
    pub flows: u32,
    /// Number of generator CPUs: CPU `c` sends flows `c, c + cpus, ...` so no two CPUs send
    /// the same flow at once.
    pub cpus: u32,
    /// First source address, host byte order.
    pub src_base: u32,
    /// Template source address, network byte order (raw, as in the frame).
    pub tmpl_src: u32,
    /// Destination address, network byte order.
    pub dst_addr: u32,
    /// First source port, host byte order.
    pub first_port: u16,
    /// Source ports per source address, at least 1.
    pub port_span: u16,
    /// Template source port, network byte order.
    pub tmpl_sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// Template IPv4 header checksum, host byte order.
    pub ip_check: u16,
    /// Template TCP checksum, host byte order.
    pub tcp_check: u16,
    /// Destination MAC (the LB's).
    pub dst_mac: [u8; 6],
    /// Source MAC (the generator's).
    pub src_mac: [u8; 6],
    /// TTL of the template.
    pub ttl: u8,
    /// Explicit padding to a multiple of 4 bytes.
    pub _pad: [u8; 3],
}

/// `REDIRECT_TO` value (single entry, key 0): where `lab_redirect`, the two-arm bare
/// forwarder, sends every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RedirectConfig {
    /// Interface to redirect to (the LB's second veth).
    pub ifindex: u32,
    /// Destination MAC written into the frame (the generator's second veth).
    pub dst_mac: [u8; 6],
    /// Source MAC written into the frame (the LB's second veth).
    pub src_mac: [u8; 6],
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C) with explicit padding (checked by bytemuck's Pod derive).
    unsafe impl aya::Pod for GenConfig {}
    unsafe impl aya::Pod for RedirectConfig {}
}
