//! `agency plan FILE`: validate a session and preview its expansion, running nothing.

use crate::text::{plural, thousands};
use anyhow::Context as _;
use expansion::Expansion;
use serde_json::{json, Map, Value};
use std::path::Path;
use taskgroup::{Planned, Rules, Session};

pub fn run(file: &Path, as_json: bool, preview: u64, rules: &Rules) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let session = Session::from_json(&text, rules).with_context(|| file.display().to_string())?;
    let report = report(&session, preview);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&session, &report));
    }
    Ok(())
}

/// The first `preview` instances, rendered; an instance that cannot render shows its error.
fn previews(expansion: &Expansion, preview: u64) -> Vec<Value> {
    expansion
        .range(0..preview)
        .map(|instance| match expansion.render(&instance) {
            Ok(input) => json!({"index": instance.index(), "input": input}),
            Err(error) => json!({"index": instance.index(), "error": error.to_string()}),
        })
        .collect()
}

/// The plan as one JSON object; `total_instances` counts every instance known before running.
fn report(session: &Session, preview: u64) -> Value {
    let (total, deferred) = session.total_instances();
    let groups: Vec<Value> = session
        .spec
        .groups
        .iter()
        .zip(&session.tasks)
        .map(|(group, plans)| {
            let tasks: Vec<Value> = group
                .tasks
                .iter()
                .zip(plans)
                .map(|(task, planned)| {
                    let mut entry = Map::new();
                    entry.insert("id".into(), json!(task.id));
                    entry.insert("executor".into(), json!(task.executor));
                    entry.insert("context_key".into(), json!(task.context_key()));
                    match &planned.plan {
                        Planned::Ready(expansion) => {
                            entry.insert(
                                "expansion".into(),
                                json!(expansion.kind().map(|k| k.as_str())),
                            );
                            entry.insert(
                                "output_format".into(),
                                json!(expansion.output_format().as_str()),
                            );
                            entry.insert("instances".into(), json!(expansion.len()));
                            entry.insert("variables".into(), json!(expansion.variables()));
                            entry.insert(
                                "preview".into(),
                                Value::Array(previews(expansion, preview)),
                            );
                        }
                        Planned::Deferred { key, producer } => {
                            entry.insert("instances".into(), Value::Null);
                            entry.insert(
                                "deferred".into(),
                                json!({"context_key": key, "written_by": producer}),
                            );
                        }
                    }
                    Value::Object(entry)
                })
                .collect();
            json!({"id": group.id, "depends_on": group.depends_on, "tasks": tasks})
        })
        .collect();
    json!({
        "session_id": session.spec.session_id,
        "total_instances": total,
        "deferred_tasks": deferred,
        "groups": groups,
    })
}

fn human(session: &Session, report: &Value) -> String {
    let (total, deferred) = session.total_instances();
    let tasks: usize = session.spec.groups.iter().map(|g| g.tasks.len()).sum();
    let mut out = format!(
        "session {}: {}, {}, {} known before running",
        session
            .spec
            .session_id
            .as_deref()
            .unwrap_or("(id assigned at run)"),
        plural(session.spec.groups.len() as u64, "group"),
        plural(tasks as u64, "task"),
        plural(total, "instance"),
    );
    if deferred > 0 {
        out.push_str(&format!(
            " (+ {} planned at run time, once the context they read exists)",
            plural(deferred as u64, "task")
        ));
    }
    out.push('\n');
    for group in report["groups"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\ngroup {}",
            group["id"].as_str().unwrap_or_default()
        ));
        let after: Vec<&str> = group["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !after.is_empty() {
            out.push_str(&format!(" (after {})", after.join(", ")));
        }
        out.push('\n');
        for task in group["tasks"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  task {} [{}] -> context.{}: ",
                task["id"].as_str().unwrap_or_default(),
                task["executor"].as_str().unwrap_or_default(),
                task["context_key"].as_str().unwrap_or_default(),
            ));
            match task["instances"].as_u64() {
                Some(count) => {
                    let kind = task["expansion"].as_str().map_or(String::new(), |k| {
                        format!(
                            " ({k}, output {})",
                            task["output_format"].as_str().unwrap_or_default()
                        )
                    });
                    out.push_str(&format!("{}{kind}\n", plural(count, "instance")));
                    for shown in task["preview"].as_array().into_iter().flatten() {
                        let index = shown["index"].as_u64().unwrap_or_default();
                        match shown.get("error") {
                            Some(error) => out.push_str(&format!(
                                "    [{index}] error: {}\n",
                                error.as_str().unwrap_or_default()
                            )),
                            None => out.push_str(&format!("    [{index}] {}\n", shown["input"])),
                        }
                    }
                    let shown = task["preview"].as_array().map_or(0, Vec::len) as u64;
                    if count > shown {
                        out.push_str(&format!("    ... {} more\n", thousands(count - shown)));
                    }
                }
                None => out.push_str(&format!(
                    "planned at run time, from context.{} (written by task {})\n",
                    task["deferred"]["context_key"].as_str().unwrap_or_default(),
                    task["deferred"]["written_by"].as_str().unwrap_or_default(),
                )),
            }
        }
    }
    out
}
