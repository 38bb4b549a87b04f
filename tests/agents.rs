//! Issue #16, seed 003: external agents claim the instances of tasks with `"executor":
//! "agent"`, through Redis, while a coordinator and workers run the session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

fn agent_task(id: &str, kind: &str, instances: u64, extra: Value) -> Value {
    let ns: Vec<u64> = (0..instances).collect();
    let mut task = json!({"id": id, "executor": "agent",
        "agent": {"type": kind, "claim_timeout_ms": 60_000},
        "input": {"n": "{{n}}", "ns": ns, "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}});
    for (k, v) in extra.as_object().unwrap() {
        if k == "agent" {
            task["agent"] = v.clone();
        } else {
            task[k] = v.clone();
        }
    }
    task
}

/// 8 agents (each with a Redis connection of its own) claim and complete 10,000 items side by
/// side: each is claimed once and completed once, and the session's result holds every
/// agent's answer in its place.
#[test]
fn eight_agents_claim_ten_thousand_items_each_exactly_once() {
    let cluster = Cluster::start("agents");
    let kind = unique("analyze");
    let id = unique("agents");
    let doc = json!({"session_id": id, "groups": [{"id": "g",
        "tasks": [agent_task("review", &kind, 10_000, json!({}))]}]});
    let waiting = {
        let doc = doc.clone();
        let cluster_dir = cluster.dir.clone();
        let command = cluster.command(&["submit", "--wait", "--timeout", "300"]);
        std::thread::spawn(move || {
            let file = cluster_dir.join("agents.json");
            std::fs::write(&file, doc.to_string()).unwrap();
            let mut command = command;
            command.arg(&file).output().unwrap()
        })
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let done: Vec<Vec<(u64, u32)>> = runtime.block_on(async {
        let agents = (0..8).map(|k| {
            let kind = kind.clone();
            tokio::spawn(async move {
                let store = events::RedisStore::connect(&redis_url()).await.unwrap();
                let mut done = Vec::new();
                // The first items come once the session is planned; after that, a quiet
                // second means every item was taken.
                let mut wait = Duration::from_secs(60);
                loop {
                    let claimed = agency::agent_tasks::claim(
                        &store,
                        &format!("agent-{k}"),
                        events::Wanted {
                            types: std::slice::from_ref(&kind),
                            workflow: None,
                        },
                        wait,
                    )
                    .await
                    .unwrap();
                    let Some(claim) = claimed else { break };
                    wait = Duration::from_secs(1);
                    let n = claim.item.input["n"].as_u64().unwrap();
                    agency::agent_tasks::complete(&store, &claim.token, json!({"n": n, "by": k}))
                        .await
                        .unwrap();
                    done.push((n, claim.claims));
                }
                done
            })
        });
        futures_util::future::join_all(agents)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    });
    let output: Output = waiting.join().unwrap();
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no result ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(result["status"], "completed", "{result:#}");
    let mut by_instance: HashMap<u64, usize> = HashMap::new();
    for (n, claims) in done.iter().flatten() {
        *by_instance.entry(*n).or_default() += 1;
        assert_eq!(*claims, 1, "item {n} claimed more than once");
    }
    assert_eq!(by_instance.len(), 10_000);
    assert!(
        by_instance.values().all(|&count| count == 1),
        "an item completed twice"
    );
    assert!(
        done.iter().all(|d| !d.is_empty()),
        "every agent took some work"
    );
    let review = result["context"]["review"].as_array().unwrap();
    assert_eq!(review.len(), 10_000);
    for (i, answer) in review.iter().enumerate() {
        assert_eq!(answer["n"], json!(i));
    }
    assert_eq!(result["groups"]["g"]["tasks"]["review"]["attempts"], 10_000);
}

fn agent(cluster: &Cluster, args: &[&str]) -> Output {
    let mut full = vec!["agent"];
    full.extend_from_slice(args);
    cluster.command(&full).output().unwrap()
}

fn claimed(output: &Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A claim not completed within its timeout is released and counts as an attempt; its late
/// completion is refused and changes nothing. A released claim goes to the next agent; a failed
/// one fails its attempt. Nothing waiting: exit 3.
#[test]
fn a_stale_claim_is_released_counted_and_its_late_completion_refused() {
    let cluster = Cluster::start("agents-stale");
    let (slow, failing) = (unique("slow"), unique("failing"));
    let id = unique("agents-stale");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
        agent_task("once", &slow, 1, json!({"agent": {"type": slow, "claim_timeout_ms": 1_000},
            "retry": {"max_retries": 1, "retry_delays": [0]}})),
        agent_task("broken", &failing, 1, json!({})),
    ]}]});
    cluster.submit(&doc);
    let wait = ["--wait-ms", "30000", "--json"];
    let first = claimed(&agent(
        &cluster,
        &[&["claim", "--agent", "a1", "--types", &slow][..], &wait[..]].concat(),
    ));
    assert_eq!(
        (&first["session_id"], &first["task"], &first["attempt"]),
        (&json!(id), &json!("once"), &json!(1))
    );
    assert_eq!(first["input"]["n"], 0);
    // Past its 1 s timeout the claim is released and its attempt failed; the retry offers the
    // item again as attempt 2.
    let second = claimed(&agent(
        &cluster,
        &[&["claim", "--agent", "a2", "--types", &slow][..], &wait[..]].concat(),
    ));
    assert_eq!(second["attempt"], 2);
    let late = agent(
        &cluster,
        &[
            "complete",
            first["token"].as_str().unwrap(),
            "--result",
            "{\"late\": true}",
        ],
    );
    assert_eq!(late.status.code(), Some(1));
    let said = String::from_utf8_lossy(&late.stderr);
    assert!(said.contains("does not hold an item"), "{said}");
    // Released, it goes to the next agent, same attempt.
    let released = agent(&cluster, &["release", second["token"].as_str().unwrap()]);
    assert_eq!(released.status.code(), Some(0));
    let third = claimed(&agent(
        &cluster,
        &[&["claim", "--agent", "a3", "--types", &slow][..], &wait[..]].concat(),
    ));
    assert_eq!(third["attempt"], 2);
    let completed = agent(
        &cluster,
        &[
            "complete",
            third["token"].as_str().unwrap(),
            "--result",
            "{\"ok\": 1}",
        ],
    );
    assert_eq!(
        completed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&completed.stderr)
    );
    // The other task's agent gives up on its item.
    let other = claimed(&agent(
        &cluster,
        &[
            &["claim", "--agent", "a4", "--types", &failing][..],
            &wait[..],
        ]
        .concat(),
    ));
    let failed = agent(
        &cluster,
        &[
            "fail",
            other["token"].as_str().unwrap(),
            "--error",
            "the document is unreadable",
        ],
    );
    assert_eq!(failed.status.code(), Some(0));
    let nothing = agent(
        &cluster,
        &[
            "claim",
            "--agent",
            "a5",
            "--types",
            &format!("{slow},{failing}"),
        ],
    );
    assert_eq!(nothing.status.code(), Some(3));
    let watched = cluster
        .command(&["watch", &id, "--timeout", "60"])
        .output()
        .unwrap();
    assert_eq!(
        watched.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let status = cluster
        .command(&["status", &id, "--json"])
        .output()
        .unwrap();
    let result: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(result["status"], "partial", "{result:#}");
    let tasks = &result["groups"]["g"]["tasks"];
    assert_eq!(result["context"]["once"], json!([{"ok": 1}]));
    assert_eq!(tasks["once"]["attempts"], 2);
    assert_eq!(
        tasks["broken"]["failures"][0]["error"],
        "the document is unreadable"
    );
}

