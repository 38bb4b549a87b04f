//! Session parsing and validation: every problem, with its field path, in one error.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use taskgroup::{Error, FailurePolicy, Planned, Rules, Session, Threshold};

fn validate(doc: Value) -> Result<Session, Error> {
    Session::from_json(&doc.to_string(), &Rules::default())
}

fn problems(doc: Value) -> Vec<String> {
    match validate(doc) {
        Ok(_) => panic!("expected problems"),
        Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected validation problems, got {other}"),
    }
}

fn task(id: &str, deps: &[&str]) -> Value {
    json!({"id": id, "executor": "noop", "depends_on": deps})
}

#[test]
fn malformed_json_reports_line_and_column() {
    let error = Session::from_json(
        "{\n  \"groups\": [\n    {\"id\": \"a\",,}\n  ]\n}",
        &Rules::default(),
    )
    .unwrap_err();
    assert_eq!(error.to_string(), "line 3, column 16: key must be a string");
    let error = Session::from_json("{\"groups\": []} trailing", &Rules::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("line 1, column 16: trailing characters"),
        "{error}"
    );
}

#[test]
fn unknown_fields_and_wrong_types_name_the_field_path() {
    let error = validate(
        json!({"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop", "inptu": {}}]}]}),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("groups[0].tasks[0].inptu: unknown field `inptu`, expected one of"),
        "{message}"
    );
    let error = validate(json!({"groups": [{"id": 7, "tasks": []}]})).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("groups[0].id: invalid type: integer `7`, expected a string"),
        "{error}"
    );
    let error = validate(json!({"context": {}})).unwrap_err();
    assert!(
        error.to_string().contains("missing field `groups`"),
        "{error}"
    );
}

#[test]
fn every_structural_problem_is_listed_at_once() {
    let found = problems(json!({"groups": [
        {"id": "a", "depends_on": ["nope"], "tasks": [task("t1", &["t9"]), task("t1", &[])]},
        {"id": "a", "tasks": []},
        {"id": "", "tasks": [{"id": "x", "executor": " "}]},
    ]}));
    assert_eq!(
        found,
        vec![
            "groups[0].tasks[1].id: duplicate task id `t1` (also groups[0].tasks[0]); task ids are unique in a session",
            "groups[1].id: duplicate group id `a` (also groups[0])",
            "groups[1].tasks: group `a` has no tasks",
            "groups[2].id: group id must not be empty",
            "groups[2].tasks[0].executor: executor must not be empty",
            "groups[0].depends_on[0]: unknown group `nope`",
            "groups[0].tasks[0].depends_on[0]: unknown task `t9`",
            "groups[0].tasks[1].id: context key `t1` is also written by task `t1`; set a distinct result_key",
        ]
    );
    assert_eq!(
        problems(json!({"groups": []})),
        vec!["groups: a session needs at least one group"]
    );
}

#[test]
fn cycles_are_reported_as_paths() {
    let found = problems(json!({"groups": [
        {"id": "a", "depends_on": ["b"], "tasks": [task("t1", &["t2"]), task("t2", &["t3"]), task("t3", &["t1"])]},
        {"id": "b", "depends_on": ["a"], "tasks": [task("u", &["u"])]},
    ]}));
    assert_eq!(
        found,
        vec![
            "groups[0].depends_on: dependency cycle between groups: a -> b -> a",
            "groups[0].tasks[0].depends_on: dependency cycle between tasks: t1 -> t2 -> t3 -> t1",
            "groups[1].tasks[0].depends_on: dependency cycle between tasks: u -> u",
        ]
    );
}

#[test]
fn depending_on_a_task_of_another_group_explains_the_fix() {
    let found = problems(json!({"groups": [
        {"id": "a", "tasks": [task("t1", &[])]},
        {"id": "b", "tasks": [task("t2", &["t1"])]},
    ]}));
    assert_eq!(
        found,
        vec!["groups[1].tasks[0].depends_on[0]: task `t1` is in group `a`; tasks depend on tasks of their own group, so make group `b` depend on group `a`"]
    );
}

