//! `cargo xtask dist`: what an operator installs, built once and checked before it is
//! handed out.
//!
//! * `xvip_VERSION_ARCH.deb`: the binary (its XDP object embedded), the systemd unit that
//!   `xvip manifest systemd` writes, an example `/etc/xvip/xvip.toml` (mode 0600, a
//!   conffile), man pages rendered from the clap definitions. Built with `dpkg-deb`.
//! * `xvip-VERSION-linux-ARCH.tar.gz`: the same files for other distributions.
//! * `xvip-VERSION-oci.tar`: an OCI image archive (`podman load -i`, `ctr image import`,
//!   `skopeo copy oci-archive:...`) of the Containerfile's image, written without a
//!   container daemon: a base layer of Debian's `libc6` and `libgcc-s1` (what the
//!   Containerfile's distroless `cc` base provides the binary) and a layer with the binary.
//!
//! Every archive is byte-for-byte reproducible from the same commit and build (sorted
//! entries, owner 0, mtimes from the commit, `gzip -n`), and checked after it is written:
//! the package installs into an empty root with dpkg and its binary runs `--version` and
//! `check-config` on the example configuration; the image's index, manifest, config and
//! layers are re-read and every digest, size and diff_id verified, then the layers are
//! unpacked into a root where `xvip --version` must run (so the base layer really carries
//! what the binary links against).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The Debian packages whose files form the image's base layer: the C library and the GCC
/// runtime the binary links against (the same two distroless `cc-debian12` carries).
const BASE_PACKAGES: [&str; 2] = ["libc6", "libgcc-s1"];
/// Where the image puts the binary (the Containerfile's path, `xvip manifest pod`'s default).
const IMAGE_BINARY: &str = "usr/local/bin/xvip";
/// The image's name in the archive (`xvip manifest pod --image` default, without the tag).
const IMAGE_REPO: &str = "ghcr.io/xvip/xvip";

const USAGE: &str = "usage: cargo xtask dist [--out DIR]   (default target/dist)";

/// What the three archives are made from.
struct Inputs {
    version: String,
    commit: String,
    /// Seconds since the epoch of the commit (or SOURCE_DATE_EPOCH): every mtime.
    epoch: u64,
    /// Debian's name of the architecture (amd64, arm64).
    deb_arch: String,
    /// The OCI/Go name of it.
    oci_arch: String,
    binary: PathBuf,
}

pub fn dist(args: &[String]) -> Result<ExitCode> {
    let mut out = crate::target_dir().join("dist");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out DIR")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                eprintln!("xtask dist: unknown argument '{other}'\n{USAGE}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    crate::packages::ensure(crate::packages::DIST)?;
    let binary = crate::build(&["--release".to_string()])?;
    let inputs = Inputs {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
        epoch: source_date_epoch()?,
        deb_arch: output(Command::new("dpkg").arg("--print-architecture"))?,
        oci_arch: String::new(),
        binary,
    };
    let inputs = Inputs {
        oci_arch: oci_arch(&inputs.deb_arch)?.to_string(),
        ..inputs
    };
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let work = out.join("work");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;

    let files = payload(&inputs, &work.join("payload"))?;
    let deb = deb(&inputs, &files, &work, &out)?;
    let tarball = tarball(&inputs, &files, &work, &out)?;
    let image = image(&inputs, &work, &out)?;

    check_deb(&deb, &inputs.commit, &work.join("check-deb"))?;
    check_image(&image, &inputs, &work.join("check-image"))?;
    fs::remove_dir_all(&work)?;
    for f in [&deb, &tarball, &image] {
        let size = fs::metadata(f)?.len();
        println!(
            "{}  {:>6.1} MB  sha256:{}",
            f.display(),
            size as f64 / 1e6,
            sha256_file(f)?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The files every archive ships, rendered by the freshly built binary.
struct Payload {
    binary: PathBuf,
    unit: PathBuf,
    config: PathBuf,
    /// Gzipped section-8 pages.
    man: Vec<PathBuf>,
    copyright: PathBuf,
}

fn payload(inputs: &Inputs, dir: &Path) -> Result<Payload> {
    fs::create_dir_all(dir.join("man"))?;
    let binary = dir.join("xvip");
    fs::copy(&inputs.binary, &binary)?;
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
    let config = dir.join("xvip.toml");
    fs::copy(crate::root().join("dist/xvip.toml"), &config)?;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600))?;
    // The unit names the installed paths; the example file is validated by it too.
    let unit_text = output(
        Command::new(&binary)
            .args(["manifest", "systemd", "--binary", "/usr/bin/xvip"])
            .arg("--config")
            .arg(&config),
    )?;
    let unit_text = unit_text.replace(&config.display().to_string(), "/etc/xvip/xvip.toml");
    ensure!(
        unit_text.contains("ExecStart=/usr/bin/xvip run --config /etc/xvip/xvip.toml"),
        "the unit does not run the installed binary on the installed config:\n{unit_text}"
    );
    let unit = dir.join("xvip.service");
    fs::write(&unit, unit_text + "\n")?;
    let pages = output(
        Command::new(&binary)
            .args(["manifest", "man", "--out"])
            .arg(dir.join("man")),
    )?;
    let mut man = Vec::new();
    for page in pages.lines() {
        run(Command::new("gzip").args(["-n", "-9", "-f"]).arg(page))?;
        man.push(PathBuf::from(format!("{page}.gz")));
    }
    ensure!(
        man.iter().any(|p| p.ends_with("xvip-run.8.gz")),
        "no xvip-run.8 among the man pages: {man:?}"
    );
    let copyright = dir.join("copyright");
    fs::write(
        &copyright,
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: xvip\n\n\
             Files: *\n\
             Copyright: the xvip authors\n\
             License: {}\n",
            env!("CARGO_PKG_LICENSE")
        ),
    )?;
    Ok(Payload {
        binary,
        unit,
        config,
        man,
        copyright,
    })
}

