//! Adopting the XDP program an earlier xvip left running (issue #27, start-up): a restart
//! of the same binary keeps the program the pinned links hold instead of loading (and
//! verifying) its own copy, which is most of the start-up's time.
//!
//! The proof that the running program is this binary's object is a marker directory in the
//! pin directory (bpffs holds only pins and directories), written by the run that loaded
//! it: `program-<SHA-256 of the object, 32 hex>-<kernel tag>-<kernel program id>`, holding
//! the program itself (`prog`) and the maps of the object that are not among the daemon's
//! pins (per-CPU scratch, the new-flow budget, the proven sources, the sync ring and its
//! counters, the constants `.rodata` as `rodata`). The object hash says which object the run
//! loaded; the program id (never reused while the kernel runs; bpffs does not outlive a
//! reboot) and its tag (the kernel's hash of the instructions) tie the marker to the program
//! the links hold now, so a program swapped in by anything else (an older xvip that knows no
//! markers, a run that died between its swap and its marker) is not adopted. Every map the
//! running program uses must then be one of the daemon's pins or one of the marker's, by
//! kernel id. Everything is opened through its pin (`BPF_OBJ_GET`): the ids' own calls
//! (`BPF_*_GET_FD_BY_ID`, `*_GET_NEXT_ID`) need `CAP_SYS_ADMIN`, which the deployed daemon
//! does not have. Anything else, and the daemon loads and verifies afresh, as before.

use std::{collections::HashSet, path::Path};

use aya::{
    maps::{MapData, MapInfo},
    programs::links::{FdLink, PinnedLink},
};
use lb_common::map_names;

/// Prefix of the marker directory's name.
const MARKER_PREFIX: &str = "program-";
/// The program's pin inside the marker.
pub(super) const PROGRAM_PIN: &str = "prog";

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

