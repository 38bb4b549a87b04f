//! The control plane against real Kafka and Redis: cancelling a running session (through
//! `agency cancel`, which produces a cancel action, and through the store mark another
//! coordinator would write), what cancelling an unknown or finished session answers, and one
//! run per session id (attach, refuse, `--replace`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{redis_url, unique, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A million naps of 50 ms, 64 at a time per worker: hours of work for two workers; and an
/// exit handler that runs a real program however the naps end.
fn million_naps(id: &str) -> Value {
    let axis: Vec<u32> = (0..1000).collect();
    json!({"session_id": id, "groups": [
        {"id": "g", "tasks": [{"id": "naps", "executor": "sleep", "concurrency": 64, "input": {
            "ms": 50, "rows": axis, "cols": axis,
            "expansion_config": {"type": "matrix", "array_mapping": {"r": "rows", "c": "cols"}}
        }}]},
        {"id": "after", "depends_on": ["g"], "tasks": [{"id": "never", "executor": "echo", "input": 1}]},
        {"id": "cleanup", "on_exit": true, "tasks": [{"id": "tidy", "executor": "command",
            "input": {"argv": ["cat"], "status": "{{context._session.status}}"}}]}
    ]})
}

/// Waits until session `id`'s first task has `count` outcomes recorded.
fn wait_for_outcomes(redis: &mut redis::Connection, id: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while redis::cmd("HLEN")
        .arg(format!("agency:{{{id}}}:outcomes:0:0"))
        .query::<u64>(redis)
        .unwrap()
        < count
    {
        assert!(Instant::now() < deadline, "session {id} never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cancelled result of the million naps: what completed is kept and counted, nothing runs
/// after it, and the dependent group never started.
fn check_cancelled(result: &Value) -> u64 {
    assert_eq!(result["status"], "cancelled", "{result:#}");
    assert_eq!(result["groups"]["g"]["status"], "cancelled");
    assert_eq!(result["groups"]["after"]["status"], "skipped");
    assert_eq!(
        result["groups"]["cleanup"]["status"], "completed",
        "the exit handler ran after the cancel"
    );
    assert_eq!(result["context"]["tidy"], json!({"status": "cancelled"}));
    let task = &result["groups"]["g"]["tasks"]["naps"];
    let succeeded = task["succeeded"].as_u64().unwrap();
    assert!(
        (1..1_000_000).contains(&succeeded),
        "{succeeded} of 1,000,000 completed"
    );
    // Too many to list (over the default inline count): kept in the store by reference.
    assert_eq!(
        task["results_kept"],
        json!({"$results": {"group": "g", "task": "naps", "count": 1_000_000}}),
        "the results of what completed are kept"
    );
    assert!(task.get("results").is_none());
    assert_eq!(
        result["errors"][0], "cancelled before the session finished",
        "{result:#}"
    );
    succeeded
}

/// The workers are free again: a small session submitted after the cancel completes, though
/// the cancelled run left most of its million instances queued.
fn check_workers_free(cluster: &Cluster) {
    let doc = json!({"session_id": unique("after-cancel"), "groups": [{"id": "g", "tasks": [
        {"id": "hello", "executor": "echo", "input": {"hi": 1}}]}]});
    let started = Instant::now();
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!((code, &result["status"]), (0, &json!("completed")));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the next session waited {:?} behind the cancelled one",
        started.elapsed()
    );
}

#[test]
fn agency_cancel_ends_a_million_instance_fan_out_with_what_completed() {
    let cluster = Cluster::start("cancel");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let id = unique("cancel");
    cluster.submit(&million_naps(&id));
    wait_for_outcomes(&mut redis, &id, 2_000);

    let asked = Instant::now();
    let cancelled = cluster
        .command(&["cancel", &id, "--wait", "--timeout", "60"])
        .output()
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(
        cancelled.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let result: Value = serde_json::from_slice(&cancelled.stdout).unwrap();
    let succeeded = check_cancelled(&result);
    assert!(took < Duration::from_secs(30), "the cancel took {took:?}");
    // `agency results` reads what completed: a result for each success counted, `null` for
    // the rest.
    let read = cluster
        .command(&["results", &id, "naps", "--jsonl"])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let lines = String::from_utf8(read.stdout).unwrap();
    assert_eq!(lines.lines().count(), 1_000_000);
    assert_eq!(
        lines.lines().filter(|line| *line != "null").count() as u64,
        succeeded
    );
    let stored: Value = serde_json::from_str(
        &redis::cmd("GET")
            .arg(format!("agency:result:{{{id}}}"))
            .query::<String>(&mut redis)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, result, "the stored result is the cancelled one");
    check_workers_free(&cluster);

    // Cancelling it again, or a session nobody submitted, changes nothing and says why.
    let again = cluster.command(&["cancel", &id]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("has already finished (cancelled); nothing to cancel"),
        "{said}"
    );
    let unknown = cluster
        .command(&["cancel", &unique("nobody")])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("is pending, running or has a result"),
        "{said}"
    );
    let unchanged: String = redis::cmd("GET")
        .arg(format!("agency:result:{{{id}}}"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&unchanged).unwrap(), result);
}

/// A cancel that reaches the session's coordinator through the store, as one taken by another
/// coordinator does: the mark on the session's current run.
#[test]
fn a_cancel_marked_in_the_store_reaches_the_coordinator_running_the_session() {
    let cluster = Cluster::start("store-cancel");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let id = unique("store-cancel");
    cluster.submit(&million_naps(&id));
    wait_for_outcomes(&mut redis, &id, 2_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = runtime.block_on(async {
        let store = events::RedisStore::connect(&redis_url()).await.unwrap();
        events::Runs::request_cancel(&store, &id).await.unwrap()
    });
    assert!(run.is_some(), "the session has a current run");
    let deadline = Instant::now() + Duration::from_secs(30);
    let result: Value = loop {
        let stored: Option<String> = redis::cmd("GET")
            .arg(format!("agency:result:{{{id}}}"))
            .query(&mut redis)
            .unwrap();
        if let Some(stored) = stored {
            break serde_json::from_str(&stored).unwrap();
        }
        assert!(Instant::now() < deadline, "the marked cancel was not seen");
        std::thread::sleep(Duration::from_millis(100));
    };
    check_cancelled(&result);
    assert_eq!(result["run"].as_str(), run.as_deref());
    check_workers_free(&cluster);
}

/// `agency submit` with extra arguments: the exit code, stdout and stderr.
fn submit_file(cluster: &Cluster, doc: &Value, args: &[&str]) -> (i32, String, String) {
    let file = cluster.dir.join(format!("{}.json", unique("session")));
    std::fs::write(&file, doc.to_string()).unwrap();
    let output = cluster
        .command(&["submit"])
        .args(args)
        .arg(&file)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// A session of one task of `naps` naps of 500 ms, 4 at a time, echoing `tag` too.
fn naps(id: &str, naps: u32, tag: &str) -> Value {
    let ns: Vec<u32> = (0..naps).collect();
    json!({"session_id": id, "groups": [
        {"id": "g", "tasks": [{"id": "naps", "executor": "sleep", "concurrency": 4,
            "input": {"ms": 500, "ns": ns, "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}}]},
        {"id": "tag", "depends_on": ["g"], "tasks": [{"id": "tag", "executor": "echo", "input": tag}]}
    ]})
}

/// One run per session id at a time: the same document again attaches to the run under way,
/// another is refused and changes nothing, and `--replace` cancels the run and runs the new
/// document.
#[test]
fn a_session_submitted_again_while_it_runs_attaches_is_refused_or_replaces() {
    let cluster = Cluster::start("again");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_connection().unwrap();
    let id = unique("again");
    let first = naps(&id, 40, "first");
    assert_eq!(cluster.submit(&first), id);
    let document = format!("agency:{{{id}}}:document");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !redis::cmd("EXISTS")
        .arg(&document)
        .query::<bool>(&mut redis)
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the session never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run: String = redis::cmd("HGET")
        .arg(&document)
        .arg("run")
        .query(&mut redis)
        .unwrap();

    // Another document: refused, nothing produced, the run goes on.
    let second = naps(&id, 2, "second");
    let (code, _, said) = submit_file(&cluster, &second, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!(
            "session {id} is running (run {run}) with another document"
        )) && said.contains("--replace"),
        "{said}"
    );

    // The same document: attached; waiting gets that run's result.
    let (code, printed, said) = submit_file(&cluster, &first, &["--wait", "--timeout", "120"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("attached to that run"), "{said}");
    let result: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(result["run"], json!(run), "the run under way answered");
    assert_eq!(result["context"]["tag"], "first");
    assert_eq!(
        result["groups"]["g"]["tasks"]["naps"]["attempts"], 40,
        "ran once"
    );

    // Running again now (the first finished): a new run of the same id.
    let third = naps(&id, 40, "third");
    assert_eq!(cluster.submit(&third), id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current: Option<String> = redis::cmd("HGET")
            .arg(&document)
            .arg("run")
            .query(&mut redis)
            .unwrap();
        if current.is_some_and(|current| current != run) {
            break;
        }
        assert!(Instant::now() < deadline, "the third run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // --replace: that run is cancelled, then the new document runs.
    let (code, printed, said) = submit_file(
        &cluster,
        &second,
        &["--replace", "--wait", "--timeout", "120"],
    );
    assert_eq!(code, 0, "{said}");
    let replaced: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(replaced["status"], "completed");
    assert_eq!(replaced["context"]["tag"], "second");
    assert_eq!(replaced["groups"]["g"]["tasks"]["naps"]["attempts"], 2);
    let log = std::fs::read_to_string(cluster.dir.join("coordinator-0.log")).unwrap();
    assert!(
        log.contains("cancel requested"),
        "the third run was cancelled first"
    );
}

/// A session cancelled while pending (submitted, no coordinator yet) never runs: its result
/// says cancelled once a coordinator takes it, no program of it started, and the same id
/// submitted after the cancel runs (issue 30, finding 2).
#[test]
fn a_pending_session_cancelled_never_runs() {
    let mut cluster = Cluster::start_with("withdrawn", &["worker"]);
    let id = unique("withdrawn");
    let ran = cluster.dir.join("ran");
    let doc = json!({"session_id": id, "groups": [{"id": "g", "tasks": [{"id": "t",
        "executor": "command", "input": {"argv": ["sh", "-c", format!("echo x >> {}; echo 1", ran.display())]}}]}]});
    assert_eq!(cluster.submit(&doc), id);
    let cancelled = cluster.command(&["cancel", &id]).output().unwrap();
    let said = String::from_utf8_lossy(&cancelled.stderr);
    assert!(cancelled.status.success(), "{said}");
    assert!(said.contains("was pending: withdrawn"), "{said}");

    cluster.spawn("coordinator");
    let waited = cluster
        .command(&["watch", &id, "--timeout", "60"])
        .output()
        .unwrap();
    let result: Value = serde_json::from_slice(&waited.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&waited.stderr)));
    assert_eq!(result["status"], "cancelled", "{result:#}");
    assert_eq!(
        result["errors"][0],
        "cancelled before a coordinator took it: nothing ran"
    );
    assert!(!ran.exists(), "the withdrawn session ran");

    // Submitted again after the cancel: it runs.
    let (code, result) = cluster.submit_wait(&doc);
    assert_eq!(
        (code, &result["status"]),
        (0, &json!("completed")),
        "{result:#}"
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "x\n");
}

/// `agency status --json` as a value, and its exit code.
fn status(cluster: &Cluster, id: &str) -> (i32, Value) {
    let output = cluster.command(&["status", id, "--json"]).output().unwrap();
    let shown = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "status printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), shown)
}

/// Whether `text` is an ISO 8601 UTC time as agency writes them.
fn is_time(text: &Value) -> bool {
    text.as_str()
        .is_some_and(|text| text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T')
}

/// A session's live state while it is pending and running: counts that grow, times, rate and
/// ETA; `watch --timeout` giving up on time, `watch` then printing the result; `sessions`
/// listing it with its status.
#[test]
fn status_shows_a_session_pending_then_running_with_growing_counts() {
    let mut cluster = Cluster::start_with("status", &["worker", "worker"]);
    let id = unique("status");
    assert_eq!(cluster.submit(&naps(&id, 40, "counted")), id);

    // No coordinator yet: pending, with when it was submitted.
    let (code, pending) = status(&cluster, &id);
    assert_eq!(code, 0);
    assert_eq!(pending["status"], "pending", "{pending:#}");
    assert!(is_time(&pending["submitted_at"]), "{pending:#}");
    let listed = cluster
        .command(&[
            "sessions", "--json", "--status", "pending", "--limit", "1000",
        ])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&listed.stderr)));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["session_id"] == id),
        "{listed:#}"
    );

    cluster.spawn("coordinator");
    let running = |at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, state) = status(&cluster, &id);
            if state["status"] == "running"
                && state["instances"]["succeeded"].as_u64().unwrap_or(0) >= at_least
            {
                return state;
            }
            assert!(Instant::now() < deadline, "{state:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = running(1);
    let counted = first["instances"]["succeeded"].as_u64().unwrap();
    assert_eq!(first["instances"]["total"], 40, "{first:#}");
    assert_eq!(first["groups"]["g"]["status"], "running");
    assert_eq!(first["groups"]["tag"]["status"], "waiting");
    assert_eq!(first["groups"]["g"]["tasks"]["naps"]["total"], 40);
    assert_eq!(first["submitted_at"], pending["submitted_at"]);
    assert!(
        is_time(&first["started_at"]) && is_time(&first["updated_at"]),
        "{first:#}"
    );
    assert!(first["rate_per_s"].as_f64().unwrap() > 0.0, "{first:#}");
    assert!(first["eta_s"].as_f64().is_some(), "{first:#}");
    let later = running(counted + 8);
    assert!(later["updated_at"].as_str() > first["updated_at"].as_str());
    // As text: the status line, the counts, each group and task.
    let text = cluster.command(&["status", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("session {id}: running (run "))
            && text.contains("  instances: ")
            && text.contains("  group g: running")
            && text.contains("    task naps: ")
            && text.contains("  group tag: waiting"),
        "{text}"
    );

    // watch --timeout gives up on time; the session goes on.
    let asked = Instant::now();
    let watched = cluster
        .command(&["watch", &id, "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(watched.status.code(), Some(124));
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert!(String::from_utf8_lossy(&watched.stderr).contains("no result within 1 s"));
    let watched = cluster.command(&["watch", &id]).output().unwrap();
    assert_eq!(watched.status.code(), Some(0));
    let result: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(status(&cluster, &id), (0, result));

    let listed = cluster
        .command(&["sessions", "--json", "--limit", "1000"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&listed.stderr)));
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["session_id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(row["status"], "completed");
    assert!(is_time(&row["listed_at"]));
}

/// `agency health --json` as a value, and its exit code.
fn health(cluster: &Cluster) -> (i32, Value) {
    let output = cluster.command(&["health", "--json"]).output().unwrap();
    let shown = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "health printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), shown)
}

/// `agency health` is green with a coordinator and two workers, `agency executors` lists what
/// they run, and after one worker is killed with -9 health turns red within the stale time
/// (10 s of silence, heartbeats every 2 s) and names it.
#[test]
fn health_names_a_worker_killed_with_kill_9() {
    let cluster = Cluster::start("health");
    let deadline = Instant::now() + Duration::from_secs(60);
    let green = loop {
        let (code, shown) = health(&cluster);
        if code == 0 && shown["workers"].as_array().map_or(0, Vec::len) == 2 {
            break shown;
        }
        assert!(Instant::now() < deadline, "never healthy: {shown:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(green["healthy"], true);
    assert_eq!(green["coordinators"].as_array().unwrap().len(), 1);
    assert!(green["kafka"]["ok"] == true && green["redis"]["ok"] == true);

    let listed = cluster.command(&["executors", "--json"]).output().unwrap();
    assert_eq!(listed.status.code(), Some(0));
    let executors: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let sleep = executors
        .as_array()
        .unwrap()
        .iter()
        .find(|executor| executor["name"] == "sleep")
        .cloned()
        .unwrap();
    assert!(sleep["description"].as_str().unwrap().contains("sleeps"));

    let mut cluster = cluster;
    let killed = cluster.processes[1].id();
    cluster.processes[1].kill().unwrap();
    let _ = cluster.processes[1].wait();
    let killed_at = Instant::now();
    let red = loop {
        let (code, shown) = health(&cluster);
        if code == 1 {
            break shown;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "still healthy 30 s after the kill: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_secs(8),
        "red after {took:?}, before the stale time"
    );
    let stale = red["stale"].as_array().unwrap();
    assert_eq!(stale.len(), 1, "{red:#}");
    assert_eq!(stale[0]["pid"], killed);
    let id = stale[0]["id"].as_str().unwrap();
    assert!(
        red["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|problem| problem.as_str().unwrap().contains(id)),
        "{red:#}"
    );
    let text = cluster.command(&["health"]).output().unwrap();
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("stale: worker {id}")));
}

/// `agency submit --task` and `--workflow [--sequential]`: seed 004's shapes from the command
/// line; a bad `--input` is refused naming it.
#[test]
fn submit_shorthands_run_one_task_and_workflows() {
    let cluster = Cluster::start("shorthand");
    let run = |args: &[&str]| {
        let output = cluster
            .command(&["submit", "--wait", "--timeout", "120"])
            .args(args)
            .output()
            .unwrap();
        let result: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), result)
    };
    let (code, result) = run(&["--task", "echo", "--input", r#"{"hello": "world"}"#]);
    assert_eq!(code, Some(0), "{result:#}");
    assert_eq!(result["context"]["task"], json!({"hello": "world"}));

    let steps = cluster.dir.join("steps.json");
    std::fs::write(
        &steps,
        json!([
            {"executor": "echo", "input": {"n": 1}},
            {"executor": "echo", "input": {"before": "{{context.step1.n}}"}}
        ])
        .to_string(),
    )
    .unwrap();
    let steps = steps.to_str().unwrap();
    let (code, result) = run(&["--workflow", steps, "--sequential"]);
    assert_eq!(code, Some(0), "{result:#}");
    assert_eq!(result["context"]["step2"], json!({"before": 1}));
    // In parallel, step2 would read what no task before it writes: refused before submitting.
    let parallel = cluster
        .command(&["submit", "--workflow", steps])
        .output()
        .unwrap();
    assert_eq!(parallel.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&parallel.stderr).contains("step1"),
        "{}",
        String::from_utf8_lossy(&parallel.stderr)
    );

    let bad = cluster
        .command(&["submit", "--task", "echo", "--input", "{nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--input is not JSON"));
}
