//! `http_get`: `{"url", "timeout_ms"}` (10 s by default, seed 001's `fetch_data`). Returns
//! `{"status", "body"}` with the body as JSON when it parses, as text otherwise; a non-2xx
//! status is an error.

use super::{u64_field, Allowed, Call, ExecError, Executor};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `http_get`: fetches `input.url` and returns the status and body.
#[derive(Debug, Clone)]
pub struct HttpGet {
    client: reqwest::Client,
    allowed: Arc<Allowed>,
}

impl HttpGet {
    /// An executor with one shared HTTP client, calling any host.
    pub fn new() -> Self {
        Self::allowing(Arc::new(Allowed::everything()))
    }

    /// An executor calling only the hosts `allowed` allows; another fails the attempt for good.
    /// A redirect is followed (10 at most) only to a host allowed too, so an allowed host
    /// cannot send the worker to one that is not.
    pub fn allowing(allowed: Arc<Allowed>) -> Self {
        let checked = allowed.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("more than 10 redirects");
            }
            match checked.url(attempt.url().as_str()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .build()
            .unwrap_or_default();
        Self { client, allowed }
    }
}

impl Default for HttpGet {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Executor for HttpGet {
    fn description(&self) -> &str {
        r#"GETs {"url"} (within {"timeout_ms"}, 10 s by default) and returns {"status", "body"}; a non-2xx answer is an error"#
    }

    async fn execute(&self, call: Call) -> Result<Value, ExecError> {
        let url = call
            .input
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| ExecError::permanent("http_get needs a `url` string"))?;
        self.allowed.url(url).map_err(ExecError::Permanent)?;
        let timeout =
            u64_field(&call.input, "timeout_ms")?.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let request = self
            .client
            .get(url)
            .timeout(timeout)
            .header("Idempotency-Key", call.key.to_string())
            .send();
        let response = tokio::select! {
            response = request => response.map_err(|e| {
                let message = format!("GET {url}: {e}");
                // A URL that cannot be requested at all will not work on a retry.
                if e.is_builder() { ExecError::Permanent(message) } else { ExecError::Transient(message) }
            })?,
            () = call.cancel.cancelled() => return Err("cancelled".into()),
        };
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ExecError::Transient(format!("GET {url}: reading the body: {e}")))?;
        if !status.is_success() {
            let excerpt: String = text.chars().take(200).collect();
            let message = format!("GET {url} returned {status}: {excerpt}");
            // A client error is the request's fault, except a timeout or a rate limit.
            let permanent = status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err(if permanent {
                ExecError::Permanent(message)
            } else {
                ExecError::Transient(message)
            });
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(json!({"status": status.as_u16(), "body": body}))
    }
}
