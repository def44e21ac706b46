//! Why the data path returned what it returned: one counter per reason (per CPU).

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident = $metric:literal,)*) => {
        /// Every verdict the XDP program can return has exactly one reason.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason { $($(#[doc = $doc])* $name,)* }

        impl Reason {
            /// All reasons, in index order.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];
            /// The label used in metrics and `xvip status`.
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$name => $metric,)* }
            }
        }
    };
}

reasons! {
    /// Client packet translated and sent back out of the same interface (`XDP_TX`).
    TxForward = "tx_forward",
    /// Backend reply translated and sent back out of the same interface (`XDP_TX`).
    TxReply = "tx_reply",
    /// Client packet translated and redirected to another interface.
    RedirectForward = "redirect_forward",
    /// Backend reply translated and redirected to another interface.
    RedirectReply = "redirect_reply",
    /// ICMP echo request to a VIP answered (`XDP_TX`).
    IcmpEchoReply = "icmp_echo_reply",
    /// ICMP error about a translated flow, translated back to the client.
    IcmpErrorTranslated = "icmp_error_translated",
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...): handed to the kernel.
    PassNotIpv4 = "pass_not_ipv4",
    /// Too short or malformed, and not addressed to a VIP: handed to the kernel untouched.
    PassMalformed = "pass_malformed",
    /// IPv4 but not for a VIP nor a reply to a translated flow: handed to the kernel.
    PassNotForVip = "pass_not_for_vip",
    /// TTL (IPv6: hop limit) would expire: handed to the kernel, which answers with ICMP
    /// (ICMPv6) time exceeded.
    PassTtlExpired = "pass_ttl_expired",
    /// The backend's MAC is not known yet: handed to the kernel untranslated.
    PassNoNeighbour = "pass_no_neighbour",
    /// ICMP to a VIP address that is neither answered nor translated here (echo disabled,
    /// other types, errors about no tracked flow): handed to the kernel.
    PassIcmp = "pass_icmp",
    /// Frame shorter than the headers it announces.
    DropTruncated = "drop_truncated",
    /// Malformed IP header (IPv4: IHL below 5, total length inconsistent; IPv6: version,
    /// payload length, an extension header's length).
    DropBadHeader = "drop_bad_header",
    /// IP fragment addressed to a VIP that cannot be translated: any IPv4 fragment, an IPv6
    /// fragment with a non-zero offset (no ports), an IPv6 first fragment of anything but
    /// TCP or UDP or too short for its transport header.
    DropFragment = "drop_fragment",
    /// Protocol other than TCP, UDP or ICMP addressed to a VIP.
    DropUnknownProto = "drop_unknown_proto",
    /// The VIP's table has no backend (no healthy master).
    DropNoBackend = "drop_no_backend",
    /// No free SNAT port for the new flow within the probe budget.
    DropSnatExhausted = "drop_snat_exhausted",
    /// The conntrack or reverse map refused an insert.
    DropConntrackFull = "drop_conntrack_full",
    /// DNAT: the backend-side tuple (backend, client address and port) is held by another
    /// live flow (the same client port to two VIPs served by one backend).
    DropTupleInUse = "drop_tuple_in_use",
    /// A map lookup that cannot fail did (inconsistent maps).
    DropInternal = "drop_internal",
    /// Redirect to the backend's interface failed.
    DropRedirectFailed = "drop_redirect_failed",
    /// Packet of a flow whose backend is this node: handed to the local stack unchanged.
    PassLocalBackend = "pass_local_backend",
    /// TCP FIN or RST whose sequence number does not fit its flow's stream (a blind
    /// teardown attempt, RFC 5961): dropped, the flow keeps its state.
    DropOutOfWindow = "drop_out_of_window",
    /// ICMP error about a VIP -> client packet (packet too big above all), translated and
    /// sent to the flow's backend.
    IcmpErrorToBackend = "icmp_error_to_backend",
    /// To one of our addresses, but in a frame for another host's MAC (flooded by a switch):
    /// that host's to handle.
    PassOtherHost = "pass_other_host",
    /// IPv6 to a VIP through an extension header the data path does not translate: a
    /// routing header with segments left (the VIP is not the final destination), or more
    /// than `MAX_IPV6_EXT_HEADERS` extension headers.
    DropExtHeader = "drop_ext_header",
    /// A new flow (no entry yet) from a source that has not completed a proven handshake in
    /// the last hour, over the per-CPU budget of new flows from such sources
    /// (`NEW_FLOW_BUDGET_PER_SEC`): a flood of spoofed sources is dropped here, before it
    /// takes a tuple, an unconfirmed entry or a backend's SYN queue slot.
    DropNewFlowBudget = "drop_new_flow_budget",
    /// tc mode only: a frame the tc entry leaves alone, handed on untouched: 802.1Q/802.1ad
    /// tagged (the kernel has taken the tag off into the skb, where this path does not put
    /// it back), or one whose headers cannot be made directly readable.
    PassTcUnhandled = "pass_tc_unhandled",
}

/// Number of reasons: the size of the `REASONS` map.
pub const REASON_COUNT: u32 = Reason::ALL.len() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_indices_follow_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