/// A map's pin name inside the marker: bpffs refuses dots (`.rodata` -> `rodata`).
pub(super) fn own_pin_name(map: &str) -> String {
    map.trim_start_matches('.').replace('.', "_")
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

/// Removes every marker in `dir` (and the pins in it): before a program is swapped into
/// the links, so a run that dies between the swap and its own marker leaves none.
pub(super) fn clear_markers(dir: &Path) {
    for m in markers(dir) {
        let path = dir.join(&m);
        for e in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        if let Err(e) = std::fs::remove_dir(&path) {
            log::warn!(
                "cannot remove the program marker {m} in {}: {e}",
                dir.display()
            );
        }
    }
}

/// Starts the marker `name` of the program now attached (after [`clear_markers`]): the
/// directory, into which the caller pins the program ([`PROGRAM_PIN`]) and its own maps
/// ([`own_pin_name`]). A marker left half-written by a crash lacks a pin, and is not
/// adopted.
pub(super) fn begin_marker(dir: &Path, name: &str) -> std::io::Result<std::path::PathBuf> {
    clear_markers(dir);
    let path = dir.join(name);
    std::fs::create_dir(&path)?;
    Ok(path)
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
/// marker in `dir` names this object (`object_hash`) and that program's id and tag, and
/// every map it uses is a pin in `dir` (names `pinned`) or in the marker, the marker's of
/// the same shape as `fresh(name)` (this object's map of that name, as the loader created
/// it).
pub(super) fn adopt(
    dir: &Path,
    object_hash: &str,
    links: &[(String, std::path::PathBuf)],
    pinned: &[&str],
    fresh: impl Fn(&str) -> Option<MapInfo>,
) -> Result<Running, Refusal> {
    let found = markers(dir);
    let prefix = format!("{MARKER_PREFIX}{object_hash}-");
    let marker = match found.as_slice() {
        [] => {
            return Err("no program marker in the pin directory (an older xvip, or a run that did not finish attaching)".into());
        }
        [one] if one.starts_with(&prefix) => one.clone(),
        [one] => {
            return Err(format!(
                "the program marker {one} names another object (this one: {object_hash})"
            ));
        }
        _ => {
            return Err(format!(
                "{} program markers in the pin directory",
                found.len()
            ));
        }
    };
    let mdir = dir.join(&marker);
    let mut out = Vec::new();
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
        drop(fd);
        let pin = PinnedLink::from_pin(path)
            .map_err(|e| format!("{interface}: {} ({e})", path.display()))?;
        out.push((interface.clone(), pin));
    }
    let prog_id = prog_id.ok_or("no interface")?;
    let info = super::pins::attached::read_prog(&mdir.join(PROGRAM_PIN))
        .map_err(|e| format!("the marker {marker} holds no program ({e})"))?;
    if info.id != prog_id {
        return Err(format!(
            "the marker's program {} is not the one in the link ({prog_id})",
            info.id
        ));
    }
    if info.name != lb_common::PROGRAM_NAME {
        return Err(format!(
            "program {prog_id} is {:?}, not {}",
            info.name,
            lb_common::PROGRAM_NAME
        ));
    }
    if marker != marker_name(object_hash, info.tag, prog_id) {
        return Err(format!(
            "the marker {marker} does not name the running program (id {prog_id}, tag {:016x})",
            info.tag
        ));
    }
    let uses: HashSet<u32> = info.map_ids.into_iter().collect();
    let mut known: HashSet<u32> = pinned
        .iter()
        .filter_map(|n| MapInfo::from_pin(dir.join(n)).ok().map(|i| i.id()))
        .collect();
    for e in std::fs::read_dir(&mdir).map_err(|e| format!("{marker}: {e}"))? {
        let e = e.map_err(|e| format!("{marker}: {e}"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == PROGRAM_PIN {
            continue;
        }
        let m = MapInfo::from_pin(e.path()).map_err(|err| format!("{marker}/{name}: {err}"))?;
        let shape = |i: &MapInfo| {
            (
                i.map_type().ok(),
                i.key_size(),
                i.value_size(),
                i.max_entries(),
            )
        };
        let mine = fresh(&name).or_else(|| fresh(&format!(".{name}")));
        if mine.map(|f| shape(&f)) != Some(shape(&m)) {
            return Err(format!(
                "the marker's map {name} differs from this object's"
            ));
        }
        known.insert(m.id());
    }
    if let Some(id) = uses.iter().find(|id| !known.contains(id)) {
        return Err(format!(
            "map {id} of the running program is neither a pin of {} nor the marker's",
            dir.display()
        ));
    }
    // The ring and counters the daemon reads: the running program's own.
    let own = |name: &str| -> Result<Option<MapData>, Refusal> {
        let path = mdir.join(own_pin_name(name));
        if !path.exists() {
            return Ok(None);
        }
        let m = MapData::from_pin(&path).map_err(|e| format!("{marker}/{name}: {e}"))?;
        let id = m.info().map_err(|e| format!("{name}: {e}"))?.id();
        if !uses.contains(&id) {
            return Err(format!("the marker's {name} is not the running program's"));
        }
        Ok(Some(m))
    };
    let sync_events = own(map_names::SYNC_EVENTS)?;
    let sync_counts = own(map_names::SYNC_COUNTS)?;
    if sync_events.is_none() || sync_counts.is_none() {
        return Err("the marker lacks the sync ring or its counters".into());
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
        assert_eq!(own_pin_name(".rodata"), "rodata");
        assert_eq!(own_pin_name("SYNC_EVENTS"), "SYNC_EVENTS");
        assert_ne!(m, marker_name(&a, 0x20fe_30a1_37da_4e7f, 58018));
    }

    #[test]
    fn markers_are_found_and_cleared_and_pins_beside_them_stay() {
        let dir = std::env::temp_dir().join(format!("xvip-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("CONNTRACK"), b"").unwrap();
        begin_marker(&dir, "program-a-1-2").unwrap();
        let b = begin_marker(&dir, "program-b-3-4").unwrap();
        std::fs::write(b.join(PROGRAM_PIN), b"").unwrap();
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
