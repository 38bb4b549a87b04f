//! Built-in executors against real things: child processes, a local HTTP server, the broker;
//! and the worker's handling of malformed dispatch messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use events::{Broker as _, DEAD_LETTER_TOPIC, DISPATCH_TOPIC, EVENTS_TOPIC};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn one_task(executor: &str, input: Value, extra: Value) -> Value {
    let mut task = json!({"id": "t", "executor": executor, "input": input});
    for (k, v) in extra.as_object().unwrap() {
        task[k] = v.clone();
    }
    json!({"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [task]}]})
}

fn first_error(result: &Value) -> &str {
    result["groups"]["g"]["tasks"]["t"]["failures"][0]["error"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn command_runs_a_real_process_with_the_instance_on_stdin() {
    // `cat` echoes stdin: the result is the instance input without argv.
    let result = run(
        json!({"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "command", "input": {
            "argv": ["cat"], "user": "{{u}}", "us": ["ann", "bob"],
            "expansion_config": {"type": "array", "array_mapping": {"u": "us"}}
        }}]}]}),
    )
    .await;
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(
        result["context"]["t"],
        json!([{"user": "ann", "u": "ann"}, {"user": "bob", "u": "bob"}])
    );
}

#[tokio::test]
async fn command_that_prints_before_reading_a_large_input_does_not_deadlock() {
    // The child writes 200 kB (more than a pipe holds) before it reads its 200 kB input: with
    // stdin written first and stdout read after, each side waits on the other until the timeout.
    let script = "import sys, json\n\
        sys.stdout.write(' ' * 200000)\n\
        sys.stdout.flush()\n\
        print(len(json.load(sys.stdin)['blob']))";
    let blob = "x".repeat(200_000);
    let result = run(one_task(
        "command",
        json!({"argv": ["python3", "-c", script], "blob": blob}),
        json!({"timeout_ms": 20_000}),
    ))
    .await;
    assert_eq!(result["status"], "completed", "{}", first_error(&result));
    assert_eq!(result["context"]["t"], json!(200_000));
}

#[tokio::test]
async fn command_arguments_are_templated_and_never_go_through_a_shell() {
    // `printenv NAME` prints one variable; a shell metacharacter stays a literal argument.
    let result = run(one_task(
        "command",
        json!({"argv": ["printenv", "AGENCY_INSTANCE"]}),
        json!({}),
    ))
    .await;
    assert_eq!(result["context"]["t"], json!(0));
    let result = run(one_task(
        "command",
        json!({"argv": ["echo", "\"a\" ; echo pwned"]}),
        json!({}),
    ))
    .await;
    assert!(first_error(&result).contains("not JSON"), "{result:#}");
    assert!(
        first_error(&result).contains("\"a\" ; echo pwned"),
        "the argument reached echo untouched: {result:#}"
    );
}

#[tokio::test]
async fn command_failures_are_clear() {
    let result = run(one_task(
        "command",
        json!({"argv": ["ls", "/definitely/not/here"]}),
        json!({}),
    ))
    .await;
    assert!(
        first_error(&result).starts_with("`ls` exited with code 2: ls: cannot access"),
        "{}",
        first_error(&result)
    );
    let result = run(one_task(
        "command",
        json!({"argv": ["/no/such/program"]}),
        json!({}),
    ))
    .await;
    assert!(
        first_error(&result).starts_with("cannot start `/no/such/program`"),
        "{}",
        first_error(&result)
    );
    // A child that aborts (SIGABRT, as a failed assertion in C does) fails its attempt, saying
    // so; the worker goes on.
    let result = run(one_task(
        "command",
        json!({"argv": ["sh", "-c", "echo dying >&2; kill -ABRT $$"]}),
        json!({}),
    ))
    .await;
    assert!(
        first_error(&result).starts_with("`sh` ended by signal: 6 (SIGABRT)"),
        "{}",
        first_error(&result)
    );
    assert!(
        first_error(&result).contains("dying"),
        "{}",
        first_error(&result)
    );
    let result = run(one_task("command", json!({"args": ["x"]}), json!({}))).await;
    assert_eq!(
        first_error(&result),
        "command needs `argv`, a list: program and arguments"
    );
}