fn fan_out_over(source: &str) -> Value {
    json!({"id": "per_user", "executor": "echo", "input": {
        "expansion_config": {"type": "array", "array_mapping": {"user": source}}
    }})
}

#[test]
fn context_written_upstream_defers_the_plan() {
    let session = validate(json!({"groups": [
        {"id": "fetch", "tasks": [{"id": "fetch_users", "executor": "echo", "input": ["a", "b"]}]},
        {"id": "process", "depends_on": ["fetch"], "tasks": [fan_out_over("context.fetch_users")]},
    ]}))
    .unwrap();
    assert_eq!(session.total_instances(), (1, 1));
    match &session.tasks[1][0].plan {
        Planned::Deferred { key, producer } => assert_eq!(
            (key.as_str(), producer.as_str()),
            ("fetch_users", "fetch_users")
        ),
        other => panic!("expected a deferred plan, got {other:?}"),
    }
    // Within a group, a task dependency makes the producer upstream too; result_key renames.
    let session = validate(json!({"groups": [{"id": "g", "tasks": [
        {"id": "fetch", "executor": "echo", "result_key": "users"},
        {"id": "per_user", "executor": "echo", "depends_on": ["fetch"], "input": {"u": "{{context.users.0}}"}},
    ]}]}))
    .unwrap();
    assert_eq!(session.total_instances(), (1, 1));
}

#[test]
fn context_nobody_writes_or_written_too_late_is_a_problem() {
    let found =
        problems(json!({"groups": [{"id": "g", "tasks": [fan_out_over("context.missing")]}]}));
    assert_eq!(
        found,
        vec!["groups[0].tasks[0].input.expansion_config.array_mapping.user: task `per_user`: `context.missing` is not in the session context and no task writes `missing`"]
    );
    let found = problems(json!({"groups": [
        {"id": "fetch", "tasks": [{"id": "fetch_users", "executor": "echo"}]},
        {"id": "process", "tasks": [fan_out_over("context.fetch_users")]},
    ]}));
    assert_eq!(
        found,
        vec!["groups[1].tasks[0].input.expansion_config.array_mapping.user: task `per_user`: `context.fetch_users` is written by task `fetch_users`, which does not run before it (make group `process` depend on group `fetch`)"]
    );
}

#[test]
fn expansion_problems_are_collected_with_the_rest() {
    let found = problems(json!({"groups": [{"id": "g", "tasks": [
        {"id": "a", "executor": "noop", "input": {"p": "{{nope}}"}},
        {"id": "b", "executor": "noop", "input": {"expansion_config": {"type": "matrix", "array_mapping": {"r": "rows"}}}},
    ]}]}));
    assert_eq!(
        found,
        vec![
            "groups[0].tasks[0].input.p: task `a`: unknown variable `nope` in template (known: index, context.<key>)",
            "groups[0].tasks[1].input.expansion_config.array_mapping.r: task `b`: `rows` not found in the task input",
        ]
    );
}

#[test]
fn the_initial_context_feeds_plans() {
    let session = validate(json!({
        "context": {"regions": ["US", "EU", "APAC"]},
        "groups": [{"id": "g", "tasks": [fan_out_over("context.regions")]}]
    }))
    .unwrap();
    assert_eq!(session.total_instances(), (3, 0));
}

