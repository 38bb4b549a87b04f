//! The `agency` command line: plan sessions and benchmark the engine's parts.

mod bench;
mod plan;
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
    let outcome = match cli.command {
        Command::Plan {
            file,
            json,
            preview,
            limits,
        } => plan::run(
            &file,
            json,
            preview,
            &taskgroup::Rules {
                limits: limits.limits(),
                executors: None,
            },
        ),
        Command::Bench { what } => bench::run(what),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
