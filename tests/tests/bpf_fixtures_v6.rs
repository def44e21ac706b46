//! The XDP program's IPv6 path on packet fixtures, through `BPF_PROG_TEST_RUN`: every v6
//! verdict, each row {input frame, expected verdict, expected output frame, expected
//! counter}, the output compared byte for byte with a frame built independently by
//! etherparse (which computes every length and checksum itself; `lb_common::checksum` is
//! not used here). Rows run in order on one program, so a reply follows its flow's SYN. A
//! randomized run feeds a million valid and mutated v6 frames. Needs root and the object.

use std::path::PathBuf;

use aya::maps::{Array, HashMap, PerCpuArray};
use etherparse::{Icmpv6Type, PacketBuilder, icmpv6::DestUnreachableCode};
use lb_common::{
    ADDR_FLAG_SNAT, ADDR_FLAG_VIP, AddrSlot6, BACKEND_FLAG_PRESENT, Backend6,
    CONFIG_FLAG_NO_FAST_PATH, Config, IPPROTO_TCP, IPPROTO_UDP, Ip6, Reason, VIP_FLAG_DNAT,
    VIP_FLAG_FULLNAT, VipKey6, VipMeta6, ct_state, hash::flow_hash_of, ip6_raw, map_names,
    port_raw, ring_base,
};
use tests::fixture::{
    self, Fixture, Rng, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, hex, mark_backend_slot, row, tx,
};
use tests::packets::{
    BACKEND_MACS, BACKENDS, CLIENT, CLIENT_MAC, LB, LB_MAC, Pkt, VIP, tcp_flags::*,
};

const fn a6(last: u16, net: u16) -> [u8; 16] {
    let n = net.to_be_bytes();
    let l = last.to_be_bytes();
    [
        0x20, 0x01, 0x0d, 0xb8, n[0], n[1], 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1],
    ]
}

/// 2001:db8:3::10, the client; 2001:db8:1::100 and ::101 the VIPs (fullnat TCP 6443 and
/// UDP 53; DNAT TCP 6443), 2001:db8:1::2 the SNAT address, 2001:db8:2::11..13 backends.
const CLIENT6: [u8; 16] = a6(0x10, 3);
const VIP6: [u8; 16] = a6(0x100, 1);
const VIP6_DNAT: [u8; 16] = a6(0x101, 1);
const SNAT6: [u8; 16] = a6(0x2, 1);
const BACKENDS6: [[u8; 16]; 3] = [a6(0x11, 2), a6(0x12, 2), a6(0x13, 2)];
const ROUTER6: [u8; 16] = a6(0x1, 4);
const OTHER6: [u8; 16] = a6(0x7, 5);

/// VIP indices: shared with the v4 VIPs' space, so not 0..3 here.
const VIP_TCP: u32 = 5;
const VIP_UDP: u32 = 6;
const VIP_DNAT_TCP: u32 = 7;
/// Backend indices (shared space with BACKENDS): TCP 10..13 on 6443, UDP 13..16 on 5353.
const TCP_B: u32 = 10;
const UDP_B: u32 = 13;
const UDP_BACKEND_PORT: u16 = 5353;
const RING: u32 = 7;
const SNAT_MIN: u16 = 20000;
const SNAT_MAX: u16 = 59999;
/// Flows the tests track in `CONNTRACK` and `REVERSE`.
const CONNTRACK_SIZE: u32 = 1024;

tests::fixture_dp!();

impl Dp {
    fn standard() -> Self {
        let mut dp = Self(fixture::Dp::load(CONNTRACK_SIZE));
        dp.config(SNAT_MIN, SNAT_MAX);
        let mut backends: Array<_, Backend6> =
            Array::try_from(dp.ebpf.map_mut(map_names::BACKENDS6).unwrap()).unwrap();
        for (i, (addr, mac)) in BACKENDS6.iter().zip(BACKEND_MACS).enumerate() {
            for (base, port) in [(TCP_B, 6443), (UDP_B, UDP_BACKEND_PORT)] {
                let b = Backend6 {
                    addr: ip6_raw(*addr),
                    flags: BACKEND_FLAG_PRESENT,
                    ifindex: 0,
                    port: port_raw(port),
                    mac,
                    _pad: [0; 4],
                };
                backends.set(base + i as u32, &b, 0).unwrap();
            }
        }
        for addr in BACKENDS6 {
            mark_backend_slot(&mut dp.ebpf, ip6_raw(addr));
        }
        let mut addrs: HashMap<_, Ip6, u32> =
            HashMap::try_from(dp.ebpf.map_mut(map_names::VIP_ADDRS6).unwrap()).unwrap();
        addrs.insert(&ip6_raw(VIP6), &ADDR_FLAG_VIP, 0).unwrap();
        addrs
            .insert(&ip6_raw(VIP6_DNAT), &ADDR_FLAG_VIP, 0)
            .unwrap();
        addrs.insert(&ip6_raw(SNAT6), &ADDR_FLAG_SNAT, 0).unwrap();
        addrs.insert(&[0u32; 4], &1, 0).unwrap();
        let mut slots: Array<_, AddrSlot6> =
            Array::try_from(dp.ebpf.map_mut(map_names::VIP_SLOTS6).unwrap()).unwrap();
        let entries = [
            (ip6_raw(VIP6), ADDR_FLAG_VIP),
            (ip6_raw(VIP6_DNAT), ADDR_FLAG_VIP),
            (ip6_raw(SNAT6), ADDR_FLAG_SNAT),
            ([0u32; 4], 1),
        ];
        for (i, v) in lb_common::hash::addr_slots6(entries).iter().enumerate() {
            slots.set(i as u32, v, 0).unwrap();
        }
        let mut vips: HashMap<_, VipKey6, VipMeta6> =
            HashMap::try_from(dp.ebpf.map_mut(map_names::VIPS6).unwrap()).unwrap();
        let mut index_keys = Vec::new();
        for (addr, port, proto, index, flags) in [
            (VIP6, 6443, IPPROTO_TCP, VIP_TCP, VIP_FLAG_FULLNAT),
            (VIP6, 53, IPPROTO_UDP, VIP_UDP, VIP_FLAG_FULLNAT),
            (VIP6_DNAT, 6443, IPPROTO_TCP, VIP_DNAT_TCP, VIP_FLAG_DNAT),
        ] {
            let key = VipKey6 {
                addr: ip6_raw(addr),
                port: port_raw(port),
                proto,
                _pad: 0,
            };
            let meta = VipMeta6 {
                index,
                ring_size: RING,
                active_half: 0,
                flags,
                snat_addr: if flags & VIP_FLAG_DNAT != 0 {
                    [0; 4]
                } else {
                    ip6_raw(SNAT6)
                },
                _pad: 0,
            };
            vips.insert(&key, &meta, 0).unwrap();
            index_keys.push((index, key));
        }
        // As the daemon: `VIP_KEYS6` after the VIPs' `VIPS6` entries (the fast path's).
        let mut keys: Array<_, VipKey6> =
            Array::try_from(dp.ebpf.map_mut(map_names::VIP_KEYS6).unwrap()).unwrap();
        for (index, key) in index_keys {
            keys.set(index, &key, 0).unwrap();
        }
        let mut rings: Array<_, u32> =
            Array::try_from(dp.ebpf.map_mut(map_names::RINGS).unwrap()).unwrap();
        for (vip, first) in [(VIP_TCP, TCP_B), (VIP_UDP, UDP_B), (VIP_DNAT_TCP, TCP_B)] {
            for slot in 0..RING {
                rings
                    .set(ring_base(vip, 0) + slot, &(first + slot % 3), 0)
                    .unwrap();
            }
        }
        dp
    }