#[test]
fn settings_are_validated_with_their_paths() {
    let rules = Rules {
        executors: Some(vec!["noop".into(), "echo".into()]),
        ..Rules::default()
    };
    let doc = json!({"timeout_ms": 0, "groups": [{
        "id": "g", "timeout_ms": 0, "failure_policy": "sometimes",
        "tasks": [
            {"id": "a", "executor": "nope"},
            {"id": "b", "executor": "noop", "retry": {"max_retries": 2, "backoff": {"factor": 0}}, "timeout_ms": 0, "concurrency": 0},
            {"id": "c", "executor": "noop", "retry": {"retry_delays": "soon"}}
        ]
    }]});
    let found = match Session::from_json(&doc.to_string(), &rules) {
        Err(Error::Invalid(problems)) => {
            problems.iter().map(ToString::to_string).collect::<Vec<_>>()
        }
        other => panic!("expected problems, got {other:?}"),
    };
    assert_eq!(
        found,
        vec![
            "timeout_ms: timeout_ms must be positive",
            "groups[0].timeout_ms: timeout_ms must be positive",
            "groups[0].failure_policy: unknown failure policy \"sometimes\" (expected \"fail_fast\", \"all_settled\" or {\"threshold\": N})",
            "groups[0].tasks[0].executor: unknown executor `nope` (known: noop, echo, and `agent` for work agents claim)",
            "groups[0].tasks[1].retry.backoff.factor: factor 0 must be between 1 and 100",
            "groups[0].tasks[1].timeout_ms: timeout_ms must be positive",
            "groups[0].tasks[1].concurrency: concurrency must be at least 1",
            "groups[0].tasks[2].retry.retry_delays: invalid type: string \"soon\", expected a sequence",
        ]
    );
}

#[test]
fn settings_reach_the_validated_session() {
    let session = validate(json!({"timeout_ms": 5000, "groups": [
        {"id": "a", "tasks": [{"id": "t", "executor": "noop", "retry": {"max_retries": 2, "retry_delays": [10]}, "timeout_ms": 50}]},
        {"id": "b", "depends_on": ["a"], "failure_policy": {"threshold": 3}, "timeout_ms": 100,
         "tasks": [{"id": "u", "executor": "noop"}, {"id": "v", "executor": "noop", "depends_on": ["u"]}]}
    ]}))
    .unwrap();
    assert_eq!(session.timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(session.groups[1].depends_on, vec![0]);
    assert_eq!(
        session.groups[1].failure_policy,
        FailurePolicy::Threshold(Threshold::Count(3))
    );
    assert_eq!(session.groups[0].failure_policy, FailurePolicy::FailFast);
    assert_eq!(session.tasks[0][0].retry.max_retries, 2);
    assert_eq!(
        session.tasks[0][0].timeout,
        Some(std::time::Duration::from_millis(50))
    );
    assert_eq!(session.tasks[1][1].depends_on, vec![0]);
}

#[test]
fn a_session_id_that_would_break_its_hash_tag_is_refused() {
    // Issue #13: an id starting with `}` gave an empty Redis hash tag, spreading the session's
    // keys over Cluster slots.
    for (id, why) in [
        ("}a", "must not contain `{` or `}`"),
        ("a{b", "must not contain `{` or `}`"),
        ("", "must not be empty"),
        ("a\nb", "must not contain control characters"),
    ] {
        let found =
            problems(json!({"session_id": id, "groups": [{"id": "g", "tasks": [task("t", &[])]}]}));
        assert_eq!(found.len(), 1, "{id:?}: {found:?}");
        assert!(found[0].starts_with("session_id: "), "{found:?}");
        assert!(found[0].contains(why), "{id:?}: {found:?}");
    }
    assert!(validate(
        json!({"session_id": "report-2026.12", "groups": [{"id": "g", "tasks": [task("t", &[])]}]})
    )
    .is_ok());
}

#[test]
fn every_type_error_is_listed_not_only_the_first() {
    // serde stops at the first misfit of a document; each object is read on its own too, and
    // read again past each misfit field (a stand-in of the right shape in its place, or
    // without it), so one task's three misfits are all listed, and a required field's misfit
    // does not hide the next.
    let error = validate(json!({"timeout_ms": "soon", "groups": [
        {"id": "a", "tasks": [
            {"id": "t1", "executor": "noop", "retires": 1, "timeout_ms": "later", "concurrency": -2},
            {"id": 2, "executor": 5},
        ]},
        {"id": 7, "tasks": [{"id": "t3", "executor": "noop", "timeout_ms": -1}]},
    ]}))
    .unwrap_err();
    let Error::Invalid(problems) = &error else {
        panic!("expected every problem, got {error}");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "timeout_ms",
            "groups[0].tasks[0].retires",
            "groups[0].tasks[0].concurrency",
            "groups[0].tasks[0].timeout_ms",
            "groups[0].tasks[1].id",
            "groups[0].tasks[1].executor",
            "groups[1].id",
            "groups[1].tasks[0].timeout_ms",
        ],
        "{error}"
    );
    // The first, found by serde in the text, keeps its position.
    assert!(problems[0].message.contains("(line 1, column"), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("invalid session, 8 problems:"),
        "{error}"
    );
}

