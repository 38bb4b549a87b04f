//! `agency tasks create|get|children|list|cancel|summary|metadata`: the task manager (seed 003)
//! over Redis; its tasks are claimed with `agency agent claim`.

use crate::agent::TaskStore;
use anyhow::Context as _;
use serde_json::{Map, Value};
use std::process::ExitCode;

/// What the task manager does.
#[derive(Debug, clap::Subcommand)]
pub enum TasksCommand {
    /// Create a pending task; prints its id
    Create {
        /// The workflow it belongs to
        #[arg(long)]
        workflow: String,
        /// Its type: the agents that take it claim `--types` with it
        #[arg(long = "type")]
        kind: String,
        /// What the agent works on, as JSON
        #[arg(long, default_value = "{}")]
        data: String,
        /// Its parent task (of the same workflow)
        #[arg(long)]
        parent: Option<String>,
        /// A claim not completed within this long puts the task back to pending
        #[arg(long, default_value_t = agency::task_manager::DEFAULT_CLAIM_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
        claim_timeout_ms: u64,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Print a task (JSON)
    Get {
        /// The task's id
        id: String,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Print a task's children, in the order they were created (a JSON list)
    Children {
        /// The parent task's id
        id: String,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Print a page of a workflow's tasks, in creation order: `{"tasks": [...], "next": N}`,
    /// `next` the --from of the next page (null at the end)
    List {
        /// The workflow
        #[arg(long)]
        workflow: String,
        /// Only tasks with this status (pending, in_progress, completed, failed, cancelled)
        #[arg(long, value_parser = task_state)]
        status: Option<events::TaskState>,
        /// Only tasks of this type
        #[arg(long = "type")]
        kind: Option<String>,
        /// Where the page starts: 0, or the `next` of the page before
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// The most tasks on the page
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=agency::task_manager::LONGEST_PAGE as u64))]
        limit: u64,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Cancel a pending or claimed task
    Cancel {
        /// The task's id
        id: String,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Print a workflow's tasks counted by status and by type (JSON)
    Summary {
        /// The workflow
        #[arg(long)]
        workflow: String,
        #[command(flatten)]
        store: TaskStore,
    },
    /// Print a workflow's metadata (JSON), after setting the keys of --set
    Metadata {
        /// The workflow
        #[arg(long)]
        workflow: String,
        /// A JSON object whose keys are set (others are kept)
        #[arg(long)]
        set: Option<String>,
        #[command(flatten)]
        store: TaskStore,
    },
}

/// Runs an `agency tasks` command.
pub fn run(command: TasksCommand) -> anyhow::Result<ExitCode> {
    let (TasksCommand::Create { store, .. }
    | TasksCommand::Get { store, .. }
    | TasksCommand::Children { store, .. }
    | TasksCommand::List { store, .. }
    | TasksCommand::Cancel { store, .. }
    | TasksCommand::Summary { store, .. }
    | TasksCommand::Metadata { store, .. }) = &command;
    // The command moves into the work: where the store is is copied out first.
    let at = store.clone();
    crate::agent::on_store(&at, |store| async move {
        let printed = match &command {
            TasksCommand::Create {
                workflow,
                kind,
                data,
                parent,
                claim_timeout_ms,
                ..
            } => {
                let data: Value = serde_json::from_str(data)
                    .with_context(|| format!("--data is not JSON: `{data}`"))?;
                let id = agency::task_manager::create(
                    store.as_ref(),
                    workflow,
                    kind,
                    data,
                    parent.as_deref(),
                    *claim_timeout_ms,
                )
                .await?;
                println!("{id}");
                return Ok(ExitCode::SUCCESS);
            }
            TasksCommand::Get { id, .. } => {
                let task = agency::task_manager::get(store.as_ref(), id)
                    .await?
                    .ok_or_else(|| agency::task_manager::no_task(id))?;
                agency::task_manager::described(&task)
            }
            TasksCommand::Children { id, .. } => {
                let children = agency::task_manager::children(store.as_ref(), id).await?;
                children
                    .iter()
                    .map(agency::task_manager::described)
                    .collect()
            }
            TasksCommand::List {
                workflow,
                status,
                kind,
                from,
                limit,
                ..
            } => {
                let filter = events::TaskFilter {
                    status: *status,
                    kind: kind.clone(),
                };
                let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
                let page =
                    agency::task_manager::list(store.as_ref(), workflow, &filter, *from, limit)
                        .await?;
                let tasks: Vec<Value> = page
                    .tasks
                    .iter()
                    .map(agency::task_manager::described)
                    .collect();
                serde_json::json!({"tasks": tasks, "next": page.next})
            }
            TasksCommand::Cancel { id, .. } => {
                agency::task_manager::cancel(store.as_ref(), id).await?;
                return Ok(ExitCode::SUCCESS);
            }
            TasksCommand::Summary { workflow, .. } => serde_json::to_value(
                agency::task_manager::summary(store.as_ref(), workflow).await?,
            )?,
            TasksCommand::Metadata { workflow, set, .. } => {
                let set: Map<String, Value> = match set {
                    Some(text) => serde_json::from_str(text)
                        .with_context(|| format!("--set is not a JSON object: `{text}`"))?,
                    None => Map::new(),
                };
                Value::Object(agency::task_manager::metadata(store.as_ref(), workflow, &set).await?)
            }
        };
        println!("{}", serde_json::to_string_pretty(&printed)?);
        Ok(ExitCode::SUCCESS)
    })
}

/// `--status`: a task's status as JSON spells it.
fn task_state(text: &str) -> Result<events::TaskState, String> {
    events::TaskState::parse(text).ok_or_else(|| {
        let all: Vec<&str> = events::TaskState::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "`{text}` is no task status (expected one of: {})",
            all.join(", ")
        )
    })
}
