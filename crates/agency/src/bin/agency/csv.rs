//! `agency csv`: seed 001's batch runner. Each row of `task_id,task_type` runs its blueprint of
//! steps as a per-item pipeline; the output is `task_id,final_status,error_info`.
//!
//! Two passes over the input, so memory stays bounded however many rows there are:
//! - the first keeps, per distinct task id, the line of its latest row (a `u64` id and a `u64`
//!   line: 16 bytes and the hash map's overhead, about 40 bytes a row), which is how duplicates
//!   keep the latest row;
//! - the second streams the rows again and runs those latest rows in batches of `--batch` rows,
//!   one session each, as many batches at once as `--concurrency` rows allow. A batch holds its
//!   rows' ids and types (in the session context) and, once run, its result; batches are written
//!   out in input order as they finish, so at most the batches in flight (and those finished
//!   ahead of an earlier one) are held.
//!
//! Malformed rows (a task id that is not a number, a wrong column count, bad UTF-8) are said on
//! stderr with their line number and written as `Failed` with the reason, in their place.

mod rows;

#[cfg(feature = "distributed")]
use crate::serve::Servers;
use anyhow::{bail, Context as _};
use rows::{Row, Rows};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use taskgroup::{SessionResult, TaskStatus};

/// Where `fetch_data` GETs by default, as seed 001 has it (these machines have no internet:
/// set `--fetch-url`).
pub const DEFAULT_FETCH_URL: &str = "https://httpbin.org/get";

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
    servers: Servers,
}

/// A blueprint file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlueprintFile {
    blueprints: BTreeMap<String, Vec<Step>>,
}

/// One step of a blueprint: a task of the row's pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    step: String,
    executor: String,
    #[serde(default)]
    input: Value,
}

/// Seed 001's blueprint: GET a URL (10 s timeout), wait 5 s, emit an event.
fn default_blueprints(fetch_url: &str) -> BTreeMap<String, Vec<Step>> {
    let steps = vec![
        Step {
            step: "fetch_data".into(),
            executor: "http_get".into(),
            input: json!({"url": fetch_url, "timeout_ms": 10_000}),
        },
        Step {
            step: "long_delay".into(),
            executor: "sleep".into(),
            input: json!({"ms": 5_000}),
        },
        Step {
            step: "emit_event".into(),
            executor: "emit_event".into(),
            input: json!({"event": "task_completed", "task_id": "{{task_id}}", "task_type": "{{task_type}}"}),
        },
    ];
    BTreeMap::from([("*".to_string(), steps)])
}

/// Reads and checks a blueprint file: every problem names its place.
fn read_blueprints(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<Step>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the blueprint file {}", path.display()))?;
    let file: BlueprintFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a blueprint file", path.display()))?;
    if file.blueprints.is_empty() {
        bail!("{}: `blueprints` names no task type", path.display());
    }
    for (kind, steps) in &file.blueprints {
        if steps.is_empty() {
            bail!("{}: blueprints.{kind}: no steps", path.display());
        }
        for (i, step) in steps.iter().enumerate() {
            let valid = !step.step.is_empty()
                && step
                    .step
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                bail!(
                    "{}: blueprints.{kind}[{i}].step: `{}` is not a step name (letters, digits, `_`, `-`)",
                    path.display(),
                    step.step
                );
            }
            if steps[..i].iter().any(|s| s.step == step.step) {
                bail!(
                    "{}: blueprints.{kind}[{i}].step: `{}` comes twice",
                    path.display(),
                    step.step
                );
            }
        }
    }
    Ok(file.blueprints)
}

/// One row of the output, in input order.
struct Written {
    id: String,
    outcome: Result<(), String>,
}

/// A batch of rows: what goes out for each, in order, once its session has run.
struct Batch {
    rows: Vec<Row>,
}