#[test]
fn an_unknown_field_does_not_hide_the_other_problems() {
    // Leaving out a field the format does not have changes nothing else: the document is
    // checked whole, as it is without the field (issue 30, finding 14).
    let groups = json!([
        {"id": "a", "tasks": [task("t1", &["nope"]), {"id": "t2", "executor": "noop", "colour": 1}]},
        {"id": "b", "depends_on": ["zz"], "tasks": []},
    ]);
    let found = problems(json!({"priority": 5, "groups": groups}));
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(
        found[0].starts_with("priority: unknown field `priority`"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("groups[0].tasks[1].colour: unknown field"),
        "{found:#?}"
    );
    for wanted in [
        "groups[1].tasks: group `b` has no tasks",
        "groups[0].tasks[0].depends_on[0]: unknown task `nope`",
        "groups[1].depends_on[0]: unknown group `zz`",
    ] {
        assert!(found.iter().any(|p| p == wanted), "{wanted} in {found:#?}");
    }
    // A value of the wrong type is not left out (a stand-in could make up problems): the
    // misfits alone are told.
    let found = problems(json!({"priority": 5, "timeout_ms": "soon", "groups": [
        {"id": "a", "depends_on": ["zz"], "tasks": [task("t", &[])]},
    ]}));
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn labels_and_metadata_are_accepted_and_bounded() {
    let session = validate(json!({
        "description": "d", "metadata": {"k": [1, 2]},
        "groups": [{"id": "g", "name": "G", "description": "gd",
            "tasks": [{"id": "t", "executor": "noop", "name": "T", "description": "td"}]}]
    }))
    .unwrap();
    assert_eq!(session.spec.groups[0].tasks[0].name.as_deref(), Some("T"));
    let long = "x".repeat(4097);
    let found = problems(json!({
        "description": long, "metadata": {"blob": "y".repeat(70_000)},
        "groups": [{"id": "g", "name": long,
            "tasks": [{"id": "t", "executor": "noop", "description": long}]}]
    }));
    assert_eq!(
        found,
        [
            "description: 4097 bytes, over the limit of 4096",
            "metadata: metadata is 70011 bytes as JSON, over the limit of 65536 (it is written with every status update)",
            "groups[0].name: 4097 bytes, over the limit of 4096",
            "groups[0].tasks[0].description: 4097 bytes, over the limit of 4096",
        ]
    );
    let error =
        validate(json!({"metadata": [1], "groups": [{"id": "g", "tasks": [task("t", &[])]}]}))
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("metadata: invalid type: sequence, expected a map"),
        "{error}"
    );
}

#[test]
fn exit_handlers_read_the_session_and_every_other_groups_context() {
    let session = validate(json!({"groups": [
        {"id": "fetch", "tasks": [{"id": "users", "executor": "echo", "input": ["a"]}]},
        {"id": "cleanup", "on_exit": true, "tasks": [
            {"id": "report", "executor": "echo", "input": {"status": "{{context._session.status}}"}},
            {"id": "per_user", "executor": "echo", "input": {"u": "{{context.users.0}}"}}
        ]}
    ]}))
    .unwrap();
    match &session.tasks[1][0].plan {
        Planned::Deferred { key, producer } => {
            assert_eq!(key, "_session.status");
            assert_eq!(producer, taskgroup::SESSION_WRITER);
        }
        other => panic!("expected a deferred plan, got {other:?}"),
    }
    assert!(
        matches!(&session.tasks[1][1].plan, Planned::Deferred { producer, .. } if producer == "users")
    );
    assert_eq!(
        problems(json!({"groups": [
            {"id": "a", "tasks": [
                {"id": "t", "executor": "echo", "input": {"s": "{{context._session}}"}},
                {"id": "u", "executor": "echo", "result_key": "_session"}
            ]},
            {"id": "b", "on_exit": true, "depends_on": ["a"], "tasks": [task("v", &[])]},
            {"id": "c", "depends_on": ["b"], "tasks": [task("w", &[])]},
            {"id": "d", "on_exit": true, "tasks": [
                {"id": "x", "executor": "echo", "input": {"v": "{{context.v}}"}}
            ]}
        ]})),
        [
            "groups[1].depends_on: group `b` is an exit handler (on_exit): it runs after every other group has ended, so it takes no depends_on",
            "groups[2].depends_on[0]: group `b` is an exit handler (on_exit), which runs after every other group; nothing can depend on it",
            "groups[0].tasks[1].result_key: context key `_session` is the engine's (exit handlers read the session's status there); set another result_key",
            "groups[0].tasks[0].input.s: task `t`: `context._session` is there only for exit handlers (groups with \"on_exit\": true)",
            "groups[3].tasks[0].input.v: task `x`: `context.v` is written by task `v`, which does not run before it (exit handlers run side by side: put both tasks in one of them)",
        ]
    );
    assert_eq!(
        problems(json!({"context": {"_session": 1}, "groups": [{"id": "a", "tasks": [task("t", &[])]}]})),
        ["context._session: `_session` is the engine's: exit handlers read the session's status there"]
    );
}

#[test]
fn memoize_is_checked_with_its_key_template() {
    let task = |memoize: Value| {
        json!({"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop", "memoize": memoize,
            "input": {"xs": [1, 2], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}}}]}]})
    };
    let session = validate(task(json!({"key": "x-{{x}}", "ttl_s": 60}))).unwrap();
    assert_eq!(session.tasks[0][0].memoize.as_ref().unwrap().key, "x-{{x}}");
    assert_eq!(
        problems(task(json!({"key": "y-{{y}}"}))),
        ["groups[0].tasks[0].memoize.key: task `t`: unknown variable `y` in template (known: x, index, context.<key>)"]
    );
    assert_eq!(
        problems(task(json!({"key": "k", "ttl_s": 0}))),
        ["groups[0].tasks[0].memoize.ttl_s: ttl_s must be positive (leave it out to keep results for ever)"]
    );
}

