//! Adopting the XDP program an earlier xvip left running (issue #27, start-up): a restart
//! of the same binary keeps the program the pinned links hold instead of loading (and
//! verifying) its own copy, which is most of the start-up's time.
//!
//! The proof that the running program is this binary's object is a marker directory in the
//! pin directory (bpffs holds only pins and directories), written by the run that loaded
//! it: `program-<SHA-256 of the object, 32 hex>-<kernel tag>-<kernel program id>`. The
//! object hash says which object the run loaded; the program id (never reused while the
//! kernel runs, and bpffs does not outlive a reboot) and its tag (the kernel's hash of the
//! instructions) tie the marker to the program the links hold now, so a program swapped in
//! by anything else (an older xvip that knows no markers, a run that died between its swap
//! and its marker) is not adopted. Every map the running program uses must then be one of the maps this daemon
//! writes and reads: a pinned map by the same kernel id as the pin, or one of the program's
//! own unpinned maps ([`UNPINNED`]), which the daemon then takes by id. Anything else, and
//! the daemon loads and verifies afresh, as before.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, MapInfo},
    programs::links::{FdLink, PinnedLink},
};
use lb_common::map_names;

/// Prefix of the marker directory's name.
const MARKER_PREFIX: &str = "program-";

/// The XDP program's maps that are not pinned (per-CPU scratch, the new-flow budget, the
/// proven sources, the sync ring and its counters, and the object's constants, `.rodata`,
/// which the loader fills from the object alone: xvip sets no globals at load): an adopted
/// start uses the running program's instances (the names as the kernel keeps them: at most
/// 15 bytes).
const UNPINNED: &[&str] = &[
    ".rodata",
    "SCRATCH",
    "SCRATCH6",
    "NEW_FLOW_BUDGET",
    "PROVEN",
    map_names::SYNC_EVENTS,
    map_names::SYNC_COUNTS,
];

/// The first half of the object's SHA-256, in hex: names the object in the marker.
pub(super) fn object_hash(object: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, object);
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The marker's name for `object_hash` loaded as program `id` with kernel tag `tag`.
pub(super) fn marker_name(object_hash: &str, tag: u64, id: u32) -> String {
    format!("{MARKER_PREFIX}{object_hash}-{tag:016x}-{id}")
}

