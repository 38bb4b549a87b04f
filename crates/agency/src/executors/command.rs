//! `command`: runs a program as an argv list, never through a shell. The instance's input
//! (without `argv`) goes to its stdin as JSON; its stdout must be JSON and is the result (empty
//! stdout is an error; more than 32 MiB is refused). A non-zero exit is an error carrying the
//! end of stderr. The idempotency key is in `AGENCY_IDEMPOTENCY_KEY` (and `AGENCY_SESSION`,
//! `AGENCY_TASK`, `AGENCY_INSTANCE`, `AGENCY_ATTEMPT`).
//!
//! The child runs in a process group of its own. The attempt ends when the child exits, and
//! then, or when the attempt is cancelled or times out, the whole group is killed: nothing it
//! started in the background outlives the attempt or holds its output open.
//!
//! `{"argv": ["python3", "agent.py", "--user", "{{user.id}}"], "user": {...}}`

use super::{Allowed, Call, ExecError, Executor};
use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use taskgroup::{Failure, FailureKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Runs a program per instance: see the module docs for argv, stdin and stdout. Only the
/// programs its [`Allowed`] allows are started; any other fails the attempt for good.
#[derive(Debug, Clone, Default)]
pub struct Command {
    allowed: Arc<Allowed>,
}

impl Command {
    /// A `command` that starts only what `allowed` allows.
    pub fn allowing(allowed: Arc<Allowed>) -> Self {
        Self { allowed }
    }
}

/// How much of stderr an error message carries.
const STDERR_TAIL: usize = 500;

#[async_trait]
impl Executor for Command {
    fn description(&self) -> &str {
        r#"runs {"argv"} directly (no shell), the rest of the input as JSON on stdin; its stdout, parsed as JSON, is the result"#
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        let mut input = call.input;
        let argv = argv(&mut input)?;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| ExecError::permanent("`argv` is empty"))?;
        self.allowed
            .program(program)
            .map_err(ExecError::Permanent)?;
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
            // The child leads a process group of its own, so everything it starts can be ended
            // with it.
            .process_group(0)
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
        // Whatever way this attempt ends (exit, timeout, cancel), the group goes with it.
        let _group = Group(child.id());
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
        let stdout = tokio::spawn(read_pipe(child.stdout.take(), STDOUT_LIMIT, Keep::Head));
        let stderr = tokio::spawn(read_pipe(child.stderr.take(), STDERR_KEEP, Keep::Tail));
        let exited = async {
            let (status, ()) = tokio::join!(child.wait(), feed);
            status
        };
        let status = tokio::select! {
            status = exited => status.map_err(|e| ExecError::Transient(format!("`{program}`: {e}")))?,
            // Dropping the child and the group guard kills every process of the group.
            () = call.cancel.cancelled() => {
                return Err(ExecError::Failed(Failure::new(FailureKind::Cancelled, "cancelled")))
            }
        };
        // The attempt is over when the child exits, not when its pipes close: what it left
        // running in the background (holding them open) is ended now.
        drop(_group);
        let stdout = drained(stdout, program).await?;
        let stderr = drained(stderr, program).await?.bytes;
        if !status.success() {
            return Err(ExecError::Failed(failure(program, status, &stderr)));
        }
        result(program, stdout)
    }
}

/// The program and its arguments: `argv`, taken out of the input (the rest goes on stdin).
fn argv(input: &mut Value) -> Result<Vec<String>, ExecError> {
    match input.as_object_mut().and_then(|o| o.shift_remove("argv")) {
        Some(Value::Array(items)) => Ok(items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()),
        Some(other) => Err(ExecError::permanent(format!(
            "`argv` must be a list of strings, found {other}"
        ))),
        None => Err(ExecError::permanent(
            "command needs `argv`, a list: program and arguments",
        )),
    }
}