/// A pipeline of two tasks over the same three items.
fn pipeline(second: Value) -> Value {
    json!({"groups": [{"id": "g", "tasks": [
        {"id": "fetch", "executor": "noop",
         "input": {"n": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"n": "n"}}}},
        second,
    ]}]})
}

#[test]
fn instance_by_instance_dependencies_are_read_and_checked() {
    let session = validate(pipeline(json!({"id": "emit", "executor": "noop",
        "depends_on": [{"task": "fetch", "each": true}],
        "input": {"got": "{{upstream.fetch.value}}", "n": [1, 2, 3],
                  "expansion_config": {"type": "array", "array_mapping": {"n": "n"}}}})))
    .unwrap();
    assert_eq!(session.tasks[0][1].each, vec![0]);
    assert!(session.tasks[0][1].depends_on.is_empty());
    // `{"task": ...}` without `each` waits for the whole task, as a plain id does.
    let session = validate(pipeline(
        json!({"id": "emit", "executor": "noop", "depends_on": [{"task": "fetch"}]}),
    ))
    .unwrap();
    assert_eq!(session.tasks[0][1].depends_on, vec![0]);

    let problems = problems(json!({"groups": [{"id": "g", "tasks": [
        {"id": "fetch", "executor": "noop",
         "input": {"n": [1, 2, 3], "expansion_config": {"type": "array", "array_mapping": {"n": "n"}}}},
        // Another instance count.
        {"id": "two", "executor": "noop", "depends_on": [{"task": "fetch", "each": true}],
         "input": {"n": [1, 2], "expansion_config": {"type": "array", "array_mapping": {"n": "n"}}}},
        // An upstream it does not depend on instance by instance.
        {"id": "stray", "executor": "noop", "depends_on": ["fetch"], "input": {"x": "{{upstream.fetch}}"}},
        // A cycle through an instance-by-instance edge.
        {"id": "a", "executor": "noop", "depends_on": [{"task": "b", "each": true}]},
        {"id": "b", "executor": "noop", "depends_on": ["a"]},
        // The upstream's context is written after all its instances: not there instance by instance.
        {"id": "early", "executor": "noop", "depends_on": [{"task": "fetch", "each": true}],
         "input": {"all": "{{context.fetch}}", "n": [1, 2, 3],
                   "expansion_config": {"type": "array", "array_mapping": {"n": "n"}}}},
    ]}]}));
    let all = problems.join("\n");
    assert!(
        all.contains("groups[0].tasks[1].depends_on[0]: task `two` has 2 instances and task `fetch` 3: depending instance by instance needs the same count"),
        "{all}"
    );
    assert!(
        all.contains("groups[0].tasks[2].input.x: task `stray`: `upstream.fetch`: this task depends on no task instance by instance"),
        "{all}"
    );
    assert!(
        all.contains("dependency cycle between tasks: a -> b -> a"),
        "{all}"
    );
    assert!(
        all.contains("`context.fetch` is written by task `fetch`, which does not run before it (it is depended on instance by instance, and a task's context is written after all its instances: read `{{upstream.fetch}}`, or depend on the whole task)"),
        "{all}"
    );
    let bad = validate(pipeline(
        json!({"id": "emit", "executor": "noop", "depends_on": [7]}),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("a dependency is a task id or {\"task\": \"<id>\", \"each\": true}, not `7`"),
        "{bad}"
    );
    let bad = validate(pipeline(
        json!({"id": "emit", "executor": "noop", "depends_on": [{"task": "fetch", "eech": true}]}),
    ))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("unknown field `eech`"), "{bad}");
}

