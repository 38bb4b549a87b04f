//! `command`: runs a program as an argv list, never through a shell. The instance's input
//! (without `argv`) goes to its stdin as JSON; its stdout must be JSON (empty means `null`) and
//! is the result. A non-zero exit is an error carrying the end of stderr. The idempotency key is
//! in `AGENCY_IDEMPOTENCY_KEY` (and `AGENCY_SESSION`, `AGENCY_TASK`, `AGENCY_INSTANCE`,
//! `AGENCY_ATTEMPT`). The child is killed when the attempt is cancelled or times out.
//!
//! `{"argv": ["python3", "agent.py", "--user", "{{user.id}}"], "user": {...}}`

use super::{Call, ExecError, Executor};
use async_trait::async_trait;
use serde_json::Value;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// Runs a program per instance: see the module docs for argv, stdin and stdout.
#[derive(Debug, Clone, Copy)]
pub struct Command;

/// How much of stderr an error message carries.
const STDERR_TAIL: usize = 500;

#[async_trait]
impl Executor for Command {
    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        let mut input = call.input;
        let argv: Vec<String> = match input.as_object_mut().and_then(|o| o.shift_remove("argv")) {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<_, ExecError>>()?,
            Some(other) => {
                return Err(ExecError::permanent(format!(
                    "`argv` must be a list of strings, found {other}"
                )))
            }
            None => {
                return Err(ExecError::permanent(
                    "command needs `argv`, a list: program and arguments",
                ))
            }
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| ExecError::permanent("`argv` is empty"))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("AGENCY_IDEMPOTENCY_KEY", call.key.to_string())
            .env("AGENCY_SESSION", &*call.key.session)
            .env("AGENCY_TASK", &*call.key.task)
            .env("AGENCY_INSTANCE", call.key.instance.to_string())
            .env("AGENCY_ATTEMPT", call.key.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let message = format!("cannot start `{program}`: {e}");
                match e.kind() {
                    // No retry will find or be allowed to run it.
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        ExecError::Permanent(message)
                    }
                    _ => ExecError::Transient(message),
                }
            })?;
        let stdin = serde_json::to_vec(&input).map_err(|e| ExecError::permanent(e.to_string()))?;
        let writer = child.stdin.take();
        // Stdin is written while stdout and stderr are read: a child that prints more than a
        // pipe holds before it reads its input would otherwise wait on us as we wait on it.
        let feed = async move {
            if let Some(mut pipe) = writer {
                // A program that does not read stdin closes it early; that is not its failure.
                let _ = pipe.write_all(&stdin).await;
                // Dropping the pipe closes it: the child sees the end of its input.
            }
        };
        let run = async {
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let output = tokio::select! {
            output = run => output.map_err(|e| ExecError::Transient(format!("`{program}`: {e}")))?,
            // Dropping the child future kills the process (kill_on_drop).
            () = call.cancel.cancelled() => return Err("cancelled".into()),
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(STDERR_TAIL)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(ExecError::Transient(format!(
                "`{program}` exited with {}: {}",
                output.status,
                tail.trim()
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(stdout.trim()).map_err(|e| {
            let excerpt: String = stdout.chars().take(200).collect();
            ExecError::Transient(format!(
                "`{program}` printed something that is not JSON ({e}): {excerpt}"
            ))
        })
    }
}