#[tokio::test]
async fn command_is_killed_at_its_timeout() {
    // A distinctive duration, so the check below finds only this test's child.
    let started = Instant::now();
    let result = run(one_task(
        "command",
        json!({"argv": ["sleep", "31.4159"]}),
        json!({"timeout_ms": 200}),
    ))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the child was not abandoned: {:?}",
        started.elapsed()
    );
    assert_eq!(first_error(&result), "timed out after 200 ms");
    assert!(
        gone("sleep 31.4159").await,
        "the timed-out child process is still running"
    );
}

/// Whether no process whose command line contains `pattern` is left, within 5 s.
async fn gone(pattern: &str) -> bool {
    for _ in 0..50 {
        let found = std::process::Command::new("pgrep")
            .args(["-f", pattern])
            .output()
            .unwrap();
        if found.stdout.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn command_ends_when_its_child_exits_and_takes_what_it_started_with_it() {
    // The background `sleep` holds stdout open: waiting for the pipe to close would wait until
    // the timeout, and the `sleep` would outlive the attempt.
    let started = Instant::now();
    let result = run(one_task(
        "command",
        json!({"argv": ["sh", "-c", "sleep 27.1828 & echo '{\"ok\": 1}'"]}),
        json!({"timeout_ms": 20_000}),
    ))
    .await;
    assert_eq!(result["status"], "completed", "{}", first_error(&result));
    assert_eq!(result["context"]["t"], json!({"ok": 1}));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        gone("sleep 27.1828").await,
        "the background process outlived its attempt"
    );
}

#[tokio::test]
async fn a_timed_out_command_takes_its_whole_process_group_with_it() {
    let result = run(one_task(
        "command",
        json!({"argv": ["sh", "-c", "sleep 29.971 & sleep 29.972"]}),
        json!({"timeout_ms": 200}),
    ))
    .await;
    assert_eq!(first_error(&result), "timed out after 200 ms");
    assert!(
        gone("sleep 29.97").await,
        "a process of the group is still running"
    );
}

#[tokio::test]
async fn command_output_that_is_empty_or_too_large_is_an_error() {
    let result = run(one_task("command", json!({"argv": ["true"]}), json!({}))).await;
    assert_eq!(
        first_error(&result),
        "`true` printed nothing on stdout; its result is the JSON it prints"
    );
    // 40 MiB of output: read and discarded past the limit, never held whole.
    let script = "import sys\nfor _ in range(40): sys.stdout.write(' ' * (1 << 20))";
    let result = run(one_task(
        "command",
        json!({"argv": ["python3", "-c", script]}),
        json!({"timeout_ms": 30_000}),
    ))
    .await;
    assert_eq!(
        first_error(&result),
        "`python3` printed more than 32 MiB on stdout, the most a result may be"
    );
    assert_eq!(
        result["groups"]["g"]["tasks"]["t"]["failures"][0]["permanent"],
        true
    );
}

/// Serves one fixed HTTP response per connection on a local port; returns its base URL.
async fn http_server(status: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn http_get_fetches_json_and_reports_bad_statuses() {
    let url = http_server("200 OK", r#"{"users": 3}"#).await;
    let result = run(one_task(
        "http_get",
        json!({"url": format!("{url}/users")}),
        json!({}),
    ))
    .await;
    assert_eq!(
        result["context"]["t"],
        json!({"status": 200, "body": {"users": 3}})
    );

    let missing = http_server("404 Not Found", "nope").await;
    let result = run(one_task(
        "http_get",
        json!({"url": missing.clone()}),
        json!({}),
    ))
    .await;
    assert_eq!(
        first_error(&result),
        format!("GET {missing} returned 404 Not Found: nope")
    );

    let result = run(one_task("http_get", json!({"uri": "x"}), json!({}))).await;
    assert_eq!(first_error(&result), "http_get needs a `url` string");
}

#[tokio::test]
async fn emit_event_publishes_its_input() {
    let engine = engine();
    let mut events = engine
        .broker()
        .subscribe(EVENTS_TOPIC, "test")
        .await
        .unwrap();
    let result = run_on(
        &engine,
        &json!({"session_id": "emitting", "groups": [{"id": "g", "tasks": [
            {"id": "t", "executor": "emit_event", "input": {"kind": "done", "n": 1}}
        ]}]}),
    )
    .await;
    assert_eq!(result["status"], "completed");
    let message = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.key, "emitting");
    let event: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        event,
        json!({"key": "emitting/g/t/0/1", "event": {"kind": "done", "n": 1}})
    );
}

#[tokio::test]
async fn malformed_dispatch_messages_are_dead_lettered_and_work_goes_on() {
    let engine = engine();
    let broker = engine.broker();
    let mut dead = broker.subscribe(DEAD_LETTER_TOPIC, "test").await.unwrap();
    broker
        .publish(DISPATCH_TOPIC, "junk", b"{not json".to_vec())
        .await
        .unwrap();
    // The engine's workers consume the junk first, then run a real session.
    let result = run_on(
        &engine,
        &json!({"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "echo", "input": 7}]}]}),
    )
    .await;
    assert_eq!(result["context"]["t"], 7);
    let message = tokio::time::timeout(Duration::from_secs(5), dead.next())
        .await
        .unwrap()
        .unwrap();
    let record: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(record["topic"], DISPATCH_TOPIC);
    assert_eq!(record["payload"], "{not json");
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .starts_with("not a work item"),
        "{record}"
    );
}

#[tokio::test]
async fn the_registry_lists_every_builtin_and_validation_uses_it() {
    let engine = engine();
    assert_eq!(
        engine.rules().executors.unwrap(),
        [
            "command",
            "echo",
            "emit_event",
            "fail",
            "http_get",
            "noop",
            "sleep"
        ]
    );
    let error = engine
        .validate(&one_task("nope", json!(null), json!({})).to_string())
        .unwrap_err();
    assert!(error.to_string().contains("unknown executor `nope` (known: command, echo, emit_event, fail, http_get, noop, sleep, and `agent` for work agents claim)"), "{error}");
}

/// `retry.on` and `retry.never_on` by exit code, kind and message, with real programs: each
/// attempt appends a line to its instance's file, so the files count what really ran.
#[tokio::test]
async fn conditional_retries_by_exit_code_kind_and_message() {
    let dir = std::env::temp_dir().join(format!("agency-conditional-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.to_str().unwrap();
    let retry = |conditions: Value| {
        let mut retry = json!({"max_retries": 2, "retry_delays": [1]});
        retry
            .as_object_mut()
            .unwrap()
            .extend(conditions.as_object().unwrap().clone());
        retry
    };
    let exits = json!({"id": "exits", "executor": "command", "retry": retry(json!({"on": ["exit:1"]})),
    "input": {
        "argv": ["sh", "-c", format!("echo ran >> {log}/exit-$0; echo {{}}; exit $0"), "{{code}}"],
        "codes": [0, 1, 2],
        "expansion_config": {"type": "array", "array_mapping": {"code": "codes"}}
    }});
    let slow = |id: &str, conditions: Value| {
        json!({"id": id, "executor": "command", "timeout_ms": 50, "retry": retry(conditions),
            "input": {"argv": ["sh", "-c", format!("echo ran >> {log}/{id}; sleep 5")]}})
    };
    let message = |id: &str, conditions: Value| {
        json!({"id": id, "executor": "command", "retry": retry(conditions),
            "input": {"argv": ["sh", "-c", format!("echo ran >> {log}/{id}; echo 'quota exceeded' >&2; exit 3")]}})
    };
    let result = run(
        json!({"groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
            exits,
            slow("timeout_retried", json!({"on": ["timeout"]})),
            slow("timeout_never", json!({"never_on": ["timeout"]})),
            message("quota_never", json!({"never_on": [{"message": "(?i)QUOTA"}]})),
            message("quota_on_error", json!({"on": ["error"]})),
            message("exit_any_never", json!({"never_on": ["exit:*"]}))
        ]}]}),
    )
    .await;
    let runs = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    let tasks = &result["groups"]["g"]["tasks"];
    assert_eq!(
        [runs("exit-0"), runs("exit-1"), runs("exit-2")],
        [1, 3, 1],
        "exit 1 is retried twice, exit 2 is not: {tasks:#}"
    );
    assert_eq!(tasks["exits"]["attempts"], 5);
    assert_eq!(tasks["exits"]["failed"], 2);
    for (task, executions) in [
        ("timeout_retried", 3),
        ("timeout_never", 1),
        ("quota_never", 1),
        ("quota_on_error", 3),
        ("exit_any_never", 1),
    ] {
        assert_eq!(runs(task), executions, "{task}: {:#}", tasks[task]);
        assert_eq!(tasks[task]["attempts"], executions, "{task}");
        assert_eq!(tasks[task]["failures"][0]["attempts"], executions, "{task}");
    }
    assert_eq!(
        tasks["quota_never"]["failures"][0]["error"],
        "`sh` exited with code 3: quota exceeded"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
