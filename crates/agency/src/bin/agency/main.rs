//! The `agency` command line: plan sessions and benchmark the engine's parts.

#[cfg(feature = "distributed")]
mod actions;
#[cfg(feature = "distributed")]
mod agent;
mod bench;
#[cfg(feature = "distributed")]
mod bench_distributed;
#[cfg(feature = "distributed")]
mod control;
mod csv;
#[cfg(feature = "distributed")]
mod describe;
#[cfg(feature = "distributed")]
mod http_flags;
#[cfg(feature = "distributed")]
mod kafka_properties;
mod plan;
mod run;
#[cfg(feature = "distributed")]
mod serve;
#[cfg(feature = "distributed")]
mod servers;
#[cfg(feature = "distributed")]
mod services;
mod show;
#[cfg(feature = "distributed")]
mod tasks;
mod text;

use clap::{Parser, Subcommand};
use expansion::Limits;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "agency",
    version,
    about = "A distributed task-group engine over Kafka and Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a session file and preview its expansion without running anything
    Plan {
        /// The session file (JSON)
        file: PathBuf,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
        /// How many rendered instances to show per task
        #[arg(long, default_value_t = 3)]
        preview: u64,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run a session on the embedded engine (no servers) and print its final result
    Run {
        /// The session file (JSON)
        file: PathBuf,
        /// Worker loops in the process
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Instances in flight per task per worker, for tasks that set no `concurrency`
        #[arg(long, default_value_t = 1024)]
        concurrency: usize,
        /// No progress display on stderr
        #[arg(long, short)]
        quiet: bool,
        /// Run only these groups and tasks (GROUP or GROUP.TASK, comma-separated) and what
        /// they depend on
        #[arg(long, value_name = "GROUP[.TASK],...")]
        only: Option<String>,
        /// Keep the run in this state file: killed, the same command resumes it where it was
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
        /// With --state: write what was recorded to the file at least this often (a crash
        /// runs again at most what was recorded since)
        #[arg(long, value_name = "MS", default_value_t = 250, requires = "state")]
        checkpoint_ms: u64,
        /// With --state: when the session in the file did not complete, run again only what
        /// failed or never finished, reusing every success recorded
        #[arg(long, requires = "state")]
        retry_failed: bool,
        /// Serve `/metrics` (Prometheus) on this address while the run goes on (HOST:PORT, or
        /// a port for 127.0.0.1)
        #[arg(long, env = "AGENCY_HTTP", value_name = "ADDR", value_parser = agency::http::address)]
        http: Option<std::net::SocketAddr>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Claim and settle work of tasks with "executor": "agent", as an external agent
    #[cfg(feature = "distributed")]
    Agent {
        #[command(subcommand)]
        what: agent::AgentCommand,
    },
    /// The task manager: create tasks in workflows, with parents, for agents to claim with
    /// `agency agent claim`; read them, their children, a workflow's counts and metadata
    #[cfg(feature = "distributed")]
    Tasks {
        #[command(subcommand)]
        what: tasks::TasksCommand,
    },
    /// Run a CSV of `task_id,task_type` rows, each through its blueprint of steps (seed 001),
    /// and write `task_id,final_status,error_info`; exit 1 unless every row completed
    Csv(csv::CsvArgs),
    #[cfg(feature = "distributed")]
    #[command(flatten)]
    Serve(serve::Serve),
    /// Measure the engine's parts; results go to stdout
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
}

/// Expansion limits, with the library's safe defaults.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Instances one task may expand to
    #[arg(long, default_value_t = Limits::default().max_instances)]
    max_instances: u64,
    /// Combinations `exclude`/`conditions` may scan at plan time
    #[arg(long, default_value_t = Limits::default().max_combinations)]
    max_combinations: u64,
    /// Bytes of one rendered instance input
    #[arg(long, default_value_t = Limits::default().max_rendered_bytes)]
    max_rendered_bytes: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_instances: self.max_instances,
            max_combinations: self.max_combinations,
            max_rendered_bytes: self.max_rendered_bytes,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(log_level())
        .init();
    let outcome = match cli.command {
        Command::Plan {
            file,
            json,
            preview,
            limits,
        } => {
            // Plan against the executors `agency run` has, so a misspelled one is caught here.
            let mut rules = agency::embedded::Engine::new(Default::default()).rules();
            rules.limits = limits.limits();
            plan::run(&file, json, preview, &rules).map(|()| ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            workers,
            concurrency,
            quiet,
            only,
            state,
            checkpoint_ms,
            retry_failed,
            http,
            limits,
        } => {
            let limits = limits.limits();
            let options = agency::embedded::EmbeddedOptions {
                workers,
                worker: agency::WorkerOptions {
                    concurrency,
                    limits,
                    ..Default::default()
                },
                limits,
                ..Default::default()
            };
            let state = state.map(|path| run::State {
                path,
                checkpoint: std::time::Duration::from_millis(checkpoint_ms.max(1)),
                retry_failed,
            });
            run::run(run::RunArgs {
                file,
                options,
                quiet,
                only,
                state,
                http,
            })
        }
        #[cfg(feature = "distributed")]
        Command::Agent { what } => agent::run(what),
        #[cfg(feature = "distributed")]
        Command::Tasks { what } => tasks::run(what),
        Command::Csv(args) => csv::run(args),
        #[cfg(feature = "distributed")]
        Command::Serve(command) => serve::run(command),
        Command::Bench { what } => bench::run(what).map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `AGENCY_LOG=debug` (or trace, info, warn, error) sets how much is logged; warnings by default.
fn log_level() -> tracing::Level {
    std::env::var("AGENCY_LOG")
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(tracing::Level::WARN)
}
