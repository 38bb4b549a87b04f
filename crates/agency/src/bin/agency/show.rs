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

/// `--http ADDR`: serves `/metrics` (and with `deployment`, the status page and its API) to
/// whom `access` lets in until `stop`, saying where on stderr (never the tokens).
pub async fn serve_http(
    http: Option<(SocketAddr, agency::http::HttpAccess)>,
    deployment: Option<(Arc<dyn events::Broker>, Arc<dyn events::Store>)>,
    stop: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some((address, access)) = http else {
        return Ok(None);
    };
    let who = if access.open {
        "without a token"
    } else {
        "to requests with a token"
    };
    let page = if deployment.is_some() {
        ", the status page and /api"
    } else {
        ""
    };
    let (bound, served) = agency::http::serve(address, deployment, access, stop)
        .await
        .map_err(|error| anyhow::anyhow!("--http: {error}"))?;
    eprintln!("http: serving /metrics{page} on http://{bound} {who}");
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
/// rate and ETA, and while tasks are still to be planned, that the total will grow.
pub async fn show_progress(progress: Arc<Progress>, unit: &'static str) {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(style(unit));
        let _finish = FinishOnDrop(bar.clone());
        loop {
            bar.set_length(progress.planned.load(Ordering::Relaxed));
            bar.set_position(progress.settled.load(Ordering::Relaxed));
            bar.set_message(to_plan(progress.to_plan.load(Ordering::Relaxed)));
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
            let per_second = done as f64 / elapsed.max(1e-9);
            let eta = if per_second > 0.0 {
                format!("{:.0}s", total.saturating_sub(done) as f64 / per_second)
            } else {
                "?".into()
            };
            eprintln!(
                "progress: {}/{} {unit}, {}, ETA {eta}{}",
                thousands(done),
                thousands(total),
                rate(per_second),
                to_plan(progress.to_plan.load(Ordering::Relaxed))
            );
        }
    }
}

/// `412/s`, `2.5/s`, `0.33/s`: two significant figures below 10 a second, so a slow run
/// does not read `0/s`.
fn rate(per_second: f64) -> String {
    if per_second >= 10.0 || per_second == 0.0 {
        format!("{}/s", thousands(per_second.round() as u64))
    } else if per_second >= 1.0 {
        format!("{per_second:.1}/s")
    } else {
        let decimals = (-per_second.log10().floor()) as usize + 1;
        format!("{per_second:.decimals$}/s")
    }
}

/// What the ETA leaves out: ` (+3 tasks to plan)` while tasks wait to be planned, whose
/// instances the total does not count yet.
fn to_plan(tasks: u64) -> String {
    match tasks {
        0 => String::new(),
        1 => " (+1 task to plan)".to_string(),
        n => format!(" (+{} tasks to plan)", thousands(n)),
    }
}

/// `[00:00:03] ██████░░░ 1,200/4,000 instances, 412/s, ETA 7s (+1 task to plan)`
fn style(unit: &str) -> ProgressStyle {
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit}, {{rate}}, ETA {{eta}}{{msg}}"
    );
    ProgressStyle::with_template(&template)
        .map(|style| {
            style.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", rate(state.per_sec()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rate_is_not_zero_and_unplanned_tasks_are_said() {
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(0.25), "0.25/s");
        assert_eq!(rate(1.0 / 3.0), "0.33/s");
        assert_eq!(rate(0.02), "0.020/s");
        assert_eq!(rate(2.5), "2.5/s");
        assert_eq!(rate(412.4), "412/s");
        assert_eq!(rate(12_345.0), "12,345/s");
        assert_eq!(to_plan(0), "");
        assert_eq!(to_plan(1), " (+1 task to plan)");
        assert_eq!(to_plan(3), " (+3 tasks to plan)");
    }
}