/// The Debian package, laid out under `work/deb` and built with `dpkg-deb`.
fn deb(inputs: &Inputs, p: &Payload, work: &Path, out: &Path) -> Result<PathBuf> {
    let root = work.join("deb");
    let put = |src: &Path, dst: &str, mode: u32| -> Result<()> {
        let to = root.join(dst);
        fs::create_dir_all(to.parent().expect("a file in a directory"))?;
        fs::copy(src, &to).with_context(|| format!("{} -> {}", src.display(), to.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put(&p.binary, "usr/bin/xvip", 0o755)?;
    // /usr/lib/systemd/system: systemd's search path on merged and split /usr alike.
    put(&p.unit, "usr/lib/systemd/system/xvip.service", 0o644)?;
    put(&p.config, "etc/xvip/xvip.toml", 0o600)?;
    put(&p.copyright, "usr/share/doc/xvip/copyright", 0o644)?;
    for page in &p.man {
        let name = page.file_name().expect("a page").to_string_lossy();
        put(page, &format!("usr/share/man/man8/{name}"), 0o644)?;
    }
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control)?;
    let installed_kb = du_kb(&root)?;
    fs::write(
        control.join("control"),
        format!(
            "Package: xvip\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: xvip developers <xvip@example.invalid>\n\
             Installed-Size: {installed_kb}\n\
             Depends: libc6 (>= {glibc}), libgcc-s1\n\
             Suggests: bpftool\n\
             Section: net\n\
             Priority: optional\n\
             Homepage: https://github.com/xvip/xvip\n\
             Description: XDP virtual IP for the Kubernetes API servers\n \
             xvip gives an HA Kubernetes control plane one stable address: an XDP program\n \
             translates connections to the VIP to a healthy API server chosen by a Maglev\n \
             table and tracks them; the daemon health-checks /readyz, answers ARP and NDP\n \
             and elects the VIP's holder with VRRP. It replaces keepalived + haproxy or\n \
             kube-vip for the control-plane VIP.\n",
            version = inputs.version,
            arch = inputs.deb_arch,
            glibc = glibc_needed(&p.binary)?,
        ),
    )?;
    fs::write(control.join("conffiles"), "/etc/xvip/xvip.toml\n")?;
    // Maintainer scripts: systemd sees a new or changed unit, an upgrade restarts a running
    // xvip on the new binary (the example config's keep_attached leaves the program and
    // pins serving through the restart and the new binary adopts them; VRRP hands the VIP
    // over meanwhile), removal stops it (SIGTERM: hand over) and then detaches what a
    // keep_attached stop left: each interface pinned under the default pin root in this
    // network namespace (`xvip detach`, directory names decoded as `pins::pin_name`
    // encodes them). Nothing when installing into another root (DPKG_ROOT) or without
    // systemd.
    let script = |name: &str, body: &str| -> Result<()> {
        let path = control.join(name);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\nset -e\n\
                 if [ -n \"$DPKG_ROOT\" ] || [ ! -d /run/systemd/system ]; then exit 0; fi\n{body}"
            ),
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    script(
        "postinst",
        "if [ \"$1\" = configure ]; then\n\
         \tsystemctl --system daemon-reload >/dev/null || true\n\
         \tif [ -n \"$2\" ]; then systemctl try-restart xvip.service || true; fi\n\
         fi\n",
    )?;
    script(
        "prerm",
        "if [ \"$1\" = remove ]; then\n\
         \tsystemctl stop xvip.service || true\n\
         \tns=$(stat -L -c %i /proc/self/ns/net) || exit 0\n\
         \tfor d in /sys/fs/bpf/xvip/\"$ns\"/*/; do\n\
         \t\t[ -d \"$d\" ] || continue\n\
         \t\tiface=$(basename \"$d\" | sed -e 's/%2e/./g' -e 's/%25/%/g')\n\
         \t\t/usr/bin/xvip detach --interface \"$iface\" || true\n\
         \tdone\n\
         fi\n",
    )?;
    script(
        "postrm",
        "systemctl --system daemon-reload >/dev/null || true\n",
    )?;
    let deb = out.join(format!("xvip_{}_{}.deb", inputs.version, inputs.deb_arch));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", inputs.epoch.to_string()))?;
    Ok(deb)
}

/// The plain tarball: `xvip-VERSION/` with the binary, unit, example config and man pages.
fn tarball(inputs: &Inputs, p: &Payload, work: &Path, out: &Path) -> Result<PathBuf> {
    let name = format!("xvip-{}", inputs.version);
    let root = work.join("tarball");
    let top = root.join(&name);
    fs::create_dir_all(top.join("man"))?;
    for (src, dst) in [
        (&p.binary, "xvip"),
        (&p.unit, "xvip.service"),
        (&p.config, "xvip.toml"),
        (&p.copyright, "COPYRIGHT"),
    ] {
        fs::copy(src, top.join(dst))?;
    }
    for page in &p.man {
        fs::copy(
            page,
            top.join("man").join(page.file_name().expect("a page")),
        )?;
    }
    fs::copy(crate::root().join("README.md"), top.join("README.md"))?;
    let tar = work.join("tarball.tar");
    tar_dir(&root, &tar, inputs.epoch)?;
    let gz = out.join(format!(
        "xvip-{}-linux-{}.tar.gz",
        inputs.version, inputs.deb_arch
    ));
    gzip(&tar, &gz)?;
    Ok(gz)
}

/// The OCI image archive (image-spec v1.1 layout, tarred).
fn image(inputs: &Inputs, work: &Path, out: &Path) -> Result<PathBuf> {
    let layout = work.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;

    // Layer 1: the base, unpacked from Debian's packages of this machine's release.
    let base = work.join("base-root");
    fs::create_dir_all(&base)?;
    for deb in base_debs(&inputs.deb_arch)? {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&base))?;
    }
    // What a container runtime expects to find: root's entry, a /tmp.
    fs::create_dir_all(base.join("etc"))?;
    fs::write(
        base.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\n",
    )?;
    fs::write(base.join("etc/group"), "root:x:0:\n")?;
    fs::create_dir_all(base.join("tmp"))?;
    fs::set_permissions(base.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    // Layer 2: the binary at the Containerfile's path.
    let app = work.join("app-root");
    let bin = app.join(IMAGE_BINARY);
    fs::create_dir_all(bin.parent().expect("a directory"))?;
    fs::copy(&inputs.binary, &bin)?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, root) in [&base, &app].into_iter().enumerate() {
        let tar = work.join(format!("layer{i}.tar"));
        tar_dir(root, &tar, inputs.epoch)?;
        diff_ids.push(format!("sha256:{}", sha256_file(&tar)?));
        let gz = work.join(format!("layer{i}.tar.gz"));
        gzip(&tar, &gz)?;
        layers.push(blob_from_file(
            &blobs,
            &gz,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )?);
    }
    let created = rfc3339(inputs.epoch);
    let labels = json!({
        "org.opencontainers.image.title": "xvip",
        "org.opencontainers.image.description": "XDP virtual IP for the Kubernetes API servers",
        "org.opencontainers.image.version": inputs.version,
        "org.opencontainers.image.revision": inputs.commit,
        "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
        "org.opencontainers.image.created": created,
    });
    let config = json!({
        "created": created,
        "architecture": inputs.oci_arch,
        "os": "linux",
        "config": {
            "Entrypoint": [format!("/{IMAGE_BINARY}")],
            "Cmd": ["--help"],
            "ExposedPorts": {"9106/tcp": {}},
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": format!("cargo xtask dist: Debian {}", BASE_PACKAGES.join(", "))},
            {"created": created, "created_by": format!("cargo xtask dist: COPY xvip /{IMAGE_BINARY}")},
        ],
    });
    let config = blob(
        &blobs,
        &serde_json::to_vec(&config)?,
        "application/vnd.oci.image.config.v1+json",
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layers,
        "annotations": labels,
    });
    let mut manifest = blob(
        &blobs,
        &serde_json::to_vec(&manifest)?,
        "application/vnd.oci.image.manifest.v1+json",
    )?;
    let reference = format!("{IMAGE_REPO}:v{}", inputs.version);
    manifest["platform"] = json!({"architecture": inputs.oci_arch, "os": "linux"});
    manifest["annotations"] = json!({
        // podman load and skopeo read the name from ref.name, containerd (ctr import)
        // from its own key.
        "org.opencontainers.image.ref.name": reference,
        "io.containerd.image.name": reference,
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    let archive = out.join(format!("xvip-{}-oci.tar", inputs.version));
    tar_dir(&layout, &archive, inputs.epoch)?;
    Ok(archive)
}

/// Installs the package into an empty root with dpkg, checks what it put there, runs the
/// installed binary, and purges it again.
fn check_deb(deb: &Path, commit: &str, dir: &Path) -> Result<()> {
    let info = output(Command::new("dpkg-deb").arg("--info").arg(deb))?;
    ensure!(info.contains("Package: xvip"), "dpkg-deb --info: {info}");
    let root = dir.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::write(root.join("var/lib/dpkg/status"), "")?;
    let dpkg = |args: &[&str]| -> Result<()> {
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            // The scripts run on this host with DPKG_ROOT set, and skip themselves.
            .args([
                "--force-script-chrootless",
                "--force-not-root",
                "--force-depends",
            ])
            .args(args))
    };
    dpkg(&["--install", &deb.display().to_string()])?;
    let config = root.join("etc/xvip/xvip.toml");
    let mode = fs::metadata(&config)
        .with_context(|| format!("{} not installed", config.display()))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(
        mode == 0o600,
        "{} has mode {mode:o}, not 600",
        config.display()
    );
    for f in [
        "usr/bin/xvip",
        "usr/lib/systemd/system/xvip.service",
        "usr/share/man/man8/xvip.8.gz",
        "usr/share/man/man8/xvip-run.8.gz",
    ] {
        ensure!(root.join(f).is_file(), "the package did not install /{f}");
    }
    let xvip = root.join("usr/bin/xvip");
    let version = output(Command::new(&xvip).arg("--version"))?;
    // The release build records git's HEAD (lb-userspace/build.rs).
    let first = format!("xvip {} ({commit})", env!("CARGO_PKG_VERSION"));
    ensure!(
        version.starts_with(&first) && version.contains("\nkernel "),
        "installed xvip --version does not start with '{first}': {version}"
    );
    let ok = output(
        Command::new(&xvip)
            .args(["check-config", "--config"])
            .arg(&config),
    )?;
    ensure!(
        ok.starts_with("configuration ok"),
        "check-config on the example: {ok}"
    );
    dpkg(&["--purge", "xvip"])?;
    ensure!(
        !root.join("usr/bin/xvip").exists() && !config.exists(),
        "dpkg --purge left files behind"
    );
    println!(
        "checked {}: installs into an empty root, --version and check-config run, purges",
        deb.display()
    );
    Ok(())
}

/// Re-reads the image archive as a consumer would and verifies it; then runs the binary
/// inside the unpacked layers.
fn check_image(archive: &Path, inputs: &Inputs, dir: &Path) -> Result<()> {
    let layout = dir.join("layout");
    fs::create_dir_all(&layout)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout))?;
    let read_json = |p: &Path| -> Result<Value> {
        serde_json::from_slice(&fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))
    };
    let oci_layout = read_json(&layout.join("oci-layout"))?;
    ensure!(
        oci_layout["imageLayoutVersion"] == "1.0.0",
        "oci-layout: {oci_layout}"
    );
    let index = read_json(&layout.join("index.json"))?;
    ensure!(index["schemaVersion"] == 2, "index.json: schemaVersion");
    let manifests = index["manifests"]
        .as_array()
        .context("index.json: manifests")?;
    ensure!(manifests.len() == 1, "index.json: one manifest expected");
    let desc = &manifests[0];
    ensure!(
        desc["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .is_some_and(|r| r.ends_with(&format!(":v{}", inputs.version))),
        "index.json: the manifest has no ref.name with the version"
    );
    // A descriptor's blob: present, of its size and digest, of the expected media type.
    let verified = |desc: &Value, media: &str| -> Result<PathBuf> {
        ensure!(
            desc["mediaType"] == media,
            "{desc}: media type is not {media}"
        );
        let digest = desc["digest"]
            .as_str()
            .context("descriptor without digest")?;
        let hex = digest
            .strip_prefix("sha256:")
            .context("digest not sha256")?;
        let path = layout.join("blobs/sha256").join(hex);
        let bytes = fs::read(&path).with_context(|| format!("blob {digest} missing"))?;
        ensure!(
            Some(bytes.len() as u64) == desc["size"].as_u64(),
            "blob {digest}: size {} != descriptor's {}",
            bytes.len(),
            desc["size"]
        );
        ensure!(
            hex_sha256(&bytes) == hex,
            "blob {digest}: content does not match"
        );
        Ok(path)
    };
    let manifest = read_json(&verified(
        desc,
        "application/vnd.oci.image.manifest.v1+json",
    )?)?;
    ensure!(manifest["schemaVersion"] == 2, "manifest: schemaVersion");
    let config = read_json(&verified(
        &manifest["config"],
        "application/vnd.oci.image.config.v1+json",
    )?)?;
    ensure!(
        config["architecture"] == inputs.oci_arch.as_str() && config["os"] == "linux",
        "config: platform"
    );
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .context("config: diff_ids")?;
    let layers = manifest["layers"].as_array().context("manifest: layers")?;
    ensure!(
        layers.len() == diff_ids.len() && !layers.is_empty(),
        "{} layers but {} diff_ids",
        layers.len(),
        diff_ids.len()
    );
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let gz = verified(layer, "application/vnd.oci.image.layer.v1.tar+gzip")?;
        let tar = dir.join("layer.tar");
        let plain = Command::new("gzip")
            .args(["-d", "-c"])
            .arg(&gz)
            .output()
            .context("running gzip -d")?;
        ensure!(
            plain.status.success(),
            "layer {}: not gzip",
            layer["digest"]
        );
        fs::write(&tar, &plain.stdout)?;
        ensure!(
            diff_id.as_str() == Some(&format!("sha256:{}", hex_sha256(&plain.stdout))),
            "layer {}: uncompressed digest is not its diff_id {diff_id}",
            layer["digest"]
        );
        run(Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs))?;
        fs::remove_file(&tar)?;
    }
    let entry = config["config"]["Entrypoint"][0]
        .as_str()
        .context("config: no Entrypoint")?;
    // The image's own C library, not this machine's: the binary runs chrooted in it.
    let version = output(
        Command::new("chroot")
            .arg(&rootfs)
            .args([entry, "--version"]),
    )?;
    ensure!(
        version.starts_with(concat!("xvip ", env!("CARGO_PKG_VERSION"))),
        "xvip --version in the image: {version}"
    );
    println!(
        "checked {}: OCI layout, {} layers, digests, sizes and diff_ids verified; {entry} runs in it",
        archive.display(),
        layers.len()
    );
    Ok(())
}

