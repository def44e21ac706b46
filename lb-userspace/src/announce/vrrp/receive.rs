//! What an advertisement must pass before the election sees it: RFC 5798 / RFC 3768
//! section 7.1, the peer list, and the checks whose failures the mismatch guard weighs.

use std::net::IpAddr;

use crate::{
    config::vrrp::VrrpSettings,
    wire,
    wire::vrrp::{DropReason, Version},
};

/// A rejected packet: why, its sender when known, and the advert when it decoded (for the
/// mismatch guard).
pub(super) type Rejected = (DropReason, Option<IpAddr>, Option<wire::vrrp::Received>);

/// RFC 5798 / RFC 3768 section 7.1 for a router with `settings` at address `own`, plus the
/// peer list and the mismatch guard's checks (the address list is the caller's business).
///
/// # Errors
/// The reason, the sender when known, and the advert when it is one for the guard.
pub(super) fn classify(
    settings: &VrrpSettings,
    own: IpAddr,
    pkt: &[u8],
) -> Result<wire::vrrp::Received, Rejected> {
    let src = match pkt.first().map(|b| b >> 4) {
        Some(6) => pkt
            .get(8..24)
            .map(|b| IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))),
        _ => pkt
            .get(12..16)
            .map(|b| IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes"))),
    };
    let r = match own {
        IpAddr::V4(_) => wire::vrrp::parse_ipv4(pkt),
        IpAddr::V6(_) => wire::vrrp::parse_ipv6(pkt),
    }
    .map_err(|e| (e, src, None))?;
    let from = r.src;
    let fail = |reason| Err((reason, Some(from), None));
    if r.src == own {
        return fail(DropReason::Own);
    }
    if r.advert.vrid != settings.vrid {
        return fail(DropReason::Vrid);
    }
    if !settings.peers.is_empty() && !settings.peers.contains(&r.src) {
        return fail(DropReason::NotPeer);
    }
    if r.advert.version != settings.version {
        return Err((DropReason::VersionMismatch, Some(from), Some(r)));
    }
    if r.advert.version == Version::V2 {
        // keepalived `vrrp_check_packet`: auth type first, then the 8 bytes of PASS data.
        if r.advert.auth.kind != settings.auth.kind {
            return Err((DropReason::AuthType, Some(from), Some(r)));
        }
        // Auth Type 0: the data "SHOULD be ... ignored on reception" (RFC 3768 5.3.10).
        if settings.auth.kind != crate::wire::vrrp::AUTH_TYPE_NONE
            && !r.advert.auth.matches(&settings.auth)
        {
            return Err((DropReason::AuthPass, Some(from), Some(r)));
        }
    }
    if r.advert.max_adver_int_cs == 0 {
        return fail(DropReason::Interval);
    }
    if r.advert.version == Version::V2
        && u128::from(r.advert.max_adver_int_cs) * 10 != settings.advert_interval.as_millis()
    {
        return Err((DropReason::IntervalMismatch, Some(from), Some(r)));
    }
    Ok(r)
}

/// keepalived's name of a v2 Auth Type (for logs and status; never the data).
pub(super) fn auth_name(kind: u8) -> String {
    match kind {
        crate::wire::vrrp::AUTH_TYPE_NONE => "NONE".into(),
        crate::wire::vrrp::AUTH_TYPE_PASS => "PASS".into(),
        crate::wire::vrrp::AUTH_TYPE_AH => "AH".into(),
        k => format!("type {k}"),
    }
}
