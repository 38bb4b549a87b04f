//! Durable embedded runs, end to end with the real binary and real programs: `agency run
//! --state` killed with -9 in the middle resumes, runs no recorded instance again, and ends with
//! the result an uninterrupted run gives; run again, it prints that result and runs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::without_times;
use events::prelude::*;
use events::{FileStore, TaskRef};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTANCES: u64 = 600;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("agency-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each instance appends its number to `log` (so the log counts executions), naps 20 ms and
/// returns its number; a dependent group reads them all.
fn session(log: &Path) -> Value {
    json!({"session_id": "durable", "groups": [
        {"id": "g", "tasks": [{"id": "runs", "executor": "command", "concurrency": 8, "input": {
            "argv": ["sh", "-c", format!("echo $0 >> {}; sleep 0.02; echo \"{{\\\"n\\\": $0}}\"", log.display()), "{{n}}"],
            "expansion_config": {"type": "range", "range": format!("0-{}", INSTANCES - 1), "variable": "n"}
        }}]},
        {"id": "after", "depends_on": ["g"], "tasks": [
            {"id": "total", "executor": "echo", "input": {"all": "{{context.runs}}"}}
        ]}
    ]})
}

fn agency(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agency"));
    command.args(args);
    command
}

fn run_to_the_end(file: &Path, state: &Path) -> Output {
    agency(&["run", "--checkpoint-ms", "20"])
        .arg(file)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

/// `agency status --state PATH`, as JSON or text.
fn status_of(state: &Path, json: bool) -> Output {
    let mut status = agency(&["status", "--state"]);
    status.arg(state);
    if json {
        status.arg("--json");
    }
    status.output().unwrap()
}

fn executions(log: &Path) -> HashMap<u64, u32> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    counts
}

fn result_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_with_kill_9_resumes_and_runs_no_recorded_instance_again() {
    let dir = Dir::new("kill");
    let (file, state, log) = (dir.path("s.json"), dir.path("state.db"), dir.path("log"));
    std::fs::write(&file, session(&log).to_string()).unwrap();

    // What an uninterrupted run gives, for comparison (its own log).
    let plain_log = dir.path("plain-log");
    let plain_file = dir.path("plain.json");
    std::fs::write(&plain_file, session(&plain_log).to_string()).unwrap();
    let plain = result_of(
        &agency(&["run", "--quiet"])
            .arg(&plain_file)
            .output()
            .unwrap(),
    );

    let mut child = agency(&["run", "--quiet", "--checkpoint-ms", "20"])
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while executions(&log).len() < (INSTANCES / 4) as usize {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    // While the run holds the file, its status is its own.
    let live = result_of(&status_of(&state, true));
    assert_eq!(live["status"], "running", "{live:#}");
    assert_eq!(live.get("held"), None, "{live:#}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed, the file still says running: status says no process holds it, and how to go on
    // (issue 30, finding 6).
    let stopped = result_of(&status_of(&state, true));
    assert_eq!(
        (&stopped["status"], &stopped["held"]),
        (&json!("running"), &json!(false)),
        "{stopped:#}"
    );
    assert_eq!(stopped.get("eta_s"), None, "{stopped:#}");
    assert!(
        stopped["resume"]
            .as_str()
            .unwrap()
            .starts_with("agency run SESSION_FILE --state "),
        "{stopped:#}"
    );
    let said = String::from_utf8(status_of(&state, false).stdout).unwrap();
    assert!(said.contains("no process holds this run"), "{said}");
    assert!(!said.contains("ETA"), "{said}");
    // The programs it had started finish on their own (they outlive it), then nothing moves.
    std::thread::sleep(Duration::from_millis(500));
    let before = executions(&log);
    assert!(
        before.len() < INSTANCES as usize,
        "killed before the end: {} ran",
        before.len()
    );

    // What the state file recorded before the resume: none of these may run again.
    let recorded: Vec<u64> = {
        let snapshot = FileStore::open_read_only(&state).unwrap();
        let outcomes = snapshot
            .outcomes("durable", TaskRef { group: 0, task: 0 }, 0..INSTANCES)
            .await
            .unwrap();
        outcomes.iter().flatten().map(|o| o.instance).collect()
    };
    assert!(!recorded.is_empty(), "nothing was recorded before the kill");

    // The state file belongs to this document: another one is refused, and nothing runs.
    let other = dir.path("other.json");
    let mut changed = session(&log);
    changed["groups"][1]["tasks"][0]["input"]["extra"] = json!(1);
    std::fs::write(&other, changed.to_string()).unwrap();
    let refused = agency(&["run"])
        .arg(&other)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("holds an unfinished run of session durable from another document"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let resumed = run_to_the_end(&file, &state);
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("resuming run"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let result = result_of(&resumed);
    let after = executions(&log);
    for instance in 0..INSTANCES {
        assert!(
            after.contains_key(&instance),
            "instance {instance} never ran"
        );
    }
    for instance in &recorded {
        assert_eq!(
            after[instance], 1,
            "instance {instance} was recorded before the kill and ran again"
        );
    }
    let again: u32 = after.values().map(|&n| n - 1).sum();
    eprintln!(
        "{} of {INSTANCES} recorded before the kill; {} ran before it; {again} ran twice (in flight or recorded after the last checkpoint)",
        recorded.len(),
        before.len()
    );
    assert_eq!(
        without_times(result.clone()),
        without_times(plain),
        "the same result as an uninterrupted run"
    );

    // Run again: the result, nothing executed.
    let finished = run_to_the_end(&file, &state);
    assert!(String::from_utf8_lossy(&finished.stderr).contains("already finished"));
    assert_eq!(result_of(&finished), result);
    assert_eq!(executions(&log), after, "nothing ran");

    // `agency status --state` reads the file.
    let status = agency(&["status", "--json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(result_of(&status), result);
}

/// Twenty instances memoized by `n-{{n}}`; instance 7 fails (and is never memoized). Each
/// execution appends its number to `log`.
fn memoized(id: &str, log: &Path) -> Value {
    json!({"session_id": id, "groups": [{"id": "g", "failure_policy": "all_settled", "tasks": [
        {"id": "squares", "executor": "command", "memoize": {"key": "n-{{n}}", "ttl_s": 3600},
         "input": {
            "argv": ["sh", "-c", format!("echo $0 >> {}; [ $0 = 7 ] && exit 1; echo $(($0 * $0))", log.display()), "{{n}}"],
            "expansion_config": {"type": "range", "range": "0-19", "variable": "n"}
        }}
    ]}]})
}

fn run_file(dir: &Dir, doc: &Value, state: &Path) -> Value {
    let file = dir.path(&format!("{}.json", doc["session_id"].as_str().unwrap()));
    std::fs::write(&file, doc.to_string()).unwrap();
    let output = agency(&["run", "--quiet"])
        .arg(&file)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn memoized_instances_run_once_across_sessions_and_failures_are_never_memoized() {
    let dir = Dir::new("memo");
    let (state, log) = (dir.path("state.db"), dir.path("log"));
    let first = run_file(&dir, &memoized("first", &log), &state);
    let task = &first["groups"]["g"]["tasks"]["squares"];
    assert_eq!(
        (task["succeeded"].clone(), task["failed"].clone()),
        (json!(19), json!(1))
    );
    assert_eq!(task.get("cached"), None, "nothing was memoized before");
    assert_eq!(executions(&log).len(), 20);

    // Another session, the same keys: only the failed instance runs again.
    let second = run_file(&dir, &memoized("second", &log), &state);
    let task = &second["groups"]["g"]["tasks"]["squares"];
    assert_eq!(task["cached"], 19, "{task:#}");
    assert_eq!(task["succeeded"], 19);
    // Counted apart: only instance 7 was attempted (issue 30, finding 8).
    assert_eq!(task["attempts"], 1, "{task:#}");
    assert_eq!(second["context"]["squares"], first["context"]["squares"]);
    assert_eq!(second["context"]["squares"][12], 144);
    let counts = executions(&log);
    assert_eq!(counts[&7], 2, "a failure is never memoized");
    assert!(
        counts.iter().all(|(&n, &runs)| n == 7 || runs == 1),
        "{counts:?}"
    );

    // Clearing by prefix: n-1 and n-10..n-19 go, and run again in the next session.
    let cleared = agency(&["cache", "clear", "--prefix", "n-1", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        cleared.status.success(),
        "{}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    assert!(
        String::from_utf8_lossy(&cleared.stdout)
            .starts_with("removed 11 memoized results with keys starting \"n-1\""),
        "{}",
        String::from_utf8_lossy(&cleared.stdout)
    );
    let third = run_file(&dir, &memoized("third", &log), &state);
    assert_eq!(third["groups"]["g"]["tasks"]["squares"]["cached"], 8);
    let counts = executions(&log);
    for n in 0..20u64 {
        let expected = match n {
            7 => 3,
            1 | 10..=19 => 2,
            _ => 1,
        };
        assert_eq!(counts[&n], expected, "instance {n}: {counts:?}");
    }
}

/// Twenty instances; those with `n % 5 == 0` fail until `flag` exists. A dependent group sums
/// them. Each execution appends its number to `log`.
fn flaky(log: &Path, flag: &Path) -> Value {
    let script = format!(
        "echo $0 >> {log}; if [ $(($0 % 5)) = 0 ] && [ ! -f {flag} ]; then exit 3; fi; echo $0",
        log = log.display(),
        flag = flag.display()
    );
    json!({"session_id": "flaky", "groups": [
        {"id": "g", "failure_policy": "all_settled", "tasks": [{"id": "items", "executor": "command",
            "input": {"argv": ["sh", "-c", script, "{{n}}"],
                      "expansion_config": {"type": "range", "range": "0-19", "variable": "n"}}}]},
        {"id": "after", "depends_on": ["g"], "tasks": [
            {"id": "all", "executor": "echo", "input": {"items": "{{context.items}}"}}
        ]},
        {"id": "cleanup", "on_exit": true, "tasks": [{"id": "tidy", "executor": "command",
            "input": {"argv": ["sh", "-c", format!("echo 99 >> {}.exit; echo '{{}}'", log.display())]}}]}
    ]})
}

#[test]
fn retry_failed_reruns_only_what_failed_and_completes() {
    let dir = Dir::new("rerun");
    let (state, log, flag) = (dir.path("state.db"), dir.path("log"), dir.path("flag"));
    let doc = flaky(&log, &flag);
    let file = dir.path("flaky.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let run = |extra: &[&str]| {
        agency(&["run", "--quiet"])
            .arg(&file)
            .arg("--state")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert_eq!(first.status.code(), Some(1));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["status"], "partial");
    assert_eq!(first["groups"]["g"]["tasks"]["items"]["failed"], 4);
    assert_eq!(first["groups"]["after"]["status"], "skipped");
    assert_eq!(executions(&log).len(), 20);

    std::fs::write(&flag, "").unwrap();
    let rerun = run(&["--retry-failed"]);
    assert!(
        String::from_utf8_lossy(&rerun.stderr).is_empty(),
        "quiet: {}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let rerun = result_of(&rerun);
    assert_eq!(rerun["status"], "completed", "{rerun:#}");
    assert_eq!(rerun["reused"], 16);
    let counts = executions(&log);
    for n in 0..20u64 {
        let expected = if n % 5 == 0 { 2 } else { 1 };
        assert_eq!(counts[&n], expected, "instance {n}: {counts:?}");
    }
    assert_eq!(
        rerun["context"]["all"]["items"],
        json!((0..20).collect::<Vec<u64>>()),
        "the context is recomputed from every success, reused or new"
    );
    let exit_log = PathBuf::from(format!("{}.exit", log.display()));
    assert_eq!(
        executions(&exit_log)[&99],
        2,
        "the exit handler ran at the end of each run, not reused"
    );
    assert_eq!(rerun["context"]["_session"]["status"], "completed");

    // Completed now: run again, with or without the flag, nothing runs.
    let again = result_of(&run(&["--retry-failed"]));
    assert_eq!(again, rerun);
    assert_eq!(executions(&log), counts);
}
