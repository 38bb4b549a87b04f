//! `agency csv`: the arguments of `agency::csv`'s runner, its progress and its exit code.

use agency::csv::{Blueprints, CsvRun, Runner, DEFAULT_FETCH_URL};
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// `agency csv`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CsvArgs {
    /// The input: a header, then `task_id,task_type` rows (task ids are u64)
    file: PathBuf,
    /// Write the results here instead of stdout
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// A blueprint file: {"blueprints": {"<task_type or *>": [{"step", "executor", "input"}]}};
    /// seed 001's fetch_data, long_delay and emit_event by default
    #[arg(long, value_name = "FILE")]
    blueprint: Option<PathBuf>,
    /// Rows in flight at once
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Rows per session
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// The URL the default blueprint's fetch_data GETs
    #[arg(long, default_value = DEFAULT_FETCH_URL)]
    fetch_url: String,
    /// Run on the coordinators and workers of --kafka/--redis instead of in this process
    #[cfg(feature = "distributed")]
    #[arg(long)]
    distributed: bool,
    /// No progress display on stderr
    #[arg(long, short)]
    quiet: bool,
    #[cfg(feature = "distributed")]
    #[command(flatten)]
    servers: crate::servers::Servers,
}

/// Runs `agency csv`: exit 1 unless every row completed.
pub fn run(args: CsvArgs) -> anyhow::Result<ExitCode> {
    let blueprints = match &args.blueprint {
        Some(path) => Blueprints::read(path)?,
        None => Blueprints::seed(&args.fetch_url),
    };
    let job = CsvRun {
        input: args.file.clone(),
        blueprints,
        batch: args.batch,
        concurrency: args.concurrency,
    };
    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let runner = runner(&args).await?;
        let progress = Arc::new(agency::Progress::default());
        let display = (!args.quiet)
            .then(|| tokio::spawn(crate::show::show_progress(progress.clone(), "rows")));
        let said = |why: &str| eprintln!("agency csv: {why}");
        let summary = agency::csv::run(&job, runner, out, &progress, said).await;
        if let Some(display) = display {
            display.abort();
        }
        Ok(if summary?.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// The fleet of `--kafka`/`--redis` with `--distributed`, else an engine per batch.
async fn runner(args: &CsvArgs) -> anyhow::Result<Runner> {
    #[cfg(feature = "distributed")]
    if args.distributed {
        let (broker, store) = crate::servers::connect(&args.servers).await?;
        let client = agency::client::Client::new(broker, store, &args.servers.namespace);
        return Ok(Runner::Distributed(Arc::new(client)));
    }
    let _ = args;
    Ok(Runner::Embedded)
}
