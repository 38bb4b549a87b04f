//! The final result of a session, the same shape everywhere it is printed or published:
//!
//! `{"session_id", "status": "completed" | "partial" | "failed", "context", "groups": {id:
//! {"status", "tasks": {id: {"status", "instances", "succeeded", "failed", "attempts", ...}}}},
//! "errors": [...]}`
//!
//! `completed` means every group completed. Otherwise the result is `partial` when anything
//! succeeded and `failed` when nothing did. Failed instances are listed with their attempts and
//! last error; tasks that were cut short list the results of the instances that did succeed.

use crate::coordinator::{GroupEnd, SessionRun};
use serde_json::{json, Map, Value};
use taskgroup::{GroupStatus, TaskState};

/// The result of a session that never ran or could not go on: `failed`, with why.
pub(crate) fn failed_result(session: &str, errors: Vec<String>) -> Value {
    json!({"session_id": session, "status": "failed", "context": {}, "groups": {}, "errors": errors})
}

/// Builds the result; the context moves into it (the run is over), so it is never copied.
pub(crate) async fn final_result(run: &mut SessionRun<'_>) -> anyhow::Result<Value> {
    let mut errors = run.errors.clone();
    let mut groups = Map::new();
    let mut succeeded_anywhere = false;
    for (g, group) in run.session.spec.groups.iter().enumerate() {
        let end = run.ends[g].unwrap_or(GroupEnd::Skipped);
        let mut tasks = Map::new();
        for (t, spec) in group.tasks.iter().enumerate() {
            let Some(task) = run.machines[g].as_ref().map(|m| &m.tasks()[t]) else {
                tasks.insert(spec.id.clone(), json!({"status": "skipped", "instances": 0, "succeeded": 0, "failed": 0, "attempts": 0}));
                continue;
            };
            succeeded_anywhere |= task.succeeded > 0;
            let mut entry = Map::new();
            entry.insert("status".into(), json!(task_status(task.state, task.failed)));
            entry.insert("instances".into(), json!(task.instances));
            entry.insert("succeeded".into(), json!(task.succeeded));
            entry.insert("failed".into(), json!(task.failed));
            entry.insert("attempts".into(), json!(task.attempts));
            if let Some(error) = &task.error {
                entry.insert("error".into(), json!(error));
                errors.push(format!("group `{}` task `{}`: {error}", group.id, spec.id));
            }
            if !task.failures.is_empty() {
                let failures: Vec<Value> = task
                    .failures
                    .iter()
                    .map(|(instance, f)| json!({"instance": instance, "attempts": f.attempts, "error": f.error}))
                    .collect();
                if let Some((instance, first)) = task.failures.iter().next() {
                    errors.push(format!(
                        "group `{}` task `{}`: {} failed; first, instance {instance} after {}: {}",
                        group.id,
                        spec.id,
                        plural(task.failed, "instance"),
                        plural(u64::from(first.attempts), "attempt"),
                        first.error
                    ));
                }
                entry.insert("failures".into(), Value::Array(failures));
            }
            if matches!(task.state, TaskState::Running | TaskState::Combining) && task.succeeded > 0
            {
                // Cut short: keep what did complete.
                let results: Vec<Value> = run
                    .results(g, t)
                    .await?
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.map(|r| json!({"instance": i, "result": r})))
                    .collect();
                entry.insert("results".into(), Value::Array(results));
            }
            tasks.insert(spec.id.clone(), Value::Object(entry));
        }
        let status = match end {
            GroupEnd::Finished(status) => status.as_str(),
            GroupEnd::Skipped => {
                if !run
                    .errors
                    .iter()
                    .any(|e| e.starts_with("cancelled") || e.starts_with("session timed out"))
                {
                    let blocked: Vec<&str> = run.session.groups[g]
                        .depends_on
                        .iter()
                        .filter(|&&d| {
                            run.ends[d] != Some(GroupEnd::Finished(GroupStatus::Completed))
                        })
                        .map(|&d| run.session.spec.groups[d].id.as_str())
                        .collect();
                    errors.push(format!(
                        "group `{}` skipped: {} did not complete",
                        group.id,
                        blocked.join(", ")
                    ));
                }
                "skipped"
            }
        };
        groups.insert(group.id.clone(), json!({"status": status, "tasks": tasks}));
    }
    let completed = run
        .ends
        .iter()
        .all(|e| *e == Some(GroupEnd::Finished(GroupStatus::Completed)));
    let status = if completed {
        "completed"
    } else if succeeded_anywhere {
        "partial"
    } else {
        "failed"
    };
    Ok(json!({
        "session_id": run.id,
        "status": status,
        "context": Value::Object(std::mem::take(&mut run.context)),
        "groups": groups,
        "errors": errors,
    }))
}

fn task_status(state: TaskState, failed: u64) -> &'static str {
    match state {
        TaskState::Done if failed > 0 => "completed_with_failures",
        other => other.as_str(),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
