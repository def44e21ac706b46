//! Embeds the XDP object built by `cargo xtask build` (path in XVIP_EBPF_OBJ, or the default
//! target path). Without it the daemon still builds, and says how to get the object.
//! Also records the commit for `xvip --version`: XVIP_COMMIT when set, else git's HEAD in
//! release builds (what `cargo xtask dist` packages), else "dev": tracking HEAD in debug
//! builds would rebuild the library and every test binary after each commit.

use std::{path::PathBuf, process::Command};

/// The commit being built (see above).
fn commit() -> String {
    println!("cargo::rerun-if-env-changed=XVIP_COMMIT");
    if let Ok(c) = std::env::var("XVIP_COMMIT") {
        return c;
    }
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return "dev".into();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // Rebuild when HEAD moves (a worktree's HEAD lives in its own git dir).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo::rerun-if-changed={dir}/HEAD");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(common) = git(&["rev-parse", "--git-common-dir"])
        {
            let common = PathBuf::from(common);
            let common = if common.is_absolute() {
                common
            } else {
                PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join(common)
            };
            // Only files that exist: a missing one would rerun this on every build.
            for f in [common.join(&r), common.join("packed-refs")] {
                if f.exists() {
                    println!("cargo::rerun-if-changed={}", f.display());
                }
            }
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() {
    println!("cargo::rustc-env=XVIP_COMMIT={}", commit());
    println!("cargo::rerun-if-env-changed=XVIP_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = std::env::var("XVIP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../target/bpfel-unknown-none/release/lb-ebpf"));
    println!("cargo::rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("lb-ebpf.o");
    match std::fs::read(&src) {
        Ok(bytes) => std::fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo::warning=XDP object {} not found: build with `cargo xtask build`",
                src.display()
            );
            std::fs::write(&out, []).unwrap();
        }
    }
}
