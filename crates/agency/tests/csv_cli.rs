//! `agency csv` end to end (seed 001): the real binary over a CSV with duplicates and malformed
//! rows, its default blueprint fetching from a local HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// An HTTP server on a free port answering `GET /item/<id>` with 200 and a JSON body, or 500
/// for id 102. Returns its base URL.
fn item_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                // The rest of the head.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = if path.ends_with("/102") {
                    (
                        "500 Internal Server Error",
                        "{\"error\": \"upstream down\"}".to_string(),
                    )
                } else {
                    ("200 OK", format!("{{\"path\": \"{path}\"}}"))
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

fn write_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agency-csv-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Issue #16, seed 001: each row runs fetch_data (HTTP GET, here of the local server),
/// long_delay (5 s) and emit_event (a line on stderr); a duplicate id keeps its latest row; a
/// malformed row is reported with its line and written as Failed; rows run side by side, so the
/// whole file takes about one delay.
#[test]
fn a_csv_of_tasks_runs_each_row_through_the_default_blueprint() {
    let url = item_server();
    let mut input = b"task_id,task_type\n101,first\n102,process_data\n101,latest\nabc,process_data\n103,process_data,extra\n104,process_data\n".to_vec();
    input.extend_from_slice(b"\xff\xfe,process_data\n105,process_data\n");
    let tasks = write_file("tasks.csv", &input);
    let results = tasks.with_file_name("results.csv");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(["csv", "--quiet", "--fetch-url"])
        .arg(format!("{url}/item/{{{{task_id}}}}"))
        .arg(&tasks)
        .arg("-o")
        .arg(&results)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let written = std::fs::read_to_string(&results).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "task_id,final_status,error_info");
    let row = |id: &str| {
        lines
            .iter()
            .find(|line| line.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("no row {id}: {written}"))
            .to_string()
    };
    assert_eq!(row("101"), "101,Completed,");
    assert_eq!(row("104"), "104,Completed,");
    assert_eq!(row("105"), "105,Completed,");
    assert!(
        row("102").starts_with(&format!(
            "102,Failed,\"fetch_data: GET {url}/item/102 returned 500 Internal Server Error"
        )),
        "{written}"
    );
    assert_eq!(row("abc"), "abc,Failed,line 5: task_id `abc` is not a u64");
    assert_eq!(
        row("103"),
        "103,Failed,\"line 6: expected 2 columns (task_id,task_type), found 3\""
    );
    assert!(
        written.contains(",Failed,line 8: not valid UTF-8"),
        "{written}"
    );
    // One row per distinct id and per malformed row; 101 is where it first appeared, with its
    // latest row's outcome (issue 30, finding 11: seed 001's order).
    assert_eq!(lines.len(), 1 + 7, "{written}");
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(&ids[..3], ["101", "102", "abc"]);
    // Malformed rows are said on stderr with their line; each completed row emitted its event,
    // 101 with its latest row's type.
    assert!(
        stderr.contains("tasks.csv: line 5: task_id `abc` is not a u64"),
        "{stderr}"
    );
    assert!(stderr.contains("line 8: not valid UTF-8"), "{stderr}");
    let events: Vec<&str> = stderr.lines().filter(|l| l.starts_with("event ")).collect();
    assert_eq!(events.len(), 3, "{stderr}");
    assert!(
        events
            .iter()
            .any(|e| e.contains("\"task_id\":101") && e.contains("\"task_type\":\"latest\"")),
        "{stderr}"
    );
    // The five-second delays ran side by side.
    assert!(took >= Duration::from_secs(5), "{took:?}");
}

/// A blueprint file chooses steps per task type (`*` for the rest); a failed step fails only its
/// row's later steps; a bad blueprint file is refused with its place.
#[test]
fn a_blueprint_file_picks_the_steps_per_task_type() {
    let tasks = write_file(
        "typed.csv",
        b"task_id,task_type\n1,fine\n2,broken\n3,other\n",
    );
    let blueprint = write_file(
        "blueprint.json",
        br#"{"blueprints": {
            "broken": [{"step": "boom", "executor": "fail", "input": {"permanent": true}},
                       {"step": "after", "executor": "echo", "input": {"id": "{{task_id}}"}}],
            "*": [{"step": "say", "executor": "echo", "input": {"id": "{{task_id}}", "type": "{{task_type}}"}}]}}"#,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(["csv", "--quiet", "--blueprint"])
        .arg(&blueprint)
        .arg(&tasks)
        .output()
        .unwrap();
    let written = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{written}");
    assert_eq!(
        written,
        "task_id,final_status,error_info\n1,Completed,\n2,Failed,boom: failing attempt 1 of instance 0 on purpose\n3,Completed,\n"
    );
    let bad = write_file(
        "bad-blueprint.json",
        br#"{"blueprints": {"*": [{"step": "a", "executor": "echo"}, {"step": "a", "executor": "echo"}]}}"#,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(["csv", "--blueprint"])
        .arg(&bad)
        .arg(&tasks)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("blueprints.*[1].step: `a` comes twice"),
        "{stderr}"
    );
    // Every row completed: exit 0.
    let fine = write_file("fine.csv", b"task_id,task_type\n7,x\n8,x\n");
    let output = Command::new(env!("CARGO_BIN_EXE_agency"))
        .args(["csv", "--quiet", "--blueprint"])
        .arg(&blueprint)
        .arg(&fine)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
}
