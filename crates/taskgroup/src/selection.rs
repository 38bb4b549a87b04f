//! `--only GROUP[.TASK],...`: a session cut down to a selection of groups and tasks together with
//! everything they depend on, before it is validated. A group named alone, and every group a kept
//! group depends on, is kept whole; a group named only through some of its tasks keeps those
//! tasks and the tasks they depend on. Exit handlers are kept only when named.

use crate::spec::SessionSpec;
use std::collections::{BTreeSet, HashMap};

impl SessionSpec {
    /// This session with only what `only` selects and what that depends on, groups and tasks
    /// in their order. The error names the entry that selects nothing, and what could be named
    /// instead.
    pub fn only(self, only: &str) -> Result<Self, String> {
        select(self, only)
    }
}

fn select(mut spec: SessionSpec, only: &str) -> Result<SessionSpec, String> {
    let groups: HashMap<&str, usize> = spec
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| (group.id.as_str(), g))
        .collect();
    // Per group: `None` kept whole, `Some(tasks)` only these tasks.
    let mut kept: Vec<Option<Option<BTreeSet<usize>>>> = vec![None; spec.groups.len()];
    let entries: Vec<&str> = only.split(',').map(str::trim).collect();
    if entries.iter().all(|entry| entry.is_empty()) {
        return Err("--only names nothing (write GROUP or GROUP.TASK, joined by commas)".into());
    }
    for entry in entries {
        if entry.is_empty() {
            return Err(format!("--only `{only}` has an empty entry between commas"));
        }
        let (group_id, task_id) = match entry.split_once('.') {
            Some((group, task)) => (group, Some(task)),
            None => (entry, None),
        };
        let Some(&g) = groups.get(group_id) else {
            let known: Vec<&str> = spec.groups.iter().map(|group| group.id.as_str()).collect();
            return Err(format!(
                "--only `{entry}`: no group `{group_id}` (groups: {})",
                known.join(", ")
            ));
        };
        match task_id {
            None => kept[g] = Some(None),
            Some(task_id) => {
                let tasks = &spec.groups[g].tasks;
                let Some(t) = tasks.iter().position(|task| task.id == task_id) else {
                    let known: Vec<&str> = tasks.iter().map(|task| task.id.as_str()).collect();
                    return Err(format!(
                        "--only `{entry}`: group `{group_id}` has no task `{task_id}` (tasks: {})",
                        known.join(", ")
                    ));
                };
                match &mut kept[g] {
                    Some(None) => {}
                    Some(Some(selected)) => {
                        selected.insert(t);
                    }
                    slot @ None => *slot = Some(Some(BTreeSet::from([t]))),
                }
            }
        }
    }
    // Groups depended on are kept whole, transitively.
    let mut stack: Vec<usize> = (0..kept.len()).filter(|&g| kept[g].is_some()).collect();
    while let Some(g) = stack.pop() {
        for dependency in &spec.groups[g].depends_on {
            if let Some(&d) = groups.get(dependency.as_str()) {
                if !matches!(kept[d], Some(None)) {
                    kept[d] = Some(None);
                    stack.push(d);
                }
            }
        }
    }
    // Inside a group kept in part, the selected tasks' dependencies, transitively.
    for (g, slot) in kept.iter_mut().enumerate() {
        let Some(Some(selected)) = slot else { continue };
        let tasks = &spec.groups[g].tasks;
        let mut stack: Vec<usize> = selected.iter().copied().collect();
        while let Some(t) = stack.pop() {
            for dependency in &tasks[t].depends_on {
                if let Some(d) = tasks.iter().position(|task| task.id == dependency.task) {
                    if selected.insert(d) {
                        stack.push(d);
                    }
                }
            }
        }
    }
    let groups = std::mem::take(&mut spec.groups);
    spec.groups = groups
        .into_iter()
        .zip(kept)
        .filter_map(|(mut group, slot)| {
            let slot = slot?;
            if let Some(selected) = slot {
                let tasks = std::mem::take(&mut group.tasks);
                group.tasks = tasks
                    .into_iter()
                    .enumerate()
                    .filter(|(t, _)| selected.contains(t))
                    .map(|(_, task)| task)
                    .collect();
            }
            Some(group)
        })
        .collect();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> SessionSpec {
        let task =
            |id: &str, deps: &[&str]| json!({"id": id, "executor": "echo", "depends_on": deps});
        SessionSpec::parse(
            &json!({"groups": [
                {"id": "a", "tasks": [task("a1", &[]), task("a2", &[])]},
                {"id": "b", "depends_on": ["a"], "tasks": [task("b1", &[]), task("b2", &["b1"]), task("b3", &["b2"]), task("b4", &[])]},
                {"id": "c", "tasks": [task("c1", &[])]},
                {"id": "d", "depends_on": ["b"], "tasks": [task("d1", &[])]},
                {"id": "z", "on_exit": true, "tasks": [task("z1", &[])]}
            ]})
            .to_string(),
        )
        .unwrap()
    }

    fn shape(spec: &SessionSpec) -> Vec<(String, Vec<String>)> {
        spec.groups
            .iter()
            .map(|group| {
                let tasks = group.tasks.iter().map(|task| task.id.clone()).collect();
                (group.id.clone(), tasks)
            })
            .collect()
    }

    fn selected(only: &str) -> Vec<(String, Vec<String>)> {
        shape(&select(spec(), only).unwrap())
    }

    fn owned(shape: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        shape
            .iter()
            .map(|(g, ts)| (g.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_group_brings_the_groups_it_depends_on_whole() {
        assert_eq!(
            selected("d"),
            owned(&[
                ("a", &["a1", "a2"]),
                ("b", &["b1", "b2", "b3", "b4"]),
                ("d", &["d1"])
            ])
        );
        assert_eq!(selected("c"), owned(&[("c", &["c1"])]));
    }

    #[test]
    fn a_task_brings_the_tasks_it_depends_on_and_its_groups_dependencies() {
        assert_eq!(
            selected("b.b3, c"),
            owned(&[
                ("a", &["a1", "a2"]),
                ("b", &["b1", "b2", "b3"]),
                ("c", &["c1"])
            ])
        );
        assert_eq!(
            selected("b.b4,d"),
            owned(&[
                ("a", &["a1", "a2"]),
                ("b", &["b1", "b2", "b3", "b4"]),
                ("d", &["d1"])
            ]),
            "d needs all of b"
        );
        assert_eq!(selected("a.a2,z"), owned(&[("a", &["a2"]), ("z", &["z1"])]));
    }

    #[test]
    fn a_selection_of_nothing_known_says_what_is_there() {
        let error = |only| select(spec(), only).unwrap_err();
        assert_eq!(
            error("x"),
            "--only `x`: no group `x` (groups: a, b, c, d, z)"
        );
        assert_eq!(
            error("b.b9"),
            "--only `b.b9`: group `b` has no task `b9` (tasks: b1, b2, b3, b4)"
        );
        assert_eq!(
            error("a,,b"),
            "--only `a,,b` has an empty entry between commas"
        );
        assert_eq!(
            error(" "),
            "--only names nothing (write GROUP or GROUP.TASK, joined by commas)"
        );
    }
}