    /// Adds the IPv4 VIP (fullnat TCP 6443 on `VIP`, index 0) and its three backends
    /// (indices 0..3): the same data path serving both families, for costs side by side.
    fn add_v4(&mut self) {
        let mut backends: Array<_, lb_common::Backend> =
            Array::try_from(self.ebpf.map_mut(map_names::BACKENDS).unwrap()).unwrap();
        for (i, (addr, mac)) in BACKENDS.iter().zip(BACKEND_MACS).enumerate() {
            let b = lb_common::Backend {
                addr: lb_common::ip_raw(*addr),
                flags: BACKEND_FLAG_PRESENT,
                ifindex: 0,
                port: port_raw(6443),
                mac,
                _pad: [0; 4],
            };
            backends.set(i as u32, &b, 0).unwrap();
        }
        for addr in BACKENDS {
            mark_backend_slot(&mut self.ebpf, lb_common::ip_raw(addr));
        }
        let entries = [
            (lb_common::ip_raw(VIP), ADDR_FLAG_VIP),
            (lb_common::ip_raw(LB), ADDR_FLAG_SNAT),
        ];
        let mut addrs: HashMap<_, u32, u32> =
            HashMap::try_from(self.ebpf.map_mut(map_names::VIP_ADDRS).unwrap()).unwrap();
        for (a, f) in entries {
            addrs.insert(&a, &f, 0).unwrap();
        }
        let mut slots: Array<_, u64> =
            Array::try_from(self.ebpf.map_mut(map_names::VIP_SLOTS).unwrap()).unwrap();
        for (i, v) in lb_common::hash::addr_slots(entries).iter().enumerate() {
            if *v != 0 {
                slots.set(i as u32, v, 0).unwrap();
            }
        }
        let mut vips: HashMap<_, lb_common::VipKey, lb_common::VipMeta> =
            HashMap::try_from(self.ebpf.map_mut(map_names::VIPS).unwrap()).unwrap();
        let key = lb_common::VipKey {
            addr: lb_common::ip_raw(VIP),
            port: port_raw(6443),
            proto: IPPROTO_TCP,
            _pad: 0,
        };
        let meta = lb_common::VipMeta {
            index: 0,
            ring_size: RING,
            active_half: 0,
            flags: VIP_FLAG_FULLNAT,
            snat_addr: lb_common::ip_raw(LB),
            _pad: 0,
        };
        vips.insert(&key, &meta, 0).unwrap();
        self.set_vip_index_key(0, key);
        let mut rings: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(map_names::RINGS).unwrap()).unwrap();
        for slot in 0..RING {
            rings.set(ring_base(0, 0) + slot, &(slot % 3), 0).unwrap();
        }
    }

    /// Writes one `VIP_SLOTS6` slot.
    fn set_slot6(&mut self, slot: u32, v: AddrSlot6) {
        let mut slots: Array<_, AddrSlot6> =
            Array::try_from(self.ebpf.map_mut(map_names::VIP_SLOTS6).unwrap()).unwrap();
        slots.set(slot, &v, 0).unwrap();
    }
}

/// A transport header of a v6 frame.
#[derive(Clone, Copy)]
enum L4 {
    Tcp {
        seq: u32,
        ack: Option<u32>,
        syn: bool,
    },
    Udp,
    Echo {
        id: u16,
        seq: u16,
    },
}

/// One IPv6 frame, built by etherparse.
#[derive(Clone)]
struct P6 {
    smac: [u8; 6],
    dmac: [u8; 6],
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    hop: u8,
    l4: L4,
    payload: Vec<u8>,
}

impl P6 {
    fn tcp(src: ([u8; 16], u16), dst: ([u8; 16], u16), syn: bool) -> Self {
        Self {
            smac: CLIENT_MAC,
            dmac: LB_MAC,
            src,
            dst,
            hop: 64,
            l4: L4::Tcp {
                seq: 1000,
                // Acknowledges the default initial sequence number 1000 of the other end.
                ack: (!syn).then_some(1001),
                syn,
            },
            payload: Vec::new(),
        }
    }
    fn udp(src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> Self {
        Self {
            l4: L4::Udp,
            payload: b"v6 query".to_vec(),
            ..Self::tcp(src, dst, true)
        }
    }
    fn macs(mut self, smac: [u8; 6], dmac: [u8; 6]) -> Self {
        (self.smac, self.dmac) = (smac, dmac);
        self
    }
    /// Sequence and acknowledgment numbers (`ack` only on a segment with the ACK flag).
    fn seq_ack(mut self, n: u32, a: u32) -> Self {
        if let L4::Tcp { seq, ack, .. } = &mut self.l4 {
            *seq = n;
            if ack.is_some() {
                *ack = Some(a);
            }
        }
        self
    }
    fn hop(mut self, hop: u8) -> Self {
        self.hop = hop;
        self
    }
    /// The same packet as the program should have translated it.
    fn to(&self, src: ([u8; 16], u16), dst: ([u8; 16], u16), dmac: [u8; 6]) -> Self {
        Self {
            smac: LB_MAC,
            dmac,
            src,
            dst,
            hop: self.hop - 1,
            ..self.clone()
        }
    }
    /// The IPv6 packet without Ethernet.
    fn ip(&self) -> Vec<u8> {
        self.bytes()[14..].to_vec()
    }
    fn bytes(&self) -> Vec<u8> {
        let b =
            PacketBuilder::ethernet2(self.smac, self.dmac).ipv6(self.src.0, self.dst.0, self.hop);
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { seq, ack, syn } => {
                let mut t = b.tcp(self.src.1, self.dst.1, seq, 64240);
                if syn {
                    t = t.syn();
                }
                if let Some(a) = ack {
                    t = t.ack(a);
                }
                t.write(&mut out, &self.payload).unwrap();
            }
            L4::Udp => b
                .udp(self.src.1, self.dst.1)
                .write(&mut out, &self.payload)
                .unwrap(),
            L4::Echo { id, seq } => b
                .icmpv6_echo_request(id, seq)
                .write(&mut out, &self.payload)
                .unwrap(),
        }
        out
    }
}

/// An ICMPv6 message `t` from `src` to `dst` quoting `quote` (an IPv6 packet).
fn icmp6(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 16],
    dst: [u8; 16],
    hop: u8,
    t: Icmpv6Type,
    quote: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src, dst, hop)
        .icmpv6(t)
        .write(&mut out, quote)
        .unwrap();
    out
}

const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_DEST_OPTS: u8 = 60;

/// An 8-byte extension header of type `t` (its next-header byte filled in by `with_ext`).
fn ext(t: u8, segments_left: u8) -> (u8, Vec<u8>) {
    match t {
        // PadN over the six option bytes.
        NH_HOP_BY_HOP | NH_DEST_OPTS => (t, vec![0, 0, 1, 4, 0, 0, 0, 0]),
        NH_ROUTING => (t, vec![0, 0, 253, segments_left, 0, 0, 0, 0]),
        _ => unreachable!(),
    }
}

/// A fragment header: `offset` in bytes (a multiple of 8), `more` the M flag.
fn frag(offset: u16, more: bool) -> (u8, Vec<u8>) {
    let w = offset | more as u16;
    let [a, b] = w.to_be_bytes();
    (NH_FRAGMENT, vec![0, 0, a, b, 0, 0, 0x12, 0x34])
}

