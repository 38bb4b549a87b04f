//! What the command line shows: JSON on stdout, progress on stderr, where it serves HTTP.

use crate::text::thousands;
use agency::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `--http ADDR`: serves `/metrics` (and with `deployment`, the status page and its API) until
/// `stop`, saying where on stderr.
pub async fn serve_http(
    address: Option<SocketAddr>,
    deployment: Option<(Arc<dyn events::Broker>, Arc<dyn events::Store>)>,
    stop: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(address) = address else {
        return Ok(None);
    };
    let page = if deployment.is_some() {
        ", the status page and /api"
    } else {
        ""
    };
    let (bound, served) = agency::http::serve(address, deployment, stop)
        .await
        .map_err(|error| anyhow::anyhow!("--http: {error}"))?;
    eprintln!("http: serving /metrics{page} on http://{bound}");
    Ok(Some(served))
}

/// Pretty on a terminal, one compact line for pipes and files. A reader that closed the pipe
/// early (`| head`) is not an error.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let text = if stdout.is_terminal() {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    let mut out = stdout.lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A bar on a terminal; elsewhere a plain line every few seconds. Both show done/total `unit`,
/// rate and ETA.
pub async fn show_progress(progress: Arc<Progress>, unit: &'static str) {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(style(unit));
        let _finish = FinishOnDrop(bar.clone());
        loop {
            bar.set_length(progress.planned.load(Ordering::Relaxed));
            bar.set_position(progress.settled.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (done, total) = (
                progress.settled.load(Ordering::Relaxed),
                progress.planned.load(Ordering::Relaxed),
            );
            let elapsed = started.elapsed().as_secs_f64();
            let rate = done as f64 / elapsed.max(1e-9);
            let eta = if rate > 0.0 {
                format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
            } else {
                "?".into()
            };
            eprintln!(
                "progress: {}/{} {unit}, {}/s, ETA {eta}",
                thousands(done),
                thousands(total),
                thousands(rate as u64)
            );
        }
    }
}

/// `[00:00:03] ██████░░░ 1,200/4,000 instances, 412/s, ETA 7s`
fn style(unit: &str) -> ProgressStyle {
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit}, {{rate}}, ETA {{eta}}"
    );
    ProgressStyle::with_template(&template)
        .map(|style| {
            style.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/s", thousands(state.per_sec() as u64));
                },
            )
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Clears the bar when the display task is aborted.
struct FinishOnDrop(ProgressBar);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
