//! `xvip manifest pod|systemd`: a static pod manifest for `/etc/kubernetes/manifests/` or a
//! systemd unit that runs `xvip run` with the flags given, so a control-plane node can
//! start xvip before (pod: with) the kubelet.
//!
//! The flags are taken from what was given on the command line or in `XVIP_*` environment
//! variables (clap's value sources), so every `xvip run` flag, present and future, is
//! carried over without a list to keep in sync.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use clap::{ArgAction, ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Subcommand};
use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, HTTPGetAction, HostPathVolumeSource, Pod, PodSpec, Probe,
        SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use crate::config::{ConfigError, Settings, args::RunArgs};

/// Image of the pod manifest unless `--image` says otherwise. A placeholder: build and push
/// the image from the repository's `Containerfile` and name it here.
pub const DEFAULT_IMAGE: &str = "ghcr.io/xvip/xvip:v0.1.0";
/// Where the `Containerfile` installs the binary (and where the unit expects it).
pub const DEFAULT_BINARY: &str = "/usr/local/bin/xvip";
/// bpffs mount point: the pins (maps, XDP link) live below it and must outlive the process.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The host's cgroup v2 root, mounted over the container's for the `connect4` hook.
pub const CGROUP2: &str = "/sys/fs/cgroup";

/// The capabilities `xvip run` needs, and why; nothing else is granted:
/// * `BPF`: create maps, load programs, pin and adopt them (`bpf(2)`, kernel >= 5.8);
/// * `PERFMON`: with `BPF`, what the verifier asks of non-trivial programs (pointer
///   arithmetic on map values, bounded loops); without it loading is refused;
/// * `NET_ADMIN`: attach XDP to the interface (netlink, `bpf_link`) and, in per-node mode,
///   the cgroup connect hook;
/// * `NET_RAW`: the ARP packet socket (answers, gratuitous ARP, next-hop resolution) and
///   the VRRP raw socket.
///
/// `SYS_ADMIN` is not among them: it is only needed to mount bpffs, and the host mounts it
/// (systemd does at boot; the pod mounts the host's `/sys/fs/bpf`).
pub const CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW"];

/// `xvip manifest ...`.
#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// A static pod for /etc/kubernetes/manifests/ (YAML on stdout).
    Pod(ManifestArgs),
    /// A systemd unit running xvip as a host service, before any kubelet (on stdout).
    Systemd(ManifestArgs),
    /// Man pages (section 8) of xvip and each subcommand, written into a directory.
    Man(ManArgs),
    /// The RBAC `--services` needs: a ServiceAccount, a ClusterRole (Services and
    /// EndpointSlices list/watch, services/status update/patch, events create; nothing
    /// more) and its ClusterRoleBinding (YAML on stdout).
    Rbac(RbacArgs),
}

/// `xvip manifest rbac`.
#[derive(Args, Debug)]
pub struct RbacArgs {
    /// Namespace of the ServiceAccount.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    /// Name of the ServiceAccount, ClusterRole and binding.
    #[arg(long, default_value = "xvip")]
    pub name: String,
}

/// The rules of `xvip manifest rbac`: what `--services` reads and writes, nothing more.
pub fn rbac_rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    vec![
        rule("", &["services"], &["get", "list", "watch"]),
        rule("", &["services/status"], &["update", "patch"]),
        rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
        rule("", &["events"], &["create"]),
    ]
}

