//! `xvip`: the command line.

use std::{net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};
use xvip::{config::RunArgs, daemon};

/// XDP virtual IP for the Kubernetes API server.
#[derive(Parser)]
#[command(name = "xvip", version, about)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, global = true, env = "XVIP_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the interface and serve the VIPs until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Validate the configuration without touching the kernel.
    CheckConfig(RunArgs),
    /// Show backends, health, table shares and counters of a running xvip.
    Status {
        /// Metrics/status address of the daemon.
        #[arg(long, env = "XVIP_METRICS_ADDR", default_value = xvip::config::DEFAULT_METRICS_ADDR)]
        metrics_addr: SocketAddr,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log_level.clone()))
        .format_timestamp_millis()
        .init();
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
                    s.interface,
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
        Command::Status { metrics_addr, json } => {
            match rt.block_on(xvip::status::fetch(metrics_addr)) {
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
