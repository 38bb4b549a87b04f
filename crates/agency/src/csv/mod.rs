//! `agency csv`: seed 001's batch runner. Each row of `task_id,task_type` runs its blueprint of
//! steps as a per-item pipeline; the output is `task_id,final_status,error_info`.
//!
//! Two passes over the input, so memory stays bounded however many rows there are:
//! - the first keeps, per distinct task id, the line of its first row (a `u64` id and a `u64`
//!   line: 16 bytes and the hash map's overhead, about 40 bytes a row), and the task type of the
//!   latest row of each id that comes more than once: a repeated id is written
//!   where it first appeared, with the outcome of its latest row (seed 001's 101,102,101,103
//!   gives 101,102,103);
//! - the second streams the rows again and runs those latest rows in batches of `--batch` rows,
//!   one session each, as many batches at once as `--concurrency` rows allow. A batch holds its
//!   rows' ids and types (in the session context) and, once run, its result; batches are written
//!   out in input order as they finish, so at most the batches in flight (and those finished
//!   ahead of an earlier one) are held. Progress counts rows as they settle in a running
//!   batch's live state, not only when the batch is written.
//!
//! Malformed rows (a task id that is not a number, a wrong column count, bad UTF-8) are said on
//! stderr with their line number and written as `Failed` with the reason, in their place.

//!
//! ```no_run
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(async {
//! use agency::csv::{Blueprints, CsvRun, Runner};
//! let job = CsvRun::new("tasks.csv".into(), Blueprints::seed("http://127.0.0.1:8000/get"));
//! let progress = agency::Progress::default();
//! let summary = agency::csv::run(&job, Runner::Embedded, std::io::stdout(), &progress, |why| eprintln!("{why}")).await?;
//! println!("{} rows, {} failed", summary.rows, summary.failed);
//! # Ok::<(), agency::csv::CsvError>(())
//! # });
//! ```

mod batch;
mod blueprint;
mod rows;

use crate::client::Client;
use crate::client::Status;
use crate::coordinator::Progress;
use crate::embedded::{EmbeddedOptions, Engine};
use batch::{Batch, Written};
pub use blueprint::{Blueprints, Step, DEFAULT_FETCH_URL};
use futures_util::StreamExt as _;
use rows::{Row, Rows};
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{LiveState, SessionResult};
use tokio_util::sync::CancellationToken;

/// What stops a CSV run (a malformed row does not: it is written as `Failed`).
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// A file that cannot be read.
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The input or the blueprint file is not what it should be, at the place `problem` names.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        problem: String,
    },
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] csv::Error),
    /// The engine failed (not a session: a session's failure is its rows' outcome).
    #[error(transparent)]
    Engine(#[from] crate::Error),
}

/// A CSV run: the input, the blueprints its rows run, and how many run at once.
#[derive(Debug, Clone)]
pub struct CsvRun {
    /// The input: a header, then `task_id,task_type` rows (task ids are u64).
    pub input: PathBuf,
    /// The steps each task type runs.
    pub blueprints: Blueprints,
    /// Rows per session (at least 1).
    pub batch: u64,
    /// Rows in flight at once (at least 1).
    pub concurrency: u64,
}

impl CsvRun {
    /// A run of `input` with `agency csv`'s defaults: batches of 10,000 rows, 100,000 in flight.
    pub fn new(input: PathBuf, blueprints: Blueprints) -> Self {
        Self {
            input,
            blueprints,
            batch: 10_000,
            concurrency: 100_000,
        }
    }
}

/// How a run ended: rows written, of which failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Rows written: one per distinct task id and per malformed row.
    pub rows: u64,
    /// Rows written as `Failed`.
    pub failed: u64,
}

/// What runs a batch's session: an engine of its own per batch, or the fleet.
#[derive(Clone)]
pub enum Runner {
    /// An embedded engine per batch, in this process.
    Embedded,
    /// The coordinators and workers a client reaches.
    Distributed(Arc<Client>),
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Embedded => "Runner::Embedded",
            Self::Distributed(_) => "Runner::Distributed",
        })
    }
}

