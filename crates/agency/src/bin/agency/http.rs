//! `--http ADDR`: `/metrics` for every long-running command, and on the coordinator the status
//! page (`/`, `/sessions/{id}`) with the JSON API behind it (`/api/...`, `docs/observability.md`).
//! The page is one HTML file compiled into the binary: it loads nothing from elsewhere.

use agency::client::{self, Status};
use agency::metrics::METRICS;
use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use events::{Broker, Store};
use futures_util::Stream;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The status page.
const PAGE: &str = include_str!("page.html");

/// How many sessions the list shows unless asked (`?limit=`), and at most.
const LIST: usize = 50;
const MOST: usize = 1000;

/// How many failures of each task a finished session's answer shows.
const FAILURES_SHOWN: usize = 20;

/// The address `--http` names: `HOST:PORT`, or a port alone for 127.0.0.1 (never every
/// interface unless told).
pub fn address(text: &str) -> anyhow::Result<SocketAddr> {
    let port = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().with_context(|| {
        format!("--http {text:?}: expected HOST:PORT (e.g. 127.0.0.1:9100) or a port")
    })
}

/// What the status page reads and cancels through.
#[derive(Clone)]
struct Deployment {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
}

/// Binds `address` (failing at once when it cannot) and serves until `stop`: `/metrics`, and
/// with `deployment` (a coordinator's broker and store) the status page and its API.
pub async fn serve(
    address: SocketAddr,
    deployment: Option<(Arc<dyn Broker>, Arc<dyn Store>)>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--http: cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let page = deployment.is_some();
    let router = router(deployment.map(|(broker, store)| Deployment { broker, store }));
    eprintln!(
        "http: serving /metrics{} on http://{bound}",
        if page {
            ", the status page and /api"
        } else {
            ""
        }
    );
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP server stopped");
        }
    }))
}

fn router(deployment: Option<Deployment>) -> Router {
    let metrics = Router::new().route("/metrics", get(metrics));
    let router = match deployment {
        None => metrics,
        Some(deployment) => metrics.merge(
            Router::new()
                .route("/", get(page))
                .route("/sessions/{id}", get(page))
                .route("/api/sessions", get(sessions))
                .route("/api/sessions/events", get(sessions_events))
                .route("/api/sessions/{id}", get(session))
                .route("/api/sessions/{id}/events", get(session_events))
                .route("/api/sessions/{id}/cancel", post(cancel))
                .with_state(deployment),
        ),
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
}

/// An error answer: `{"error": message}` with its status.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// What a handler answers.
type Answer = Result<Response, Refusal>;

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

async fn not_found(uri: axum::http::Uri) -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        format!("no such path: {} (see docs/observability.md)", uri.path()),
    )
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Refusal {
    refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, agency::metrics::CONTENT_TYPE)],
        METRICS.encode(),
    )
        .into_response()
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `?limit=N&status=S` of the sessions list.
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    limit: Option<String>,
    status: Option<String>,
}

/// The statuses a session can be listed with.
const STATUSES: &[&str] = &[
    "pending",
    "running",
    "paused",
    "completed",
    "partial",
    "failed",
    "cancelled",
];

impl ListQuery {
    fn read(self) -> Result<(usize, Option<String>), Refusal> {
        let limit = match self.limit {
            None => LIST,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MOST).contains(&limit) => limit,
                _ => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("limit={text:?}: expected a number from 1 to {MOST}"),
                    ))
                }
            },
        };
        if let Some(status) = &self.status {
            if !STATUSES.contains(&status.as_str()) {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("status={status:?}: expected one of {}", STATUSES.join(", ")),
                ));
            }
        }
        Ok((limit, self.status))
    }
}

/// The recent sessions, newest first: each with its status, counts, rate and ETA.
async fn list(store: &dyn Store, limit: usize, status: Option<&str>) -> Result<Value, Refusal> {
    let listed = client::sessions_read(store, status, limit)
        .await
        .map_err(|error| refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))?;
    let mut rows = Vec::with_capacity(listed.len());
    for (session, found) in listed {
        let mut row = found.as_ref().map_or_else(|| json!({}), summary);
        row["session_id"] = json!(session.session_id);
        row["status"] = json!(session.status);
        row["listed_at"] = json!(session.listed_at);
        rows.push(row);
    }
    Ok(json!({"sessions": rows}))
}