/// `agency tasks` or `agency agent` on this Redis, with the output's JSON when it succeeded.
fn tasks_cli(args: &[&str]) -> (Output, Value) {
    let output = std::process::Command::new(agency_bin())
        .args(args)
        .args(["--redis", &redis_url()])
        .output()
        .unwrap();
    let printed = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output, printed)
}

fn tasks_ok(args: &[&str]) -> (String, Value) {
    let (output, printed) = tasks_cli(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "agency {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        printed,
    )
}

/// The task manager without a session, through the CLI only (no coordinator, no worker): a
/// root task and its children, claimed with `agency agent claim`, completed, failed, released,
/// a stale claim back to pending, a cancel; the children in order and the summary by status
/// and by type; metadata set and merged; two workflows apart; bad input refused clearly.
#[test]
fn the_task_manager_keeps_parents_children_counts_and_metadata() {
    let (workflow, other) = (unique("review-wf"), unique("other-wf"));
    let (analyze, validate) = (unique("analyze"), unique("validate"));
    let create = |workflow: &str, kind: &str, data: &str, extra: &[&str]| {
        let mut args = vec![
            "tasks",
            "create",
            "--workflow",
            workflow,
            "--type",
            kind,
            "--data",
            data,
        ];
        args.extend_from_slice(extra);
        tasks_ok(&args).0
    };
    let root = create(&workflow, &analyze, r#"{"file": "data.csv"}"#, &[]);
    assert!(root.starts_with(&format!("{analyze}_")), "{root}");
    let children: Vec<String> = (0..3)
        .map(|n| {
            let timeout = if n == 1 { "1000" } else { "60000" };
            create(
                &workflow,
                &validate,
                &format!(r#"{{"part": {n}}}"#),
                &["--parent", &root, "--claim-timeout-ms", timeout],
            )
        })
        .collect();
    // Agents claim by type, whatever the workflow: the other workflow's task has its own type.
    let elsewhere = unique("elsewhere");
    create(&other, &elsewhere, "{}", &[]);
    let (_, task) = tasks_ok(&["tasks", "get", &root]);
    assert_eq!(
        (
            &task["status"],
            &task["type"],
            &task["data"],
            &task["parent_id"]
        ),
        (
            &json!("pending"),
            &json!(analyze),
            &json!({"file": "data.csv"}),
            &Value::Null
        )
    );

    let claim = |agent: &str, kind: &str| {
        tasks_ok(&[
            "agent", "claim", "--agent", agent, "--types", kind, "--json",
        ])
        .1
    };
    let taken = claim("agent-1", &analyze);
    assert_eq!(
        (
            &taken["task"],
            &taken["workflow"],
            &taken["session_id"],
            &taken["attempt"]
        ),
        (&json!(root), &json!(workflow), &Value::Null, &json!(1))
    );
    assert_eq!(taken["input"], json!({"file": "data.csv"}));
    let (_, task) = tasks_ok(&["tasks", "get", &root]);
    assert_eq!(
        (&task["status"], &task["locked_by"]),
        (&json!("in_progress"), &json!("agent-1"))
    );
    let token = |claim: &Value| claim["token"].as_str().unwrap().to_string();
    tasks_ok(&[
        "agent",
        "complete",
        &token(&taken),
        "--result",
        r#"{"output": "results.json"}"#,
    ]);
    let (_, task) = tasks_ok(&["tasks", "get", &root]);
    assert_eq!(
        (&task["status"], &task["result"]),
        (&json!("completed"), &json!({"output": "results.json"}))
    );

    // Child 0 fails; child 1's claim goes stale and is released on the next claim after 1 s,
    // its late completion refused; released by hand it is claimed again; child 2 is cancelled.
    let first = claim("agent-2", &validate);
    assert_eq!(first["parent_id"], json!(root));
    tasks_ok(&[
        "agent",
        "fail",
        &token(&first),
        "--error",
        "schema mismatch",
    ]);
    let stale = claim("agent-3", &validate);
    assert_eq!(stale["task"], json!(children[1]));
    std::thread::sleep(Duration::from_millis(1_200));
    let again = claim("agent-4", &validate);
    assert_eq!(
        (&again["task"], &again["attempt"]),
        (&json!(children[1]), &json!(2))
    );
    let (late, _) = tasks_cli(&["agent", "complete", &token(&stale)]);
    assert_eq!(late.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&late.stderr).contains("does not hold an item"));
    tasks_ok(&["agent", "release", &token(&again)]);
    let (_, task) = tasks_ok(&["tasks", "get", &children[1]]);
    assert_eq!(
        (&task["status"], &task["locked_by"]),
        (&json!("pending"), &Value::Null)
    );
    let last = claim("agent-5", &validate);
    assert_eq!(last["task"], json!(children[1]));
    tasks_ok(&["agent", "complete", &token(&last)]);
    tasks_ok(&["tasks", "cancel", &children[2]]);
    let (refused, _) = tasks_cli(&["tasks", "cancel", &children[2]]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cancelled already"));
    let (nothing, _) = tasks_cli(&["agent", "claim", "--agent", "a", "--types", &validate]);
    assert_eq!(
        nothing.status.code(),
        Some(3),
        "the cancelled child is not offered"
    );

    let (_, listed) = tasks_ok(&["tasks", "children", &root]);
    let statuses: Vec<(&Value, &Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (&c["id"], &c["status"]))
        .collect();
    let expected = [
        (json!(children[0]), json!("failed")),
        (json!(children[1]), json!("completed")),
        (json!(children[2]), json!("cancelled")),
    ];
    assert_eq!(
        statuses,
        expected.iter().map(|(a, b)| (a, b)).collect::<Vec<_>>()
    );
    assert_eq!(listed[0]["error"], "schema mismatch");
    let (_, summary) = tasks_ok(&["tasks", "summary", "--workflow", &workflow]);
    assert_eq!(summary["total_tasks"], 4);
    assert_eq!(
        summary["status_counts"],
        json!({"pending": 0, "in_progress": 0, "completed": 2, "failed": 1, "cancelled": 1})
    );
    assert_eq!(summary["type_counts"], json!({&analyze: 1, &validate: 3}));
    assert_eq!(
        summary["by_type"][&validate],
        json!({"completed": 1, "failed": 1, "cancelled": 1})
    );
    let (_, apart) = tasks_ok(&["tasks", "summary", "--workflow", &other]);
    assert_eq!(
        (&apart["total_tasks"], &apart["status_counts"]["pending"]),
        (&json!(1), &json!(1))
    );

    let (_, metadata) = tasks_ok(&[
        "tasks",
        "metadata",
        "--workflow",
        &workflow,
        "--set",
        r#"{"version": "2.0", "started_by": "scheduler"}"#,
    ]);
    // Beside what was set, the workflow's own keys (its tasks came first).
    let own = |mut metadata: Value| {
        let times = (
            metadata["initialized_at"].take(),
            metadata["last_updated"].take(),
        );
        assert!(
            times.0.as_str().unwrap() <= times.1.as_str().unwrap(),
            "{times:?}"
        );
        assert_eq!(metadata["workflow_type"].take(), "generic");
        let kept = metadata.as_object().unwrap().iter();
        let set: serde_json::Map<String, Value> = kept
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Value::Object(set)
    };
    assert_eq!(
        own(metadata),
        json!({"version": "2.0", "started_by": "scheduler"})
    );
    tasks_ok(&[
        "tasks",
        "metadata",
        "--workflow",
        &workflow,
        "--set",
        r#"{"version": "2.1"}"#,
    ]);
    let (_, metadata) = tasks_ok(&["tasks", "metadata", "--workflow", &workflow]);
    assert_eq!(
        own(metadata),
        json!({"version": "2.1", "started_by": "scheduler"})
    );

    let create = |workflow: &str, rest: &[&str]| -> Vec<String> {
        ["tasks", "create", "--workflow", workflow]
            .iter()
            .chain(rest)
            .map(|arg| arg.to_string())
            .collect()
    };
    let words = |line: &str| line.split(' ').map(str::to_string).collect::<Vec<_>>();
    for (args, says) in [
        (
            create(&workflow, &["--type", "bad type", "--data", "{}"]),
            "task type `bad type` must be",
        ),
        (
            create(&workflow, &["--type", "x", "--data", "{nope"]),
            "--data is not JSON",
        ),
        (
            create(&other, &["--type", "x", "--parent", &root]),
            "is of workflow",
        ),
        (
            create(&workflow, &["--type", "x", "--parent", "ghost"]),
            "parent task `ghost` does not exist",
        ),
        (words("tasks get ghost"), "no task `ghost`"),
        (words("tasks children ghost"), "no task `ghost`"),
        (
            words(&format!("tasks metadata --workflow {workflow} --set [1]")),
            "--set is not a JSON object",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (output, _) = tasks_cli(&args);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains(says), "{args:?} says `{says}`: {said}");
    }
}