/// `xvip manifest rbac` as YAML (three documents).
///
/// # Errors
/// [`ManifestError::Serialize`] (a bug).
pub fn rbac_yaml(args: &RbacArgs) -> Result<String, ManifestError> {
    use k8s_openapi::api::{
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject},
    };
    for (field, v) in [("--namespace", &args.namespace), ("--name", &args.name)] {
        if v.is_empty()
            || v.len() > 63
            || !v
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ManifestError::Config(ConfigError::Invalid {
                field,
                value: v.clone(),
                reason: "a Kubernetes name: 1-63 of [a-z0-9-]".into(),
            }));
        }
    }
    let meta = |ns: Option<&str>| ObjectMeta {
        name: Some(args.name.clone()),
        namespace: ns.map(String::from),
        ..Default::default()
    };
    let sa = ServiceAccount {
        metadata: meta(Some(&args.namespace)),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta(None),
        rules: Some(rbac_rules()),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: args.name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: args.name.clone(),
            namespace: Some(args.namespace.clone()),
            ..Default::default()
        }]),
    };
    let doc = |v: serde_json::Value, kind: &str, api: &str| {
        let mut v = v;
        v["apiVersion"] = api.into();
        v["kind"] = kind.into();
        serde_yaml_ng::to_string(&v).map_err(|e| ManifestError::Serialize(e.to_string()))
    };
    let ser = |x: serde_json::Result<serde_json::Value>| {
        x.map_err(|e| ManifestError::Serialize(e.to_string()))
    };
    Ok([
        doc(ser(serde_json::to_value(&sa))?, "ServiceAccount", "v1")?,
        doc(
            ser(serde_json::to_value(&role))?,
            "ClusterRole",
            "rbac.authorization.k8s.io/v1",
        )?,
        doc(
            ser(serde_json::to_value(&binding))?,
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io/v1",
        )?,
    ]
    .join("---\n"))
}

/// `xvip manifest man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write `xvip.8`, `xvip-run.8`, ... into (it must exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes a section-8 man page for `cmd` and each of its visible subcommands into `out`
/// (clap_mangen renders them from the same definitions as `--help`).
///
/// # Errors
/// Writing a file failed.
pub fn man_pages(cmd: clap::Command, out: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(
        cmd: clap::Command,
        out: &std::path::Path,
        files: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out, files)?;
        }
        let man = clap_mangen::Man::new(cmd).section("8").manual("xvip");
        files.push(man.generate_to(out)?);
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut files = Vec::new();
    walk(cmd, out, &mut files)?;
    files.sort();
    Ok(files)
}

/// The settings of a manifest: its own, then every `xvip run` flag.
#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// Container image of the pod.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Path of the xvip binary in the image, or on the host for the systemd unit.
    #[arg(long, default_value = DEFAULT_BINARY)]
    pub binary: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Why no manifest was printed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The `xvip run` flags are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file given to xvip is not an absolute path (the pod mounts it at the same path).
    #[error("{field} '{path}': must be an absolute path in a manifest")]
    RelativePath { field: &'static str, path: String },
    /// A secret given as a flag or variable would be written into the manifest: visible in
    /// the mirror pod through the API, in the unit file, and in `ps`.
    #[error(
        "{field} would be visible in the manifest (and the mirror pod) and in ps: put {key} in the --config file (mode 0600) instead"
    )]
    SecretOnCommandLine {
        field: &'static str,
        key: &'static str,
    },
    /// Serialization failed (a bug).
    #[error("cannot serialize the manifest: {0}")]
    Serialize(String),
    /// Man pages are files, written by the binary (it holds the whole command line), not text.
    #[error("man pages are written with `xvip manifest man --out DIR`")]
    NotText,
}

impl ManifestError {
    /// 2, like any configuration error of `xvip run`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Serialize(_) | Self::NotText => 1,
            _ => 2,
        }
    }
}

/// The `xvip run` flags present in `matches` (from the command line or the environment),
/// in declaration order, as arguments: `--flag value` per value, `--flag` for switches.
pub fn run_flags(matches: &ArgMatches) -> Vec<String> {
    use clap::parser::ValueSource;
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let (Some(long), Ok(Some(ValueSource::CommandLine | ValueSource::EnvVariable))) = (
            arg.get_long(),
            matches.try_get_raw(id).map(|_| matches.value_source(id)),
        ) else {
            continue;
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            if matches.get_flag(id) {
                out.push(format!("--{long}"));
            }
            continue;
        }
        for v in matches.get_raw(id).into_iter().flatten() {
            out.push(format!("--{long}"));
            out.push(v.to_string_lossy().into_owned());
        }
    }
    out
}