/// What the list shows of one session: its counts, times, rate and ETA.
fn summary(status: &Status) -> Value {
    match status {
        Status::Live(state) => json!({
            "total": state.instances.total,
            "succeeded": state.instances.succeeded,
            "failed": state.instances.failed,
            "retries": state.instances.retries,
            "rate_per_s": state.rate_per_s,
            "eta_s": state.eta_s,
            "started_at": state.started_at,
            "description": state.description,
        }),
        Status::Finished(result) => {
            let tasks = result
                .groups
                .values()
                .flat_map(|group| group.tasks.values());
            let (mut total, mut succeeded, mut failed, mut attempts) = (0, 0, 0, 0);
            for task in tasks {
                total += task.instances;
                succeeded += task.succeeded;
                failed += task.failed;
                attempts += task.attempts;
            }
            let settled: u64 = succeeded + failed;
            json!({
                "total": total,
                "succeeded": succeeded,
                "failed": failed,
                "retries": attempts.saturating_sub(settled),
                "rate_per_s": result.duration_ms.filter(|&ms| ms > 0).map(|ms| settled as f64 * 1000.0 / ms as f64),
                "eta_s": 0,
                "started_at": result.started_at,
                "finished_at": result.finished_at,
                "duration_ms": result.duration_ms,
                "description": result.description,
            })
        }
    }
}

async fn sessions(State(deployment): State<Deployment>, Query(query): Query<ListQuery>) -> Answer {
    let (limit, status) = query.read()?;
    let list = list(deployment.store.as_ref(), limit, status.as_deref()).await?;
    Ok(Json(list).into_response())
}

/// A session id from a path, or the answer saying what is wrong with it.
fn session_id(id: &str) -> Result<&str, Refusal> {
    match taskgroup::session_id_problem(id) {
        None => Ok(id),
        Some(problem) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("session id {id:?}: {problem}"),
        )),
    }
}

/// A session as the page shows it: `{"finished": false, "state": live state}` or
/// `{"finished": true, "result": result}`, the result without its context and its instances'
/// results (which can be millions), with at most [`FAILURES_SHOWN`] failures per task.
async fn describe(store: &dyn Store, id: &str) -> Result<Value, Refusal> {
    match client::status(store, id).await {
        Ok(Status::Live(state)) => Ok(json!({"finished": false, "state": state})),
        Ok(Status::Finished(mut result)) => {
            let context_keys = result.context.len();
            result.context.clear();
            for group in result.groups.values_mut() {
                for task in group.tasks.values_mut() {
                    task.results = None;
                    task.failures.truncate(FAILURES_SHOWN);
                }
            }
            let mut value = json!({"finished": true, "result": result});
            value["result"]["context_keys"] = json!(context_keys);
            Ok(value)
        }
        Err(agency::Error::Action(message)) => Err(refuse(StatusCode::NOT_FOUND, message)),
        Err(error) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
    }
}

async fn session(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    let described = describe(deployment.store.as_ref(), session_id(&id)?).await?;
    Ok(Json(described).into_response())
}

/// How often a stream reads the store when nothing was announced.
const REREAD: Duration = Duration::from_secs(2);
/// The least time between two events of a stream.
const SPACING: Duration = Duration::from_millis(250);

