//! The pinned toolchain: a nightly with `rust-src` (for `-Z build-std=core`) and
//! `bpf-linker` built against that nightly's own LLVM, cached outside the clone and keyed
//! by version so a fresh clone (CI) does not rebuild it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The nightly every crate but xtask builds with (aya 0.16 needs rustc >= 1.98).
pub const NIGHTLY: &str = "nightly-2026-10-01";
/// bpf-linker version, and the LLVM major of NIGHTLY that it links.
pub const BPF_LINKER: &str = "0.13.0";
const LLVM_MAJOR: &str = "23";

/// A ready toolchain.
pub struct Toolchain {
    /// Directory holding `bpf-linker`, put first on PATH.
    linker_dir: PathBuf,
}

impl Toolchain {
    /// `cargo +NIGHTLY` with bpf-linker on PATH.
    pub fn cargo(&self) -> Command {
        let mut c = Command::new("cargo");
        c.arg(format!("+{NIGHTLY}"));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.linker_dir.clone()];
        paths.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(paths).expect("valid PATH"));
        // Whatever toolchain runs xtask must not leak into the nightly's cargo.
        c.env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("CARGO");
        c
    }
}

/// `~/.cache/xvip` (or XVIP_TOOLS_CACHE): the toolchain, bpf-linker, dist's base packages.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XVIP_TOOLS_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("xvip")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs what is missing and returns the toolchain.
///
/// # Errors
/// When rustup or cargo install fails.
pub fn ensure() -> Result<Toolchain> {
    let have = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    let has_src = have.lines().any(|l| l.starts_with(NIGHTLY))
        && output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            NIGHTLY,
        ]))
        .map(|s| {
            s.lines().any(|l| l.starts_with("rust-src"))
                && s.lines().any(|l| l.starts_with("clippy"))
        })
        .unwrap_or(false);
    if !has_src {
        eprintln!("xtask: installing {NIGHTLY} with rust-src, clippy, rustfmt");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))?;
    }

    let root = cache_dir().join(format!("bpf-linker-{BPF_LINKER}-{NIGHTLY}"));
    let linker_dir = root.join("bin");
    if !linker_dir.join("bpf-linker").is_file() {
        build_bpf_linker(&root)?;
    }
    Ok(Toolchain { linker_dir })
}

fn build_bpf_linker(root: &Path) -> Result<()> {
    let sysroot =
        output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]))?;
    let lib = Path::new(&sysroot).join("lib");
    let versioned = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with(&format!("libLLVM.so.{LLVM_MAJOR}")))
        .with_context(|| {
            format!(
                "{NIGHTLY} has no libLLVM.so.{LLVM_MAJOR}.* in {}",
                lib.display()
            )
        })?;
    // bpf-linker links against libLLVM.so found under LLVM_PREFIX/lib: point it at the
    // nightly's own LLVM (which includes the BPF target).
    let prefix = root.join("llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".to_string(), versioned.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&versioned), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER} against {NIGHTLY}'s LLVM {LLVM_MAJOR} (once, about a minute)"
    );
    run(Command::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER,
            "--locked",
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{LLVM_MAJOR}")])
        .arg("--root")
        .arg(root)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    Ok(())
}