/// `frame` with extension headers inserted after its fixed IPv6 header: the chain of
/// next-header bytes and the payload length follow. The transport checksum needs no
/// change (its pseudo-header has the upper-layer length, not the payload length).
fn with_ext(frame: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = frame[..54].to_vec();
    let upper = out[20];
    let mut chain: Vec<u8> = exts.iter().map(|e| e.0).collect();
    chain.push(upper);
    out[20] = chain[0];
    let mut total = 0;
    for (i, (_, body)) in exts.iter().enumerate() {
        let mut b = body.clone();
        b[0] = chain[i + 1];
        total += b.len();
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(&frame[54..]);
    let len = u16::from_be_bytes([out[18], out[19]]) + total as u16;
    out[18..20].copy_from_slice(&len.to_be_bytes());
    out
}

/// The backend index and SNAT port the program picks for a new flow to a VIP.
fn pick(client: ([u8; 16], u16), vip: ([u8; 16], u16), proto: u8) -> (usize, u16) {
    let h = flow_hash_of(
        ip6_raw(client.0),
        ip6_raw(vip.0),
        port_raw(client.1),
        port_raw(vip.1),
        proto,
    );
    let slot = h % RING;
    let range = u32::from(SNAT_MAX - SNAT_MIN) + 1;
    (
        (slot % 3) as usize,
        (u32::from(SNAT_MIN) + h % range) as u16,
    )
}

/// A fullnat flow's forward and reply translations (the client at port `sport`).
struct Flow6 {
    syn: P6,
    syn_out: P6,
    backend: usize,
    snat_port: u16,
}

fn fullnat_flow(sport: u16) -> Flow6 {
    let client = (CLIENT6, sport);
    let vip = (VIP6, 6443);
    let (b, port) = pick(client, vip, IPPROTO_TCP);
    let syn = P6::tcp(client, vip, true);
    let syn_out = syn.to((SNAT6, port), (BACKENDS6[b], 6443), BACKEND_MACS[b]);
    Flow6 {
        syn,
        syn_out,
        backend: b,
        snat_port: port,
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut rows = Vec::new();
    let f = fullnat_flow(40000);
    let (b, sp) = (f.backend, f.snat_port);
    rows.push(tx(
        "TCP SYN to the v6 VIP (fullnat): to a backend from the SNAT address",
        f.syn.bytes(),
        f.syn_out.bytes(),
        Reason::TxForward,
    ));
    let synack = P6::tcp((BACKENDS6[b], 6443), (SNAT6, sp), true).macs(BACKEND_MACS[b], LB_MAC);
    let synack_out = synack.to((VIP6, 6443), (CLIENT6, 40000), CLIENT_MAC);
    rows.push(tx(
        "backend's SYN-ACK (fullnat): to the client from the VIP",
        synack.bytes(),
        synack_out.bytes(),
        Reason::TxReply,
    ));
    let ack = P6::tcp((CLIENT6, 40000), (VIP6, 6443), false);
    let ack_out = ack.to((SNAT6, sp), (BACKENDS6[b], 6443), BACKEND_MACS[b]);
    rows.push(tx(
        "client's ACK confirms the v6 flow, same backend and port",
        ack.bytes(),
        ack_out.bytes(),
        Reason::TxForward,
    ));

    // DNAT: the backend sees the client.
    let client = (CLIENT6, 40001);
    let (db, _) = pick(client, (VIP6_DNAT, 6443), IPPROTO_TCP);
    let dsyn = P6::tcp(client, (VIP6_DNAT, 6443), true);
    rows.push(tx(
        "TCP SYN to the v6 DNAT VIP: to a backend, the client's source kept",
        dsyn.bytes(),
        dsyn.to(client, (BACKENDS6[db], 6443), BACKEND_MACS[db])
            .bytes(),
        Reason::TxForward,
    ));
    let dreply = P6::tcp((BACKENDS6[db], 6443), client, true).macs(BACKEND_MACS[db], LB_MAC);
    rows.push(tx(
        "DNAT reply: to the client from the VIP",
        dreply.bytes(),
        dreply.to((VIP6_DNAT, 6443), client, CLIENT_MAC).bytes(),
        Reason::TxReply,
    ));

    // UDP (checksum mandatory in IPv6).
    let uclient = (CLIENT6, 40002);
    let (ub, up) = pick(uclient, (VIP6, 53), IPPROTO_UDP);
    let udp = P6::udp(uclient, (VIP6, 53));
    rows.push(tx(
        "UDP to the v6 VIP: to a backend, checksum updated over 128-bit addresses",
        udp.bytes(),
        udp.to(
            (SNAT6, up),
            (BACKENDS6[ub], UDP_BACKEND_PORT),
            BACKEND_MACS[ub],
        )
        .bytes(),
        Reason::TxForward,
    ));
    let mut zero = P6::udp((CLIENT6, 40003), (VIP6, 53)).bytes();
    zero[14 + 40 + 6] = 0;
    zero[14 + 40 + 7] = 0;
    rows.push(row(
        "UDP with checksum 0 to the v6 VIP (invalid in IPv6): dropped",
        zero,
        XDP_DROP,
        Reason::DropBadHeader,
    ));

    // Extension headers: walked, kept, the transport header translated.
    for (name, sport, exts) in [
        (
            "hop-by-hop options: translated, the header kept",
            40010,
            vec![ext(NH_HOP_BY_HOP, 0)],
        ),
        (
            "hop-by-hop, routing (no segments left), destination options: translated",
            40011,
            vec![
                ext(NH_HOP_BY_HOP, 0),
                ext(NH_ROUTING, 0),
                ext(NH_DEST_OPTS, 0),
            ],
        ),
        (
            "first fragment of TCP (offset 0, M): translated",
            40012,
            vec![frag(0, true)],
        ),
    ] {
        let f = fullnat_flow(sport);
        rows.push(tx(
            name,
            with_ext(&f.syn.bytes(), &exts),
            with_ext(&f.syn_out.bytes(), &exts),
            Reason::TxForward,
        ));
    }
    let syn = P6::tcp((CLIENT6, 40020), (VIP6, 6443), true).bytes();
    rows.push(row(
        "routing header with segments left (the VIP is not the final hop): dropped",
        with_ext(&syn, &[ext(NH_ROUTING, 1)]),
        XDP_DROP,
        Reason::DropExtHeader,
    ));
    rows.push(row(
        "five extension headers: dropped",
        with_ext(
            &syn,
            &[
                ext(NH_HOP_BY_HOP, 0),
                ext(NH_DEST_OPTS, 0),
                ext(NH_ROUTING, 0),
                ext(NH_DEST_OPTS, 0),
                ext(NH_DEST_OPTS, 0),
            ],
        ),
        XDP_DROP,
        Reason::DropExtHeader,
    ));
    rows.push(row(
        "hop-by-hop options not first: dropped",
        with_ext(&syn, &[ext(NH_DEST_OPTS, 0), ext(NH_HOP_BY_HOP, 0)]),
        XDP_DROP,
        Reason::DropBadHeader,
    ));
    rows.push(row(
        "later fragment (offset 8) to the VIP: no ports, dropped",
        with_ext(&syn, &[frag(8, false)]),
        XDP_DROP,
        Reason::DropFragment,
    ));
    let echo = P6 {
        l4: L4::Echo { id: 7, seq: 1 },
        payload: b"ping6".to_vec(),
        ..P6::tcp((CLIENT6, 0), (VIP6, 0), true)
    };
    rows.push(row(
        "first fragment of ICMPv6 to the VIP: dropped",
        with_ext(&echo.bytes(), &[frag(0, true)]),
        XDP_DROP,
        Reason::DropFragment,
    ));
    rows.push(row(
        "later fragment to the SNAT address: passed (may be the node's own)",
        with_ext(
            &P6::tcp((BACKENDS6[0], 6443), (SNAT6, 20001), false).bytes(),
            &[frag(8, false)],
        ),
        XDP_PASS,
        Reason::PassNotForVip,
    ));

    // Hop limit, headers.
    rows.push(row(
        "hop limit 1 to the VIP: passed (the kernel sends time exceeded)",
        P6::tcp((CLIENT6, 40030), (VIP6, 6443), true).hop(1).bytes(),
        XDP_PASS,
        Reason::PassTtlExpired,
    ));
    let mut v4 = syn.clone();
    v4[14] = 0x40 | (v4[14] & 0x0f);
    rows.push(row(
        "version 4 in an IPv6 EtherType to the VIP: dropped",
        v4,
        XDP_DROP,
        Reason::DropBadHeader,
    ));
    let mut long = syn.clone();
    long[18..20].copy_from_slice(&200u16.to_be_bytes());
    rows.push(row(
        "payload length beyond the frame: dropped",
        long,
        XDP_DROP,
        Reason::DropTruncated,
    ));
    rows.push(row(
        "cut inside the TCP header: dropped",
        syn[..14 + 40 + 10].to_vec(),
        XDP_DROP,
        Reason::DropTruncated,
    ));
    rows.push(row(
        "cut inside the fixed IPv6 header: passed (destination unknown)",
        syn[..14 + 30].to_vec(),
        XDP_PASS,
        Reason::PassMalformed,
    ));
    rows.push(row(
        "IPv6 to nobody of ours: passed",
        P6::tcp((CLIENT6, 40031), (OTHER6, 443), true).bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    rows.push(row(
        "TCP to the VIP on a port not served: passed",
        P6::tcp((CLIENT6, 40032), (VIP6, 22), true).bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    rows.push(row(
        "to the VIP in a frame for another host's MAC: passed",
        P6::tcp((CLIENT6, 40033), (VIP6, 6443), true)
            .macs(CLIENT_MAC, [2, 0, 0, 0, 9, 9])
            .bytes(),
        XDP_PASS,
        Reason::PassOtherHost,
    ));
    let mut esp = syn.clone();
    esp[20] = 50;
    rows.push(row(
        "ESP to the VIP: dropped",
        esp,
        XDP_DROP,
        Reason::DropUnknownProto,
    ));

    // ICMPv6.
    let echo_out = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(LB_MAC, CLIENT_MAC)
            .ipv6(VIP6, CLIENT6, 64)
            .icmpv6_echo_reply(7, 1)
            .write(&mut out, b"ping6")
            .unwrap();
        out
    };
    rows.push(tx(
        "echo request to the v6 VIP: answered",
        echo.bytes(),
        echo_out,
        Reason::IcmpEchoReply,
    ));
    rows.push(row(
        "neighbor solicitation unicast to the VIP: the kernel's",
        icmp6(
            (CLIENT_MAC, LB_MAC),
            CLIENT6,
            VIP6,
            255,
            Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: 0,
                bytes5to8: [0; 4],
            },
            &VIP6,
        ),
        XDP_PASS,
        Reason::PassIcmp,
    ));
    // Packet too big from a router on the client's path, about what we sent the client
    // (VIP -> client): to the backend, as about what it sent (backend -> SNAT address).
    let to_client = synack_out.clone().hop(60);
    let to_backend_quote = P6::tcp((BACKENDS6[b], 6443), (SNAT6, sp), true).hop(60);
    rows.push(tx(
        "packet too big about a VIP -> client packet: to the backend (path MTU discovery)",
        icmp6(
            (CLIENT_MAC, LB_MAC),
            ROUTER6,
            VIP6,
            64,
            Icmpv6Type::PacketTooBig { mtu: 1280 },
            &to_client.ip(),
        ),
        icmp6(
            (LB_MAC, BACKEND_MACS[b]),
            SNAT6,
            BACKENDS6[b],
            63,
            Icmpv6Type::PacketTooBig { mtu: 1280 },
            &to_backend_quote.ip(),
        ),
        Reason::IcmpErrorToBackend,
    ));
    // Destination unreachable from the backend about what we sent it: to the client, as
    // about what it sent the VIP, from the VIP.
    let sent = ack_out.clone().hop(63);
    let client_sent = ack.clone().hop(63);
    rows.push(tx(
        "destination unreachable from the backend: to the client, from the VIP",
        icmp6(
            (BACKEND_MACS[b], LB_MAC),
            BACKENDS6[b],
            SNAT6,
            64,
            Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
            &sent.ip(),
        ),
        icmp6(
            (LB_MAC, CLIENT_MAC),
            VIP6,
            CLIENT6,
            63,
            Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
            &client_sent.ip(),
        ),
        Reason::IcmpErrorTranslated,
    ));
    rows.push(tx(
        "time exceeded from a router on the backend's side: to the client, source kept",
        icmp6(
            (BACKEND_MACS[b], LB_MAC),
            ROUTER6,
            SNAT6,
            64,
            Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded),
            &sent.ip(),
        ),
        icmp6(
            (LB_MAC, CLIENT_MAC),
            ROUTER6,
            CLIENT6,
            63,
            Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded),
            &client_sent.ip(),
        ),
        Reason::IcmpErrorTranslated,
    ));
    rows.push(row(
        "packet too big about no tracked flow: the kernel's",
        icmp6(
            (CLIENT_MAC, LB_MAC),
            ROUTER6,
            VIP6,
            64,
            Icmpv6Type::PacketTooBig { mtu: 1280 },
            &P6::tcp((VIP6, 6443), (CLIENT6, 1), true).ip(),
        ),
        XDP_PASS,
        Reason::PassIcmp,
    ));
    settled_rows(&mut rows);
    rows
}

/// IPv6 flows taken to `TCP_ESTABLISHED` (data both ways) and a UDP flow confirmed, then
/// their packets: those marked "(fast path)" are the established fast path's, the others
/// its edges, left to the full path.
fn settled_rows(rows: &mut Vec<Fixture>) {
    for (vip, dnat) in [((VIP6, 6443), false), ((VIP6_DNAT, 6443), true)] {
        let c = (CLIENT6, if dnat { 40031 } else { 40030 });
        let (b, sp) = pick(c, vip, IPPROTO_TCP);
        // Where the backend sees the flow from, and what it answers to.
        let tuple = if dnat { c } else { (SNAT6, sp) };
        let back = (BACKENDS6[b], 6443);
        let client = |seq: u32, data: &[u8]| {
            let mut p = P6::tcp(c, vip, false).seq_ack(seq, 1001);
            p.payload = data.to_vec();
            p
        };
        let backend = |seq: u32, ack: u32, data: &[u8]| {
            let mut p = P6::tcp(back, tuple, false)
                .macs(BACKEND_MACS[b], LB_MAC)
                .seq_ack(seq, ack);
            p.payload = data.to_vec();
            p
        };
        let mode = if dnat { "dnat" } else { "fullnat" };
        let steps: [(&'static str, P6, bool); 10] = [
            ("SYN", P6::tcp(c, vip, true), true),
            (
                "SYN-ACK",
                P6::tcp(back, tuple, true).macs(BACKEND_MACS[b], LB_MAC),
                false,
            ),
            (
                "proven ACK with data: confirmed",
                client(1001, b"hello"),
                true,
            ),
            ("backend's data", backend(1001, 1006, b"world"), false),
            ("client's data: established", client(1006, b"again"), true),
            ("established data (fast path)", client(1011, b"fast!"), true),
            ("established bare ACK (fast path)", client(1016, b""), true),
            (
                "established reply (fast path)",
                backend(1006, 1016, b"reply"),
                false,
            ),
            (
                "established reply beyond the recorded position's slack",
                backend(1006 + (1 << 17), 1016, b""),
                false,
            ),
            (
                "established data past the slack (the full path records it)",
                client(1011 + (1 << 16), b""),
                true,
            ),
        ];
        for (what, p, forward) in steps {
            let name: &'static str =
                Box::leak(format!("v6 settled {mode}: {what}").into_boxed_str());
            let out = if forward {
                p.to(tuple, back, BACKEND_MACS[b])
            } else {
                p.to(vip, c, CLIENT_MAC)
            };
            rows.push(tx(
                name,
                p.bytes(),
                out.bytes(),
                if forward {
                    Reason::TxForward
                } else {
                    Reason::TxReply
                },
            ));
        }
    }
    let c = (CLIENT6, 40032);
    let (b, sp) = pick(c, (VIP6, 53), IPPROTO_UDP);
    let back = (BACKENDS6[b], UDP_BACKEND_PORT);
    let q = P6::udp(c, (VIP6, 53));
    let q_out = q.to((SNAT6, sp), back, BACKEND_MACS[b]);
    let a = P6::udp(back, (SNAT6, sp)).macs(BACKEND_MACS[b], LB_MAC);
    let a_out = a.to((VIP6, 53), c, CLIENT_MAC);
    rows.push(tx(
        "v6 settled UDP: first query",
        q.bytes(),
        q_out.bytes(),
        Reason::TxForward,
    ));
    rows.push(tx(
        "v6 settled UDP: first answer, confirmed",
        a.bytes(),
        a_out.bytes(),
        Reason::TxReply,
    ));
    rows.push(tx(
        "v6 settled UDP: query (fast path)",
        q.bytes(),
        q_out.bytes(),
        Reason::TxForward,
    ));
    rows.push(tx(
        "v6 settled UDP: answer (fast path)",
        a.bytes(),
        a_out.bytes(),
        Reason::TxReply,
    ));
    rows.push(row(
        "v6 settled UDP: hop limit 1, passed to the stack",
        q.clone().hop(1).bytes(),
        XDP_PASS,
        Reason::PassTtlExpired,
    ));
    let mut zero = q.bytes();
    zero[14 + 40 + 6] = 0;
    zero[14 + 40 + 7] = 0;
    rows.push(row(
        "v6 settled UDP: checksum 0, dropped by the full path",
        zero,
        XDP_DROP,
        Reason::DropBadHeader,
    ));
}

/// Every row with the established fast path (`fast`) or without it
/// (`CONFIG_FLAG_NO_FAST_PATH`): the failures, the counters after the last row, and the
/// rows the fast path took.
fn run_v6_rows(fast: bool) -> (Vec<String>, FixtureCounters, Vec<&'static str>) {
    let mut dp = Dp::standard();
    dp.config_flag(CONFIG_FLAG_NO_FAST_PATH, !fast);
    let mut failures = Vec::new();
    let mut taken = Vec::new();
    for r in fixtures() {
        let before = dp.reason(r.reason);
        let (verdict, out) = if fast {
            let (v, out, by_fast) = dp.run_noting_fast(&r.input);
            if by_fast {
                taken.push(r.name);
            }
            (v, out)
        } else {
            dp.run(&r.input)
        };
        if verdict != r.verdict {
            failures.push(format!("{}: verdict {verdict}, want {}", r.name, r.verdict));
            continue;
        }
        if dp.reason(r.reason) != before + 1 {
            failures.push(format!(
                "{}: counter {:?} not incremented",
                r.name, r.reason
            ));
        }
        let want = r.output.as_deref().unwrap_or(&r.input);
        if out != want {
            failures.push(format!(
                "{}: output differs\n  got  {}\n  want {}",
                r.name,
                hex(&out),
                hex(want)
            ));
        }
    }
    (failures, dp.counters(16), taken)
}

/// Reasons, then the traffic counters of VIPs and backends 0..16.
type FixtureCounters = (Vec<u64>, Vec<lb_common::Counters>);

/// The rows twice, with the established fast path and without it: each run gets every
/// row right, both end with the same counters, and the fast path takes exactly the rows
/// marked "(fast path)".
#[test]
fn v6_fixtures_translate_every_packet_class_byte_for_byte() {
    let (mut failures, fast_counters, taken) = run_v6_rows(true);
    let (full_failures, full_counters, _) = run_v6_rows(false);
    failures.extend(
        full_failures
            .into_iter()
            .map(|f| format!("without the fast path: {f}")),
    );
    for r in fixtures() {
        let marked = r.name.contains("(fast path)");
        if marked != taken.contains(&r.name) {
            failures.push(format!(
                "{}: {} by the fast path",
                r.name,
                if marked { "not taken" } else { "taken" }
            ));
        }
    }
    if fast_counters != full_counters {
        failures.push(format!(
            "counters differ:\n  fast path {fast_counters:?}\n  full path {full_counters:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The tc entry (`--attach tc`) on the IPv6 rows: the same bytes, the same verdict in tc's
/// terms, the same counter (tagged rows, and replies of the flows they would start, are
/// left alone there: `pass_tc_unhandled`, as in `bpf_fixtures`); frames the kernel builds
/// no skb from in a test run (shorter than an IPv6 header) are XDP's alone.
#[test]
fn v6_the_tc_entry_gives_every_row_the_same_bytes_and_verdict() {
    let dp = Dp::standard();
    let mut failures = Vec::new();
    let tag = |b: &[u8]| matches!(u16::from_be_bytes([b[12], b[13]]), 0x8100 | 0x88a8);
    let mut compared = 0;
    for r in fixtures() {
        let out_tagged = r.output.as_ref().is_some_and(|o| tag(o));
        if (tag(&r.input) && r.input.len() >= 18) || out_tagged {
            continue;
        }
        let before = dp.reason(r.reason);
        let (verdict, out) = match dp.run_tc(&r.input) {
            Ok(v) => v,
            Err(_) if r.input.len() < 14 + 40 => continue,
            Err(e) => {
                failures.push(format!("{}: tc test run: {e}", r.name));
                continue;
            }
        };
        compared += 1;
        let want_verdict = fixture::tc_verdict(r.verdict);
        if verdict != want_verdict {
            failures.push(format!(
                "{}: tc verdict {verdict}, want {want_verdict}",
                r.name
            ));
            continue;
        }
        if dp.reason(r.reason) != before + 1 {
            failures.push(format!(
                "{}: counter {:?} not incremented",
                r.name, r.reason
            ));
        }
        let want = r.output.as_deref().unwrap_or(&r.input);
        if out != want {
            failures.push(format!(
                "{}: tc output differs\n  got  {}\n  want {}",
                r.name,
                hex(&out),
                hex(want)
            ));
        }
    }
    println!(
        "tc entry: {compared} of {} IPv6 rows compared",
        fixtures().len()
    );
    assert!(
        compared * 4 >= fixtures().len() * 3,
        "only {compared} rows compared"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_million_random_v6_frames_keep_the_invariants() {
    let dp = Dp::standard();
    let mut rng = Rng(0x6d6c_7876_6970_3600);
    let mut seeds: Vec<Vec<u8>> = fixtures().into_iter().map(|r| r.input).collect();
    seeds.push(P6::tcp((CLIENT6, 1), (OTHER6, 80), true).bytes());
    seeds.push(P6::udp((ROUTER6, 1), (OTHER6, 53)).bytes());
    let (mut aborted, mut altered) = (0u32, 0u32);
    // Valid or broken, every frame keeps the invariants below.
    for i in 0..1_000_000u32 {
        let mut f = seeds[rng.below(seeds.len())].clone();
        // Mutate a few bytes past the Ethernet header, sometimes cut or extend.
        for _ in 0..1 + rng.below(4) {
            let at = 14 + rng.below(f.len().saturating_sub(14).max(1));
            if at < f.len() {
                f[at] = rng.next_u64() as u8;
            }
        }
        match rng.below(8) {
            0 => f.truncate(14 + rng.below(f.len() - 14 + 1)),
            1 => f.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
            _ => {}
        }
        if f.len() < 14 {
            continue;
        }
        let valid_in = valid_transport(&f);
        let windows = dp.reason(Reason::DropOutOfWindow);
        let (verdict, out) = dp.run(&f);
        let ours = [VIP6, VIP6_DNAT, SNAT6];
        let dst_ours = f.len() >= 54 && ours.iter().any(|a| f[38..54] == a[..]);
        let bad = match verdict {
            XDP_ABORTED => Some("aborted"),
            // Passed or dropped: untouched; for none of our addresses: passed.
            XDP_PASS | XDP_DROP if out != f => Some("modified, yet not sent"),
            // ... but a tracked flow's FIN or RST out of its window (a DNAT reply).
            XDP_DROP if !dst_ours && dp.reason(Reason::DropOutOfWindow) == windows => {
                Some("dropped, yet not addressed to us")
            }
            XDP_PASS | XDP_DROP => None,
            // Sent: valid if it came in valid (an incremental update keeps a broken
            // checksum broken); to an address not ours only as a translated reply (a
            // DNAT flow's client: random sources make such flows), from a VIP.
            XDP_TX if valid_in && !valid_transport(&out) => Some("sent with a bad checksum"),
            XDP_TX if !dst_ours && !(out[22..38] == VIP6 || out[22..38] == VIP6_DNAT) => {
                Some("sent, yet neither for us nor a reply from a VIP")
            }
            XDP_TX => None,
            _ => Some("unexpected verdict"),
        };
        if let Some(what) = bad {
            altered += 1;
            if altered < 5 {
                eprintln!("frame {i}: {what}\n  in  {}\n  out {}", hex(&f), hex(&out));
            }
        }
        if verdict == XDP_ABORTED {
            aborted += 1;
        }
    }
    assert_eq!(aborted, 0, "aborted runs");
    assert_eq!(altered, 0, "frames breaking an invariant");
}

/// Whether a sent frame's TCP or UDP checksum (no extension headers) or ICMPv6 checksum
/// verifies; other frames (extension headers) are only required to parse.
fn valid_transport(frame: &[u8]) -> bool {
    let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
        return false;
    };
    if !ip.extensions().is_empty() {
        return true;
    }
    let h = ip.header();
    let (src, dst) = (h.source(), h.destination());
    match &p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => {
            t.calc_checksum_ipv6(src, dst).ok() == Some(t.checksum())
        }
        Some(etherparse::TransportSlice::Udp(u)) => {
            let hdr = u.to_header();
            hdr.calc_checksum_ipv6_raw(src, dst, u.payload()).ok() == Some(hdr.checksum)
        }
        Some(etherparse::TransportSlice::Icmpv6(c)) => {
            let hdr = c.header();
            hdr.icmp_type.calc_checksum(src, dst, c.payload()).ok() == Some(hdr.checksum)
        }
        _ => true,
    }
}

/// Per-packet cost of the v6 classes beside the v4 ones of the same kind (the bench
/// reports these next to each other; here only printed and recorded).
#[test]
fn v6_costs_per_packet_class() {
    const REPEAT: u32 = 100_000;
    let dp = Dp::standard();
    let mut rows = Vec::new();
    for r in fixtures() {
        let _ = dp.run(&r.input);
        rows.push((r.name, r.verdict, dp.cost_repeat(&r.input, REPEAT)));
    }
    println!("\n{:<90} {:>8} {:>10}", "v6 class", "verdict", "ns/pkt");
    for (n, v, c) in &rows {
        println!("{n:<90} {v:>8} {c:>10}");
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let json: Vec<String> = rows
            .iter()
            .map(|(n, v, c)| {
                format!("  {{\"class\": {n:?}, \"verdict\": {v}, \"ns_per_packet_repeat\": {c}}}")
            })
            .collect();
        let _ = std::fs::write(
            dir.join("fixture_costs_v6.json"),
            format!("[\n{}\n]\n", json.join(",\n")),
        );
    }
}

/// A confirmed flow's client packet (the ACK after the backend's SYN-ACK), its reply
/// taken from what the program sent: (the client's ACK, the backend's reply).
fn established_v4(dp: &Dp, sport: u16) -> (Vec<u8>, Vec<u8>) {
    let syn = Pkt::tcp((CLIENT, sport), (VIP, 6443), SYN).bytes();
    let (v, out) = dp.run(&syn);
    assert_eq!(v, XDP_TX, "v4 SYN forwarded");
    let backend: [u8; 4] = out[30..34].try_into().unwrap();
    let snat_port = u16::from_be_bytes([out[34], out[35]]);
    let b = BACKENDS.iter().position(|x| *x == backend).unwrap();
    let synack = Pkt::tcp((backend, 6443), (LB, snat_port), SYN | ACK)
        .macs(BACKEND_MACS[b], LB_MAC)
        .bytes();
    assert_eq!(dp.run(&synack).0, XDP_TX, "v4 SYN-ACK back");
    let ack = Pkt::tcp((CLIENT, sport), (VIP, 6443), ACK).bytes();
    assert_eq!(dp.run(&ack).0, XDP_TX, "v4 ACK confirms");
    let reply = Pkt::tcp((backend, 6443), (LB, snat_port), ACK)
        .macs(BACKEND_MACS[b], LB_MAC)
        .bytes();
    (ack, reply)
}

fn established_v6(dp: &Dp, sport: u16) -> (Vec<u8>, Vec<u8>) {
    let f = fullnat_flow(sport);
    assert_eq!(dp.run(&f.syn.bytes()).0, XDP_TX, "v6 SYN forwarded");
    let (b, sp) = (f.backend, f.snat_port);
    let synack = P6::tcp((BACKENDS6[b], 6443), (SNAT6, sp), true).macs(BACKEND_MACS[b], LB_MAC);
    assert_eq!(dp.run(&synack.bytes()).0, XDP_TX, "v6 SYN-ACK back");
    let ack = P6::tcp((CLIENT6, sport), (VIP6, 6443), false).bytes();
    assert_eq!(dp.run(&ack).0, XDP_TX, "v6 ACK confirms");
    let reply = P6::tcp((BACKENDS6[b], 6443), (SNAT6, sp), false)
        .macs(BACKEND_MACS[b], LB_MAC)
        .bytes();
    (ack, reply)
}

/// IPv6 shares the proof rule: after the backend's SYN-ACK, an ACK of a guessed number
/// confirms nothing; the ACK of its initial sequence number + 1 confirms, as `TCP_OPEN`.
#[test]
fn v6_a_guessed_ack_confirms_nothing() {
    let dp = Dp::standard();
    let confirmed = |dp: &Dp| -> Vec<u8> {
        let m: aya::maps::HashMap<_, lb_common::FlowKey6, lb_common::CtEntry6> =
            aya::maps::HashMap::try_from(dp.ebpf.map(map_names::CONNTRACK6).unwrap()).unwrap();
        m.iter()
            .filter_map(Result::ok)
            .map(|(_, e)| e.state)
            .collect()
    };
    let b_isn = 0x7000_0000u32;
    for (sport, ack, want) in [
        (40100, 0x1234_5678, vec![]),
        (40101, b_isn, vec![]),
        (40102, b_isn + 1, vec![ct_state::TCP_OPEN]),
    ] {
        let f = fullnat_flow(sport);
        assert_eq!(dp.run(&f.syn.bytes()).0, XDP_TX, "v6 SYN forwarded");
        let (b, sp) = (f.backend, f.snat_port);
        let synack = P6::tcp((BACKENDS6[b], 6443), (SNAT6, sp), true)
            .macs(BACKEND_MACS[b], LB_MAC)
            .seq_ack(b_isn, 0);
        assert_eq!(dp.run(&synack.bytes()).0, XDP_TX, "v6 SYN-ACK back");
        let client_ack = P6::tcp((CLIENT6, sport), (VIP6, 6443), false).seq_ack(1001, ack);
        assert_eq!(dp.run(&client_ack.bytes()).0, XDP_TX, "v6 ACK forwarded");
        assert_eq!(confirmed(&dp), want, "ACK {ack:#x}");
    }
}

/// IPv6 beside IPv4 in one program and one run: established client packets, replies, and
/// new flows (a SYN from a new source port each run), each the mean of single runs of the
/// original frame (kernel-measured, timer overhead included alike). Printed, recorded in
/// target/bench/v6_vs_v4.json (docs/benchmarks.md); asserts only that every run was
/// translated, the speed target being the bench's.
#[test]
fn v6_beside_v4_costs_in_the_same_run() {
    const N: u32 = 20_000;
    let mut dp = Dp::standard();
    dp.add_v4();
    let (ack4, reply4) = established_v4(&dp, 41000);
    let (ack6, reply6) = established_v6(&dp, 41000);
    let mut rows = Vec::new();
    for (class, v4, v6) in [
        ("established client packet", &ack4, &ack6),
        ("established reply", &reply4, &reply6),
    ] {
        assert_eq!(dp.run(v4).0, XDP_TX);
        assert_eq!(dp.run(v6).0, XDP_TX);
        rows.push((class, dp.cost_single(v4, N), dp.cost_single(v6, N)));
    }
    // New flows: each run a SYN from another port (the unconfirmed maps take them all).
    let new_flows = |v6: bool| -> u128 {
        let mut total = 0;
        for i in 0..N {
            let port = 1024 + (i % 60000) as u16;
            let frame = if v6 {
                P6::tcp((CLIENT6, port), (VIP6, 6443), true).bytes()
            } else {
                Pkt::tcp((CLIENT, port), (VIP, 6443), SYN).bytes()
            };
            total += dp.cost_repeat(&frame, 1);
        }
        total / u128::from(N)
    };
    let (n4, n6) = (new_flows(false), new_flows(true));
    rows.push(("new flow (SYN)", n4, n6));
    println!(
        "\n{:<28} {:>10} {:>10} {:>8}",
        "class", "v4 ns", "v6 ns", "v4/v6"
    );
    let mut json = Vec::new();
    for (c, a, b) in &rows {
        let ratio = *a as f64 / (*b).max(1) as f64;
        println!("{c:<28} {a:>10} {b:>10} {ratio:>8.2}");
        json.push(format!(
            "  {{\"class\": {c:?}, \"v4_ns\": {a}, \"v6_ns\": {b}, \"v4_over_v6\": {ratio:.3}}}"
        ));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("v6_vs_v4.json"),
            format!("[\n{}\n]\n", json.join(",\n")),
        );
    }
}

/// A v6 TCP segment with FIN (and ACK) set, `seq` its sequence number.
fn fin6(src: ([u8; 16], u16), dst: ([u8; 16], u16), smac: [u8; 6], seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(smac, LB_MAC)
        .ipv6(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 64240)
        .fin()
        .ack(1)
        .write(&mut out, &[])
        .unwrap();
    out
}

/// Conntrack sync's IPv6 events (`lb-ebpf/src/sync.rs`, `SyncEvent6` in the shared ring):
/// nothing while sync is off; with it on, one event when a v6 flow is confirmed and one
/// when it starts closing (by the client's FIN, or by the backend's), none for unconfirmed
/// v6 flows (a SYN flood writes nothing to the sync channel) and none per packet.
#[test]
fn v6_sync_events_only_for_confirmed_flows_and_their_ends() {
    let mut dp = Dp::standard();
    let counts = |dp: &Dp| -> (u64, u64) {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(dp.ebpf.map(map_names::SYNC_COUNTS).unwrap()).unwrap();
        let sum = |i: u32| m.get(&i, 0).unwrap().iter().sum::<u64>();
        (
            sum(lb_common::SYNC_COUNT_EMITTED),
            sum(lb_common::SYNC_COUNT_RING_FULL),
        )
    };
    established_v6(&dp, 41000);
    assert_eq!(counts(&dp), (0, 0), "sync off: no event");

    let mut cfg: Array<_, Config> =
        Array::try_from(dp.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
    let mut c = cfg.get(&0, 0).unwrap();
    c.flags |= lb_common::CONFIG_FLAG_SYNC;
    cfg.set(0, &c, 0).unwrap();
    let vip = (VIP6, 6443);
    for p in 0..500u16 {
        let _ = dp.run(&P6::tcp((OTHER6, 2000 + p), vip, true).bytes());
        let _ = dp.run(&P6::tcp((CLIENT6, 2000 + p), vip, false).bytes());
    }
    assert_eq!(counts(&dp), (0, 0), "unconfirmed v6 flows: no event");

    // Closed by the client.
    let (ack, _) = established_v6(&dp, 41001);
    assert_eq!(counts(&dp), (1, 0), "one event for the confirmed flow");
    for _ in 0..20 {
        assert_eq!(dp.run(&ack).0, XDP_TX);
    }
    assert_eq!(counts(&dp).0, 1, "no event per packet");
    let fin = fin6((CLIENT6, 41001), vip, CLIENT_MAC, 1000);
    assert_eq!(dp.run(&fin).0, XDP_TX);
    assert_eq!(dp.run(&fin).0, XDP_TX);
    assert_eq!(counts(&dp).0, 2, "one closing event, not one per FIN");

    // Closed by the backend (the key comes from the reverse entry).
    let f = fullnat_flow(41002);
    established_v6(&dp, 41002);
    assert_eq!(counts(&dp).0, 3);
    let bfin = fin6(
        (BACKENDS6[f.backend], 6443),
        (SNAT6, f.snat_port),
        BACKEND_MACS[f.backend],
        1,
    );
    assert_eq!(dp.run(&bfin).0, XDP_TX);
    assert_eq!(dp.run(&bfin).0, XDP_TX);
    assert_eq!(
        counts(&dp),
        (4, 0),
        "one closing event for the backend's FINs"
    );

    let mut ring =
        aya::maps::RingBuf::try_from(dp.ebpf.take_map(map_names::SYNC_EVENTS).unwrap()).unwrap();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<lb_common::SyncEvent6>());
        // SAFETY: checked long enough; `SyncEvent6` is plain data.
        events.push(unsafe {
            std::ptr::read_unaligned(item.as_ptr().cast::<lb_common::SyncEvent6>())
        });
    }
    let key = |sport: u16| lb_common::FlowKey6 {
        src_addr: ip6_raw(CLIENT6),
        dst_addr: ip6_raw(VIP6),
        src_port: port_raw(sport),
        dst_port: port_raw(6443),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let seen: Vec<_> = events.iter().map(|e| (e.kind, e.family, e.key)).collect();
    let v6 = lb_common::SYNC_FAMILY_V6;
    assert_eq!(
        seen,
        [
            (lb_common::SYNC_CONFIRMED, v6, key(41001)),
            (lb_common::SYNC_CLOSING, v6, key(41001)),
            (lb_common::SYNC_CONFIRMED, v6, key(41002)),
            (lb_common::SYNC_CLOSING, v6, key(41002)),
        ]
    );
    let e = events[2].entry;
    assert_eq!(e.state, lb_common::ct_state::TCP_OPEN);
    assert_eq!(
        (e.backend_addr, e.snat_addr, e.snat_port),
        (
            ip6_raw(BACKENDS6[f.backend]),
            ip6_raw(SNAT6),
            port_raw(f.snat_port)
        ),
        "the confirmed entry as the flow has it"
    );
    assert_eq!(events[1].entry, lb_common::CtEntry6::default());
}

/// What the IPv6 sync event costs the packet that confirms a flow (the client's ACK after
/// the backend's SYN-ACK): the mean kernel-measured run of that ACK over new flows, with
/// sync off, then on (one `SyncEvent6` each, a call of `sync::emit6`). Printed for
/// docs/datapath.md; asserts only that each flow was confirmed and evented once.
#[test]
fn v6_sync_event_cost_on_the_confirming_packet() {
    const FLOWS: u16 = 400;
    let mut dp = Dp::standard();
    let confirm = |dp: &Dp, sport: u16| -> u128 {
        let f = fullnat_flow(sport);
        assert_eq!(dp.run(&f.syn.bytes()).0, XDP_TX);
        let synack = P6::tcp((BACKENDS6[f.backend], 6443), (SNAT6, f.snat_port), true)
            .macs(BACKEND_MACS[f.backend], LB_MAC);
        assert_eq!(dp.run(&synack.bytes()).0, XDP_TX);
        let ack = P6::tcp((CLIENT6, sport), (VIP6, 6443), false).bytes();
        dp.cost_repeat(&ack, 1)
    };
    let emitted = |dp: &Dp| -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(dp.ebpf.map(map_names::SYNC_COUNTS).unwrap()).unwrap();
        m.get(&lb_common::SYNC_COUNT_EMITTED, 0)
            .unwrap()
            .iter()
            .sum()
    };
    let off: u128 = (0..FLOWS).map(|i| confirm(&dp, 30000 + i)).sum::<u128>() / u128::from(FLOWS);
    assert_eq!(emitted(&dp), 0);
    let mut cfg: Array<_, Config> =
        Array::try_from(dp.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
    let mut c = cfg.get(&0, 0).unwrap();
    c.flags |= lb_common::CONFIG_FLAG_SYNC;
    cfg.set(0, &c, 0).unwrap();
    let on: u128 = (0..FLOWS).map(|i| confirm(&dp, 31000 + i)).sum::<u128>() / u128::from(FLOWS);
    assert_eq!(
        emitted(&dp),
        u64::from(FLOWS),
        "one event per confirmed flow"
    );
    println!(
        "v6 confirming ACK: {off} ns with sync off, {on} ns with sync on ({FLOWS} flows each)"
    );
}

/// An IPv6 address other than `addr` in the same `BACKEND_SLOTS` slot (2001:db8:6::/112).
fn slot_sharer6(addr: [u8; 16]) -> [u8; 16] {
    use lb_common::Addr;
    let slot = ip6_raw(addr).backend_slot();
    (1..=u16::MAX)
        .map(|i| a6(i, 6))
        .find(|a| *a != addr && ip6_raw(*a).backend_slot() == slot)
        .expect("some address of 65535 shares one of 4096 slots")
}

fn set_backend_slot(dp: &mut Dp, slot: u32, v: u32) {
    let mut m: Array<_, u32> =
        Array::try_from(dp.ebpf.map_mut(map_names::BACKEND_SLOTS).unwrap()).unwrap();
    m.set(slot, &v, 0).unwrap();
}

#[test]
fn v6_dnat_replies_are_found_through_the_backend_slots_and_other_sources_skip_the_lookups() {
    use lb_common::Addr;
    let mut dp = Dp::standard();
    let client = (CLIENT6, 40100);
    let (db, _) = pick(client, (VIP6_DNAT, 6443), IPPROTO_TCP);
    let (v, _) = dp.run(&P6::tcp(client, (VIP6_DNAT, 6443), true).bytes());
    assert_eq!(v, XDP_TX);
    let reply = P6::tcp((BACKENDS6[db], 6443), client, true).macs(BACKEND_MACS[db], LB_MAC);
    let translated = reply.to((VIP6_DNAT, 6443), client, CLIENT_MAC).bytes();
    let (v, out) = dp.run(&reply.bytes());
    assert_eq!((v, &out), (XDP_TX, &translated), "reply translated");

    // From an address in the backend's slot, or from any other: passed untouched.
    let before = dp.reason(Reason::PassNotForVip);
    let other =
        P6::tcp((slot_sharer6(BACKENDS6[db]), 6443), client, true).macs(BACKEND_MACS[db], LB_MAC);
    let (v, out) = dp.run(&other.bytes());
    assert_eq!((v, out), (XDP_PASS, other.bytes()), "slot sharer");
    let from_other = P6::udp((OTHER6, 53), (CLIENT6, 5353));
    let (v, out) = dp.run(&from_other.bytes());
    assert_eq!(
        (v, out),
        (XDP_PASS, from_other.bytes()),
        "not from a backend"
    );
    assert_eq!(dp.reason(Reason::PassNotForVip), before + 2);

    // The table decides: without the backend's IPv6 bit (an IPv4 one does not count) its
    // reply is the node's own traffic; with it, translated again.
    let slot = ip6_raw(BACKENDS6[db]).backend_slot();
    set_backend_slot(&mut dp, slot, u32::BACKEND_SLOT_BIT);
    let (v, out) = dp.run(&reply.bytes());
    assert_eq!((v, out), (XDP_PASS, reply.bytes()), "no IPv6 bit: passed");
    // Behind an extension header the transport is not known up front: the whole path.
    let hbh = with_ext(&reply.bytes(), &[ext(NH_HOP_BY_HOP, 0)]);
    let (v, _) = dp.run(&hbh);
    assert_eq!(v, XDP_TX, "after a hop-by-hop header: found by the lookups");
    set_backend_slot(&mut dp, slot, Ip6::BACKEND_SLOT_BIT);
    let (v, out) = dp.run(&reply.bytes());
    assert_eq!((v, &out), (XDP_TX, &translated), "bit back: translated");
}

/// As IPv4's `non_vip_cost_with_a_dnat_vip_backend_slots_vs_every_slot_set`: the node's
/// own IPv6 TCP while a v6 DNAT VIP exists, with the table as the daemon writes it and
/// with every slot set (the reply lookups, as before the table). Verdicts asserted, times
/// printed only.
#[test]
fn v6_non_vip_cost_with_a_dnat_vip_backend_slots_vs_every_slot_set() {
    use lb_common::Addr;
    const SINGLE: u32 = 20_000;
    let mut dp = Dp::standard();
    let frame = P6::tcp((OTHER6, 443), (CLIENT6, 40200), false).bytes();
    let measure = |dp: &Dp| {
        let (v, out) = dp.run(&frame);
        assert_eq!((v, &out), (XDP_PASS, &frame));
        (
            dp.cost_repeat(&frame, 100_000),
            dp.cost_single(&frame, SINGLE),
        )
    };
    let (table_r, table_s) = measure(&dp);
    for slot in 0..lb_common::VIP_SLOTS {
        set_backend_slot(&mut dp, slot, Ip6::BACKEND_SLOT_BIT);
    }
    let (all_r, all_s) = measure(&dp);
    println!(
        "non-VIP IPv6 TCP with a v6 DNAT VIP: BACKEND_SLOTS {table_r} ns (repeat), \
         {table_s} ns (single); every slot set (the lookups) {all_r} ns, {all_s} ns"
    );
}

/// An IPv6 destination is recognised through its `VIP_SLOTS6` slot (no hash lookup), and
/// through `VIP_ADDRS6` when the slot is shared: a slot naming another address says "not
/// ours" even though `VIP_ADDRS6` has the address, which shows the slot is what decides.
#[test]
fn v6_addresses_are_found_through_their_slots_and_vip_addrs6_when_shared() {
    let mut dp = Dp::standard();
    let f = fullnat_flow(40500);
    let expect = f.syn_out.bytes();
    let slot = lb_common::hash::addr_slot6(ip6_raw(VIP6));
    let (v, out) = dp.run(&f.syn.bytes());
    assert_eq!(
        (v, hex(&out)),
        (XDP_TX, hex(&expect)),
        "through its own slot"
    );

    dp.set_slot6(
        slot,
        AddrSlot6 {
            addr: [0; 4],
            flags: lb_common::ADDR_SLOT_OVERFLOW,
        },
    );
    let (v, out) = dp.run(&f.syn.bytes());
    assert_eq!(
        (v, hex(&out)),
        (XDP_TX, hex(&expect)),
        "shared slot: VIP_ADDRS6"
    );

    dp.set_slot6(
        slot,
        AddrSlot6 {
            addr: ip6_raw(OTHER6),
            flags: ADDR_FLAG_VIP,
        },
    );
    let passed = dp.reason(Reason::PassNotForVip);
    let (v, out) = dp.run(&f.syn.bytes());
    assert_eq!(
        (v, hex(&out)),
        (XDP_PASS, hex(&f.syn.bytes())),
        "the slot decides"
    );
    assert_eq!(dp.reason(Reason::PassNotForVip), passed + 1);
}

/// What the direct-mapped tables save, in one program and one run (issue #16): an
/// established IPv4 packet with `VIP_KEYS` naming its VIP against the same packet with the
/// index cleared (the `VIPS` lookup), and IPv6 packets with their destination's own
/// `VIP_SLOTS6` slot against a shared one (the `VIP_ADDRS6` lookup). Rounds of single runs
/// alternate the two, each figure the median of the rounds' means (the machine's drift
/// hits both alike). Printed, recorded in target/bench/fast_path_ab.json; asserts only
/// that every packet was translated either way.
#[test]
fn direct_mapped_tables_vs_the_hash_lookups_they_replace() {
    const ROUNDS: usize = 15;
    const N: u32 = 1_000;
    let mut dp = Dp::standard();
    dp.add_v4();
    let (ack4, _) = established_v4(&dp, 41500);
    let (ack6, reply6) = established_v6(&dp, 41500);
    let key4 = lb_common::VipKey {
        addr: lb_common::ip_raw(VIP),
        port: port_raw(6443),
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    let slots6 = |dp: &mut Dp, shared: bool| {
        for a in [VIP6, SNAT6] {
            let a = ip6_raw(a);
            let own = AddrSlot6 {
                addr: a,
                flags: if a == ip6_raw(VIP6) {
                    ADDR_FLAG_VIP
                } else {
                    ADDR_FLAG_SNAT
                },
            };
            let v = if shared {
                AddrSlot6 {
                    addr: [0; 4],
                    flags: lb_common::ADDR_SLOT_OVERFLOW,
                }
            } else {
                own
            };
            dp.set_slot6(lb_common::hash::addr_slot6(a), v);
        }
    };
    let median = |mut v: Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    for (class, frame) in [
        ("IPv4 established, VIP_KEYS vs VIPS", &ack4),
        ("IPv6 established, VIP_SLOTS6 vs VIP_ADDRS6", &ack6),
        ("IPv6 reply, VIP_SLOTS6 vs VIP_ADDRS6", &reply6),
    ] {
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for table in [true, false] {
                if class.starts_with("IPv4") {
                    let k = if table { key4 } else { Default::default() };
                    dp.set_vip_index_key(0, k);
                } else {
                    slots6(&mut dp, !table);
                }
                assert_eq!(dp.run(frame).0, XDP_TX, "{class}: translated");
                let c = dp.cost_single(frame, N);
                if table { fast.push(c) } else { slow.push(c) }
            }
        }
        rows.push((class, median(fast), median(slow)));
    }
    println!("\n{:<44} {:>10} {:>12}", "class", "table ns", "lookup ns");
    let mut json = Vec::new();
    for (c, a, b) in &rows {
        println!("{c:<44} {a:>10} {b:>12}");
        json.push(format!(
            "  {{\"class\": {c:?}, \"table_ns\": {a}, \"lookup_ns\": {b}}}"
        ));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("fast_path_ab.json"),
            format!("[\n{}\n]\n", json.join(",\n")),
        );
    }
}