/// An event stream of `read`'s answers: one at once, then one each time the answer changes,
/// looked at when `announced` says something happened (at most every [`SPACING`]) and at
/// least every [`REREAD`]; it ends after an answer `last` says is final.
fn stream<R, Fut, A, AFut>(
    read: R,
    announced: A,
    last: fn(&Value) -> bool,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    R: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<Value>> + Send,
    A: FnMut() -> AFut + Send + 'static,
    AFut: std::future::Future<Output = ()> + Send,
{
    struct Follow<R, A> {
        read: R,
        announced: A,
        sent: Option<Value>,
        done: bool,
        first: bool,
    }
    let follow = Follow {
        read,
        announced,
        sent: None,
        done: false,
        first: true,
    };
    futures_util::stream::unfold(follow, move |mut follow| async move {
        if follow.done {
            return None;
        }
        loop {
            if !follow.first {
                tokio::time::sleep(SPACING).await;
                let _ = tokio::time::timeout(REREAD, (follow.announced)()).await;
            }
            follow.first = false;
            let Some(value) = (follow.read)().await else {
                continue;
            };
            if follow.sent.as_ref() == Some(&value) {
                continue;
            }
            follow.done = last(&value);
            let event = Event::default().event("state").data(value.to_string());
            follow.sent = Some(value);
            return Some((Ok(event), follow));
        }
    })
}

async fn session_events(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    let id = session_id(&id)?.to_string();
    let store = deployment.store.clone();
    // Unknown at the start is a 404; later troubles are skipped (read again next time).
    describe(store.as_ref(), &id).await?;
    let progress = match store.subscribe(&events::progress_channel(&id)).await {
        Ok(progress) => Some(progress),
        Err(error) => {
            tracing::warn!(session = %id, %error, "cannot follow the session's progress; reading it every 2 s");
            None
        }
    };
    let progress = Arc::new(tokio::sync::Mutex::new(progress));
    let (reading, reader) = (id.clone(), store.clone());
    let read = move || {
        let (id, store) = (reading.clone(), reader.clone());
        async move { describe(store.as_ref(), &id).await.ok() }
    };
    let announced = move || {
        let progress = progress.clone();
        async move {
            let mut progress = progress.lock().await;
            match progress.as_mut() {
                Some(subscription) => {
                    if subscription.next().await.is_err() {
                        // Dropped: read every REREAD from now on.
                        *progress = None;
                    }
                }
                None => std::future::pending().await,
            }
        }
    };
    let finished = |value: &Value| value["finished"] == json!(true);
    Ok(Sse::new(stream(read, announced, finished))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn sessions_events(
    State(deployment): State<Deployment>,
    Query(query): Query<ListQuery>,
) -> Answer {
    let (limit, status) = query.read()?;
    let store = deployment.store.clone();
    let read = move || {
        let (store, status) = (store.clone(), status.clone());
        async move { list(store.as_ref(), limit, status.as_deref()).await.ok() }
    };
    // The list has no channel of its own: it is read every second, sent when it changed.
    let tick = || tokio::time::sleep(Duration::from_millis(750));
    Ok(Sse::new(stream(read, tick, |_| false))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn cancel(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    let id = session_id(&id)?;
    let (broker, store) = (deployment.broker.as_ref(), deployment.store.as_ref());
    Err(match client::cancel(broker, store, id).await {
        Ok(client::CancelAnswer::Sent { run }) => {
            let sent = json!({"session_id": id, "cancel": "sent", "run": run});
            return Ok((StatusCode::ACCEPTED, Json(sent)).into_response());
        }
        Ok(client::CancelAnswer::Finished(result)) => refuse(
            StatusCode::CONFLICT,
            format!(
                "session {id} has already finished ({}); nothing to cancel",
                result.status
            ),
        ),
        Ok(client::CancelAnswer::Unknown) => refuse(
            StatusCode::NOT_FOUND,
            format!("no session {id} is running or has a result; nothing to cancel"),
        ),
        Err(error) => refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_binds_loopback_and_a_bad_address_says_what_is_expected() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 9100));
        assert_eq!(address("9100").ok(), Some(loopback));
        assert_eq!(address(":9100").ok(), Some(loopback));
        assert_eq!(
            address("0.0.0.0:9100").ok(),
            Some(SocketAddr::from(([0, 0, 0, 0], 9100)))
        );
        let refused = address("localhost:none").map(|_| ()).unwrap_err();
        assert!(
            refused.to_string().contains("expected HOST:PORT"),
            "{refused}"
        );
    }
}
