//! Conntrack sync's settings (`--sync-key-file`): the key file's rules, the key it holds
//! and the port. The protocol itself is `sync`, which reads these settings; this module
//! never reads it.

use std::{
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use crate::wire::sync::SyncKey;

/// UDP port of the sync messages (IPVS's sync daemon uses 8848).
pub const SYNC_PORT: u16 = 8849;
/// Shortest key accepted (bytes): HMAC-SHA256's block of security.
pub const MIN_KEY_LEN: usize = 32;

/// Settings of `--sync-key-file`.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// The file the key came from (for messages; the key itself is never printed).
    pub key_file: PathBuf,
    pub key: SyncKey,
    /// Unicast peers (the VRRP peers); empty: multicast to `sync::SYNC_GROUP`.
    pub peers: Vec<Ipv4Addr>,
    pub port: u16,
    /// `--snat-ports` (inclusive): a record's SNAT port must be in it.
    pub snat_ports: (u16, u16),
}

/// Reads the key file: at least [`MIN_KEY_LEN`] bytes, readable by its owner only.
///
/// # Errors
/// What is wrong with the file (never its content), for a message naming the path.
pub fn load_key(path: &Path) -> Result<SyncKey, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o}: a sync key must be readable by its owner only (chmod 600)"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let key = key_bytes(&bytes);
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "{} bytes: a sync key needs at least {MIN_KEY_LEN} (head -c 32 /dev/urandom | base64 > FILE)",
            key.len()
        ));
    }
    Ok(SyncKey::new(key))
}

/// The key a file holds. A text key (printable ASCII: base64, hex, a passphrase) may end
/// in a newline (echo, an editor), which is not part of it. A binary key (`head -c 32
/// /dev/urandom`) is taken whole: its last byte is 0x0a once in 256 keys, and stripping it
/// refused such a key as 31 bytes (seen in the test suite).
fn key_bytes(bytes: &[u8]) -> &[u8] {
    match bytes.strip_suffix(b"\n") {
        Some(text) if text.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => text,
        _ => bytes,
    }
}

impl PartialEq for SyncSettings {
    /// Compares where the key came from, never the key.
    fn eq(&self, o: &Self) -> bool {
        self.key_file == o.key_file && self.peers == o.peers && self.port == o.port
    }
}
impl Eq for SyncSettings {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_readable_by_others_or_short_are_refused_naming_the_path() {
        let dir = std::env::temp_dir().join(format!("xvip-sync-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, [7u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key(&p).unwrap_err();
        assert!(e.contains("0644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key(&p).is_ok());
        std::fs::write(&p, b"0123456789abcdef0123456789abcde\n").unwrap();
        let e = load_key(&p).unwrap_err();
        assert!(e.contains("31 bytes"), "{e}");
        assert!(!e.contains("0123"), "the key is never in a message: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_text_key_loses_its_newline_and_a_binary_key_is_taken_whole() {
        assert_eq!(key_bytes(b"c2VjcmV0\n"), b"c2VjcmV0");
        assert_eq!(key_bytes(b"c2VjcmV0"), b"c2VjcmV0");
        // Random bytes that happen to end in 0x0a: all 32 are the key.
        let mut raw = [0x9cu8; 32];
        raw[31] = b'\n';
        assert_eq!(key_bytes(&raw), &raw[..]);
        let dir = std::env::temp_dir().join(format!("xvip-sync-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, raw).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key(&p).is_ok(), "a raw 32-byte key ending in 0x0a");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_is_never_printed() {
        let s = format!("{:?}", SyncKey::new(b"0123456789abcdef0123456789abcdef"));
        assert!(!s.contains("0123"), "{s}");
    }
}