#[test]
fn tasks_done_by_agents_say_which_agents() {
    let session = validate(json!({"groups": [{"id": "g", "tasks": [
        {"id": "review", "executor": "agent", "agent": {"type": "analyze", "claim_timeout_ms": 500}}]}]}))
    .unwrap();
    let agent = session.tasks[0][0].agent.clone().unwrap();
    assert_eq!(
        (agent.kind.as_str(), agent.claim_timeout_ms),
        ("analyze", 500)
    );
    let rules = Rules {
        executors: Some(vec!["echo".into()]),
        ..Rules::default()
    };
    let doc = json!({"groups": [{"id": "g", "tasks": [
        {"id": "a", "executor": "agent"},
        {"id": "b", "executor": "echo", "agent": {"type": "x"}},
        {"id": "c", "executor": "agent", "agent": {"type": "no spaces"}},
        {"id": "d", "executor": "nope"}]}]});
    let Err(Error::Invalid(problems)) = Session::from_json(&doc.to_string(), &rules) else {
        panic!("expected problems");
    };
    let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(all.contains("groups[0].tasks[0].agent: a task with \"executor\": \"agent\" says which agents claim it"), "{all}");
    assert!(all.contains("groups[0].tasks[1].agent: `agent` is for tasks with \"executor\": \"agent\", not `echo`"), "{all}");
    assert!(
        all.contains("groups[0].tasks[2].agent.type: `no spaces` is not an agent type"),
        "{all}"
    );
    assert!(
        all.contains("unknown executor `nope` (known: echo, and `agent` for work agents claim)"),
        "{all}"
    );
}
