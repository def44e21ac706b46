//! The XDP program on packet fixtures, through `BPF_PROG_TEST_RUN`: each row is {input
//! frame, expected verdict, expected output frame, expected counter}, compared byte for byte
//! with frames built independently (etherparse); the same rows give a cost per packet. A
//! randomized run feeds a million valid and mutated frames and checks the invariants.
//! Needs root (loading BPF) and the built object (`XVIP_EBPF_OBJ`).

use std::{collections::BTreeSet, path::PathBuf, time::Instant};

use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{TestRun, TestRunOptions},
};
use lb_common::{
    ADDR_FLAG_SNAT, ADDR_FLAG_VIP, ADDR_KEY_DNAT_PRESENT, BACKEND_FLAG_PRESENT, Backend,
    CONFIG_FLAG_NO_FAST_PATH, Config, CtEntry, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Reason, RevEntry,
    VIP_FLAG_DNAT, VIP_FLAG_FULLNAT, VipKey, VipMeta, ct_state, hash::flow_hash, ip_raw, map_names,
    port_raw, ring_base,
};
use tests::fixture::{
    self, Fixture, Rng, TC_NEXT, TC_REDIRECT, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX,
    mark_backend_slot, row, tc_verdict,
};
use tests::packets::{
    BACKEND_MACS, BACKENDS, CLIENT, CLIENT_MAC, DestUnreachableHeader, Icmpv4Type, LB, LB_MAC,
    OTHER, Pkt, ROUTER, TimeExceededCode, VIP, VIP_DNAT, checks, fix_checksums, tcp_flags::*,
};

/// The VIPs of the standard setup: (address, port, protocol, index, flags).
const VIP_TCP: (u32, u16, u8) = (0, 6443, IPPROTO_TCP);
const VIP_UDP: (u32, u16, u8) = (1, 53, IPPROTO_UDP);
const VIP_DNAT_TCP: (u32, u16, u8) = (2, 6443, IPPROTO_TCP);
/// Backends 0..3 serve TCP on 6443, 3..6 serve UDP on 5353 (same hosts).
const UDP_BACKEND_PORT: u16 = 5353;
/// A small prime table, so the tests know every slot.
const RING: u32 = 7;
const SNAT_MIN: u16 = 20000;
const SNAT_MAX: u16 = 59999;
/// Flows the tests track: kept small so loading is quick.
const CONNTRACK_SIZE: u32 = 65536;

tests::fixture_dp!();

impl Dp {
    fn load() -> Self {
        Self(fixture::Dp::load(CONNTRACK_SIZE))
    }

    /// The standard setup: three VIPs (fullnat TCP and UDP on one address, DNAT TCP on
    /// another), six backends, SNAT ports 20000-59999, echo answered.
    fn standard() -> Self {
        let mut dp = Self::load();
        dp.config(SNAT_MIN, SNAT_MAX);
        for (i, (addr, mac)) in BACKENDS.iter().zip(BACKEND_MACS).enumerate() {
            dp.backend(i as u32, *addr, 6443, mac, true);
            dp.backend(i as u32 + 3, *addr, UDP_BACKEND_PORT, mac, true);
        }
        let mut addrs: HashMap<_, u32, u32> =
            HashMap::try_from(dp.ebpf.map_mut(map_names::VIP_ADDRS).unwrap()).unwrap();
        addrs.insert(&ip_raw(VIP), &ADDR_FLAG_VIP, 0).unwrap();
        addrs.insert(&ip_raw(VIP_DNAT), &ADDR_FLAG_VIP, 0).unwrap();
        addrs.insert(&ip_raw(LB), &ADDR_FLAG_SNAT, 0).unwrap();
        addrs.insert(&ADDR_KEY_DNAT_PRESENT, &1, 0).unwrap();
        let mut slots: Array<_, u64> =
            Array::try_from(dp.ebpf.map_mut(map_names::VIP_SLOTS).unwrap()).unwrap();
        let values = lb_common::hash::addr_slots([
            (ip_raw(VIP), ADDR_FLAG_VIP),
            (ip_raw(VIP_DNAT), ADDR_FLAG_VIP),
            (ip_raw(LB), ADDR_FLAG_SNAT),
            (ADDR_KEY_DNAT_PRESENT, 1),
        ]);
        for (i, v) in values.iter().enumerate().filter(|(_, v)| **v != 0) {
            slots.set(i as u32, v, 0).unwrap();
        }
        dp.vip(VIP, VIP_TCP, 0, VIP_FLAG_FULLNAT);
        dp.vip(VIP, VIP_UDP, 0, VIP_FLAG_FULLNAT);
        dp.vip(VIP_DNAT, VIP_DNAT_TCP, 0, VIP_FLAG_DNAT);
        dp.ring(VIP_TCP.0, 0, &[0, 1, 2, 0, 1, 2, 0]);
        dp.ring(VIP_UDP.0, 0, &[3, 4, 5, 3, 4, 5, 3]);
        dp.ring(VIP_DNAT_TCP.0, 0, &[2, 1, 0, 2, 1, 0, 2]);
        dp
    }

    fn backend(&mut self, idx: u32, addr: [u8; 4], port: u16, mac: [u8; 6], present: bool) {
        let mut m: Array<_, Backend> =
            Array::try_from(self.ebpf.map_mut(map_names::BACKENDS).unwrap()).unwrap();
        let b = Backend {
            addr: ip_raw(addr),
            flags: if present { BACKEND_FLAG_PRESENT } else { 0 },
            ifindex: 0,
            port: port_raw(port),
            mac,
            _pad: [0; 4],
        };
        m.set(idx, &b, 0).unwrap();
        if present {
            mark_backend_slot(&mut self.ebpf, b.addr);
        }
    }

    fn vip(&mut self, addr: [u8; 4], v: (u32, u16, u8), half: u32, flags: u32) {
        let mut m: HashMap<_, VipKey, VipMeta> =
            HashMap::try_from(self.ebpf.map_mut(map_names::VIPS).unwrap()).unwrap();
        let key = VipKey {
            addr: ip_raw(addr),
            port: port_raw(v.1),
            proto: v.2,
            _pad: 0,
        };
        let meta = VipMeta {
            index: v.0,
            ring_size: RING,
            active_half: half,
            flags,
            snat_addr: if flags & VIP_FLAG_DNAT != 0 {
                0
            } else {
                ip_raw(LB)
            },
            _pad: 0,
        };
        m.insert(&key, &meta, 0).unwrap();
        // As the daemon: `VIP_KEYS` after `VIPS`.
        self.set_vip_index_key(v.0, key);
    }

    /// Removes a VIP from `VIPS` alone (the daemon clears its `VIP_KEYS` index first).
    fn remove_vip_entry(&mut self, addr: [u8; 4], v: (u32, u16, u8)) {
        let mut m: HashMap<_, VipKey, VipMeta> =
            HashMap::try_from(self.ebpf.map_mut(map_names::VIPS).unwrap()).unwrap();
        m.remove(&vip_key(addr, v)).unwrap();
    }

    /// Packets counted for VIP `index` over all CPUs.
    fn vip_packets(&self, index: u32) -> u64 {
        let m: PerCpuArray<_, lb_common::Counters> =
            PerCpuArray::try_from(self.ebpf.map(map_names::VIP_STATS).unwrap()).unwrap();
        m.get(&index, 0).unwrap().iter().map(|c| c.packets).sum()
    }