impl Batch {
    /// The session running the batch's tasks: a group per blueprint, its steps chained instance
    /// by instance over the rows of that blueprint; `None` when the batch has no task to run.
    fn session(&self, blueprints: &BTreeMap<String, Vec<Step>>, id: &str) -> Option<Value> {
        let mut context = Map::new();
        let mut groups = Vec::new();
        for (g, (kind, steps)) in blueprints.iter().enumerate() {
            let rows: Vec<(u64, &str)> = self.tasks_of(blueprints, kind).collect();
            if rows.is_empty() {
                continue;
            }
            let (ids, kinds): (Vec<u64>, Vec<&str>) = rows.into_iter().unzip();
            context.insert(format!("ids_{g}"), json!(ids));
            context.insert(format!("types_{g}"), json!(kinds));
            let tasks: Vec<Value> = steps
                .iter()
                .enumerate()
                .map(|(s, step)| {
                    let mut input = match &step.input {
                        Value::Object(input) => input.clone(),
                        Value::Null => Map::new(),
                        other => {
                            let mut input = Map::new();
                            input.insert("value".into(), other.clone());
                            input
                        }
                    };
                    input.insert(
                        "expansion_config".into(),
                        json!({"type": "zip", "array_mapping": {
                            "task_id": format!("context.ids_{g}"),
                            "task_type": format!("context.types_{g}")}}),
                    );
                    let mut task = json!({"id": task_id(g, &step.step), "name": step.step,
                        "executor": step.executor, "input": input});
                    if s > 0 {
                        task["depends_on"] =
                            json!([{"task": task_id(g, &steps[s - 1].step), "each": true}]);
                    }
                    task
                })
                .collect();
            groups.push(json!({"id": format!("b{g}"), "name": kind,
                "failure_policy": "all_settled", "tasks": tasks}));
        }
        (!groups.is_empty())
            .then(|| json!({"session_id": id, "context": context, "groups": groups}))
    }

    /// The ids and types of the batch's rows that blueprint `kind` runs, in order.
    fn tasks_of<'a>(
        &'a self,
        blueprints: &'a BTreeMap<String, Vec<Step>>,
        kind: &'a str,
    ) -> impl Iterator<Item = (u64, &'a str)> + 'a {
        self.rows.iter().filter_map(move |row| match row {
            Row::Task { id, kind: row_kind }
                if blueprint_of(blueprints, row_kind) == Some(kind) =>
            {
                Some((*id, row_kind.as_str()))
            }
            _ => None,
        })
    }

    /// Each row's output, given the session's result (`None` when there was no session).
    fn written(
        self,
        blueprints: &BTreeMap<String, Vec<Step>>,
        result: Option<Result<SessionResult, String>>,
    ) -> Vec<Written> {
        // Per blueprint, the row's place among that blueprint's rows.
        let mut places: HashMap<&str, u64> = HashMap::new();
        let mut out = Vec::with_capacity(self.rows.len());
        let outcomes = result
            .as_ref()
            .map(|r| r.as_ref().map(|r| Outcomes::of(r, blueprints)));
        for row in &self.rows {
            let written = match row {
                Row::Malformed { id, reason } => Written {
                    id: id.clone(),
                    outcome: Err(reason.clone()),
                },
                Row::Task { id, kind } => {
                    let outcome = match blueprint_of(blueprints, kind) {
                        None => Err(format!(
                            "no blueprint for task_type `{kind}` (blueprints: {})",
                            blueprints.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                        Some(blueprint) => {
                            let place = places.entry(blueprint).or_default();
                            let at = *place;
                            *place += 1;
                            match &outcomes {
                                Some(Ok(outcomes)) => outcomes.of_row(blueprint, at),
                                Some(Err(error)) => Err((*error).clone()),
                                None => Err("not run".into()),
                            }
                        }
                    };
                    Written {
                        id: id.to_string(),
                        outcome,
                    }
                }
            };
            out.push(written);
        }
        out
    }
}

/// The task id of step `step` of blueprint number `g`.
fn task_id(g: usize, step: &str) -> String {
    format!("b{g}_{step}")
}

/// The blueprint a task type runs: its own, or `*`.
fn blueprint_of<'a>(blueprints: &'a BTreeMap<String, Vec<Step>>, kind: &str) -> Option<&'a str> {
    blueprints
        .get_key_value(kind)
        .or_else(|| blueprints.get_key_value("*"))
        .map(|(key, _)| key.as_str())
}