/// The markers present in `dir`.
fn markers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(MARKER_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes every marker in `dir`: before a program is swapped into the links, so a run
/// that dies between the swap and its own marker leaves none.
pub(super) fn clear_markers(dir: &Path) {
    for m in markers(dir) {
        if let Err(e) = std::fs::remove_dir(dir.join(&m)) {
            log::warn!(
                "cannot remove the program marker {m} in {}: {e}",
                dir.display()
            );
        }
    }
}

/// Writes the marker of the program now attached (after [`clear_markers`]).
pub(super) fn write_marker(dir: &Path, name: &str) -> std::io::Result<()> {
    clear_markers(dir);
    std::fs::create_dir(dir.join(name))
}

/// The running program, adopted.
pub(super) struct Running {
    /// Its kernel id.
    pub prog_id: u32,
    /// The links holding it, one per interface, in the order asked for.
    pub links: Vec<(String, PinnedLink)>,
    /// Its `SYNC_EVENTS` and `SYNC_COUNTS`.
    pub sync_events: Option<MapData>,
    pub sync_counts: Option<MapData>,
}

/// Why the running program is not adopted (one line for the log).
pub(super) type Refusal = String;

/// Adopts the program held by the pinned links `links` (interface, pin path) when the
/// marker in `dir` names this object (`object_hash`) and that program's tag, and every map
/// it uses is a pin in `dir` (names `pinned`) or one of its own [`UNPINNED`] maps of the
/// same shape as `fresh(name)` (this object's map of that name, as the loader created it).
pub(super) fn adopt(
    dir: &Path,
    object_hash: &str,
    links: &[(String, PathBuf)],
    pinned: &[&str],
    fresh: impl Fn(&str) -> Option<MapInfo>,
) -> Result<Running, Refusal> {
    let found = markers(dir);
    let prefix = format!("{MARKER_PREFIX}{object_hash}-");
    let marker = match found.as_slice() {
        [] => return Err("no program marker in the pin directory (an older xvip, or a run that did not finish attaching)".into()),
        [one] if one.starts_with(&prefix) => one.clone(),
        [one] => return Err(format!("the program marker {one} names another object (this one: {object_hash})")),
        _ => return Err(format!("{} program markers in the pin directory", found.len())),
    };
    let mut held = Vec::new();
    let mut prog_id = None;
    for (interface, path) in links {
        let pin = PinnedLink::from_pin(path).map_err(|e| {
            format!(
                "{interface}: no pinned link to adopt at {} ({e})",
                path.display()
            )
        })?;
        let fd: FdLink = pin.into();
        let id = fd
            .info()
            .map_err(|e| format!("{interface}: cannot read the pinned link ({e})"))?
            .program_id();
        if *prog_id.get_or_insert(id) != id {
            return Err(format!(
                "the pinned links hold different programs ({} and {id})",
                prog_id.unwrap_or(0)
            ));
        }
        held.push((interface.clone(), fd));
    }
    let prog_id = prog_id.ok_or("no interface")?;
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .ok_or_else(|| format!("program {prog_id} of the pinned link is not loaded"))?;
    if info.name_as_str() != Some(lb_common::PROGRAM_NAME) {
        return Err(format!(
            "program {prog_id} is {:?}, not {}",
            info.name_as_str().unwrap_or("unnamed"),
            lb_common::PROGRAM_NAME
        ));
    }
    if marker != marker_name(object_hash, info.tag(), prog_id) {
        return Err(format!(
            "the marker {marker} does not name the running program (id {prog_id}, tag {:016x})",
            info.tag()
        ));
    }
    let pinned_ids: HashSet<u32> = pinned
        .iter()
        .filter_map(|n| MapInfo::from_pin(dir.join(n)).ok().map(|i| i.id()))
        .collect();
    let map_ids = info
        .map_ids()
        .map_err(|e| format!("cannot list program {prog_id}'s maps ({e})"))?
        .ok_or("the kernel does not list the program's maps")?;
    let mut own = Vec::new();
    for id in map_ids {
        if pinned_ids.contains(&id) {
            continue;
        }
        let m = MapInfo::from_id(id).map_err(|e| format!("map {id}: {e}"))?;
        let name = m.name_as_str().unwrap_or("").to_string();
        if !UNPINNED.contains(&name.as_str()) {
            return Err(format!(
                "map {id} ({name}) of the running program is not among the pins in {}",
                dir.display()
            ));
        }
        let shape = |i: &MapInfo| {
            (
                i.map_type().ok(),
                i.key_size(),
                i.value_size(),
                i.max_entries(),
            )
        };
        if fresh(&name).map(|f| shape(&f)) != Some(shape(&m)) {
            return Err(format!("map {id} ({name}) differs from this object's"));
        }
        own.push((name, id));
    }
    let take = |name: &str| -> Result<Option<MapData>, Refusal> {
        match own.iter().find(|(n, _)| n == name) {
            Some((_, id)) => MapData::from_id(*id)
                .map(Some)
                .map_err(|e| format!("map {id} ({name}): {e}")),
            None => Ok(None),
        }
    };
    let sync_events = take(map_names::SYNC_EVENTS)?;
    let sync_counts = take(map_names::SYNC_COUNTS)?;
    let mut out = Vec::new();
    for ((interface, fd), (_, path)) in held.into_iter().zip(links) {
        drop(fd);
        let pin = PinnedLink::from_pin(path)
            .map_err(|e| format!("{interface}: {} ({e})", path.display()))?;
        out.push((interface, pin));
    }
    Ok(Running {
        prog_id,
        links: out,
        sync_events,
        sync_counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_object_the_tag_and_the_program_and_is_a_bpffs_name() {
        let a = object_hash(b"one object");
        assert_eq!(a.len(), 32);
        assert_ne!(a, object_hash(b"another object"));
        let m = marker_name(&a, 0x20fe_30a1_37da_4e7f, 58017);
        assert_eq!(m, format!("program-{a}-20fe30a137da4e7f-58017"));
        // bpffs refuses dots in names; the daemon's own pins never start with the prefix.
        assert!(!m.contains('.') && m.len() < 256);
        assert_ne!(m, marker_name(&a, 0x20fe_30a1_37da_4e7f, 58018));
    }

    #[test]
    fn markers_are_found_and_cleared_and_pins_beside_them_stay() {
        let dir = std::env::temp_dir().join(format!("xvip-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("CONNTRACK"), b"").unwrap();
        write_marker(&dir, "program-a-1-2").unwrap();
        write_marker(&dir, "program-b-3-4").unwrap();
        assert_eq!(markers(&dir), ["program-b-3-4"], "one marker at a time");
        let refused = adopt(&dir, "a", &[], &[], |_| None).err().unwrap();
        assert!(refused.contains("names another object"), "{refused}");
        clear_markers(&dir);
        assert!(markers(&dir).is_empty());
        assert!(dir.join("CONNTRACK").exists());
        let refused = adopt(&dir, "a", &[], &[], |_| None).err().unwrap();
        assert!(refused.contains("no program marker"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
