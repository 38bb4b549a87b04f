//! `agency tasks create|get|children|cancel|summary|metadata`: the task manager (seed 003)
//! over Redis; its tasks are claimed with `agency agent claim`.

use crate::servers::Servers;
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
        servers: Servers,
    },
    /// Print a task (JSON)
    Get {
        /// The task's id
        id: String,
        #[command(flatten)]
        servers: Servers,
    },
    /// Print a task's children, in the order they were created (a JSON list)
    Children {
        /// The parent task's id
        id: String,
        #[command(flatten)]
        servers: Servers,
    },
    /// Cancel a pending or claimed task
    Cancel {
        /// The task's id
        id: String,
        #[command(flatten)]
        servers: Servers,
    },
    /// Print a workflow's tasks counted by status and by type (JSON)
    Summary {
        /// The workflow
        #[arg(long)]
        workflow: String,
        #[command(flatten)]
        servers: Servers,
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
        servers: Servers,
    },
}

/// Runs an `agency tasks` command.
pub fn run(command: TasksCommand) -> anyhow::Result<ExitCode> {
    let (TasksCommand::Create { servers, .. }
    | TasksCommand::Get { servers, .. }
    | TasksCommand::Children { servers, .. }
    | TasksCommand::Cancel { servers, .. }
    | TasksCommand::Summary { servers, .. }
    | TasksCommand::Metadata { servers, .. }) = &command;
    // The command moves into the work: the servers it names are copied out first.
    let servers = servers.clone();
    crate::agent::on_redis(&servers, |store| async move {
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
                    &store,
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
                let task = agency::task_manager::get(&store, id)
                    .await?
                    .ok_or_else(|| agency::task_manager::no_task(id))?;
                serde_json::to_value(task)?
            }
            TasksCommand::Children { id, .. } => {
                serde_json::to_value(agency::task_manager::children(&store, id).await?)?
            }
            TasksCommand::Cancel { id, .. } => {
                agency::task_manager::cancel(&store, id).await?;
                return Ok(ExitCode::SUCCESS);
            }
            TasksCommand::Summary { workflow, .. } => {
                serde_json::to_value(agency::task_manager::summary(&store, workflow).await?)?
            }
            TasksCommand::Metadata { workflow, set, .. } => {
                let set: Map<String, Value> = match set {
                    Some(text) => serde_json::from_str(text)
                        .with_context(|| format!("--set is not a JSON object: `{text}`"))?,
                    None => Map::new(),
                };
                Value::Object(agency::task_manager::metadata(&store, workflow, &set).await?)
            }
        };
        println!("{}", serde_json::to_string_pretty(&printed)?);
        Ok(ExitCode::SUCCESS)
    })
}