/// Validates the flags as `xvip run` would, except that files that do not exist yet are
/// accepted with a warning on stderr: before `kubeadm init` the cluster CA does not exist.
fn validate(run: &RunArgs) -> Result<Settings, ManifestError> {
    if run.vrrp_auth_pass.is_some() {
        return Err(ManifestError::SecretOnCommandLine {
            field: "--vrrp-auth-pass",
            key: "vrrp_auth_pass",
        });
    }
    let mut probe = run.clone();
    loop {
        match probe.resolve() {
            Ok(s) => break Ok(s),
            Err(ConfigError::Invalid {
                field,
                value,
                reason,
            }) if reason == "no such file" => {
                eprintln!(
                    "warning: {field} {value} does not exist yet; xvip run refuses to start (and the kubelet or systemd retries) until it does"
                );
                let slot = match field {
                    "--ca-file" => &mut probe.ca_file,
                    "--cert-file" => &mut probe.cert_file,
                    "--key-file" => &mut probe.key_file,
                    _ => {
                        return Err(ConfigError::Invalid {
                            field,
                            value,
                            reason,
                        }
                        .into());
                    }
                };
                // Stand-in for the check only; the manifest keeps the real path.
                *slot = Some("/proc/self/exe".into());
            }
            Err(e) => break Err(e.into()),
        }
    }
}

/// Files named by the flags, each with its flag, for mounts.
fn files(run: &RunArgs) -> Vec<(&'static str, &Path)> {
    [
        ("--config", &run.config),
        ("--ca-file", &run.ca_file),
        ("--cert-file", &run.cert_file),
        ("--key-file", &run.key_file),
        ("--discover-from-kubeconfig", &run.discover_from_kubeconfig),
        ("--sync-key-file", &run.sync_key_file),
        ("--services-kubeconfig", &run.services_kubeconfig),
    ]
    .into_iter()
    .filter_map(|(f, p)| p.as_deref().map(|p| (f, p)))
    .collect()
}

/// Host directories the pod mounts: the bpffs (read-write, host-to-container propagation,
/// so a bpffs the host mounts later is seen too) and the directory of every file the flags
/// name (read-only, same path), as directories so that a kubeconfig written later by
/// `kubeadm init` appears in the running pod.
fn host_dirs(run: &RunArgs, settings: &Settings) -> Result<Vec<(PathBuf, bool)>, ManifestError> {
    let pins = if settings.pin_root.starts_with(BPFFS) {
        PathBuf::from(BPFFS)
    } else {
        settings.pin_root.clone()
    };
    let mut dirs = vec![(pins, true)];
    for (field, path) in files(run) {
        if !path.is_absolute() {
            return Err(ManifestError::RelativePath {
                field,
                path: path.display().to_string(),
            });
        }
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !dirs.iter().any(|(d, _)| *d == dir) {
            dirs.push((dir, false));
        }
    }
    // A directory below another mounted one is already there.
    let all = dirs.clone();
    dirs.retain(|(d, w)| *w || !all.iter().any(|(o, ow)| !ow && o != d && d.starts_with(o)));
    // The connect4 hook goes on the host's cgroup v2 root; the container's own
    // /sys/fs/cgroup is only its namespaced subtree. Attaching needs no write access.
    if settings.local_connect && !dirs.iter().any(|(d, _)| d == Path::new(CGROUP2)) {
        dirs.push((PathBuf::from(CGROUP2), false));
    }
    // The instance locks and status records: shared with an xvip run on the host, so a
    // second one on the same interface is refused (`pins::lock::lock_interfaces`).
    dirs.push((PathBuf::from(crate::dataplane::pins::lock::LOCK_ROOT), true));
    Ok(dirs)
}

