//! A batch of `agency csv`'s rows: the session that runs them, and each row's outcome read
//! from its result.

use super::blueprint::Blueprints;
use super::rows::Row;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use taskgroup::{LiveState, SessionResult, TaskStatus};

/// One row of the output, in input order.
pub(super) struct Written {
    pub(super) id: String,
    pub(super) outcome: Result<(), String>,
}

/// A batch of rows: what goes out for each, in order, once its session has run.
pub(super) struct Batch {
    pub(super) rows: Vec<Row>,
}

impl Batch {
    /// The session running the batch's tasks: a group per blueprint, its steps chained instance
    /// by instance over the rows of that blueprint; `None` when the batch has no task to run.
    pub(super) fn session(&self, blueprints: &Blueprints, id: &str) -> Option<Value> {
        let mut context = Map::new();
        let mut groups = Vec::new();
        for (g, (kind, steps)) in blueprints.0.iter().enumerate() {
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
        blueprints: &'a Blueprints,
        kind: &'a str,
    ) -> impl Iterator<Item = (u64, &'a str)> + 'a {
        self.rows.iter().filter_map(move |row| match row {
            Row::Task { id, kind: row_kind } if blueprints.of(row_kind) == Some(kind) => {
                Some((*id, row_kind.as_str()))
            }
            _ => None,
        })
    }

    /// How many of the batch's rows have settled in its session's live `state`: per blueprint,
    /// the instances of its last step that settled (a row failing at a step fails the steps
    /// after it at once).
    pub(super) fn settled_rows(&self, state: &LiveState, blueprints: &Blueprints) -> u64 {
        blueprints
            .0
            .iter()
            .enumerate()
            .filter_map(|(g, (_, steps))| {
                let last = steps.last()?;
                let group = state.groups.get(&format!("b{g}"))?;
                let counts = group.tasks.get(&task_id(g, &last.step))?;
                Some(counts.succeeded + counts.failed)
            })
            .sum::<u64>()
            .min(self.rows.len() as u64)
    }

    /// Each row's output, given the session's result (`None` when there was no session).
    pub(super) fn written(
        self,
        blueprints: &Blueprints,
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
                    let outcome = match blueprints.of(kind) {
                        None => Err(format!(
                            "no blueprint for task_type `{kind}` (blueprints: {})",
                            blueprints.kinds()
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
    finished: HashSet<u64>,
}

impl Outcomes {
    fn of(result: &SessionResult, blueprints: &Blueprints) -> Self {
        let mut steps = HashMap::new();
        for (g, (kind, blueprint)) in blueprints.0.iter().enumerate() {
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
