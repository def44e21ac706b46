//! `xvip --version`: the version, the commit it was built from, and what this kernel offers
//! of what xvip uses. Reading the answer changes nothing on the node.

use std::{ffi::CStr, path::Path};

/// The crate's version and the commit (`XVIP_COMMIT`, set by build.rs from git or the
/// environment; "unknown" in a source tarball without either).
pub const SHORT: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("XVIP_COMMIT"), ")");

/// What xvip needs of a kernel, with the release that brought it (the kernel's
/// Documentation/bpf and the UAPI headers' history).
const NEEDS: [(&str, (u32, u32)); 3] = [
    (
        "XDP through bpf_link, pinned so restarts keep the program",
        (5, 9),
    ),
    ("BPF ring buffer (conntrack sync events)", (5, 8)),
    ("tcx ingress links (beside another XDP program)", (6, 6)),
];

/// `major.minor` of a kernel release string such as `6.18.0-1-amd64`.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel release from uname(2).
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain data; uname fills it and NUL-terminates each field.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: release is NUL-terminated by uname.
    let release = unsafe { CStr::from_ptr(u.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// The long version: the short one, then one line per kernel feature.
pub fn long() -> String {
    let mut out = format!("{SHORT}\n");
    let release = kernel_release();
    let version = release.as_deref().and_then(release_version);
    out.push_str(&format!(
        "kernel {}\n",
        release.as_deref().unwrap_or("unknown (uname failed)")
    ));
    let btf = Path::new(crate::net::sys::BTF_PATH).exists();
    out.push_str(&format!(
        "  {} kernel BTF (bpftool's typed map dumps; xvip's programs do not need it)\n",
        if btf { "yes" } else { "no " }
    ));
    let mount = crate::deploy::manifest::BPFFS;
    let bpffs = crate::net::sys::is_bpffs(Path::new(mount));
    out.push_str(&format!(
        "  {} bpffs on {mount}{}\n",
        if bpffs { "yes" } else { "no " },
        if bpffs {
            ""
        } else {
            " (xvip run mounts it; a container needs the host's)"
        }
    ));
    for (what, since) in NEEDS {
        let have = version.map(|v| v >= since);
        out.push_str(&format!(
            "  {} {what} (Linux {}.{}+)\n",
            match have {
                Some(true) => "yes",
                Some(false) => "no ",
                None => "?  ",
            },
            since.0,
            since.1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings_parse_to_major_minor() {
        assert_eq!(release_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(release_version("5.10.0"), Some((5, 10)));
        assert_eq!(release_version("6.1"), Some((6, 1)));
        assert_eq!(release_version("6"), None);
        assert_eq!(release_version("linux"), None);
    }

    #[test]
    fn the_long_version_names_the_commit_and_the_kernel() {
        let l = long();
        assert!(l.starts_with(env!("CARGO_PKG_VERSION")), "{l}");
        assert!(l.contains(env!("XVIP_COMMIT")), "{l}");
        assert!(l.contains("\nkernel "), "{l}");
        assert!(l.contains("tcx ingress"), "{l}");
    }
}