/// How a program that did not succeed failed: its exit code or signal, with the end of what it
/// said on stderr.
fn failure(program: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Failure {
    use std::os::unix::process::ExitStatusExt as _;
    let stderr = String::from_utf8_lossy(stderr);
    let tail: String = stderr
        .chars()
        .rev()
        .take(STDERR_TAIL)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let tail = tail.trim();
    match (status.code(), status.signal()) {
        (Some(code), _) => Failure::exit(program, code, tail),
        (None, Some(signal)) => {
            Failure::signal(signal, format!("`{program}` ended by {status}: {tail}"))
        }
        (None, None) => Failure::error(format!("`{program}` ended by {status}: {tail}")),
    }
}

/// A successful program's result: the JSON it printed on stdout.
fn result(program: &str, stdout: Read) -> Result<Value, ExecError> {
    if stdout.overflowed {
        return Err(ExecError::Permanent(format!(
            "`{program}` printed more than {} MiB on stdout, the most a result may be",
            STDOUT_LIMIT >> 20
        )));
    }
    let stdout = String::from_utf8_lossy(&stdout.bytes);
    if stdout.trim().is_empty() {
        return Err(ExecError::Transient(format!(
            "`{program}` printed nothing on stdout; its result is the JSON it prints"
        )));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| {
        let excerpt: String = stdout.chars().take(200).collect();
        ExecError::Transient(format!(
            "`{program}` printed something that is not JSON ({e}): {excerpt}"
        ))
    })
}

/// The most of stdout kept: a result larger than this is refused (results over 64 KiB are
/// stored by reference already; this bounds what one attempt can make a worker hold).
const STDOUT_LIMIT: usize = 32 << 20;

/// How much of the end of stderr is kept, in bytes: more than [`STDERR_TAIL`] characters.
const STDERR_KEEP: usize = 4 * STDERR_TAIL;

/// How long the pipes may stay open after the child exited and its group was killed (a process
/// that left the group can hold them).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// The process group of a child, killed when this is dropped.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(leader) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // The group is the child's own (`process_group(0)`), so nothing outside it is
            // signalled; a group already gone gives ESRCH, which is the goal anyway.
            let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
        }
    }
}

/// What was read from a pipe.
struct Read {
    bytes: Vec<u8>,
    /// More than the limit came; `bytes` holds the part kept and the rest was discarded.
    overflowed: bool,
}

/// Which part of a pipe's output [`read_pipe`] keeps when there is more than its limit.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The first bytes (stdout: the result is refused whole when it is too large).
    Head,
    /// The last bytes (stderr: the end says why a program failed).
    Tail,
}

/// Reads `pipe` to its end, keeping at most `limit` bytes of it, the first or the last. The
/// rest is read and discarded, so the child never blocks on a full pipe.
async fn read_pipe(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
    keep: Keep,
) -> std::io::Result<Read> {
    let mut read = Read {
        bytes: Vec::new(),
        overflowed: false,
    };
    let Some(mut pipe) = pipe else {
        return Ok(read);
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(read);
        }
        match keep {
            Keep::Head => {
                let room = limit.saturating_sub(read.bytes.len());
                read.bytes.extend_from_slice(&chunk[..n.min(room)]);
                read.overflowed |= n > room;
            }
            Keep::Tail => {
                read.bytes.extend_from_slice(&chunk[..n]);
                let excess = read.bytes.len().saturating_sub(limit);
                read.bytes.drain(..excess);
                read.overflowed |= excess > 0;
            }
        }
    }
}

/// What a pipe reader got, once the pipe closed (at most [`PIPE_GRACE`] after the child's
/// group was killed).
async fn drained(
    reader: tokio::task::JoinHandle<std::io::Result<Read>>,
    program: &str,
) -> Result<Read, ExecError> {
    let abort = reader.abort_handle();
    match tokio::time::timeout(PIPE_GRACE, reader).await {
        Ok(Ok(Ok(read))) => Ok(read),
        Ok(Ok(Err(e))) => Err(ExecError::Transient(format!(
            "reading the output of `{program}`: {e}"
        ))),
        Ok(Err(e)) => Err(ExecError::Transient(format!(
            "reading the output of `{program}`: {e}"
        ))),
        Err(_) => {
            abort.abort();
            Err(ExecError::Transient(format!(
                "`{program}` exited, but a process it started outside its group still holds its output open"
            )))
        }
    }
}