fn volume_name(i: usize, dir: &Path) -> String {
    if i == 0 {
        return "bpffs".into();
    }
    let slug: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // DNS label: at most 63 characters, alphanumeric at both ends.
    let slug = slug.trim_matches('-');
    let slug = &slug[..slug.len().min(50)];
    format!("host-{i}-{}", slug.trim_end_matches('-'))
}

/// The static pod.
///
/// # Errors
/// Invalid flags, relative file paths.
pub fn pod(args: &ManifestArgs, flags: Vec<String>) -> Result<Pod, ManifestError> {
    let settings = validate(&args.run)?;
    let dirs = host_dirs(&args.run, &settings)?;
    let probe_host = match settings.metrics_addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let (volumes, mounts): (Vec<Volume>, Vec<VolumeMount>) = dirs
        .iter()
        .enumerate()
        .map(|(i, (dir, writable))| {
            let name = volume_name(i, dir);
            let path = dir.to_string_lossy().into_owned();
            (
                Volume {
                    name: name.clone(),
                    host_path: Some(HostPathVolumeSource {
                        path: path.clone(),
                        type_: Some("DirectoryOrCreate".into()),
                    }),
                    ..Default::default()
                },
                VolumeMount {
                    name,
                    mount_path: path,
                    read_only: Some(!writable),
                    mount_propagation: writable.then(|| "HostToContainer".into()),
                    ..Default::default()
                },
            )
        })
        .unzip();
    let container = Container {
        name: "xvip".into(),
        image: Some(args.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            args.binary.to_string_lossy().into_owned(),
            "run".into(),
        ]),
        args: Some(flags),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        // xvip's own endpoint on the metrics address; reachable because of hostNetwork.
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                host: Some(probe_host.to_string()),
                port: IntOrString::Int(settings.metrics_addr.port().into()),
                path: Some("/healthz".into()),
                scheme: Some("HTTP".into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(10),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some("xvip".into()),
            namespace: Some("kube-system".into()),
            labels: Some(
                [
                    ("app.kubernetes.io/name".to_string(), "xvip".to_string()),
                    ("tier".to_string(), "control-plane".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            host_network: Some(true),
            priority_class_name: Some("system-node-critical".into()),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    })
}

/// The static pod as YAML.
///
/// # Errors
/// See [`pod`].
pub fn pod_yaml(args: &ManifestArgs, flags: Vec<String>) -> Result<String, ManifestError> {
    let pod = pod(args, flags)?;
    let yaml =
        serde_yaml_ng::to_string(&pod).map_err(|e| ManifestError::Serialize(e.to_string()))?;
    Ok(format!(
        "# xvip static pod: copy to /etc/kubernetes/manifests/xvip.yaml on each node that runs it.\n\
         # Capabilities: BPF+PERFMON load maps and programs, NET_ADMIN attaches XDP, NET_RAW is\n\
         # the ARP/VRRP sockets. No SYS_ADMIN: the host must have bpffs on /sys/fs/bpf\n\
         # (systemd mounts it at boot; else `mount -t bpf bpf /sys/fs/bpf`).\n{yaml}"
    ))
}

/// Quotes one word of an `ExecStart=` line (systemd.syntax: `"`, `\`, `$` and `%`).
fn systemd_quote(word: &str) -> String {
    let escaped = word
        .replace('%', "%%")
        .replace('$', "$$")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    if escaped.is_empty()
        || escaped.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == ';')
    {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// The systemd unit.
///
/// # Errors
/// Invalid flags.
pub fn systemd_unit(args: &ManifestArgs, flags: Vec<String>) -> Result<String, ManifestError> {
    validate(&args.run)?;
    let exec: Vec<String> = [args.binary.to_string_lossy().into_owned(), "run".into()]
        .into_iter()
        .chain(flags)
        .map(|w| systemd_quote(&w))
        .collect();
    let caps = CAPABILITIES.map(|c| format!("CAP_{c}")).join(" ");
    Ok(format!(
        "# xvip as a host service: /etc/systemd/system/xvip.service, then\n\
         # systemctl daemon-reload && systemctl enable --now xvip\n\
         [Unit]\n\
         Description=xvip: XDP virtual IP for the Kubernetes API server\n\
         Documentation=https://github.com/xvip/xvip/blob/main/docs/kubeadm-ha.md\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         Before=kubelet.service\n\
         \n\
         [Service]\n\
         Type=simple\n\
         # bpffs must be on the host for the pins to outlive restarts; '+' runs this with full\n\
         # privileges, the daemon itself only with the capabilities below.\n\
         ExecStartPre=+/bin/sh -c 'mountpoint -q {BPFFS} || mount -t bpf bpf {BPFFS}'\n\
         ExecStart={}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=always\n\
         RestartSec=1s\n\
         # SIGTERM: stop answering ARP (VRRP: hand over at once), then detach.\n\
         TimeoutStopSec=15s\n\
         # BPF+PERFMON load maps and programs, NET_ADMIN attaches XDP, NET_RAW is the ARP and\n\
         # VRRP sockets. The bounding set limits root to them; Ambient serves a User= change.\n\
         CapabilityBoundingSet={caps}\n\
         AmbientCapabilities={caps}\n\
         # Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.\n\
         LimitMEMLOCK=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exec.join(" ")
    ))
}

/// Renders the manifest for `xvip manifest KIND ...`, whose sub-matches are `matches`.
///
/// # Errors
/// See [`pod`] and [`systemd_unit`].
pub fn render(cmd: &ManifestCommand, matches: &ArgMatches) -> Result<String, ManifestError> {
    let flags = run_flags(matches);
    match cmd {
        ManifestCommand::Pod(a) => pod_yaml(a, flags),
        ManifestCommand::Systemd(a) => systemd_unit(a, flags),
        ManifestCommand::Man(_) => Err(ManifestError::NotText),
        ManifestCommand::Rbac(a) => rbac_yaml(a),
    }
}

/// Parses `xvip manifest KIND ARGS` (for tests and tools): the command and its matches.
///
/// # Errors
/// clap's error for bad arguments.
pub fn parse_from<I, T>(argv: I) -> Result<(ManifestCommand, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(clap::Parser)]
    #[command(name = "manifest")]
    struct Wrap {
        #[command(subcommand)]
        cmd: ManifestCommand,
    }
    let m = Wrap::command().try_get_matches_from(argv)?;
    let w = Wrap::from_arg_matches(&m)?;
    let sub = m
        .subcommand()
        .map(|(_, s)| s.clone())
        .expect("subcommand required");
    Ok((w.cmd, sub))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn rbac_grants_what_services_needs_and_nothing_more() {
        let (cmd, m) = parse_from(["manifest", "rbac"]).unwrap();
        let yaml = render(&cmd, &m).unwrap();
        let docs: Vec<serde_json::Value> = yaml
            .split("---\n")
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["kind"], "ServiceAccount");
        assert_eq!(docs[0]["metadata"]["namespace"], "kube-system");
        let role: k8s_openapi::api::rbac::v1::ClusterRole =
            serde_json::from_value(docs[1].clone()).unwrap();
        let mut grants: Vec<String> = role
            .rules
            .unwrap()
            .iter()
            .flat_map(|r| {
                let g = r.api_groups.clone().unwrap().join(",");
                let res = r.resources.clone().unwrap();
                res.into_iter().flat_map(move |x| {
                    let g = g.clone();
                    r.verbs.iter().map(move |v| format!("{g}/{x}:{v}"))
                })
            })
            .collect();
        grants.sort();
        assert_eq!(
            grants,
            [
                "/events:create",
                "/services/status:patch",
                "/services/status:update",
                "/services:get",
                "/services:list",
                "/services:watch",
                "discovery.k8s.io/endpointslices:list",
                "discovery.k8s.io/endpointslices:watch",
            ]
        );
        assert_eq!(docs[2]["subjects"][0]["name"], "xvip");
        let (cmd, m) = parse_from(["manifest", "rbac", "--namespace", "Bad_NS"]).unwrap();
        let e = render(&cmd, &m).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("Bad_NS"));
    }

    /// `xvip run`'s own parser, as main.rs builds it.
    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        run: RunArgs,
    }

    const FLAGS: &[&str] = &[
        "--interface",
        "eth0",
        "--vip",
        "10.0.0.100",
        "--backend",
        "10.0.0.11,10.0.0.12",
        "--backend",
        "10.0.0.13@2",
        "--health-interval",
        "300ms",
        "--keep-attached",
        "--discover-from-kubeconfig",
        "/etc/kubernetes/admin.conf",
        "--metrics-addr",
        "0.0.0.0:9200",
    ];

    fn manifest(kind: &str, extra: &[&str]) -> (ManifestCommand, ArgMatches) {
        let head = ["manifest", kind];
        parse_from(head.iter().chain(FLAGS).chain(extra).copied()).unwrap()
    }

    fn render_pod(extra: &[&str]) -> String {
        let (cmd, m) = manifest("pod", extra);
        render(&cmd, &m).unwrap()
    }

    #[test]
    fn a_vrrp_password_given_as_a_flag_is_refused_not_written_into_the_manifest() {
        let secret = [
            "--vrrp-vrid",
            "51",
            "--vrrp-version",
            "2",
            "--vrrp-auth-pass",
            "s3cr3t-pw",
        ];
        for kind in ["pod", "systemd"] {
            let (cmd, m) = manifest(kind, &secret);
            let e = render(&cmd, &m).expect_err("refused");
            assert_eq!(e.exit_code(), 2);
            let text = e.to_string();
            assert!(
                text.contains("--vrrp-auth-pass") && text.contains("--config"),
                "{text}"
            );
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[test]
    fn ipv6_vips_and_backends_are_written_as_bracketed_addresses() {
        let v6 = [
            "--vip",
            "[2001:db8::100]:6443",
            "--backend",
            "[2001:db8::11]:6443@2",
        ];
        let pod: Pod = serde_yaml_ng::from_str(&render_pod(&v6)).unwrap();
        let args = pod.spec.unwrap().containers[0].args.clone().unwrap();
        let at = |v: &str| args.iter().position(|a| a == v);
        assert!(at("[2001:db8::100]:6443").is_some(), "{args:?}");
        assert!(at("[2001:db8::11]:6443@2").is_some(), "{args:?}");
        let (cmd, m) = manifest("systemd", &v6);
        let unit = render(&cmd, &m).unwrap();
        assert!(unit.contains("[2001:db8::100]:6443"), "{unit}");
        // A backend of a family no VIP has is refused as `xvip run` refuses it.
        let (cmd, m) = manifest("pod", &["--backend", "[2001:db8::11]:6443"]);
        assert_eq!(render(&cmd, &m).expect_err("refused").exit_code(), 2);
    }

    #[test]
    fn the_pod_manifest_deserializes_into_a_pod_and_round_trips() {
        let yaml = render_pod(&[]);
        let pod: Pod = serde_yaml_ng::from_str(&yaml).unwrap();
        let again: Pod = serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&pod).unwrap()).unwrap();
        assert_eq!(pod, again);
        // As JSON too (the API server's and kubectl's format).
        let json = serde_json::to_string(&pod).unwrap();
        assert_eq!(serde_json::from_str::<Pod>(&json).unwrap(), pod);
        let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");

        let spec = pod.spec.unwrap();
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
        let caps = c
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.add.as_deref().unwrap(),
            ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW"]
        );
        assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
        let probe = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        // 0.0.0.0 is not an address to connect to: the probe uses loopback.
        assert_eq!(probe.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(probe.port, IntOrString::Int(9200));
        let mounts: Vec<(&str, Option<bool>)> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("/sys/fs/bpf", Some(false)),
                ("/etc/kubernetes", Some(true)),
                ("/sys/fs/cgroup", Some(true)),
                ("/run/xvip", Some(false))
            ]
        );
    }

    #[test]
    fn the_pods_command_parses_with_xvip_runs_parser_to_the_same_settings() {
        let pod: Pod = serde_yaml_ng::from_str(&render_pod(&[])).unwrap();
        let c = &pod.spec.unwrap().containers[0];
        let argv: Vec<String> = c
            .command
            .clone()
            .unwrap()
            .into_iter()
            .chain(c.args.clone().unwrap())
            .collect();
        assert_eq!(argv[..2], [DEFAULT_BINARY, "run"]);
        let from_pod = Run::try_parse_from(&argv[1..])
            .unwrap()
            .run
            .resolve()
            .unwrap();
        let direct = Run::try_parse_from(["run"].iter().chain(FLAGS))
            .unwrap()
            .run
            .resolve()
            .unwrap();
        assert_eq!(from_pod, direct);
        assert_eq!(from_pod.backends.len(), 3);
        assert!(from_pod.keep_attached);
        // The manifest's own flags are not passed on.
        assert!(!argv.iter().any(|a| a == "--image" || a == "--binary"));
    }

    #[test]
    fn the_systemd_units_exec_start_parses_with_xvip_runs_parser() {
        let (cmd, m) = manifest("systemd", &[]);
        let unit = render(&cmd, &m).unwrap();
        for want in [
            "After=network-online.target",
            "Restart=always",
            "AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_RAW",
        ] {
            assert!(unit.contains(want), "{want} missing:\n{unit}");
        }
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let argv: Vec<&str> = exec.split(' ').collect();
        assert_eq!(argv[0], DEFAULT_BINARY);
        let from_unit = Run::try_parse_from(&argv[1..])
            .unwrap()
            .run
            .resolve()
            .unwrap();
        let direct = Run::try_parse_from(["run"].iter().chain(FLAGS))
            .unwrap()
            .run
            .resolve()
            .unwrap();
        assert_eq!(from_unit, direct);
        assert_eq!(systemd_quote("a b%$\"\\"), "\"a b%%$$\\\"\\\\\"");
        assert_eq!(systemd_quote("--vip"), "--vip");
    }

    #[test]
    fn bad_or_relative_settings_print_no_manifest() {
        let (cmd, m) = parse_from([
            "manifest",
            "pod",
            "--interface",
            "eth0",
            "--vip",
            "10.0.0.300",
            "--backend",
            "10.0.0.11",
        ])
        .unwrap();
        assert!(matches!(render(&cmd, &m), Err(ManifestError::Config(_))));
        let (cmd, m) = manifest(
            "pod",
            &["--cert-file", "client.crt", "--key-file", "client.key"],
        );
        let err = render(&cmd, &m).unwrap_err();
        assert!(err.to_string().contains("client.crt"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn the_sync_key_files_directory_is_mounted_and_the_key_never_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xvip-manifest-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("sync.key");
        std::fs::write(&key, b"k3y-material-that-is-32-bytes-long!!").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = key.to_string_lossy().into_owned();
        let yaml = render_pod(&["--vrrp-vrid", "51", "--sync-key-file", &k]);
        assert!(
            yaml.contains(&format!("path: {}\n", dir.display())),
            "{yaml}"
        );
        assert!(yaml.contains(&k), "{yaml}");
        assert!(!yaml.contains("k3y-material"), "{yaml}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ca_file_that_kubeadm_has_not_written_yet_is_mounted_anyway() {
        let yaml = render_pod(&["--ca-file", "/nonexistent/pki/ca.crt"]);
        assert!(yaml.contains("path: /nonexistent/pki"), "{yaml}");
        assert!(yaml.contains("/nonexistent/pki/ca.crt"), "{yaml}");
        // Under the kubeconfig's /etc/kubernetes: mounted with it, not twice.
        let yaml = render_pod(&["--ca-file", "/etc/kubernetes/pki/ca.crt"]);
        assert!(!yaml.contains("path: /etc/kubernetes/pki"), "{yaml}");
        assert!(yaml.contains("path: /etc/kubernetes\n"), "{yaml}");
    }
}