/// Debian's base packages for the image, downloaded once into the cache.
fn base_debs(arch: &str) -> Result<Vec<PathBuf>> {
    let cache = crate::toolchain::cache_dir().join(format!("dist-debs-{arch}"));
    fs::create_dir_all(&cache)?;
    let find = |pkg: &str| -> Option<PathBuf> {
        fs::read_dir(&cache)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
    };
    let missing: Vec<&str> = BASE_PACKAGES
        .into_iter()
        .filter(|p| find(p).is_none())
        .collect();
    if !missing.is_empty() {
        let download = || {
            Command::new("apt-get")
                .arg("download")
                .args(missing.iter().map(|p| format!("{p}:{arch}")))
                .current_dir(&cache)
                .status()
        };
        if !download().is_ok_and(|s| s.success()) {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            if !download().is_ok_and(|s| s.success()) {
                bail!(
                    "cannot download {} with apt-get: the image's base layer is made of them",
                    missing.join(" ")
                );
            }
        }
    }
    BASE_PACKAGES
        .into_iter()
        .map(|p| find(p).with_context(|| format!("{p}: downloaded but not in {}", cache.display())))
        .collect()
}

/// Writes `bytes` as a blob; returns its descriptor.
fn blob(blobs: &Path, bytes: &[u8], media: &str) -> Result<Value> {
    let hex = hex_sha256(bytes);
    fs::write(blobs.join(&hex), bytes)?;
    Ok(json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": bytes.len()}))
}

fn blob_from_file(blobs: &Path, file: &Path, media: &str) -> Result<Value> {
    blob(blobs, &fs::read(file)?, media)
}

/// A reproducible tar of `dir`'s contents: sorted names, owner 0, one mtime, no atime/ctime.
fn tar_dir(dir: &Path, out: &Path, epoch: u64) -> Result<()> {
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--format=gnu",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .arg(format!("--mtime=@{epoch}"))
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg("."))
}