/// A batch session's result, by blueprint: each step's failures by row, and what kept a step
/// from finishing.
struct Outcomes {
    steps: HashMap<String, Vec<StepOutcome>>,
}

struct StepOutcome {
    name: String,
    failures: HashMap<u64, String>,
    /// Why rows without a failure of their own did not finish this step, if they did not.
    unfinished: Option<String>,
    /// Rows that finished a step cut short.
    finished: std::collections::HashSet<u64>,
}

impl Outcomes {
    fn of(result: &SessionResult, blueprints: &BTreeMap<String, Vec<Step>>) -> Self {
        let mut steps = HashMap::new();
        for (g, (kind, blueprint)) in blueprints.iter().enumerate() {
            let Some(group) = result.groups.get(&format!("b{g}")) else {
                continue;
            };
            let outcomes = blueprint
                .iter()
                .map(|step| {
                    let summary = group.tasks.get(&task_id(g, &step.step));
                    let failures = summary
                        .map(|s| {
                            s.failures
                                .iter()
                                .map(|f| (f.instance, f.error.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    // Rows without a failure of their own finished the step unless it ended
                    // as a whole: planning failed, or it was cut short or never ran (then only
                    // the successes it lists finished).
                    let unfinished = match summary {
                        None => Some(format!("step `{}` did not run", step.step)),
                        Some(s) => match (s.status, &s.error) {
                            (TaskStatus::Failed, Some(error)) => Some(error.clone()),
                            (TaskStatus::Skipped | TaskStatus::Incomplete, _) => Some(format!(
                                "step `{}` did not finish (the session ended {})",
                                step.step, result.status
                            )),
                            _ => None,
                        },
                    };
                    let finished = summary
                        .and_then(|s| s.results.as_ref())
                        .map(|results| results.iter().map(|r| r.instance).collect())
                        .unwrap_or_default();
                    StepOutcome {
                        name: step.step.clone(),
                        failures,
                        unfinished,
                        finished,
                    }
                })
                .collect();
            steps.insert(kind.clone(), outcomes);
        }
        Self { steps }
    }

    /// The row's outcome: the first error of its chain, if any.
    fn of_row(&self, blueprint: &str, at: u64) -> Result<(), String> {
        let Some(steps) = self.steps.get(blueprint) else {
            return Err("its blueprint's group did not run".into());
        };
        for step in steps {
            if let Some(error) = step.failures.get(&at) {
                return Err(format!("{}: {error}", step.name));
            }
            match &step.unfinished {
                Some(why) if !step.finished.contains(&at) => return Err(why.clone()),
                _ => {}
            }
        }
        Ok(())
    }
}

/// What runs a batch's session: an engine of its own per batch, or the fleet.
#[derive(Clone)]
enum Runner {
    Embedded {
        rows: u64,
    },
    #[cfg_attr(not(feature = "distributed"), allow(dead_code))]
    Distributed(Arc<agency::client::Client>),
}

impl Runner {
    async fn run(&self, session: Value) -> Result<SessionResult, String> {
        match self {
            Self::Embedded { rows } => {
                let mut engine = agency::embedded::Engine::new(agency::embedded::EmbeddedOptions {
                    workers: 1,
                    // Items move on one by one, so a step's instances come as many small
                    // ranges: each may run at once, the task's concurrency bounding them.
                    worker: agency::WorkerOptions {
                        concurrency: (*rows).max(1) as usize,
                        ranges_in_flight: (*rows).max(1) as usize,
                        ..Default::default()
                    },
                    ..Default::default()
                });
                // Seed 001's emit_event prints its line on stderr.
                engine
                    .registry_mut()
                    .register("emit_event", agency::executors::PrintEvent);
                let session = engine
                    .validate(&session.to_string())
                    .map_err(|e| e.to_string())?;
                engine
                    .run(
                        &session,
                        &agency::Progress::default(),
                        tokio_util::sync::CancellationToken::new(),
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            Self::Distributed(client) => {
                let submitted = client.submit(session).await.map_err(|e| e.to_string())?;
                client
                    .wait(&submitted, None)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A submitted session must fit in one message, with room for the action around it.
const SESSION_BYTES: usize = events::MAX_MESSAGE_BYTES * 9 / 10;

/// Runs a batch's session and says each row's outcome. Submitted to the fleet, a session too
/// large for one message (long task types) is split in halves, each run as a session of its own.
async fn run_batch(
    batch: Batch,
    runner: Runner,
    blueprints: Arc<BTreeMap<String, Vec<Step>>>,
    id: String,
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
        let mut written = Box::pin(run_batch(first, runner.clone(), blueprints.clone(), a)).await;
        written.extend(Box::pin(run_batch(second, runner, blueprints, b)).await);
        return written;
    }
    let result = runner.run(session).await;
    batch.written(&blueprints, Some(result))
}

/// Runs `agency csv`.
pub fn run(args: CsvArgs) -> anyhow::Result<ExitCode> {
    let blueprints = match &args.blueprint {
        Some(path) => read_blueprints(path)?,
        None => default_blueprints(&args.fetch_url),
    };
    // The first pass: the line of each id's latest row.
    let mut latest: HashMap<u64, u64> = HashMap::new();
    let mut rows = Rows::open(&args.file)?;
    let mut malformed = 0u64;
    while let Some((line, row)) = rows.next() {
        match row {
            Row::Task { id, .. } => {
                latest.insert(id, line);
            }
            Row::Malformed { .. } => malformed += 1,
        }
    }
    // One output row per distinct id and per malformed row.
    let written_total = latest.len() as u64 + malformed;
    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(["task_id", "final_status", "error_info"])?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(feature = "distributed")]
        let runner = if args.distributed {
            let (broker, store) = crate::serve::connect(&args.servers).await?;
            Runner::Distributed(Arc::new(agency::client::Client::new(
                broker,
                store,
                &args.servers.namespace,
            )))
        } else {
            Runner::Embedded { rows: args.batch }
        };
        #[cfg(not(feature = "distributed"))]
        let runner = Runner::Embedded { rows: args.batch };
        let progress = Arc::new(agency::Progress::default());
        progress.planned.store(written_total, Ordering::Relaxed);
        let display = (!args.quiet)
            .then(|| tokio::spawn(crate::run::show_progress(progress.clone(), "rows")));
        let in_flight = args.concurrency.div_ceil(args.batch).max(1) as usize;
        let blueprints = Arc::new(blueprints);
        let mut running: VecDeque<tokio::task::JoinHandle<Vec<Written>>> = VecDeque::new();
        let mut failed = 0u64;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let mut batches = 0u64;
        let mut rows = Rows::open(&args.file)?;
        let mut batch = Vec::new();
        let mut flush = |writer: &mut csv::Writer<Box<dyn std::io::Write + Send>>,
                         written: Vec<Written>|
         -> anyhow::Result<()> {
            for row in written {
                let (status, error) = match &row.outcome {
                    Ok(()) => ("Completed", ""),
                    Err(error) => ("Failed", error.as_str()),
                };
                failed += u64::from(row.outcome.is_err());
                writer.write_record([row.id.as_str(), status, error])?;
                progress.settled.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        loop {
            let next = rows.next();
            let end = next.is_none();
            if let Some((line, row)) = next {
                match &row {
                    // An earlier row of an id that comes again: the latest one runs.
                    Row::Task { id, .. } if latest.get(id) != Some(&line) => continue,
                    Row::Malformed { reason, .. } => {
                        eprintln!("agency csv: {}: {reason}", args.file.display())
                    }
                    Row::Task { .. } => {}
                }
                batch.push(row);
            }
            if batch.len() as u64 >= args.batch || (end && !batch.is_empty()) {
                let taken = Batch {
                    rows: std::mem::take(&mut batch),
                };
                let (runner, blueprints) = (runner.clone(), blueprints.clone());
                let id = format!("csv-{run_id}-{batches}");
                batches += 1;
                running.push_back(tokio::spawn(async move {
                    run_batch(taken, runner, blueprints, id).await
                }));
            }
            while running.len() >= in_flight || (end && !running.is_empty()) {
                let Some(first) = running.pop_front() else {
                    break;
                };
                flush(&mut writer, first.await?)?;
            }
            if end {
                break;
            }
        }
        writer.flush()?;
        if let Some(display) = display {
            display.abort();
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
