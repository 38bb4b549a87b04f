//! One-shot commands against servers that do not answer fail within seconds, naming the
//! address (issue 30, finding 5: they took 72 s); long-running servers wait longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Nothing listens on port 1 of the loopback.
const NOWHERE_KAFKA: &str = "127.0.0.1:1";
const NOWHERE_REDIS: &str = "redis://127.0.0.1:1";

#[test]
fn one_shot_commands_give_up_on_an_unreachable_server_within_seconds() {
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", "s"],
        vec!["cancel", "s"],
        vec!["tasks", "summary", "--workflow", "w"],
        vec!["agent", "claim", "--agent", "a", "--types", "t"],
        vec!["results", "s", "t"],
        vec!["sessions"],
        vec!["health"],
    ];
    let runs: Vec<_> = commands
        .into_iter()
        .map(|args| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let output = Command::new(env!("CARGO_BIN_EXE_agency"))
                    .args(&args)
                    .env("AGENCY_KAFKA", NOWHERE_KAFKA)
                    .env("AGENCY_REDIS", NOWHERE_REDIS)
                    .env_remove("AGENCY_REDIS_CLUSTER")
                    .output()
                    .unwrap();
                (args, output, started.elapsed())
            })
        })
        .collect();
    for run in runs {
        let (args, output, took) = run.join().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        let said = stderr.lines().last().unwrap_or_default();
        assert!(
            said.starts_with("error: cannot reach ")
                && said.contains("127.0.0.1:1 (tried for 5 s)"),
            "{args:?} said: {said}"
        );
        // Five seconds of trying, not a minute: well under this bound however loaded the
        // machine is.
        assert!(took < Duration::from_secs(40), "{args:?} took {took:?}");
    }
}
