//! `cargo xtask <command>`: the project's entry points. Builds on the machine's default
//! toolchain, then installs and uses the pinned one for everything else.

mod dist;
mod packages;
mod toolchain;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

  setup            install the pinned toolchain, rust-src and bpf-linker (cached)
  build            build the XDP object and the xvip daemon
  run -- ARGS      build, then run `xvip ARGS` as root
  demo             run xvip in a throw-away namespace lab and send requests through the VIP
  test             every test: unit, BPF packet tests, namespace integration tests
  chaos [--minutes N] [--seed S]
                   the chaos test of VIP ownership for N minutes (default 10)
  bench [--quick]  benchmarks in a namespace lab; report in target/bench/
  lint             cargo fmt --check and clippy on every crate (the eBPF one for its target)
  dist [--out DIR] a .deb, a tarball and an OCI image archive of a release build, each
                   checked (installed into an empty root, image digests verified); target/dist/
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    let rest = &args[1..];
    let rest: Vec<String> = rest.iter().skip_while(|a| *a == "--").cloned().collect();
    match cmd.as_str() {
        "setup" => {
            toolchain::ensure()?;
            Ok(ExitCode::SUCCESS)
        }
        "build" => {
            build(&rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let bin = build(&[])?;
            run_status(Command::new(bin).args(&rest))
        }
        "demo" => {
            packages::ensure(packages::DEMO)?;
            build(&[])?;
            let tc = toolchain::ensure()?;
            cargo(&tc, &["build", "-p", "tests", "--bins"], &[])?;
            let target = target_dir();
            run_status(
                Command::new(target.join("debug/xvip-demo"))
                    .env("XVIP_BIN", target.join("debug/xvip"))
                    .env("XVIP_LAB_APISERVER", target.join("debug/lab-apiserver"))
                    .args(&rest),
            )
        }
        "test" => test(&rest),
        "chaos" => chaos(&rest),
        "bench" => {
            packages::ensure(packages::BENCH)?;
            let tc = toolchain::ensure()?;
            build_ebpf(&tc)?;
            let obj = ebpf_object();
            // One invocation for the daemon and the bench's binaries: built apart, the two
            // resolve lb-userspace's dependencies' features differently and the daemon was
            // compiled twice (~4 minutes each here).
            cargo(
                &tc,
                &[
                    "build",
                    "--release",
                    "-p",
                    "lb-userspace",
                    "-p",
                    "tests",
                    "--bins",
                ],
                &[("XVIP_EBPF_OBJ", obj.as_os_str())],
            )?;
            let target = target_dir();
            run_status(
                Command::new(target.join("release/xvip-bench"))
                    .env("XVIP_BIN", target.join("release/xvip"))
                    .env("XVIP_LAB_APISERVER", target.join("release/lab-apiserver"))
                    .env("XVIP_EBPF_OBJ", &obj)
                    .env("XVIP_LAB_EBPF_OBJ", lab_object())
                    .env("XVIP_BENCH_OUT", target.join("bench"))
                    .current_dir(root())
                    .args(&rest),
            )
        }
        "dist" => dist::dist(&rest),
        "lint" => {
            lint()?;
            Ok(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("xtask: unknown command '{other}'\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Path of the built XDP object.
pub fn ebpf_object() -> PathBuf {
    target_dir().join("bpfel-unknown-none/release/lb-ebpf")
}

/// Path of the built lab helper object (`lab-ebpf`'s `lab-xdp`), for the tests and the bench.
pub fn lab_object() -> PathBuf {
    target_dir().join("bpfel-unknown-none/release/lab-xdp")
}

/// Runs cargo of the pinned toolchain in the workspace root.
fn cargo(tc: &toolchain::Toolchain, args: &[&str], env: &[(&str, &OsStr)]) -> Result<()> {
    let mut c = tc.cargo();
    c.current_dir(root()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let status = c
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn run_status(cmd: &mut Command) -> Result<ExitCode> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

/// Builds the XDP object, then the daemon with it embedded. Returns the daemon's path.
fn build(extra: &[String]) -> Result<PathBuf> {
    let tc = toolchain::ensure()?;
    build_ebpf(&tc)?;
    let obj = ebpf_object();
    let mut args = vec!["build", "-p", "lb-userspace"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&tc, &args, &[("XVIP_EBPF_OBJ", obj.as_os_str())])?;
    let profile = if extra.iter().any(|a| a == "--release") {
        "release"
    } else {
        "debug"
    };
    Ok(target_dir().join(profile).join("xvip"))
}

/// Flags of every crate built for the BPF target: BTF in the objects (`bpf-linker --btf`,
/// from the DWARF of `debuginfo=2`). The kernel wants BTF `func_info` for a program with a
/// `bpf_loop` callback (`conntrack::snat_probe`), and aya links a subprogram only when it
/// has `func_info` like its caller: `debuginfo` for every crate, `compiler_builtins` (the
/// `memset`/`memmove` LLVM calls) included, not only `lb-ebpf`'s profile.
const BPF_RUSTFLAGS: (&str, &str) = (
    "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
    "-C debuginfo=2 -C link-arg=--btf",
);

/// Builds the eBPF crates: the daemon's XDP object (`lb-ebpf`) and the lab's (`lab-ebpf`).
fn build_ebpf(tc: &toolchain::Toolchain) -> Result<()> {
    cargo(
        tc,
        &[
            "build",
            "-p",
            "lb-ebpf",
            "-p",
            "lab-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ],
        &[(BPF_RUSTFLAGS.0, OsStr::new(BPF_RUSTFLAGS.1))],
    )
}

fn lint() -> Result<()> {
    let tc = toolchain::ensure()?;
    cargo(&tc, &["fmt", "--all", "--", "--check"], &[])?;
    build_ebpf(&tc)?;
    let obj = ebpf_object();
    cargo(
        &tc,
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "lb-ebpf",
            "--exclude",
            "lab-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[("XVIP_EBPF_OBJ", obj.as_os_str())],
    )?;
    cargo(
        &tc,
        &[
            "clippy",
            "-p",
            "lb-ebpf",
            "-p",
            "lab-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
        &[(BPF_RUSTFLAGS.0, OsStr::new(BPF_RUSTFLAGS.1))],
    )?;
    Ok(())
}

/// `chaos [--minutes N] [--seed S]`: `tests/tests/chaos.rs`'s long run (`chaos_long`,
/// ignored by `test`), its table printed as it ends.
fn chaos(rest: &[String]) -> Result<ExitCode> {
    let mut minutes = "10".to_string();
    let mut seed = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => minutes = it.next().context("--minutes N")?.clone(),
            "--seed" => seed = Some(it.next().context("--seed S")?.clone()),
            other => bail!("chaos: unknown argument {other:?} (--minutes N, --seed S)"),
        }
    }
    let m: u64 = minutes.parse().context("--minutes: a whole number")?;
    if m == 0 {
        bail!("--minutes: at least 1");
    }
    // SAFETY: set before any thread of xtask starts; read by the test process.
    unsafe { std::env::set_var("XVIP_CHAOS_MINUTES", &minutes) };
    if let Some(s) = seed {
        // SAFETY: as above.
        unsafe { std::env::set_var("XVIP_CHAOS_SEED", s) };
    }
    let args = [
        "-p",
        "tests",
        "--test",
        "chaos",
        "--",
        "--ignored",
        "--exact",
    ];
    let args = args.iter().chain(&["chaos_long", "--nocapture"]);
    run_cargo_test(&args.map(|a| a.to_string()).collect::<Vec<_>>())
}

fn test(rest: &[String]) -> Result<ExitCode> {
    let mut args: Vec<String> = [
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--exclude",
        "lab-ebpf",
        "--no-fail-fast",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend_from_slice(rest);
    run_cargo_test(&args)
}

/// Builds what the namespace tests start, then `cargo test ARGS` with their environment.
fn run_cargo_test(test_args: &[String]) -> Result<ExitCode> {
    packages::ensure(packages::TEST)?;
    let tc = toolchain::ensure()?;
    build_ebpf(&tc)?;
    let obj = ebpf_object();
    // Binaries the namespace tests start.
    cargo(
        &tc,
        &["build", "-p", "lb-userspace", "-p", "tests", "--bins"],
        &[("XVIP_EBPF_OBJ", obj.as_os_str())],
    )?;
    let target = target_dir();
    let mut c = tc.cargo();
    c.current_dir(root())
        .arg("test")
        .args(test_args)
        .env("XVIP_EBPF_OBJ", &obj)
        .env("XVIP_LAB_EBPF_OBJ", lab_object())
        .env("XVIP_BIN", target.join("debug/xvip"))
        .env("XVIP_LAB_APISERVER", target.join("debug/lab-apiserver"));
    run_tests(&mut c)
}

/// Runs `cargo test`, echoing its output, and ends with one line over every test binary:
/// `N passed, N failed` (`, N skipped` for ignored tests). Fails when a test failed or when
/// cargo itself did (a build error, a test binary that crashed before its summary).
fn run_tests(cmd: &mut Command) -> Result<ExitCode> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut totals = TestTotals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        totals.add_result_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    let skipped = if totals.ignored > 0 {
        format!(", {} skipped", totals.ignored)
    } else {
        String::new()
    };
    println!(
        "{} passed, {} failed{skipped}",
        totals.passed, totals.failed
    );
    Ok(if status.success() && totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sums of the `test result:` lines of every test binary.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Adds a line such as `test result: ok. 12 passed; 0 failed; 1 ignored; ...`; other
    /// lines are ignored.
    fn add_result_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn result_lines_of_several_binaries_add_up() {
        let mut t = TestTotals::default();
        t.add_result_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_result_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.50s");
        t.add_result_line("running 5 tests");
        t.add_result_line("test foo ... ok");
        assert_eq!(
            t,
            TestTotals {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}