impl Runner {
    /// Runs a session of `rows` rows; its error (or the engine's) is every row's outcome.
    /// `seen` hears each live state of it while it runs.
    async fn run(
        &self,
        session: Value,
        rows: usize,
        seen: &(dyn Fn(&LiveState) + Sync),
    ) -> Result<SessionResult, String> {
        let id = session["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match self {
            Self::Embedded => {
                let mut engine = Engine::new(EmbeddedOptions {
                    workers: 1,
                    // Items move on one by one, so a step's instances come as many small
                    // ranges: each may run at once, the task's concurrency bounding them.
                    worker: crate::WorkerOptions {
                        concurrency: rows.max(1),
                        ranges_in_flight: rows.max(1),
                        ..Default::default()
                    },
                    ..Default::default()
                });
                // Seed 001's emit_event prints its line on stderr.
                engine
                    .registry_mut()
                    .register("emit_event", crate::executors::PrintEvent);
                let session = engine
                    .validate(&session.to_string())
                    .map_err(|e| e.to_string())?;
                let progress = Progress::default();
                let run = engine.run(&session, &progress, CancellationToken::new());
                watching(run, engine.store(), &id, seen)
                    .await
                    .map_err(|e| e.to_string())
            }
            Self::Distributed(client) => {
                let submitted = client.submit(session).await.map_err(|e| e.to_string())?;
                watching(client.wait(&submitted, None), client.store(), &id, seen)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// `run`'s output; meanwhile `seen` hears each live state of session `id` in `store` (once
/// the run has written one: following starts again while the session is unknown).
async fn watching<T>(
    run: impl std::future::Future<Output = T>,
    store: Arc<dyn events::Store>,
    id: &str,
    seen: &(dyn Fn(&LiveState) + Sync),
) -> T {
    let watch = async {
        loop {
            let states = crate::client::follow(store.clone(), id, LIVE_EVERY);
            let mut states = std::pin::pin!(states);
            while let Some(status) = states.next().await {
                match status {
                    Ok(Status::Live(state)) => seen(&state),
                    Ok(Status::Finished(_)) => return,
                    Err(_) => break,
                }
            }
            tokio::time::sleep(LIVE_EVERY).await;
        }
    };
    let mut run = std::pin::pin!(run);
    tokio::select! {
        out = &mut run => return out,
        () = watch => {}
    }
    run.await
}

/// How often rows settled are looked for in a running batch's live state.
const LIVE_EVERY: Duration = Duration::from_millis(250);

/// A submitted session must fit in one message, with room for the action around it.
const SESSION_BYTES: usize = events::MAX_MESSAGE_BYTES * 9 / 10;

/// Runs a batch's session and says each row's outcome. Submitted to the fleet, a session too
/// large for one message (long task types) is split in halves, each run as a session of its own.
async fn run_batch(
    batch: Batch,
    runner: Runner,
    blueprints: Arc<Blueprints>,
    id: String,
    settled: Arc<AtomicU64>,
) -> Vec<Written> {
    let Some(session) = batch.session(&blueprints, &id) else {
        return batch.written(&blueprints, None);
    };
    let too_large = matches!(runner, Runner::Distributed(_))
        && batch.rows.len() > 1
        && session.to_string().len() > SESSION_BYTES;
    if too_large {
        let mut first = batch;
        let second = Batch {
            rows: first.rows.split_off(first.rows.len() / 2),
        };
        let (a, b) = (format!("{id}a"), format!("{id}b"));
        let half = Arc::new(AtomicU64::new(0));
        let first = run_batch(first, runner.clone(), blueprints.clone(), a, half);
        let mut written = Box::pin(first).await;
        settled.store(written.len() as u64, Ordering::Relaxed);
        let second = run_batch(second, runner, blueprints, b, settled);
        written.extend(Box::pin(second).await);
        return written;
    }
    let rows = batch.rows.len();
    // Rows settle one by one: progress counts them as the live state shows them.
    let before = settled.load(Ordering::Relaxed);
    let seen = |state: &LiveState| {
        let now = before + batch.settled_rows(state, &blueprints);
        settled.fetch_max(now, Ordering::Relaxed);
    };
    let result = runner.run(session, rows, &seen).await;
    batch.written(&blueprints, Some(result))
}

/// What the first pass over the input learns.
struct FirstPass {
    /// The line each distinct id first appears on: where its output row goes.
    first: HashMap<u64, u64>,
    /// The task type of the latest row of each id that appears more than once.
    repeated: HashMap<u64, String>,
    /// How many rows are malformed.
    malformed: u64,
}

/// The first pass over the input.
fn first_pass(job: &CsvRun) -> Result<FirstPass, CsvError> {
    let mut pass = FirstPass {
        first: HashMap::new(),
        repeated: HashMap::new(),
        malformed: 0,
    };
    let mut rows = Rows::open(&job.input)?;
    while let Some((line, row)) = rows.next() {
        match row {
            // Rows come in order: a later row of an id is its latest so far.
            Row::Task { id, kind } => match pass.first.entry(id) {
                Entry::Occupied(_) => {
                    pass.repeated.insert(id, kind);
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(line);
                }
            },
            Row::Malformed { .. } => pass.malformed += 1,
        }
    }
    Ok(pass)
}

/// Runs `job` on `runner`, writing `task_id,final_status,error_info` to `out` in input order;
/// `progress` counts the rows planned and written, and `malformed` hears why each malformed
/// row is (`FILE: line N: ...`) as it is read. Rows run in batches, one session each; see the
/// module's description.
pub async fn run(
    job: &CsvRun,
    runner: Runner,
    out: impl std::io::Write,
    progress: &Progress,
    mut malformed: impl FnMut(&str),
) -> Result<Summary, CsvError> {
    let FirstPass {
        first,
        mut repeated,
        malformed: malformed_rows,
    } = first_pass(job)?;
    // One output row per distinct id and per malformed row.
    progress
        .planned
        .store(first.len() as u64 + malformed_rows, Ordering::Relaxed);
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(["task_id", "final_status", "error_info"])?;
    let batch_rows = job.batch.max(1);
    let in_flight = job.concurrency.div_ceil(batch_rows).max(1) as usize;
    let blueprints = Arc::new(job.blueprints.clone());
    let mut running: VecDeque<Running> = VecDeque::new();
    let mut summary = Summary { rows: 0, failed: 0 };
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut batches = 0u64;
    let mut rows = Rows::open(&job.input)?;
    let mut batch = Vec::new();
    loop {
        let next = rows.next();
        let end = next.is_none();
        if let Some((line, row)) = next {
            let row = match row {
                // An id that comes again: its row goes where it first appeared, and runs the
                // task of its latest row.
                Row::Task { id, kind } => match first.get(&id) {
                    Some(&at) if at != line => continue,
                    _ => Row::Task {
                        id,
                        kind: repeated.remove(&id).unwrap_or(kind),
                    },
                },
                Row::Malformed { id, reason } => {
                    malformed(&format!("{}: {reason}", job.input.display()));
                    Row::Malformed { id, reason }
                }
            };
            batch.push(row);
        }
        if batch.len() as u64 >= batch_rows || (end && !batch.is_empty()) {
            let taken = Batch {
                rows: std::mem::take(&mut batch),
            };
            let id = format!("csv-{run_id}-{batches}");
            batches += 1;
            let settled = Arc::new(AtomicU64::new(0));
            let batch = run_batch(
                taken,
                runner.clone(),
                blueprints.clone(),
                id,
                settled.clone(),
            );
            running.push_back(Running {
                batch: tokio::spawn(batch),
                settled,
            });
        }
        while running.len() >= in_flight || (end && !running.is_empty()) {
            let written = next_written(&mut running, summary.rows, progress).await?;
            write_rows(&mut writer, written, &mut summary, progress)?;
        }
        if end {
            break;
        }
    }
    writer.flush().map_err(csv::Error::from)?;
    Ok(summary)
}

/// A batch running, and how many of its rows have settled so far.
struct Running {
    batch: tokio::task::JoinHandle<Vec<Written>>,
    settled: Arc<AtomicU64>,
}

/// The rows of the first batch running, once it is done; meanwhile `progress` counts the rows
/// written (`written`) and those settled in every batch running.
async fn next_written(
    running: &mut VecDeque<Running>,
    written: u64,
    progress: &Progress,
) -> Result<Vec<Written>, CsvError> {
    let mut tick = tokio::time::interval(LIVE_EVERY);
    loop {
        let Some(first) = running.front_mut() else {
            return Ok(Vec::new());
        };
        tokio::select! {
            joined = &mut first.batch => {
                running.pop_front();
                return Ok(joined.map_err(crate::Error::from)?);
            }
            _ = tick.tick() => {
                let settled: u64 = running.iter().map(|r| r.settled.load(Ordering::Relaxed)).sum();
                progress.settled.store(written + settled, Ordering::Relaxed);
            }
        }
    }
}

/// Writes a finished batch's rows, counting them.
fn write_rows(
    writer: &mut csv::Writer<impl std::io::Write>,
    written: Vec<Written>,
    summary: &mut Summary,
    progress: &Progress,
) -> Result<(), CsvError> {
    for row in written {
        let (status, error) = match &row.outcome {
            Ok(()) => ("Completed", ""),
            Err(error) => ("Failed", error.as_str()),
        };
        summary.rows += 1;
        summary.failed += u64::from(row.outcome.is_err());
        writer.write_record([row.id.as_str(), status, error])?;
    }
    progress.settled.store(summary.rows, Ordering::Relaxed);
    Ok(())
}