    fn ring(&mut self, vip_index: u32, half: u32, table: &[u32]) {
        let mut m: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(map_names::RINGS).unwrap()).unwrap();
        let base = ring_base(vip_index, half);
        for (i, b) in table.iter().enumerate() {
            m.set(base + i as u32, b, 0).unwrap();
        }
    }

    fn conntrack(&self, key: &FlowKey) -> Option<CtEntry> {
        let m: HashMap<_, FlowKey, CtEntry> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK).unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    fn unconfirmed(&self, key: &FlowKey) -> Option<CtEntry> {
        let m: HashMap<_, FlowKey, CtEntry> =
            HashMap::try_from(self.ebpf.map(map_names::UNCONFIRMED).unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    fn count(&self, name: &str) -> usize {
        let m: HashMap<_, FlowKey, CtEntry> =
            HashMap::try_from(self.ebpf.map(name).unwrap()).unwrap();
        m.keys().filter_map(Result::ok).count()
    }

    fn count_rev(&self, name: &str) -> usize {
        let m: HashMap<_, FlowKey, RevEntry> =
            HashMap::try_from(self.ebpf.map(name).unwrap()).unwrap();
        m.keys().filter_map(Result::ok).count()
    }

    fn reverse(&self, key: &FlowKey) -> Option<RevEntry> {
        let m: HashMap<_, FlowKey, RevEntry> =
            HashMap::try_from(self.ebpf.map(map_names::REVERSE).unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    /// Moves the `last_seen` of flow `key`'s entries (forward and reverse) `by_ns` into the
    /// past, as if the flow had been idle that long; returns the reverse entry's key.
    fn age(&mut self, key: &FlowKey, by_ns: u64) -> FlowKey {
        let mut e = self.conntrack(key).expect("a confirmed flow");
        let rkey = FlowKey {
            src_addr: e.backend_addr,
            dst_addr: e.snat_addr,
            src_port: e.backend_port,
            dst_port: e.snat_port,
            proto: key.proto,
            _pad: [0; 3],
        };
        let mut r = self.reverse(&rkey).expect("its tuple");
        e.last_seen_ns -= by_ns;
        r.last_seen_ns -= by_ns;
        let mut m: HashMap<_, FlowKey, CtEntry> =
            HashMap::try_from(self.ebpf.map_mut(map_names::CONNTRACK).unwrap()).unwrap();
        m.insert(key, &e, 0).unwrap();
        let mut m: HashMap<_, FlowKey, RevEntry> =
            HashMap::try_from(self.ebpf.map_mut(map_names::REVERSE).unwrap()).unwrap();
        m.insert(&rkey, &r, 0).unwrap();
        rkey
    }
}

fn vip_key(addr: [u8; 4], v: (u32, u16, u8)) -> VipKey {
    VipKey {
        addr: ip_raw(addr),
        port: port_raw(v.1),
        proto: v.2,
        _pad: 0,
    }
}

fn key(src: ([u8; 4], u16), dst: ([u8; 4], u16), proto: u8) -> FlowKey {
    FlowKey {
        src_addr: ip_raw(src.0),
        dst_addr: ip_raw(dst.0),
        src_port: port_raw(src.1),
        dst_port: port_raw(dst.1),
        proto,
        _pad: [0; 3],
    }
}

fn hash(src: ([u8; 4], u16), dst: ([u8; 4], u16), proto: u8) -> u32 {
    flow_hash(
        ip_raw(src.0),
        ip_raw(dst.0),
        port_raw(src.1),
        port_raw(dst.1),
        proto,
    )
}

/// The backend index the standard tables give a new flow.
fn backend_of(src: ([u8; 4], u16), dst: ([u8; 4], u16), proto: u8, table: &[u32]) -> u32 {
    table[(hash(src, dst, proto) % RING) as usize]
}

/// The SNAT port a new flow gets first (free in a fresh map): derived from its hash.
fn snat_port(src: ([u8; 4], u16), dst: ([u8; 4], u16), proto: u8) -> u16 {
    let range = u32::from(SNAT_MAX - SNAT_MIN) + 1;
    (u32::from(SNAT_MIN) + hash(src, dst, proto) % range) as u16
}

fn tx(name: &'static str, input: &Pkt, output: &Pkt, reason: Reason) -> Fixture {
    fixture::tx(name, input.bytes(), output.bytes(), reason)
}

/// Sets the IPv4 total length (and fixes the header checksum).
fn with_tot_len(mut frame: Vec<u8>, l3: usize, len: u16) -> Vec<u8> {
    frame[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
    fix_ip_header(&mut frame, l3);
    frame
}

fn fix_ip_header(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = !tests::packets::ones_sum(&frame[l3..l3 + ihl], 0);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// The quoted part of a datagram in an ICMP error: the header and `l4_bytes` of it.
fn quote(p: &Pkt, l4_bytes: usize) -> Vec<u8> {
    let d = p.datagram();
    let n = (20 + p.options.len() + l4_bytes).min(d.len());
    d[..n].to_vec()
}

const TCP: u8 = IPPROTO_TCP;
const UDP: u8 = IPPROTO_UDP;

/// The fixture table, in order (later rows rely on the flows earlier ones created).
fn fixtures() -> Vec<Fixture> {
    let tcp_table = [0, 1, 2, 0, 1, 2, 0];
    let udp_table = [3, 4, 5, 3, 4, 5, 3];
    let dnat_table = [2, 1, 0, 2, 1, 0, 2];
    let vip = (VIP, 6443);
    let mut rows = Vec::new();

    // A fullnat TCP flow: SYN, the backend's SYN-ACK, the client's ACK with data.
    let c1 = (CLIENT, 40001);
    let b1 = backend_of(c1, vip, TCP, &tcp_table) as usize;
    let s1 = snat_port(c1, vip, TCP);
    let to_backend = |p: Pkt, b: usize, sport: u16| {
        p.macs(LB_MAC, BACKEND_MACS[b])
            .src(LB, sport)
            .dst(BACKENDS[b], 6443)
            .ttl(63)
    };
    let syn = Pkt::tcp(c1, vip, SYN);
    rows.push(tx(
        "fullnat: new TCP flow (SYN) goes to its Maglev backend from a SNAT port",
        &syn,
        &to_backend(syn.clone(), b1, s1),
        Reason::TxForward,
    ));
    let synack = Pkt::tcp((BACKENDS[b1], 6443), (LB, s1), SYN | ACK).macs(BACKEND_MACS[b1], LB_MAC);
    rows.push(tx(
        "fullnat: reply (backend -> SNAT address:port) goes back to the client from the VIP",
        &synack,
        &synack
            .clone()
            .macs(LB_MAC, CLIENT_MAC)
            .src(VIP, 6443)
            .dst(CLIENT, 40001)
            .ttl(63),
        Reason::TxReply,
    ));
    let data = Pkt::tcp(c1, vip, ACK | PSH).payload(b"GET /version HTTP/1.1\r\n\r\n");
    rows.push(tx(
        "fullnat: established flow keeps its backend and SNAT port",
        &data,
        &to_backend(data.clone(), b1, s1),
        Reason::TxForward,
    ));

    // IPv4 options (IHL 7) and a VLAN tag, each on its own new flow.
    let c2 = (CLIENT, 40002);
    let b2 = backend_of(c2, vip, TCP, &tcp_table) as usize;
    let opts = Pkt::tcp(c2, vip, SYN).options(&[0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]);
    rows.push(tx(
        "IPv4 options (IHL 7): honoured and kept",
        &opts,
        &to_backend(opts.clone(), b2, snat_port(c2, vip, TCP)),
        Reason::TxForward,
    ));
    let c3 = (CLIENT, 40003);
    let b3 = backend_of(c3, vip, TCP, &tcp_table) as usize;
    let vlan = Pkt::tcp(c3, vip, SYN).vlan(100);
    rows.push(tx(
        "802.1Q-tagged frame: translated, tag kept",
        &vlan,
        &to_backend(vlan.clone(), b3, snat_port(c3, vip, TCP)),
        Reason::TxForward,
    ));
    // Replies leave with the client's tag, whatever the backend's frame had.
    let s3 = snat_port(c3, vip, TCP);
    let to_c3 = |p: Pkt| {
        p.macs(LB_MAC, CLIENT_MAC)
            .src(VIP, 6443)
            .dst(CLIENT, 40003)
            .ttl(63)
            .vlan(100)
    };
    let synack3 =
        Pkt::tcp((BACKENDS[b3], 6443), (LB, s3), SYN | ACK).macs(BACKEND_MACS[b3], LB_MAC);
    rows.push(tx(
        "reply to a tagged client, untagged from the backend: the client's tag pushed",
        &synack3,
        &to_c3(synack3.clone()),
        Reason::TxReply,
    ));
    let retx3 = synack3.clone().vlan(200);
    rows.push(tx(
        "reply to a tagged client, tagged otherwise: the client's tag",
        &retx3,
        &to_c3(synack3.clone()),
        Reason::TxReply,
    ));
    let data1 = Pkt::tcp((BACKENDS[b1], 6443), (LB, s1), ACK | PSH)
        .macs(BACKEND_MACS[b1], LB_MAC)
        .seq(1001)
        .payload(b"HTTP/1.1 200 OK\r\n\r\n")
        .vlan(7);
    let mut data1_out = data1
        .clone()
        .macs(LB_MAC, CLIENT_MAC)
        .src(VIP, 6443)
        .dst(CLIENT, 40001)
        .ttl(63);
    data1_out.vlan = None;
    rows.push(tx(
        "reply to an untagged client, tagged from the backend: the tag popped",
        &data1,
        &data1_out,
        Reason::TxReply,
    ));

    // Blind teardown attempts on the confirmed flow 1: a RST from "the backend" and a FIN
    // from "the client" with sequence numbers far from either stream (RFC 5961).
    let blind_rst = Pkt::tcp((BACKENDS[b1], 6443), (LB, s1), RST)
        .macs(BACKEND_MACS[b1], LB_MAC)
        .seq(1000 + (1 << 31));
    rows.push(row(
        "RST to a SNAT port outside the backend's window: dropped, the flow stays",
        blind_rst.bytes(),
        XDP_DROP,
        Reason::DropOutOfWindow,
    ));
    rows.push(row(
        "FIN from the client outside its window: dropped, the flow stays",
        Pkt::tcp(c1, vip, FIN | ACK).seq(1000 + (1 << 24)).bytes(),
        XDP_DROP,
        Reason::DropOutOfWindow,
    ));

    // FIN from the client, RST from a backend.
    let fin = Pkt::tcp(c1, vip, FIN | ACK);
    rows.push(tx(
        "FIN from the client: forwarded, flow now closing",
        &fin,
        &to_backend(fin.clone(), b1, s1),
        Reason::TxForward,
    ));
    let rst = Pkt::tcp((BACKENDS[b2], 6443), (LB, snat_port(c2, vip, TCP)), RST)
        .macs(BACKEND_MACS[b2], LB_MAC);
    rows.push(tx(
        "RST from the backend to a SYN: sent to the client, the attempt ends",
        &rst,
        &rst.clone()
            .macs(LB_MAC, CLIENT_MAC)
            .src(VIP, 6443)
            .dst(CLIENT, 40002)
            .ttl(63),
        Reason::TxReply,
    ));

    // DNAT: the backend sees the client's address; its replies come to the client address.
    let vd = (VIP_DNAT, 6443);
    let cd = (CLIENT, 40010);
    let bd = backend_of(cd, vd, TCP, &dnat_table) as usize;
    let dsyn = Pkt::tcp(cd, vd, SYN);
    rows.push(tx(
        "dnat: new TCP flow keeps the client's address",
        &dsyn,
        &dsyn
            .clone()
            .macs(LB_MAC, BACKEND_MACS[bd])
            .dst(BACKENDS[bd], 6443)
            .ttl(63),
        Reason::TxForward,
    ));
    let dreply = Pkt::tcp((BACKENDS[bd], 6443), cd, SYN | ACK).macs(BACKEND_MACS[bd], LB_MAC);
    rows.push(tx(
        "dnat: reply (backend -> client) leaves from the VIP",
        &dreply,
        &dreply
            .clone()
            .macs(LB_MAC, CLIENT_MAC)
            .src(VIP_DNAT, 6443)
            .ttl(63),
        Reason::TxReply,
    ));

    // UDP: with a checksum, without one (0 stays 0), and one whose result is 0 (-> 0xffff).
    let vu = (VIP, 53);
    let to_udp_backend = |p: Pkt, src: ([u8; 4], u16)| {
        let b = backend_of(src, vu, UDP, &udp_table) as usize - 3;
        p.macs(LB_MAC, BACKEND_MACS[b])
            .src(LB, snat_port(src, vu, UDP))
            .dst(BACKENDS[b], UDP_BACKEND_PORT)
            .ttl(63)
    };
    let cu = (CLIENT, 5001);
    let u = Pkt::udp(cu, vu).payload(b"query");
    rows.push(tx(
        "UDP with checksum",
        &u,
        &to_udp_backend(u.clone(), cu),
        Reason::TxForward,
    ));
    let cu0 = (CLIENT, 5002);
    let u0 = Pkt::udp(cu0, vu).payload(b"query").no_udp_checksum();
    rows.push(tx(
        "UDP without checksum: stays 0",
        &u0,
        &to_udp_backend(u0.clone(), cu0),
        Reason::TxForward,
    ));
    let cuf = (CLIENT, 5003);
    let probe = to_udp_backend(Pkt::udp(cuf, vu).payload(&[0, 0]), cuf).bytes();
    let l4 = 14 + 20;
    let w = [probe[l4 + 6], probe[l4 + 7]];
    let uf = Pkt::udp(cuf, vu).payload(&w);
    let ufo = to_udp_backend(uf.clone(), cuf);
    assert_eq!(
        ufo.bytes()[l4 + 6..l4 + 8],
        [0xff, 0xff],
        "fixture construction"
    );
    rows.push(tx(
        "UDP whose translated checksum computes to 0: sent as 0xffff",
        &uf,
        &ufo,
        Reason::TxForward,
    ));
    let bu = backend_of(cu, vu, UDP, &udp_table) as usize - 3;
    let su = snat_port(cu, vu, UDP);
    let ureply = Pkt::udp((BACKENDS[bu], UDP_BACKEND_PORT), (LB, su))
        .macs(BACKEND_MACS[bu], LB_MAC)
        .payload(b"answer");
    rows.push(tx(
        "UDP reply",
        &ureply,
        &ureply
            .clone()
            .macs(LB_MAC, CLIENT_MAC)
            .src(VIP, 53)
            .dst(CLIENT, 5001)
            .ttl(63),
        Reason::TxReply,
    ));

    // ICMP.
    let echo = Pkt::icmp(
        CLIENT,
        VIP,
        Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
    )
    .payload(b"ping");
    let echo_reply = Pkt::icmp(
        VIP,
        CLIENT,
        Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
    )
    .macs(LB_MAC, CLIENT_MAC)
    .payload(b"ping");
    rows.push(tx(
        "ICMP echo request to the VIP: answered",
        &echo,
        &echo_reply,
        Reason::IcmpEchoReply,
    ));
    let zero = |t: fn(etherparse::IcmpEchoHeader) -> Icmpv4Type| {
        t(etherparse::IcmpEchoHeader { id: 0, seq: 0 })
    };
    rows.push(tx(
        "ICMP echo with id 0, sequence 0, no data: reply checksum 0xffff, not 0",
        &Pkt::icmp(CLIENT, VIP, zero(Icmpv4Type::EchoRequest)),
        &Pkt::icmp(VIP, CLIENT, zero(Icmpv4Type::EchoReply)).macs(LB_MAC, CLIENT_MAC),
        Reason::IcmpEchoReply,
    ));
    let frag_needed =
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        });
    // What we sent the backend for `data`, and what the client sent us.
    let sent = to_backend(data.clone(), b1, s1);
    let orig = data.clone().ttl(63);
    let err = Pkt::icmp(BACKENDS[b1], LB, frag_needed.clone())
        .macs(BACKEND_MACS[b1], LB_MAC)
        .payload(&quote(&sent, 8));
    rows.push(tx(
        "ICMP fragmentation needed from the backend, 8-byte TCP quote: to the client",
        &err,
        &Pkt::icmp(VIP, CLIENT, frag_needed.clone())
            .macs(LB_MAC, CLIENT_MAC)
            .ttl(63)
            .payload(&quote(&orig, 8)),
        Reason::IcmpErrorTranslated,
    ));
    let ttl_exc = Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit);
    let err = Pkt::icmp(ROUTER, LB, ttl_exc.clone())
        .macs(BACKEND_MACS[b1], LB_MAC)
        .payload(&sent.datagram());
    rows.push(tx(
        "ICMP time exceeded from a router, whole TCP segment quoted: TCP checksum fixed too",
        &err,
        &Pkt::icmp(ROUTER, CLIENT, ttl_exc.clone())
            .macs(LB_MAC, CLIENT_MAC)
            .ttl(63)
            .payload(&orig.datagram()),
        Reason::IcmpErrorTranslated,
    ));
    let usent = to_udp_backend(u.clone(), cu);
    let port_unreach = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let err = Pkt::icmp(BACKENDS[bu], LB, port_unreach.clone())
        .macs(BACKEND_MACS[bu], LB_MAC)
        .payload(&usent.datagram());
    rows.push(tx(
        "ICMP port unreachable about a UDP flow: UDP checksum in the quote fixed",
        &err,
        &Pkt::icmp(VIP, CLIENT, port_unreach.clone())
            .macs(LB_MAC, CLIENT_MAC)
            .ttl(63)
            .payload(&u.clone().ttl(63).datagram()),
        Reason::IcmpErrorTranslated,
    ));
    let dsent = dsyn.clone().dst(BACKENDS[bd], 6443).ttl(63);
    let err = Pkt::icmp(BACKENDS[bd], CLIENT, frag_needed.clone())
        .macs(BACKEND_MACS[bd], LB_MAC)
        .payload(&quote(&dsent, 8));
    rows.push(tx(
        "dnat: ICMP fragmentation needed addressed to the client: from the VIP",
        &err,
        &Pkt::icmp(VIP_DNAT, CLIENT, frag_needed.clone())
            .macs(LB_MAC, CLIENT_MAC)
            .ttl(63)
            .payload(&quote(&dsyn.clone().ttl(63), 8)),
        Reason::IcmpErrorTranslated,
    ));
    // A router on the client's path cannot forward our reply (VIP -> client) whole: the
    // backend, which sent it, must learn the MTU.
    let to_client = synack
        .clone()
        .macs(LB_MAC, CLIENT_MAC)
        .src(VIP, 6443)
        .dst(CLIENT, 40001)
        .ttl(63);
    let err = Pkt::icmp(ROUTER, VIP, frag_needed.clone()).payload(&quote(&to_client, 8));
    rows.push(tx(
        "ICMP fragmentation needed from a router about VIP -> client: to the backend, from the SNAT address",
        &err,
        &Pkt::icmp(LB, BACKENDS[b1], frag_needed.clone())
            .macs(LB_MAC, BACKEND_MACS[b1])
            .ttl(63)
            .payload(&quote(&synack.clone().ttl(63), 8)),
        Reason::IcmpErrorToBackend,
    ));
    let dto_client = dreply
        .clone()
        .macs(LB_MAC, CLIENT_MAC)
        .src(VIP_DNAT, 6443)
        .ttl(63);
    let err = Pkt::icmp(ROUTER, VIP_DNAT, frag_needed.clone()).payload(&quote(&dto_client, 8));
    rows.push(row(
        "ICMP about VIP -> client of a flow not confirmed yet: to the kernel",
        err.bytes(),
        XDP_PASS,
        Reason::PassIcmp,
    ));
    let stray = Pkt::icmp(BACKENDS[0], LB, frag_needed.clone())
        .macs(BACKEND_MACS[0], LB_MAC)
        .payload(&quote(&Pkt::tcp((LB, 1), (BACKENDS[0], 6443), ACK), 8));
    rows.push(row(
        "ICMP error about no tracked flow: to the kernel",
        stray.bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    rows.push(row(
        "ICMP other than echo to the VIP: to the kernel",
        Pkt::icmp(
            CLIENT,
            VIP,
            Icmpv4Type::Unknown {
                type_u8: 13,
                code_u8: 0,
                bytes5to8: [0; 4],
            },
        )
        .bytes(),
        XDP_PASS,
        Reason::PassIcmp,
    ));

    // Passed to the kernel, untouched.
    let c4 = (CLIENT, 40004);
    rows.push(row(
        "TTL 1 to the VIP: to the kernel (it answers time exceeded)",
        Pkt::tcp(c4, vip, SYN).ttl(1).bytes(),
        XDP_PASS,
        Reason::PassTtlExpired,
    ));
    rows.push(row(
        "not for a VIP: passed unchanged",
        Pkt::tcp(c4, (OTHER, 80), SYN).bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    rows.push(row(
        "VIP address, port not served: passed unchanged",
        Pkt::tcp(c4, (VIP, 80), SYN).bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    rows.push(row(
        "to the SNAT address, no flow: passed unchanged",
        Pkt::tcp((BACKENDS[0], 6443), (LB, 12345), ACK).bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    let node_frag = Pkt::tcp((BACKENDS[0], 6443), (LB, 12345), ACK).fragment(true, 0);
    rows.push(row(
        "fragment to the SNAT address (it may be the node's own): passed, not dropped",
        node_frag.bytes(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    let mut node_gre = Pkt::udp((OTHER, 1), (LB, 2)).bytes();
    node_gre[14 + 9] = 47;
    fix_ip_header(&mut node_gre, 14);
    rows.push(row(
        "GRE to the SNAT address: passed, not dropped",
        node_gre,
        XDP_PASS,
        Reason::PassNotForVip,
    ));
    rows.push(row(
        "to the VIP in a frame for another host's MAC (flooded): passed untouched",
        Pkt::tcp((CLIENT, 40020), vip, SYN)
            .macs(CLIENT_MAC, BACKEND_MACS[0])
            .bytes(),
        XDP_PASS,
        Reason::PassOtherHost,
    ));
    rows.push(row(
        "ARP: passed",
        arp_frame(),
        XDP_PASS,
        Reason::PassNotIpv4,
    ));
    rows.push(row(
        "IPv6 to no VIP: passed (the IPv6 verdicts: bpf_fixtures_v6)",
        ipv6_frame(),
        XDP_PASS,
        Reason::PassNotForVip,
    ));

    // Dropped: fragments and broken headers addressed to a VIP.
    rows.push(row(
        "first fragment (MF) to the VIP: dropped",
        Pkt::tcp(c4, vip, SYN).fragment(true, 0).bytes(),
        XDP_DROP,
        Reason::DropFragment,
    ));
    rows.push(row(
        "later fragment to the VIP: dropped",
        Pkt::tcp(c4, vip, SYN).fragment(false, 100).bytes(),
        XDP_DROP,
        Reason::DropFragment,
    ));
    let mut gre = Pkt::udp(c4, vu).bytes();
    gre[14 + 9] = 47;
    fix_ip_header(&mut gre, 14);
    rows.push(row(
        "GRE to the VIP: dropped",
        gre,
        XDP_DROP,
        Reason::DropUnknownProto,
    ));
    let mut ihl4 = Pkt::tcp(c4, vip, SYN).bytes();
    ihl4[14] = 0x44;
    rows.push(row(
        "IHL 4 to the VIP: dropped",
        ihl4,
        XDP_DROP,
        Reason::DropBadHeader,
    ));

    // Truncated at every boundary. A frame shorter than 14 bytes cannot be injected (the
    // kernel refuses it: see `frames_shorter_than_ethernet_are_refused`).
    let full = Pkt::tcp(c4, vip, SYN).bytes();
    rows.push(row(
        "Ethernet header only (IPv4 type): passed",
        full[..14].to_vec(),
        XDP_PASS,
        Reason::PassMalformed,
    ));
    let tagged = Pkt::tcp(c4, vip, SYN).vlan(5).bytes();
    rows.push(row(
        "VLAN tag cut: passed",
        tagged[..16].to_vec(),
        XDP_PASS,
        Reason::PassMalformed,
    ));
    rows.push(row(
        "IPv4 fixed header cut: passed",
        full[..14 + 19].to_vec(),
        XDP_PASS,
        Reason::PassMalformed,
    ));
    let with_opts = opts.clone().src(CLIENT, 40005).bytes();
    rows.push(row(
        "IPv4 options cut: dropped",
        with_opts[..14 + 24].to_vec(),
        XDP_DROP,
        Reason::DropTruncated,
    ));
    rows.push(row(
        "TCP header cut: dropped",
        full[..14 + 20 + 19].to_vec(),
        XDP_DROP,
        Reason::DropTruncated,
    ));
    let mut padded = with_tot_len(full.clone(), 14, 20 + 8);
    padded.resize(64, 0);
    rows.push(row(
        "TCP header past the IPv4 total length (in Ethernet padding): dropped",
        padded,
        XDP_DROP,
        Reason::DropTruncated,
    ));
    let ufull = Pkt::udp((CLIENT, 5009), vu).payload(b"x").bytes();
    rows.push(row(
        "UDP header cut: dropped",
        ufull[..14 + 20 + 7].to_vec(),
        XDP_DROP,
        Reason::DropTruncated,
    ));
    rows.push(row(
        "ICMP header cut: dropped",
        with_tot_len(echo.bytes()[..14 + 20 + 4].to_vec(), 14, 24),
        XDP_DROP,
        Reason::DropTruncated,
    ));
    rows.push(row(
        "IPv4 total length beyond the frame: dropped",
        with_tot_len(full.clone(), 14, 200),
        XDP_DROP,
        Reason::DropTruncated,
    ));
    settled_rows(&mut rows);
    rows
}

/// Flows taken to `TCP_ESTABLISHED` (data both ways) and UDP flows confirmed, then their
/// packets: those marked "(fast path)" are the established fast path's (no entry needs a
/// write), the others its edges, which it leaves to the full path.
fn settled_rows(rows: &mut Vec<Fixture>) {
    let tcp_table = [0, 1, 2, 0, 1, 2, 0];
    let dnat_table = [2, 1, 0, 2, 1, 0, 2];
    let udp_table = [3, 4, 5, 3, 4, 5, 3];
    // Full NAT and DNAT, each: SYN, SYN-ACK, the client's proven ACK with data (confirmed,
    // open), the backend's data, the client's data (established); then the settled ones.
    for (vip, dnat) in [((VIP, 6443), false), ((VIP_DNAT, 6443), true)] {
        let c = (CLIENT, if dnat { 40031 } else { 40030 });
        let table = if dnat { &dnat_table } else { &tcp_table };
        let b = backend_of(c, vip, TCP, table) as usize;
        // Where the backend sees the flow from, and what it sends back to.
        let tuple = if dnat {
            c
        } else {
            (LB, snat_port(c, vip, TCP))
        };
        let to_backend = move |p: Pkt| {
            p.macs(LB_MAC, BACKEND_MACS[b])
                .src(tuple.0, tuple.1)
                .dst(BACKENDS[b], 6443)
                .ttl(63)
        };
        let from_backend =
            |flags: u8| Pkt::tcp((BACKENDS[b], 6443), tuple, flags).macs(BACKEND_MACS[b], LB_MAC);
        let to_client = move |p: Pkt| {
            p.macs(LB_MAC, CLIENT_MAC)
                .src(vip.0, vip.1)
                .dst(c.0, c.1)
                .ttl(63)
        };
        let client = |flags: u8, seq: u32, data: &[u8]| {
            Pkt::tcp(c, vip, flags).seq(seq).ack(1001).payload(data)
        };
        let mode = if dnat { "dnat" } else { "fullnat" };
        let steps: [(&'static str, Pkt, bool); 10] = [
            ("SYN", client(SYN, 1000, b""), true),
            ("SYN-ACK", from_backend(SYN | ACK), false),
            (
                "proven ACK with data: confirmed",
                client(ACK | PSH, 1001, b"hello"),
                true,
            ),
            (
                "backend's data",
                from_backend(ACK | PSH)
                    .seq(1001)
                    .ack(1006)
                    .payload(b"world"),
                false,
            ),
            (
                "client's data: established",
                client(ACK | PSH, 1006, b"again"),
                true,
            ),
            (
                "established data (fast path)",
                client(ACK | PSH, 1011, b"fast!"),
                true,
            ),
            (
                "established bare ACK (fast path)",
                client(ACK, 1016, b""),
                true,
            ),
            (
                "established reply (fast path)",
                from_backend(ACK | PSH)
                    .seq(1006)
                    .ack(1016)
                    .payload(b"reply"),
                false,
            ),
            (
                "established reply beyond the recorded position's slack",
                from_backend(ACK).seq(1006 + (1 << 17)),
                false,
            ),
            (
                "established data past the slack (the full path records it)",
                client(ACK, 1011 + (1 << 16), b""),
                true,
            ),
        ];
        for (what, p, forward) in steps {
            let name: &'static str = Box::leak(format!("settled {mode}: {what}").into_boxed_str());
            if forward {
                rows.push(tx(name, &p, &to_backend(p.clone()), Reason::TxForward));
            } else {
                rows.push(tx(name, &p, &to_client(p.clone()), Reason::TxReply));
            }
        }
    }
    // UDP: confirmed by the backend's first answer, then settled both ways.
    let vu = (VIP, 53);
    let cu = (CLIENT, 5020);
    let b = backend_of(cu, vu, UDP, &udp_table) as usize - 3;
    let su = snat_port(cu, vu, UDP);
    let to_backend = |p: Pkt| {
        p.macs(LB_MAC, BACKEND_MACS[b])
            .src(LB, su)
            .dst(BACKENDS[b], UDP_BACKEND_PORT)
            .ttl(63)
    };
    let reply = Pkt::udp((BACKENDS[b], UDP_BACKEND_PORT), (LB, su))
        .macs(BACKEND_MACS[b], LB_MAC)
        .payload(b"answer");
    let to_client = |p: Pkt| {
        p.macs(LB_MAC, CLIENT_MAC)
            .src(VIP, 53)
            .dst(CLIENT, 5020)
            .ttl(63)
    };
    let q = Pkt::udp(cu, vu).payload(b"query");
    rows.push(tx(
        "settled UDP: first query",
        &q,
        &to_backend(q.clone()),
        Reason::TxForward,
    ));
    rows.push(tx(
        "settled UDP: first answer, confirmed",
        &reply,
        &to_client(reply.clone()),
        Reason::TxReply,
    ));
    rows.push(tx(
        "settled UDP: query (fast path)",
        &q,
        &to_backend(q.clone()),
        Reason::TxForward,
    ));
    rows.push(tx(
        "settled UDP: answer (fast path)",
        &reply,
        &to_client(reply.clone()),
        Reason::TxReply,
    ));
    let q0 = Pkt::udp(cu, vu).payload(b"query").no_udp_checksum();
    rows.push(tx(
        "settled UDP: query without checksum (fast path)",
        &q0,
        &to_backend(q0.clone()),
        Reason::TxForward,
    ));
    // A settled flow's packet with an expired TTL: the full path's answer.
    rows.push(row(
        "settled UDP: TTL 1, passed to the stack",
        Pkt::udp(cu, vu).payload(b"query").ttl(1).bytes(),
        XDP_PASS,
        Reason::PassTtlExpired,
    ));
}

fn arp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&VIP);
    f
}

fn ipv6_frame() -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .tcp(40000, 6443, 1, 1000)
        .write(&mut f, &[])
        .unwrap();
    f
}

fn describe(frame: &[u8]) -> String {
    format!("{:?}", etherparse::SlicedPacket::from_ethernet(frame))
}

/// Every row through the program with the established fast path (`fast`) or without it
/// (`CONFIG_FLAG_NO_FAST_PATH`); returns the failures, the counters after the last row and
/// the names of the rows the fast path took.
fn run_fixture_rows(fast: bool) -> (Vec<String>, FixtureCounters, Vec<&'static str>) {
    let mut dp = Dp::standard();
    if fast {
        // For the record (docs/benchmarks.md): what the verifier walked for the XDP entry.
        let n = dp
            .prog()
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count());
        println!("xvip (XDP): {n:?} instructions verified");
    }
    dp.config_flag(CONFIG_FLAG_NO_FAST_PATH, !fast);
    let mut failures = Vec::new();
    let mut taken = Vec::new();
    for f in fixtures() {
        let before = dp.reason(f.reason);
        let (verdict, out) = if fast {
            let (v, out, by_fast) = dp.run_noting_fast(&f.input);
            if by_fast {
                taken.push(f.name);
            }
            (v, out)
        } else {
            dp.run(&f.input)
        };
        let expected = f.output.as_ref().unwrap_or(&f.input);
        if verdict != f.verdict {
            failures.push(format!(
                "{}: verdict {verdict}, expected {}",
                f.name, f.verdict
            ));
        } else if &out != expected {
            failures.push(format!(
                "{}: output differs\n  got      {}\n  expected {}\n  got      {out:02x?}\n  expected {expected:02x?}",
                f.name,
                describe(&out),
                describe(expected)
            ));
        } else if dp.reason(f.reason) != before + 1 {
            failures.push(format!(
                "{}: counter {:?} not incremented",
                f.name, f.reason
            ));
        }
        if verdict == XDP_TX {
            let c = checks(&out);
            let ok = c
                .as_ref()
                .is_some_and(|c| c.ipv4 && c.l4 && c.inner_ipv4 && c.inner_l4 != Some(false));
            if !ok {
                failures.push(format!("{}: checksums of the output: {c:?}", f.name));
            }
        }
    }
    // Conntrack after the rows: FIN and RST made their flows closing in both maps.
    let vip = (VIP, 6443);
    let e = dp
        .conntrack(&key((CLIENT, 40001), vip, TCP))
        .expect("flow 1 tracked");
    if e.state != ct_state::TCP_CLOSING {
        failures.push(format!("after FIN: forward state {}", e.state));
    }
    let r = dp
        .reverse(&FlowKey {
            src_addr: e.backend_addr,
            dst_addr: e.snat_addr,
            src_port: e.backend_port,
            dst_port: e.snat_port,
            proto: TCP,
            _pad: [0; 3],
        })
        .expect("reverse of flow 1");
    if r.state != ct_state::TCP_CLOSING {
        failures.push(format!("after FIN: reverse state {}", r.state));
    }
    // Flow 2 was refused by its backend (RST to the SYN): nothing of it stays live.
    let k2 = key((CLIENT, 40002), vip, TCP);
    if dp.conntrack(&k2).is_some() || dp.unconfirmed(&k2).is_some() {
        failures.push("after RST from the backend: flow 2 still tracked".into());
    }
    // Flow 3 only ever sent a SYN: unconfirmed, never in the confirmed maps.
    let k3 = key((CLIENT, 40003), vip, TCP);
    match (dp.conntrack(&k3), dp.unconfirmed(&k3)) {
        (None, Some(u)) if u.state == ct_state::UNCONFIRMED => {}
        other => failures.push(format!("SYN only: flow 3 is {other:?}")),
    }
    (failures, dp.counters(8), taken)
}

/// A settled flow idle for two seconds (its entries due a refresh of `last_seen`): the
/// fast path takes its next packet each way and makes the full path's writes, both
/// entries' `last_seen` refreshed and nothing else changed; bytes, verdicts and counters
/// as without the fast path.
#[test]
fn an_idle_settled_flow_is_refreshed_alike_by_both_paths() {
    const IDLE_NS: u64 = 2_000_000_000;
    let mut rows = Vec::new();
    settled_rows(&mut rows);
    let key = key((CLIENT, 40030), (VIP, 6443), TCP);
    let mut ends = Vec::new();
    for fast in [true, false] {
        let mut dp = Dp::standard();
        dp.config_flag(CONFIG_FLAG_NO_FAST_PATH, !fast);
        // SYN .. the client's data: established (fullnat, the first five rows).
        for r in &rows[..5] {
            assert_eq!(dp.run(&r.input).0, r.verdict, "{}", r.name);
        }
        let mut entries = Vec::new();
        // The established data (row 5), then the established reply (row 7), each after
        // two idle seconds.
        for r in [&rows[5], &rows[7]] {
            let rkey = dp.age(&key, IDLE_NS);
            let aged = (
                dp.conntrack(&key).unwrap().last_seen_ns,
                dp.reverse(&rkey).unwrap().last_seen_ns,
            );
            let (v, out, taken) = if fast {
                dp.run_noting_fast(&r.input)
            } else {
                let (v, out) = dp.run(&r.input);
                (v, out, false)
            };
            assert_eq!(taken, fast, "{}: taken by the fast path", r.name);
            assert_eq!(
                (v, &out),
                (r.verdict, r.output.as_ref().unwrap()),
                "{} (fast path {fast})",
                r.name
            );
            let (mut e, mut rev) = (dp.conntrack(&key).unwrap(), dp.reverse(&rkey).unwrap());
            assert!(
                rev.last_seen_ns > aged.1,
                "{}: reverse entry refreshed",
                r.name
            );
            // A reply refreshes only its reverse entry; a client's packet both.
            let forward = r.name.contains("data");
            assert_eq!(
                e.last_seen_ns > aged.0,
                forward,
                "{}: forward entry",
                r.name
            );
            (e.last_seen_ns, rev.last_seen_ns) = (0, 0);
            entries.push((e, rev));
        }
        ends.push((dp.counters(8), entries));
    }
    assert_eq!(
        ends[0], ends[1],
        "the two paths left different counters or entries"
    );
}

/// Reasons, then the traffic counters of VIPs and backends 0..8.
type FixtureCounters = (Vec<u64>, Vec<lb_common::Counters>);

/// The rows run twice, with the established fast path and without it: each run gets every
/// row's bytes, verdict and reason right, both end with the same counters, and the fast
/// path takes every row marked "(fast path)" (and none of those it must leave alone).
#[test]
fn fixtures_translate_every_packet_class_byte_for_byte() {
    let (mut failures, fast_counters, taken) = run_fixture_rows(true);
    let (full_failures, full_counters, _) = run_fixture_rows(false);
    failures.extend(
        full_failures
            .into_iter()
            .map(|f| format!("without the fast path: {f}")),
    );
    for f in fixtures() {
        let marked = f.name.contains("(fast path)");
        if marked != taken.contains(&f.name) {
            failures.push(format!(
                "{}: {} by the fast path",
                f.name,
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

/// The tc entry (`--attach tc`) runs the same path: every row gets the same bytes and the
/// same verdict in tc's terms, counted under the same reason, with valid checksums; a
/// tagged row is left alone there (the kernel has the tag off the frame before tc, and
/// the tc path does not put one back), counted as `PassTcUnhandled`.
#[test]
fn the_tc_entry_gives_every_row_the_same_bytes_and_verdict() {
    let dp = Dp::standard();
    let mut failures = Vec::new();
    let (mut tagged, mut short) = (0, 0);
    for f in fixtures() {
        let tag = |b: &[u8]| matches!(u16::from_be_bytes([b[12], b[13]]), 0x8100 | 0x88a8);
        // A tag cut short is a broken frame to both entries.
        let is_tagged = tag(&f.input) && f.input.len() >= 18;
        if !is_tagged && f.output.as_ref().is_some_and(|o| tag(o)) {
            // The reply of a flow whose tagged start tc left alone: not translated here.
            tagged += 1;
            match dp.run_tc(&f.input) {
                Ok((v, out)) if v != TC_REDIRECT && out == f.input => {}
                other => failures.push(format!("{}: tc translated it: {other:?}", f.name)),
            }
            continue;
        }
        let (want_verdict, want_out, reason) = if is_tagged {
            tagged += 1;
            (TC_NEXT, &f.input, Reason::PassTcUnhandled)
        } else {
            (
                tc_verdict(f.verdict),
                f.output.as_ref().unwrap_or(&f.input),
                f.reason,
            )
        };
        let before = dp.reason(reason);
        let (verdict, out) = match dp.run_tc(&f.input) {
            Ok(r) => r,
            // The kernel builds no skb for IPv4 shorter than its header (`pskb_may_pull`
            // in the skb test run); such rows are XDP's alone.
            Err(_) if f.input.len() < 14 + 20 => {
                short += 1;
                continue;
            }
            Err(e) => {
                failures.push(format!(
                    "{}: tc test run: {e} ({} bytes)",
                    f.name,
                    f.input.len()
                ));
                continue;
            }
        };
        if verdict != want_verdict {
            failures.push(format!(
                "{}: tc verdict {verdict}, expected {want_verdict}",
                f.name
            ));
        } else if &out != want_out {
            failures.push(format!(
                "{}: tc output differs\n  got      {}\n  expected {}",
                f.name,
                describe(&out),
                describe(want_out)
            ));
        } else if dp.reason(reason) != before + 1 {
            failures.push(format!("{}: counter {reason:?} not incremented", f.name));
        }
        if verdict == TC_REDIRECT {
            let c = checks(&out);
            if !c
                .as_ref()
                .is_some_and(|c| c.ipv4 && c.l4 && c.inner_ipv4 && c.inner_l4 != Some(false))
            {
                failures.push(format!("{}: checksums of the tc output: {c:?}", f.name));
            }
        }
    }
    println!(
        "tc entry: {} rows, {tagged} tagged, {short} too short for an skb test run",
        fixtures().len()
    );
    assert!(short <= 2, "{short} rows could not run as an skb");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_costs_per_packet_class() {
    const REPEAT: u32 = 100_000;
    const SINGLE: u32 = 20_000;
    let dp = Dp::standard();
    let mut rows = Vec::new();
    for f in fixtures() {
        // Establish the state the row expects, then measure.
        let _ = dp.run(&f.input);
        let repeat = dp.cost_repeat(&f.input, REPEAT);
        let single = dp.cost_single(&f.input, SINGLE);
        // The tc entry on the same maps (`--attach tc`), where an skb can carry the row.
        let tc = dp
            .run_tc(&f.input)
            .ok()
            .map(|_| dp.cost_repeat_tc(&f.input, REPEAT));
        rows.push((f.name, f.verdict, repeat, single, tc));
    }
    println!(
        "\n{:<90} {:>8} {:>10} {:>10} {:>10}",
        "class", "verdict", "ns/pkt", "ns/single", "tc ns/pkt"
    );
    for (name, v, r, s, tc) in &rows {
        let tc = tc.map_or("-".to_string(), |t| t.to_string());
        println!("{name:<90} {v:>8} {r:>10} {s:>10} {tc:>10}");
    }
    println!(
        "ns/pkt: repeat={REPEAT} in the kernel (a rewritten frame is re-run as rewritten, so for \
         XDP_TX rows it is mostly the cost of the rewritten frame); ns/single: mean of {SINGLE} \
         single runs of the original frame (includes ~timer overhead); tc ns/pkt: the tc \
         entry, repeat={REPEAT}, the same maps (program time only: the skb is built once)."
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let json: Vec<String> = rows
            .iter()
            .map(|(n, v, r, s, tc)| {
                let tc = tc.map_or("null".to_string(), |t| t.to_string());
                format!(
                    "  {{\"class\": {n:?}, \"verdict\": {v}, \"ns_per_packet_repeat\": {r}, \"ns_per_packet_single\": {s}, \"tc_ns_per_packet_repeat\": {tc}}}"
                )
            })
            .collect();
        let _ = std::fs::write(
            dir.join("fixture_costs.json"),
            format!("[\n{}\n]\n", json.join(",\n")),
        );
    }
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    let dp = Dp::standard();
    let mut out = [0u8; 64];
    let r = dp.prog().test_run(TestRunOptions {
        data_in: Some(&[0u8; 13]),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    });
    assert!(r.is_err(), "13-byte frame accepted: {r:?}");
}

#[test]
fn snat_port_exhaustion_drops_and_never_reuses_a_port() {
    let mut dp = Dp::standard();
    dp.config(30000, 30001);
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let mut ports = Vec::new();
    let mut dropped = 0;
    for p in 41000..41006 {
        let syn = Pkt::tcp((CLIENT, p), vip, SYN);
        let (v, out) = dp.run(&syn.bytes());
        match v {
            XDP_TX => {
                let sport = u16::from_be_bytes([out[34], out[35]]);
                assert_eq!(&out[30..34], &BACKENDS[0], "all flows go to backend 0");
                ports.push((p, sport));
            }
            XDP_DROP => dropped += 1,
            other => panic!("verdict {other} for a new flow"),
        }
    }
    let distinct: BTreeSet<u16> = ports.iter().map(|(_, s)| *s).collect();
    assert_eq!(ports.len(), 2, "two ports, two flows: {ports:?}");
    assert_eq!(distinct, [30000, 30001].into(), "{ports:?}");
    assert_eq!(dropped, 4);
    assert_eq!(dp.reason(Reason::DropSnatExhausted), 4);
    // The flows that got a port keep it; the others still get none.
    for (p, sport) in &ports {
        let (v, out) = dp.run(&Pkt::tcp((CLIENT, *p), vip, ACK).bytes());
        assert_eq!(v, XDP_TX);
        assert_eq!(u16::from_be_bytes([out[34], out[35]]), *sport);
    }
    let (v, _) = dp.run(&Pkt::tcp((CLIENT, 41005), vip, SYN).bytes());
    assert_eq!(v, XDP_DROP);
    assert_eq!(dp.reason(Reason::DropSnatExhausted), 5);
    // Another backend has its own port space: the same ports are free towards it.
    dp.ring(VIP_TCP.0, 0, &[1; RING as usize]);
    let (v, out) = dp.run(&Pkt::tcp((CLIENT, 41100), vip, SYN).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(&out[30..34], &BACKENDS[1]);
}

#[test]
fn table_swap_keeps_established_flows_and_a_removed_backend_is_picked_again() {
    let mut dp = Dp::standard();
    let vip = (VIP, 6443);
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let f = (CLIENT, 42000);
    let (v, out) = dp.run(&Pkt::tcp(f, vip, SYN).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(&out[30..34], &BACKENDS[0]);
    let sport = u16::from_be_bytes([out[34], out[35]]);

    // The other half maps every slot to backend 1; flip to it.
    dp.ring(VIP_TCP.0, 1, &[1; RING as usize]);
    dp.vip(VIP, VIP_TCP, 1, VIP_FLAG_FULLNAT);
    let (v, out) = dp.run(&Pkt::tcp(f, vip, ACK).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(
        &out[30..34],
        &BACKENDS[0],
        "established flow kept its backend"
    );
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), sport);
    let (v, out) = dp.run(&Pkt::tcp((CLIENT, 42001), vip, SYN).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(
        &out[30..34],
        &BACKENDS[1],
        "a new flow follows the new table"
    );

    // Backend 0 is draining (present, out of the table): its flow still reaches it.
    let (v, out) = dp.run(&Pkt::tcp(f, vip, ACK).bytes());
    assert_eq!((v, &out[30..34]), (XDP_TX, &BACKENDS[0][..]));

    // Removed: the next SYN of the flow picks again from the live table.
    dp.backend(0, BACKENDS[0], 6443, BACKEND_MACS[0], false);
    let (v, out) = dp.run(&Pkt::tcp(f, vip, SYN).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(&out[30..34], &BACKENDS[1], "picked again after removal");
    // Its slot reused by another address: not the flow's backend any more either.
    let g = (CLIENT, 42002);
    dp.ring(VIP_TCP.0, 1, &[2; RING as usize]);
    let (_, out) = dp.run(&Pkt::tcp(g, vip, SYN).bytes());
    assert_eq!(&out[30..34], &BACKENDS[2]);
    dp.backend(2, OTHER, 6443, BACKEND_MACS[2], true);
    dp.ring(VIP_TCP.0, 1, &[1; RING as usize]);
    let (_, out) = dp.run(&Pkt::tcp(g, vip, ACK).bytes());
    assert_eq!(
        &out[30..34],
        &BACKENDS[1],
        "backend identity is address and port"
    );
}

/// A confirmed IPv4 flow finds its VIP through `VIP_KEYS` (the index its entry names) and
/// skips the `VIPS` lookup; only while the index holds the packet's own VIP key, else the
/// packet goes the slow way and answers as `VIPS` says.
#[test]
fn an_established_flow_skips_the_vip_lookup_only_while_its_index_holds_its_vip() {
    let mut dp = Dp::standard();
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let f = (CLIENT, 42100);
    let sport = handshake(&dp, f).expect("handshake");
    let ack = Pkt::tcp(f, vip, ACK).seq(1001).bytes();
    let forwarded = |dp: &Dp| {
        let (v, out) = dp.run(&ack);
        v == XDP_TX && out[30..34] == BACKENDS[0] && u16::from_be_bytes([out[34], out[35]]) == sport
    };
    let before = dp.vip_packets(VIP_TCP.0);
    assert!(forwarded(&dp), "established, both maps agree");
    assert_eq!(dp.vip_packets(VIP_TCP.0), before + 1, "counted for its VIP");

    // `VIP_KEYS` cleared, `VIPS` intact (an adopted map, a start): the slow way, same flow.
    dp.set_vip_index_key(VIP_TCP.0, VipKey::default());
    assert!(forwarded(&dp), "slow way: the same backend and tuple");
    // Another VIP's key at the index (an index reused while the entry lives): slow way.
    dp.set_vip_index_key(VIP_TCP.0, vip_key(VIP, VIP_UDP));
    assert!(forwarded(&dp), "a foreign key at the index is not a match");

    // The index holds the VIP but `VIPS` lost it (an order the daemon never writes): the
    // established packet is forwarded without asking `VIPS`, which shows the lookup is
    // skipped; a new flow does ask, and is not ours.
    dp.set_vip_index_key(VIP_TCP.0, vip_key(VIP, VIP_TCP));
    dp.remove_vip_entry(VIP, VIP_TCP);
    assert!(forwarded(&dp), "fast path: no VIPS lookup");
    let passed = dp.reason(Reason::PassNotForVip);
    let (v, _) = dp.run(&Pkt::tcp((CLIENT, 42101), vip, SYN).bytes());
    assert_eq!(v, XDP_PASS, "a new flow to a VIP not in VIPS");
    assert_eq!(dp.reason(Reason::PassNotForVip), passed + 1);

    // Removed as the daemon removes it (index cleared first): the flow is not served.
    dp.set_vip_index_key(VIP_TCP.0, VipKey::default());
    let (v, out) = dp.run(&ack);
    assert_eq!(
        (v, &out[..]),
        (XDP_PASS, &ack[..]),
        "removed VIP: untouched"
    );
    assert_eq!(dp.reason(Reason::PassNotForVip), passed + 2);
}

/// A client reusing its source port after a close starts a new stream on the closing entry
/// (clients making a new connection per request cycle the ephemeral range in seconds, the
/// server having closed first, so nothing holds the port): the new connection's FIN and
/// the backend's must fit the new streams, not the old ones. Before, neither SYN moved the
/// recorded position (it did not fit the old window), so both FINs were dropped as out of
/// window and every such connection hung on close.
#[test]
fn a_reused_client_port_starts_new_sequence_windows() {
    let mut dp = Dp::standard();
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let f = (CLIENT, 42300);
    let sport = handshake(&dp, f).expect("handshake");
    let backend = |flags: u8, seq: u32| {
        Pkt::tcp((BACKENDS[0], 6443), (LB, sport), flags)
            .seq(seq)
            .macs(BACKEND_MACS[0], LB_MAC)
            .bytes()
    };
    let tx = |dp: &Dp, frame: &[u8]| dp.run(frame).0 == XDP_TX;
    assert!(
        tx(&dp, &Pkt::tcp(f, vip, FIN | ACK).seq(1001).bytes()),
        "client FIN"
    );
    assert!(tx(&dp, &backend(FIN | ACK, 1001)), "backend FIN");
    let dropped = dp.reason(Reason::DropOutOfWindow);

    // The same client port, a new connection: new initial sequence numbers both ways.
    let (c_isn, b_isn) = (0x8000_0000u32, 0x9000_0000u32);
    let (v, out) = dp.run(&Pkt::tcp(f, vip, SYN).seq(c_isn).bytes());
    assert_eq!(
        (v, &out[30..34]),
        (XDP_TX, &BACKENDS[0][..]),
        "SYN on the closing entry"
    );
    assert_eq!(
        u16::from_be_bytes([out[34], out[35]]),
        sport,
        "the same tuple"
    );
    assert!(tx(&dp, &backend(SYN | ACK, b_isn)), "backend's SYN-ACK");
    assert!(
        tx(
            &dp,
            &Pkt::tcp(f, vip, ACK).seq(c_isn + 1).ack(b_isn + 1).bytes()
        ),
        "client ACK"
    );
    assert_eq!(
        dp.conntrack(&key(f, vip, TCP)).map(|e| e.state),
        Some(ct_state::TCP_OPEN),
        "the new handshake is proven"
    );
    assert!(
        tx(&dp, &Pkt::tcp(f, vip, FIN | ACK).seq(c_isn + 1).bytes()),
        "the new connection's FIN fits its own stream"
    );
    assert!(
        tx(&dp, &backend(FIN | ACK, b_isn + 1)),
        "the backend's FIN fits its new stream"
    );
    assert_eq!(
        dp.reason(Reason::DropOutOfWindow),
        dropped,
        "nothing out of window"
    );
    // A blind RST far from the new streams is still refused.
    let (v, _) = dp.run(&Pkt::tcp(f, vip, RST).seq(c_isn + (1 << 30)).bytes());
    assert_eq!(v, XDP_DROP, "out-of-window RST");
}

/// A client (any source: the data path cannot tell a spoofed one) that sends a SYN and then
/// an ACK of a number it guessed, after the backend's SYN-ACK: the flow is not confirmed,
/// and the backend's RST (the bogus ACK's number as its sequence number) ends the attempt
/// and frees the tuple. The right ACK confirms, for 30 s (`TCP_OPEN`) until data has
/// flowed both ways, then for 2 h.
#[test]
fn a_guessed_ack_confirms_nothing_and_the_backends_rst_ends_the_attempt() {
    let mut dp = Dp::standard();
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let b_isn = 0x7000_0000u32;
    let guessed = 0x1234_5678u32;
    let syn_synack = |dp: &Dp, c: ([u8; 4], u16)| -> u16 {
        let (v, out) = dp.run(&Pkt::tcp(c, vip, SYN).bytes());
        assert_eq!(v, XDP_TX, "SYN forwarded");
        let sport = u16::from_be_bytes([out[34], out[35]]);
        let synack = Pkt::tcp((BACKENDS[0], 6443), (LB, sport), SYN | ACK)
            .seq(b_isn)
            .macs(BACKEND_MACS[0], LB_MAC);
        assert_eq!(dp.run(&synack.bytes()).0, XDP_TX, "SYN-ACK to the client");
        sport
    };
    let backend = |sport: u16, flags: u8, seq: u32| {
        Pkt::tcp((BACKENDS[0], 6443), (LB, sport), flags)
            .seq(seq)
            .macs(BACKEND_MACS[0], LB_MAC)
    };
    for c in [([203, 0, 113, 7], 40000), (CLIENT, 40001)] {
        let sport = syn_synack(&dp, c);
        let (v, out) = dp.run(&Pkt::tcp(c, vip, ACK).seq(1001).ack(guessed).bytes());
        assert_eq!(
            (v, u16::from_be_bytes([out[34], out[35]])),
            (XDP_TX, sport),
            "the guessed ACK is still forwarded (the backend decides)"
        );
        assert!(
            dp.conntrack(&key(c, vip, TCP)).is_none(),
            "{c:?}: a guessed ACK confirmed the flow"
        );
        assert!(
            dp.unconfirmed(&key(c, vip, TCP)).is_some(),
            "still unconfirmed"
        );
        // Other wrong numbers: one off either way, the client's own.
        for wrong in [b_isn, b_isn + 2, 1001] {
            let _ = dp.run(&Pkt::tcp(c, vip, ACK).seq(1001).ack(wrong).bytes());
        }
        assert!(dp.conntrack(&key(c, vip, TCP)).is_none(), "near misses");
        // The backend rejects the bogus ACK: RST, seq = the guessed number.
        let (v, out) = dp.run(&backend(sport, RST, guessed).bytes());
        assert_eq!(
            (v, &out[30..34]),
            (XDP_TX, &c.0[..]),
            "the RST goes to the client"
        );
        assert!(
            dp.unconfirmed(&key(c, vip, TCP)).is_none(),
            "the RST ends the attempt"
        );
    }
    assert_eq!(dp.count(map_names::CONNTRACK), 0);
    assert_eq!(dp.count_rev(map_names::REVERSE), 0);

    // The right ACK: confirmed, but short-lived until data has flowed both ways.
    let c = (CLIENT, 40002);
    let sport = syn_synack(&dp, c);
    assert_eq!(
        dp.run(&Pkt::tcp(c, vip, ACK).seq(1001).ack(b_isn + 1).bytes())
            .0,
        XDP_TX
    );
    let state = |dp: &Dp| dp.conntrack(&key(c, vip, TCP)).map(|e| e.state);
    let rstate = |dp: &Dp| {
        dp.reverse(&key((BACKENDS[0], 6443), (LB, sport), TCP))
            .map(|r| r.state)
    };
    assert_eq!(state(&dp), Some(ct_state::TCP_OPEN), "proven: confirmed");
    assert_eq!(rstate(&dp), Some(ct_state::TCP_OPEN));
    // The client's data alone, then the backend's: established at the client's next packet.
    let data = Pkt::tcp(c, vip, ACK | PSH)
        .seq(1001)
        .ack(b_isn + 1)
        .payload(b"hello");
    assert_eq!(dp.run(&data.bytes()).0, XDP_TX);
    assert_eq!(
        state(&dp),
        Some(ct_state::TCP_OPEN),
        "one way is not enough"
    );
    let answer = backend(sport, ACK | PSH, b_isn + 1).payload(b"world");
    assert_eq!(dp.run(&answer.bytes()).0, XDP_TX);
    let ack = Pkt::tcp(c, vip, ACK).seq(1006).ack(b_isn + 6);
    assert_eq!(dp.run(&ack.bytes()).0, XDP_TX);
    assert_eq!(
        state(&dp),
        Some(ct_state::TCP_ESTABLISHED),
        "data both ways"
    );
    assert_eq!(rstate(&dp), Some(ct_state::TCP_ESTABLISHED));
}

/// Passive health's counters: a new flow's SYN counts once (not its retransmission), the
/// backend's first answer once (a SYN-ACK answered, a RST refused; not its
/// retransmissions), a flow picked up mid-stream not at all.
#[test]
fn handshake_counters_count_each_new_flows_syn_and_first_answer_once() {
    let mut dp = Dp::standard();
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let passive = |dp: &Dp| {
        let p = dp.passive(0);
        (p.syns, p.answered, p.refused)
    };
    let from_backend = |sport: u16, flags: u8| {
        Pkt::tcp((BACKENDS[0], 6443), (LB, sport), flags)
            .seq(0x7000_0000)
            .macs(BACKEND_MACS[0], LB_MAC)
    };
    let syn = |dp: &Dp, c: ([u8; 4], u16)| -> u16 {
        let (v, out) = dp.run(&Pkt::tcp(c, vip, SYN).bytes());
        assert_eq!(v, XDP_TX, "SYN forwarded");
        u16::from_be_bytes([out[34], out[35]])
    };
    assert_eq!(passive(&dp), (0, 0, 0));
    // Answered: SYN twice (a retransmission), SYN-ACK twice.
    let c = (CLIENT, 41000);
    let sport = syn(&dp, c);
    assert_eq!(syn(&dp, c), sport);
    assert_eq!(
        passive(&dp),
        (1, 0, 0),
        "a retransmitted SYN is no new flow"
    );
    for _ in 0..2 {
        assert_eq!(dp.run(&from_backend(sport, SYN | ACK).bytes()).0, XDP_TX);
    }
    assert_eq!(passive(&dp), (1, 1, 0), "the first answer only");
    // Refused: the backend's RST to the SYN.
    let sport = syn(&dp, (CLIENT, 41001));
    assert_eq!(dp.run(&from_backend(sport, RST | ACK).bytes()).0, XDP_TX);
    assert_eq!(passive(&dp), (2, 1, 1));
    // A client's doing, not the backend's: a RST without ACK answers a segment that carried
    // one (a guessed ACK sent behind the SYN), so it ends the attempt but refuses nothing.
    let sport = syn(&dp, (CLIENT, 41003));
    assert_eq!(dp.run(&from_backend(sport, RST).bytes()).0, XDP_TX);
    assert_eq!(
        passive(&dp),
        (3, 1, 1),
        "a RST to the client's ACK counted as refused"
    );
    // SYN+FIN and SYN+RST, which a Linux listener drops unanswered, are no handshakes.
    for (port, flags) in [(41004, SYN | FIN), (41005, SYN | RST)] {
        let _ = dp.run(&Pkt::tcp((CLIENT, port), vip, flags).bytes());
    }
    assert_eq!(passive(&dp), (3, 1, 1), "malformed SYNs counted");
    // Mid-stream (a bare ACK opens the flow) and the backend's RST to it: not a handshake.
    let (v, out) = dp.run(
        &Pkt::tcp((CLIENT, 41002), vip, ACK)
            .seq(5000)
            .ack(9000)
            .bytes(),
    );
    assert_eq!(v, XDP_TX);
    let sport = u16::from_be_bytes([out[34], out[35]]);
    let _ = dp.run(&from_backend(sport, RST).bytes());
    assert_eq!(passive(&dp), (3, 1, 1), "mid-stream flows are not counted");
    // Hostile: RSTs sprayed from the backend's address at SNAT ports with no handshake in
    // progress, and at the refused flow's port again, count nothing.
    for port in [SNAT_MIN, SNAT_MIN + 1, sport.wrapping_add(1), SNAT_MAX] {
        let _ = dp.run(&from_backend(port, RST).bytes());
    }
    assert_eq!(passive(&dp), (3, 1, 1), "spoofed RSTs counted");
    // Only backend 0's slot moved.
    assert_eq!(dp.passive(1), lb_common::Passive::default());
}

/// A blind SYN on a closing entry starts new windows (a client reusing its port) but buys
/// 5 s, not 2 h: a guessed ACK leaves it in `TCP_SYN`, and the backend's RST to that ACK
/// (whatever its sequence number) is honoured. Only the ACK of the backend's new SYN-ACK
/// moves it on.
#[test]
fn a_blind_syn_on_a_closing_entry_buys_no_long_life() {
    let mut dp = Dp::standard();
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let tx = |dp: &Dp, p: Pkt| dp.run(&p.bytes()).0 == XDP_TX;
    let state = |dp: &Dp, c| dp.conntrack(&key(c, vip, TCP)).map(|e| e.state);
    for (i, proven) in [false, true].into_iter().enumerate() {
        let f = (CLIENT, 42400 + i as u16);
        let sport = handshake(&dp, f).expect("handshake");
        let backend = |flags: u8, seq: u32| {
            Pkt::tcp((BACKENDS[0], 6443), (LB, sport), flags)
                .seq(seq)
                .macs(BACKEND_MACS[0], LB_MAC)
        };
        assert!(tx(&dp, Pkt::tcp(f, vip, FIN | ACK).seq(1001)), "client FIN");
        assert!(tx(&dp, backend(FIN | ACK, 1001)), "backend FIN");
        assert_eq!(state(&dp, f), Some(ct_state::TCP_CLOSING));

        let (c_isn, b_isn) = (0x5000_0000u32, 0x6000_0000u32);
        assert!(tx(&dp, Pkt::tcp(f, vip, SYN).seq(c_isn)), "blind SYN");
        assert_eq!(state(&dp, f), Some(ct_state::TCP_SYN));
        // A guessed ACK before any SYN-ACK, and one after it: still SYN (5 s).
        let guess = Pkt::tcp(f, vip, ACK).seq(c_isn + 1).ack(0xdead_beef);
        assert!(tx(&dp, guess.clone()), "forwarded");
        assert_eq!(state(&dp, f), Some(ct_state::TCP_SYN), "no SYN-ACK yet");
        assert!(tx(&dp, backend(SYN | ACK, b_isn)), "backend's SYN-ACK");
        assert!(tx(&dp, guess));
        assert_eq!(
            state(&dp, f),
            Some(ct_state::TCP_SYN),
            "a guessed ACK revived the entry"
        );
        if proven {
            let ack = Pkt::tcp(f, vip, ACK).seq(c_isn + 1).ack(b_isn + 1);
            assert!(tx(&dp, ack));
            assert_eq!(state(&dp, f), Some(ct_state::TCP_OPEN), "proven");
        } else {
            // The backend rejects the guessed ACK: its RST (seq = the guess) is honoured.
            let dropped = dp.reason(Reason::DropOutOfWindow);
            assert!(
                tx(&dp, backend(RST, 0xdead_beef)),
                "the backend's RST passes"
            );
            assert_eq!(dp.reason(Reason::DropOutOfWindow), dropped);
            assert_eq!(state(&dp, f), Some(ct_state::TCP_CLOSING), "and closes it");
        }
    }
}

/// Valid frames of every class the program handles, after the flows they refer to exist.
fn base_frames(dp: &Dp) -> Vec<Vec<u8>> {
    let mut bases = Vec::new();
    for f in fixtures() {
        // Run every fixture once, so replies and errors find their flows.
        let _ = dp.run(&f.input);
        bases.push(f.input);
    }
    let vip = (VIP, 6443);
    for p in 0..8u16 {
        bases.push(
            Pkt::tcp((CLIENT, 43000 + p), vip, ACK)
                .payload(b"data")
                .bytes(),
        );
        bases.push(Pkt::tcp((OTHER, 43000 + p), (CLIENT, 80), ACK).bytes());
        bases.push(
            Pkt::udp((CLIENT, 43000 + p), (VIP, 53))
                .payload(b"q")
                .vlan(7)
                .bytes(),
        );
    }
    bases
}

/// Whether an (input) frame is addressed to one of the program's addresses: a VIP, the
/// SNAT address or, since a DNAT VIP exists, the client.
fn addressed_to_us(frame: &[u8]) -> bool {
    let (l3, et) = match frame.get(12..14) {
        Some([0x81, 0x00]) | Some([0x88, 0xa8]) => (18, frame.get(16..18)),
        et => (14, et),
    };
    if et != Some(&[0x08, 0x00][..]) {
        return false;
    }
    match frame.get(l3 + 16..l3 + 20) {
        Some(d) => [VIP, VIP_DNAT, LB, CLIENT].iter().any(|a| a == d),
        None => false,
    }
}

/// Whether `out` is `input` sent on as a reply of the DNAT VIP: same destination, source
/// the VIP (or, for an ICMP error from a router, unchanged).
fn dnat_reply(input: &[u8], out: &[u8]) -> bool {
    let l3 = if input[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    let (Some(isrc), Some(idst), Some(osrc), Some(odst)) = (
        input.get(l3 + 12..l3 + 16),
        input.get(l3 + 16..l3 + 20),
        out.get(l3 + 12..l3 + 16),
        out.get(l3 + 16..l3 + 20),
    ) else {
        return false;
    };
    idst == odst && (osrc == VIP_DNAT || (osrc == isrc && input[l3 + 9] == 1))
}

#[test]
fn a_million_random_and_mutated_frames_keep_the_invariants() {
    const FRAMES: u64 = 1_000_000;
    let seed: u64 = std::env::var("XVIP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0ff_ee00);
    let dp = Dp::standard();
    let bases = base_frames(&dp);
    let mut rng = Rng(seed);
    let start = Instant::now();
    let (mut pass, mut drop, mut txed, mut tx_valid) = (0u64, 0u64, 0u64, 0u64);
    let mut failures: Vec<String> = Vec::new();
    for n in 0..FRAMES {
        let mut f = bases[rng.below(bases.len())].clone();
        let l3 = if f[12..14] == [0x81, 0x00] { 18 } else { 14 };
        let mutations = rng.below(4);
        for _ in 0..mutations {
            match rng.below(8) {
                0 | 1 => {
                    let i = rng.below(f.len());
                    f[i] ^= 1 << rng.below(8);
                }
                2 => {
                    let i = rng.below(f.len());
                    f[i] = rng.next_u64() as u8;
                }
                3 => {
                    let len = 14 + rng.below(f.len() - 13);
                    f.truncate(len);
                }
                4 if f.len() > l3 => f[l3] = 0x40 | (rng.next_u64() as u8 & 0x0f),
                5 if f.len() > l3 + 7 => {
                    let v = rng.next_u64() as u16 & 0xbfff;
                    f[l3 + 6..l3 + 8].copy_from_slice(&v.to_be_bytes());
                }
                6 if f.len() > l3 + 3 => {
                    let v = rng.next_u64() as u16 % 200;
                    f[l3 + 2..l3 + 4].copy_from_slice(&v.to_be_bytes());
                }
                7 if f.len() > l3 + 9 => f[l3 + 9] = [1u8, 6, 17, 47, 0][rng.below(5)],
                _ => {}
            }
        }
        if rng.below(2) == 0 {
            fix_checksums(&mut f);
        }
        let (v, out) = dp.run(&f);
        let mut fail = |what: String| {
            if failures.len() < 20 {
                failures.push(format!(
                    "frame {n}: {what}\n  in  {f:02x?}\n  out {out:02x?}"
                ));
            }
        };
        match v {
            XDP_PASS | XDP_DROP => {
                if v == XDP_PASS {
                    pass += 1;
                } else {
                    drop += 1;
                }
                if out != f {
                    fail(format!("verdict {v} but the frame was modified"));
                }
                if !addressed_to_us(&f) && v != XDP_PASS {
                    fail("not addressed to us, yet not passed".into());
                }
            }
            XDP_TX => {
                txed += 1;
                // Any address can be a DNAT client (mutated sources made new ones): a frame
                // to one is rewritten only as a reply from the DNAT VIP to that client.
                if !addressed_to_us(&f) && !dnat_reply(&f, &out) {
                    fail("not addressed to us, yet rewritten, not as a DNAT reply".into());
                }
                // Only a tag pushed or popped (the client's, on replies) changes the length.
                let tagged =
                    |x: &[u8]| x.len() >= 14 && matches!([x[12], x[13]], [0x81, 0] | [0x88, 0xa8]);
                let tag_delta = 4 * (tagged(&out) as isize - tagged(&f) as isize);
                if out.len() as isize != f.len() as isize + tag_delta {
                    fail("length changed beyond a VLAN tag".into());
                }
                match (checks(&f), checks(&out)) {
                    (Some(i), Some(o)) => {
                        if i.ipv4 && i.l4 && i.inner_ipv4 && i.inner_l4 != Some(false) {
                            tx_valid += 1;
                        }
                        // Incremental updates keep each checksum exactly as right as it was.
                        if i != o {
                            fail(format!("checksums in {i:?} out {o:?}"));
                        }
                    }
                    (i, o) => fail(format!("unparsable: in {i:?} out {o:?}")),
                }
            }
            XDP_ABORTED => fail("XDP_ABORTED".into()),
            other => fail(format!("unexpected verdict {other}")),
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{FRAMES} frames (seed {seed:#x}) in {elapsed:.2?} ({:.0} ns/frame): {pass} passed, \
         {drop} dropped, {txed} rewritten ({tx_valid} from frames with valid checksums)",
        elapsed.as_nanos() as f64 / FRAMES as f64
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        tx_valid > FRAMES / 20,
        "too few valid rewrites ({tx_valid}) to mean anything"
    );
}

/// A full handshake of `client` to the fullnat TCP VIP through backend 0 (the test's table
/// has only it): SYN, SYN-ACK, ACK. Returns the SNAT port, or None when the SYN was dropped.
fn handshake(dp: &Dp, client: ([u8; 4], u16)) -> Option<u16> {
    let vip = (VIP, 6443);
    let (v, out) = dp.run(&Pkt::tcp(client, vip, SYN).bytes());
    if v == XDP_DROP {
        return None;
    }
    assert_eq!(
        (v, &out[30..34]),
        (XDP_TX, &BACKENDS[0][..]),
        "SYN forwarded"
    );
    let sport = u16::from_be_bytes([out[34], out[35]]);
    let synack =
        Pkt::tcp((BACKENDS[0], 6443), (LB, sport), SYN | ACK).macs(BACKEND_MACS[0], LB_MAC);
    let (v, out) = dp.run(&synack.bytes());
    assert_eq!(v, XDP_TX, "SYN-ACK translated");
    assert_eq!(
        &out[30..34],
        &client.0,
        "SYN-ACK to the client that sent the SYN"
    );
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), client.1);
    let (v, out) = dp.run(&Pkt::tcp(client, vip, ACK).seq(1001).bytes());
    assert_eq!(v, XDP_TX, "handshake ACK forwarded");
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), sport, "same tuple");
    Some(sport)
}

#[test]
fn spoofed_syns_and_bare_acks_never_reach_the_confirmed_maps_nor_stop_a_handshake() {
    let mut dp = Dp::standard();
    // 16 ports: a new flow's probes cover the whole range, which the flood can fill.
    dp.config(30000, 30015);
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let before = (CLIENT, 43000);
    let port = handshake(&dp, before).expect("a port before the flood");

    let mut rng = Rng(7);
    for _ in 0..3000 {
        let src = (
            [203, 0, 113, rng.below(250) as u8 + 1],
            1024 + rng.below(60000) as u16,
        );
        let _ = dp.run(&Pkt::tcp(src, vip, SYN).bytes());
    }
    for p in 0..3000u16 {
        let _ = dp.run(&Pkt::tcp((CLIENT, 1024 + p), vip, ACK).bytes());
    }
    assert_eq!(
        dp.count(map_names::CONNTRACK),
        1,
        "only the confirmed flow is in CONNTRACK"
    );
    // 16 ports, one of them the confirmed flow's: the flood holds the other 15 (some
    // taken over from one flood flow by another when the run is slow: still 15 tuples).
    assert_eq!(
        dp.count_rev(map_names::UNCONFIRMED_REV),
        15,
        "the flood holds every free port"
    );
    // The confirmed flow keeps its tuple through the flood.
    let (v, out) = dp.run(
        &Pkt::tcp(before, vip, ACK | PSH)
            .seq(1001)
            .payload(b"x")
            .bytes(),
    );
    assert_eq!((v, u16::from_be_bytes([out[34], out[35]])), (XDP_TX, port));

    // Every port is held by an unconfirmed flow: a new SYN takes over the stalest once it
    // has been silent long enough (whether it is refused before depends on this test's
    // speed, so that is left to the exhaustion test); never the confirmed flow's port.
    std::thread::sleep(std::time::Duration::from_millis(
        lb_common::UNCONFIRMED_STEAL_AFTER_NS / 1_000_000 + 50,
    ));
    let new = handshake(&dp, (CLIENT, 43001)).expect("a port after the steal age");
    assert_ne!(new, port);
    assert_eq!(dp.count(map_names::CONNTRACK), 2);
}

#[test]
fn a_planted_entry_never_redirects_a_real_client_and_the_mac_follows_only_in_window() {
    let dp = Dp::standard();
    let vd = (VIP_DNAT, 6443);
    let c = (CLIENT, 44000);
    let attacker = [0x02, 0, 0, 0, 0x66, 0x66];
    let moved = [0x02, 0, 0, 0, 0x77, 0x77];
    let b = backend_of(c, vd, TCP, &[2, 1, 0, 2, 1, 0, 2]) as usize;
    let reply_mac = |flags: u8| {
        let reply = Pkt::tcp((BACKENDS[b], 6443), c, flags).macs(BACKEND_MACS[b], LB_MAC);
        let (v, out) = dp.run(&reply.bytes());
        assert_eq!(v, XDP_TX);
        <[u8; 6]>::try_from(&out[0..6]).unwrap()
    };
    // A spoofed ACK with the client's address from the attacker's MAC...
    let (v, _) = dp.run(&Pkt::tcp(c, vd, ACK).macs(attacker, LB_MAC).bytes());
    assert_eq!(v, XDP_TX, "mid-stream pickup is still forwarded");
    // ...then the real client connects from that port: its SYN-ACK goes to it.
    let (v, _) = dp.run(&Pkt::tcp(c, vd, SYN).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(reply_mac(SYN | ACK), CLIENT_MAC);
    let (v, _) = dp.run(&Pkt::tcp(c, vd, ACK).seq(1001).bytes());
    assert_eq!(v, XDP_TX);
    assert!(dp.conntrack(&key(c, vd, TCP)).is_some(), "confirmed");
    // Confirmed: a segment from another MAC outside the client's window moves nothing...
    let (v, _) = dp.run(
        &Pkt::tcp(c, vd, ACK)
            .macs(attacker, LB_MAC)
            .seq(1001 + (1 << 30))
            .bytes(),
    );
    assert_eq!(v, XDP_TX);
    assert_eq!(reply_mac(ACK), CLIENT_MAC);
    // ...one in window (the client moved behind another router) does.
    let (v, _) = dp.run(&Pkt::tcp(c, vd, ACK).macs(moved, LB_MAC).seq(1001).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(reply_mac(ACK), moved);
}

#[test]
fn concurrent_claimers_never_share_a_tuple() {
    // Two threads race for four SNAT ports: each claims one with a SYN, checks that the
    // backend's SYN-ACK on it reaches its own client, and gives it back with the backend's
    // RST. A tuple claimed by both would send one of the SYN-ACKs to the wrong client.
    let mut dp = Dp::standard();
    dp.config(31000, 31003);
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let dp = &dp;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2u8)
            .map(|t| {
                scope.spawn(move || {
                    let (mut won, mut lost) = (0u32, 0u32);
                    for i in 0..3000u16 {
                        let client = ([198, 51, 100, 10 + t], 1024 + i);
                        let (v, out) = dp.run(&Pkt::tcp(client, vip, SYN).bytes());
                        if v != XDP_TX {
                            lost += 1;
                            continue;
                        }
                        won += 1;
                        let sport = u16::from_be_bytes([out[34], out[35]]);
                        let from_backend = |flags| {
                            Pkt::tcp((BACKENDS[0], 6443), (LB, sport), flags)
                                .macs(BACKEND_MACS[0], LB_MAC)
                                .bytes()
                        };
                        let (v, out) = dp.run(&from_backend(SYN | ACK));
                        assert_eq!(v, XDP_TX);
                        assert_eq!(
                            (&out[30..34], u16::from_be_bytes([out[36], out[37]])),
                            (&client.0[..], client.1),
                            "port {sport} answered to another client"
                        );
                        let (v, _) = dp.run(&from_backend(RST | ACK));
                        assert_eq!(v, XDP_TX);
                    }
                    (won, lost)
                })
            })
            .collect();
        for w in workers {
            let (won, lost) = w.join().expect("no tuple shared");
            assert!(won > 100, "claims won {won}, lost {lost}");
        }
    });
}

/// Conntrack sync's events (`lb-ebpf/src/sync.rs`): nothing while sync is off; with it on,
/// one event when a flow is confirmed, one when it starts closing, none for unconfirmed
/// flows (a SYN flood writes nothing to the sync channel) and none per packet.
#[test]
fn sync_events_only_for_confirmed_flows_and_their_ends() {
    let mut dp = Dp::standard();
    // `handshake` expects backend 0.
    dp.ring(VIP_TCP.0, 0, &[0; RING as usize]);
    let vip = (VIP, 6443);
    let counts = |dp: &Dp| -> (u64, u64) {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(dp.ebpf.map(map_names::SYNC_COUNTS).unwrap()).unwrap();
        let sum = |i: u32| m.get(&i, 0).unwrap().iter().sum::<u64>();
        (
            sum(lb_common::SYNC_COUNT_EMITTED),
            sum(lb_common::SYNC_COUNT_RING_FULL),
        )
    };
    handshake(&dp, (CLIENT, 41000)).expect("handshake");
    assert_eq!(counts(&dp), (0, 0), "sync off: no event");

    let mut cfg: Array<_, Config> =
        Array::try_from(dp.ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
    let mut c = cfg.get(&0, 0).unwrap();
    c.flags |= lb_common::CONFIG_FLAG_SYNC;
    cfg.set(0, &c, 0).unwrap();
    for p in 0..500u16 {
        let _ = dp.run(&Pkt::tcp(([203, 0, 113, 9], 2000 + p), vip, SYN).bytes());
        let _ = dp.run(&Pkt::tcp(([203, 0, 113, 10], 2000 + p), vip, ACK).bytes());
    }
    assert_eq!(counts(&dp), (0, 0), "unconfirmed flows: no event");
    let client = (CLIENT, 41001);
    handshake(&dp, client).expect("handshake");
    assert_eq!(counts(&dp), (1, 0), "one event for the confirmed flow");
    for i in 0..20u32 {
        let (v, _) = dp.run(
            &Pkt::tcp(client, vip, ACK | PSH)
                .seq(1001 + i)
                .payload(b"x")
                .bytes(),
        );
        assert_eq!(v, XDP_TX);
    }
    assert_eq!(counts(&dp).0, 1, "no event per packet");
    let (v, _) = dp.run(&Pkt::tcp(client, vip, FIN | ACK).seq(1021).bytes());
    assert_eq!(v, XDP_TX);
    let (v, _) = dp.run(&Pkt::tcp(client, vip, FIN | ACK).seq(1021).bytes());
    assert_eq!(v, XDP_TX);
    assert_eq!(counts(&dp).0, 2, "one closing event, not one per FIN");

    let mut ring =
        aya::maps::RingBuf::try_from(dp.ebpf.take_map(map_names::SYNC_EVENTS).unwrap()).unwrap();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        assert!(item.len() >= size_of::<lb_common::SyncEvent>());
        // SAFETY: the ring holds whole `SyncEvent`s (plain data), checked long enough.
        events.push(unsafe {
            std::ptr::read_unaligned(item.as_ptr().cast::<lb_common::SyncEvent>())
        });
    }
    let k = key(client, vip, IPPROTO_TCP);
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].kind, events[0].key, events[0].entry.state),
        // Confirmed by a proven handshake, no data both ways yet (a peer installs it
        // with the 30 s timeout).
        (lb_common::SYNC_CONFIRMED, k, ct_state::TCP_OPEN)
    );
    assert_eq!(
        events[0].entry,
        dp.conntrack(&k)
            .map(|mut e| {
                // The entry as confirmed: later packets moved only its clock and window.
                e.last_seen_ns = events[0].entry.last_seen_ns;
                e.seq_next = events[0].entry.seq_next;
                e.state = events[0].entry.state;
                e.flags = events[0].entry.flags;
                e
            })
            .unwrap()
    );
    assert_eq!(
        (events[1].kind, events[1].key),
        (lb_common::SYNC_CLOSING, k)
    );
}

/// An address other than `addr` in the same `BACKEND_SLOTS` slot (from 198.18.0.0/15, the
/// benchmarking range: the frame only ever goes through `BPF_PROG_TEST_RUN`).
fn slot_sharer(addr: [u8; 4]) -> [u8; 4] {
    use lb_common::Addr;
    let slot = ip_raw(addr).backend_slot();
    (0..1u32 << 17)
        .map(|i| {
            let [_, _, c, d] = i.to_be_bytes();
            [198, 18 + (i >> 16) as u8, c, d]
        })
        .find(|a| *a != addr && ip_raw(*a).backend_slot() == slot)
        .expect("some address of a /15 shares one of 4096 slots")
}

/// Sets `BACKEND_SLOTS[slot]` (the daemon only ever adds bits; a test may clear them to
/// show what the table decides).
fn set_backend_slot(dp: &mut Dp, slot: u32, v: u32) {
    let mut m: Array<_, u32> =
        Array::try_from(dp.ebpf.map_mut(map_names::BACKEND_SLOTS).unwrap()).unwrap();
    m.set(slot, &v, 0).unwrap();
}

#[test]
fn dnat_replies_are_found_through_the_backend_slots_and_other_sources_skip_the_lookups() {
    use lb_common::Addr;
    let mut dp = Dp::standard();
    let (vd, cd) = ((VIP_DNAT, 6443), (CLIENT, 40100));
    let (v, out) = dp.run(&Pkt::tcp(cd, vd, SYN).bytes());
    assert_eq!(v, XDP_TX);
    let b: [u8; 4] = out[30..34].try_into().unwrap();
    let bi = BACKENDS.iter().position(|x| *x == b).unwrap();
    let reply = Pkt::tcp((b, 6443), cd, SYN | ACK).macs(BACKEND_MACS[bi], LB_MAC);
    let (v, out) = dp.run(&reply.bytes());
    assert_eq!(
        (v, &out[26..30]),
        (XDP_TX, &VIP_DNAT[..]),
        "reply translated"
    );

    // The node's own traffic, from an address in the backend's slot: the reply lookups
    // find nothing and it passes, as without the table.
    let sharer = slot_sharer(b);
    let before = dp.reason(Reason::PassNotForVip);
    let other = Pkt::tcp((sharer, 6443), cd, SYN | ACK).macs(BACKEND_MACS[bi], LB_MAC);
    let (v, out) = dp.run(&other.bytes());
    assert_eq!(
        (v, out),
        (XDP_PASS, other.bytes()),
        "slot sharer passed untouched"
    );
    let from_other = Pkt::udp((OTHER, 53), (CLIENT, 5353));
    let (v, out) = dp.run(&from_other.bytes());
    assert_eq!(
        (v, out),
        (XDP_PASS, from_other.bytes()),
        "not from a backend"
    );
    assert_eq!(dp.reason(Reason::PassNotForVip), before + 2);

    // The table is what lets the reply through: with the backend's bit cleared, its reply
    // is taken for the node's own traffic; with the bit back, it is translated again.
    let slot = ip_raw(b).backend_slot();
    set_backend_slot(&mut dp, slot, 0);
    let (v, out) = dp.run(&reply.bytes());
    assert_eq!(
        (v, out),
        (XDP_PASS, reply.bytes()),
        "no bit: passed untouched"
    );
    set_backend_slot(&mut dp, slot, u32::BACKEND_SLOT_BIT);
    let (v, out) = dp.run(&reply.bytes());
    assert_eq!(
        (v, &out[26..30]),
        (XDP_TX, &VIP_DNAT[..]),
        "bit back: translated"
    );

    // An IPv6 backend's bit in the same slot says nothing about IPv4 sources.
    set_backend_slot(&mut dp, slot, <lb_common::Ip6 as Addr>::BACKEND_SLOT_BIT);
    let (v, _) = dp.run(&reply.bytes());
    assert_eq!(v, XDP_PASS, "the other family's bit");
    set_backend_slot(&mut dp, slot, u32::BACKEND_SLOT_BIT);

    // ICMP errors to the client are not gated by the source (a router on the way to the
    // backend reports about the packet we sent it): still translated.
    let sent = Pkt::tcp(cd, (b, 6443), ACK)
        .macs(LB_MAC, BACKEND_MACS[bi])
        .ttl(63);
    let frag_needed =
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        });
    let before = dp.reason(Reason::IcmpErrorTranslated);
    let err = Pkt::icmp(ROUTER, CLIENT, frag_needed)
        .macs(BACKEND_MACS[bi], LB_MAC)
        .payload(&quote(&sent, 8));
    let (v, _) = dp.run(&err.bytes());
    assert_eq!(
        v, XDP_TX,
        "router's ICMP error about a DNAT flow translated"
    );
    assert_eq!(dp.reason(Reason::IcmpErrorTranslated), before + 1);
}

/// The cost of the node's own traffic while a DNAT VIP exists, with `BACKEND_SLOTS` as the
/// daemon writes it and with every slot set (every source a possible backend: the reply
/// lookups and the clock read as before the table): same program, same run. Printed and
/// written to `target/bench/backend_slots_cost.json`; the verdicts are asserted, the
/// times are not (a loaded machine).
#[test]
fn non_vip_cost_with_a_dnat_vip_backend_slots_vs_every_slot_set() {
    use lb_common::Addr;
    const REPEAT: u32 = 100_000;
    const SINGLE: u32 = 20_000;
    let mut dp = Dp::standard();
    let frame = Pkt::tcp((OTHER, 443), (CLIENT, 40200), ACK | PSH).bytes();
    let measure = |dp: &Dp| {
        let (v, out) = dp.run(&frame);
        assert_eq!((v, &out), (XDP_PASS, &frame));
        (
            dp.cost_repeat(&frame, REPEAT),
            dp.cost_single(&frame, SINGLE),
        )
    };
    let (table_r, table_s) = measure(&dp);
    for slot in 0..lb_common::VIP_SLOTS {
        set_backend_slot(&mut dp, slot, u32::BACKEND_SLOT_BIT);
    }
    let (all_r, all_s) = measure(&dp);
    println!(
        "non-VIP TCP with a DNAT VIP: BACKEND_SLOTS {table_r} ns (repeat {REPEAT}), \
         {table_s} ns (single); every slot set (the lookups) {all_r} ns, {all_s} ns"
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("backend_slots_cost.json"),
            format!(
                "{{\"table_repeat_ns\": {table_r}, \"table_single_ns\": {table_s}, \
                 \"all_set_repeat_ns\": {all_r}, \"all_set_single_ns\": {all_s}}}\n"
            ),
        );
    }
}
