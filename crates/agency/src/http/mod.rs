//! `--http ADDR`: `/metrics` for every long-running command, and on the coordinator the status
//! page (`/`, `/sessions/{id}`) with the JSON API behind it (`/api/...`, `docs/observability.md`).
//! The page is one HTML file compiled into the binary: it loads nothing from elsewhere. Every
//! request needs a token unless the server is open on purpose ([`HttpAccess`]).
//!
//! ```no_run
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(async {
//! let stop = tokio_util::sync::CancellationToken::new();
//! // `/metrics` alone; with `Some((broker, store))`, the status page and its API too.
//! let address = agency::http::address("9100")?;
//! let access = agency::http::HttpAccess::open();
//! let (bound, served) = agency::http::serve(address, None, access, stop.clone()).await?;
//! println!("serving on http://{bound}");
//! stop.cancel();
//! served.await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # });
//! ```

mod access;

pub use access::HttpAccess;

use crate::client::{self, SessionStatus, Status};
use crate::metrics::METRICS;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use events::{Broker, Store};
use futures_util::StreamExt as _;
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

/// An `--http` address that is not one.
#[derive(Debug, thiserror::Error)]
#[error("--http {text:?}: expected HOST:PORT (e.g. 127.0.0.1:9100) or a port")]
pub struct BadAddress {
    /// What was given.
    pub text: String,
}

/// An address that cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct CannotListen {
    /// The address.
    pub address: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// The address `--http` names: `HOST:PORT`, or a port alone for 127.0.0.1 (never every
/// interface unless told).
pub fn address(text: &str) -> Result<SocketAddr, BadAddress> {
    let port = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| BadAddress {
        text: text.to_string(),
    })
}

/// What the status page reads and cancels through.
#[derive(Clone)]
struct Deployment {
    broker: Arc<dyn Broker>,
    store: Arc<dyn Store>,
}

/// Binds `address` (failing at once when it cannot) and serves until `stop`: `/metrics`, and
/// with `deployment` (a coordinator's broker and store) the status page and its API, to
/// requests whose token `access` accepts. Returns the address bound (a port 0 is chosen then)
/// and the server's task.
pub async fn serve(
    address: SocketAddr,
    deployment: Option<(Arc<dyn Broker>, Arc<dyn Store>)>,
    access: HttpAccess,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), CannotListen> {
    let cannot = |source| CannotListen { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(cannot)?;
    let bound = listener.local_addr().map_err(cannot)?;
    let router = router(deployment.map(|(broker, store)| Deployment { broker, store }))
        .layer(axum::middleware::from_fn_with_state(access, access::guard));
    Ok((
        bound,
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the HTTP server stopped");
            }
        }),
    ))
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
                .route("/api/sessions/{id}/pause", post(pause))
                .route("/api/sessions/{id}/resume", post(resume))
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
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
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

impl ListQuery {
    fn read(self) -> Result<(usize, Option<SessionStatus>), Refusal> {
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
        let status = match self.status {
            None => None,
            Some(text) => match text.parse::<SessionStatus>() {
                Ok(status) if status.is_known() => Some(status),
                _ => {
                    let known = SessionStatus::ALL.into_iter().filter(|s| s.is_known());
                    let known: Vec<&str> = known.map(SessionStatus::as_str).collect();
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("status={text:?}: expected one of {}", known.join(", ")),
                    ));
                }
            },
        };
        Ok((limit, status))
    }
}