/// gzip without a name or time in the header (`-n`), so the same input gives the same bytes.
fn gzip(input: &Path, out: &Path) -> Result<()> {
    let o = Command::new("gzip")
        .args(["-n", "-9", "-c"])
        .arg(input)
        .output()
        .context("running gzip")?;
    ensure!(o.status.success(), "gzip {} failed", input.display());
    fs::write(out, o.stdout)?;
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_file(p: &Path) -> Result<String> {
    Ok(hex_sha256(&fs::read(p)?))
}

/// The newest `GLIBC_2.N` symbol version the binary asks for (its `Depends: libc6 (>= ..)`).
fn glibc_needed(binary: &Path) -> Result<String> {
    let bytes = fs::read(binary)?;
    let needle = b"GLIBC_2.";
    let mut best = (2u32, 17u32);
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + i + needle.len();
        let digits: String = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        if let Ok(minor) = digits.parse::<u32>() {
            best = best.max((2, minor));
        }
        at = start;
    }
    Ok(format!("{}.{}", best.0, best.1))
}

fn oci_arch(deb: &str) -> Result<&'static str> {
    Ok(match deb {
        "amd64" => "amd64",
        "arm64" => "arm64",
        "armhf" => "arm",
        "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => bail!("no OCI name for the Debian architecture {other}"),
    })
}

/// SOURCE_DATE_EPOCH if set, else the commit's time: every mtime in the archives.
fn source_date_epoch() -> Result<u64> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH '{s}' is not a number"));
    }
    Ok(git(&["log", "-1", "--format=%ct"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (civil-from-days, proleptic Gregorian).
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn du_kb(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            du_kb(&e.path())? * 1024
        } else {
            m.len()
        };
    }
    Ok(total.div_ceil(1024))
}

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(crate::root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Runs a command; its stdout, trimmed. Fails with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_601_599), "2026-12-06T23:59:59Z");
    }

    #[test]
    fn glibc_version_is_the_newest_asked_for() {
        let dir = std::env::temp_dir().join(format!("xtask-glibc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bin");
        fs::write(
            &f,
            b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.28\0GLIBC_PRIVATE\0",
        )
        .unwrap();
        assert_eq!(glibc_needed(&f).unwrap(), "2.34");
        fs::remove_dir_all(&dir).unwrap();
    }
}
