//! `xvip`: the command line.

use std::{net::SocketAddr, process::ExitCode};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use xvip::{config::args::RunArgs, daemon};

/// XDP virtual IP for the Kubernetes API server.
#[derive(Parser)]
#[command(name = "xvip", version = xvip::deploy::version::SHORT, about)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, global = true, env = "XVIP_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: text (default) or json (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "XVIP_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the interface and serve the VIPs until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Validate the configuration without touching the kernel.
    CheckConfig(RunArgs),
    /// Check this node and the masters with `xvip run`'s settings, changing nothing: one
    /// line per check (ok, warn, fail) with the fix; exit 1 when a check fails.
    Doctor {
        #[command(flatten)]
        run: RunArgs,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Detach from an interface and remove its pinned state (drops tracked connections).
    Detach {
        /// The interface xvip ran on.
        #[arg(long, env = "XVIP_INTERFACE")]
        interface: String,
        /// bpffs directory of the pins.
        #[arg(long, env = "XVIP_PIN_ROOT", default_value = xvip::config::DEFAULT_PIN_ROOT)]
        pin_root: std::path::PathBuf,
    },
    /// Show backends, health, table shares and counters of a running xvip.
    Status {
        /// Interface of the daemon to ask (its address is recorded under /run/xvip).
        #[arg(long, conflicts_with = "metrics_addr")]
        interface: Option<String>,
        /// Metrics/status address of the daemon.
        #[arg(long, env = "XVIP_METRICS_ADDR", default_value = xvip::config::DEFAULT_METRICS_ADDR)]
        metrics_addr: SocketAddr,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a static pod manifest or a systemd unit running `xvip run` with these flags.
    #[command(subcommand)]
    Manifest(xvip::deploy::manifest::ManifestCommand),
    /// Print an xvip configuration (TOML) equivalent to another tool's.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Subcommand)]
enum ImportCommand {
    /// From keepalived's configuration, plus haproxy's for the backends and health check;
    /// what cannot be carried over is listed on stderr.
    Keepalived {
        /// keepalived.conf (includes are followed).
        conf: std::path::PathBuf,
        /// The vrrp_instance to import (needed when there are several).
        #[arg(long)]
        instance: Option<String>,
        /// haproxy.cfg: backends from the servers behind the :6443 frontend.
        #[arg(long)]
        haproxy: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    // The matches are kept: `manifest` copies the flags that were actually given.
    // `--version` also says what this kernel offers (`-V`: version and commit only).
    let long_version: &'static str = Box::leak(xvip::deploy::version::long().into_boxed_str());
    let matches = Cli::command().long_version(long_version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `log` records (ours and aya-log's) go through tracing's bridge; RUST_LOG wins.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    if let Command::Manifest(xvip::deploy::manifest::ManifestCommand::Man(a)) = &cli.command {
        return match xvip::deploy::manifest::man_pages(Cli::command(), &a.out) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "xvip: cannot write the man pages into {}: {e}",
                    a.out.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Manifest(cmd) = &cli.command {
        let sub = matches
            .subcommand_matches("manifest")
            .and_then(|m| m.subcommand())
            .map(|(_, m)| m)
            .expect("clap matched manifest");
        return match xvip::deploy::manifest::render(cmd, sub) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xvip: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        };
    }
    if let Command::Import(ImportCommand::Keepalived {
        conf,
        instance,
        haproxy,
    }) = &cli.command
    {
        return match xvip::deploy::import::keepalived(conf, instance.as_deref(), haproxy.as_deref())
        {
            Ok(out) => {
                for n in &out.notes {
                    eprintln!("xvip import: {n}");
                }
                print!("{}", out.toml);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xvip import: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xvip: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run(args) => match rt.block_on(daemon::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xvip: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        },
        Command::CheckConfig(args) => match daemon::check_config(&args) {
            Ok(s) => {
                println!(
                    "configuration ok: {} on {}, {} VIPs, {} backends",
                    format!("{:?}", s.mode).to_lowercase(),
                    s.interfaces.join(","),
                    s.vips.len(),
                    s.backends.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xvip: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        },
        Command::Doctor { run, json } => match rt.block_on(xvip::doctor::run(&run)) {
            Ok(report) => {
                if json {
                    println!("{}", report.to_json());
                } else {
                    print!("{}", report.to_text());
                }
                ExitCode::from(report.exit_code())
            }
            Err(e) => {
                eprintln!("xvip: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        },
        Command::Detach {
            interface,
            pin_root,
        } => {
            // Never under a running xvip: its instance lock (held until it exits) says so.
            let _lock = match xvip::dataplane::pins::lock::lock_interfaces(
                std::path::Path::new(xvip::dataplane::pins::lock::LOCK_ROOT),
                &[interface.as_str()],
                std::time::Duration::from_secs(1),
            ) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("xvip: {e}");
                    return ExitCode::from(e.exit_code() as u8);
                }
            };
            // Routed mode's VIP routes go first: the router must stop sending here.
            if let Ok(i) = xvip::net::iface::Interface::lookup(&interface) {
                match xvip::announce::route::withdraw_all(i.index) {
                    Ok(0) => {}
                    Ok(n) => println!("withdrew {n} VIP routes on {interface}"),
                    Err(e) => {
                        eprintln!("xvip: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            // The same lookup as `xvip run`: this namespace's pins for that interface.
            let dirs = match xvip::dataplane::pins::detach_dirs(&pin_root, &interface) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("xvip: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if dirs.is_empty() {
                let e = xvip::dataplane::DataplaneError::NothingPinned {
                    dir: xvip::dataplane::pins::netns_inode()
                        .map(|ns| xvip::dataplane::pins::pin_dir(&pin_root, ns, &interface))
                        .unwrap_or_else(|_| pin_root.clone())
                        .display()
                        .to_string(),
                    interface,
                };
                eprintln!("xvip: {e}");
                return ExitCode::FAILURE;
            }
            let mut removed = 0;
            for dir in &dirs {
                match xvip::dataplane::remove_pins(dir, &interface) {
                    Ok(n) => removed += n,
                    Err(e) => {
                        eprintln!("xvip: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!(
                "detached from {interface}: removed {removed} pins in {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ExitCode::SUCCESS
        }
        Command::Manifest(_) | Command::Import(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Status {
            interface,
            metrics_addr,
            json,
        } => {
            let addr = match interface
                .as_deref()
                .map(xvip::api::server::recorded_addr)
                .transpose()
            {
                Ok(a) => a.unwrap_or(metrics_addr),
                Err(e) => {
                    eprintln!("xvip: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(xvip::api::client::fetch(addr)) {
                Ok(s) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                    } else {
                        print!("{}", s.to_table());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xvip: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