/// The recent sessions, newest first: each with its status, counts, rate and ETA.
async fn list(
    store: &dyn Store,
    limit: usize,
    status: Option<SessionStatus>,
) -> Result<Value, Refusal> {
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
    let list = list(deployment.store.as_ref(), limit, status).await?;
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

/// A session as the page shows it (an unknown one is a 404).
async fn describe(store: &dyn Store, id: &str) -> Result<Value, Refusal> {
    match client::status(store, id).await {
        Ok(status) => Ok(shown(status)),
        Err(error @ crate::Error::UnknownSession { .. }) => {
            Err(refuse(StatusCode::NOT_FOUND, error.to_string()))
        }
        Err(error) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
    }
}

/// `{"finished": false, "state": live state}` or `{"finished": true, "result": result}`, the
/// result without its context and its instances' results (which can be millions), with at most
/// [`FAILURES_SHOWN`] failures per task.
fn shown(status: Status) -> Value {
    match status {
        Status::Live(state) => json!({"finished": false, "state": state}),
        Status::Finished(mut result) => {
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
            value
        }
    }
}

async fn session(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    let described = describe(deployment.store.as_ref(), session_id(&id)?).await?;
    Ok(Json(described).into_response())
}

/// How often a session's stream reads the store when nothing was announced.
const REREAD: Duration = Duration::from_secs(2);
/// How often the sessions list's stream reads it (it has no channel of its own).
const LIST_EVERY: Duration = Duration::from_millis(750);

/// An event of a stream: `state`, with `value`.
fn state_event(value: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().event("state").data(value.to_string()))
}

/// The session's state as the page shows it, each time it changes (the client's follower),
/// its result last; a session unknown at the start is a 404, a trouble later ends the stream
/// (the page's `EventSource` connects again).
async fn session_events(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    let id = session_id(&id)?.to_string();
    describe(deployment.store.as_ref(), &id).await?;
    let updates = client::follow(deployment.store.clone(), &id, REREAD)
        .take_while(|update| std::future::ready(update.is_ok()))
        .filter_map(|update| std::future::ready(update.ok()))
        .map(|status| state_event(&shown(status)));
    Ok(Sse::new(updates)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The sessions list, once at once and then each time it changed, read every [`LIST_EVERY`]
/// (a read that fails is skipped).
async fn sessions_events(
    State(deployment): State<Deployment>,
    Query(query): Query<ListQuery>,
) -> Answer {
    let (limit, status) = query.read()?;
    let store = deployment.store.clone();
    let lists = futures_util::stream::unfold(
        (store, status, None::<Value>, true),
        move |(store, status, mut sent, first)| async move {
            let mut wait = !first;
            loop {
                if wait {
                    tokio::time::sleep(LIST_EVERY).await;
                }
                wait = true;
                let Ok(list) = list(store.as_ref(), limit, status).await else {
                    continue;
                };
                if sent.as_ref() != Some(&list) {
                    let event = state_event(&list);
                    sent = Some(list);
                    return Some((event, (store, status, sent, false)));
                }
            }
        },
    );
    Ok(Sse::new(lists)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn cancel(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    control(deployment, &id, Change::Cancel).await
}

async fn pause(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    control(deployment, &id, Change::Pause).await
}

async fn resume(State(deployment): State<Deployment>, Path(id): Path<String>) -> Answer {
    control(deployment, &id, Change::Resume).await
}

/// What an operator's POST asks of a session.
#[derive(Debug, Clone, Copy)]
enum Change {
    Cancel,
    Pause,
    Resume,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

/// Sends `change` to session `id`: 202 when sent (or a pending session withdrawn), 409 when it
/// has finished, 404 when there is no such session.
async fn control(deployment: Deployment, id: &str, change: Change) -> Answer {
    let id = session_id(id)?;
    let (broker, store) = (deployment.broker.as_ref(), deployment.store.as_ref());
    let answer = match change {
        Change::Cancel => client::cancel(broker, store, id).await,
        Change::Pause => client::pause(broker, store, id, true).await,
        Change::Resume => client::pause(broker, store, id, false).await,
    };
    let name = change.name();
    Err(match answer {
        Ok(client::CancelAnswer::Sent { run }) => {
            let sent = json!({"session_id": id, name: "sent", "run": run});
            return Ok((StatusCode::ACCEPTED, Json(sent)).into_response());
        }
        Ok(client::CancelAnswer::Withdrawn) => {
            let sent = json!({"session_id": id, name: "withdrawn"});
            return Ok((StatusCode::ACCEPTED, Json(sent)).into_response());
        }
        Ok(client::CancelAnswer::Finished(result)) => refuse(
            StatusCode::CONFLICT,
            format!(
                "session {id} has already finished ({}); nothing to {name}",
                result.status
            ),
        ),
        Ok(client::CancelAnswer::Unknown) => refuse(
            StatusCode::NOT_FOUND,
            format!("no session {id} is pending, running or has a result; nothing to {name}"),
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
