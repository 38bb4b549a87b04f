//! Who may use the HTTP server: a read-only token for the page, the API's reads and
//! `/metrics`, and an operator token that may also change sessions (POST: cancel). A token comes
//! as `Authorization: Bearer TOKEN`, or from the cookie a browser is given when it opens a page
//! once as `/?token=TOKEN`. A refusal is 401 (no token, or one this server does not accept) or
//! 403 (a read-only token asking to change something), with a JSON error.

use super::{refuse, Refusal};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie a browser keeps the token in (HttpOnly, SameSite=Strict: never read by scripts,
/// never sent by another site's page).
const COOKIE: &str = "agency_token";

/// The tokens the server accepts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HttpAccess {
    /// Reads and changes.
    pub operator: Option<String>,
    /// Reads only.
    pub read: Option<String>,
    /// `/metrics` without a token (for a scraper on a network of its own).
    pub metrics_open: bool,
    /// No token asked at all: a server only its own machine's trusted users reach.
    pub open: bool,
}

impl std::fmt::Debug for HttpAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |token: &Option<String>| token.as_ref().map(|_| "<redacted>");
        f.debug_struct("HttpAccess")
            .field("operator", &shown(&self.operator))
            .field("read", &shown(&self.read))
            .field("metrics_open", &self.metrics_open)
            .field("open", &self.open)
            .finish()
    }
}

/// What a request's token lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Operator,
}

impl HttpAccess {
    /// No token asked: `agency run`'s own `/metrics`, and servers started with `--http-open`.
    pub fn open() -> Self {
        Self {
            open: true,
            ..Self::default()
        }
    }

    /// Whether some token is set, or the server (or its `/metrics`) is open on purpose.
    pub fn is_configured(&self) -> bool {
        self.open || self.metrics_open || self.operator.is_some() || self.read.is_some()
    }

    fn role_of(&self, token: &str) -> Option<Role> {
        if self.operator.as_deref().is_some_and(|t| same(t, token)) {
            Some(Role::Operator)
        } else if self.read.as_deref().is_some_and(|t| same(t, token)) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// Whether two tokens are equal, in a time that does not tell how much of them matched.
fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut differ = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        differ |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    differ == 0
}

/// The token a request carries: its bearer token, else its cookie.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, token)| token)
}

/// The `token` of a query, if the query names one.
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, token)| token)
}

fn unauthorized(message: &str) -> Response {
    let mut answer = refuse(StatusCode::UNAUTHORIZED, message).into_response();
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    answer
}

/// Lets a request through when its token allows it; refuses it otherwise.
pub(super) async fn guard(
    State(access): State<HttpAccess>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if access.open || (access.metrics_open && path == "/metrics") {
        return next.run(request).await;
    }
    // A browser opening `/?token=...` once: the token goes into its cookie, and the address
    // without it replaces the one with it.
    if request.method() == Method::GET {
        if let Some(token) = query_token(request.uri().query()) {
            if access.role_of(token).is_none() {
                return unauthorized("the token is not one this server accepts");
            }
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            let Ok(cookie) = HeaderValue::from_str(&cookie) else {
                return unauthorized("the token is not one this server accepts");
            };
            let mut answer = (
                StatusCode::SEE_OTHER,
                [(
                    header::LOCATION,
                    HeaderValue::from_str(path).unwrap_or(HeaderValue::from_static("/")),
                )],
            )
                .into_response();
            answer.headers_mut().insert(header::SET_COOKIE, cookie);
            return answer;
        }
    }
    let Some(token) = token_of(request.headers()) else {
        return unauthorized(
            "this server needs a token: send `Authorization: Bearer TOKEN`, or open the page once as /?token=TOKEN",
        );
    };
    match access.role_of(token) {
        None => unauthorized("the token is not one this server accepts"),
        Some(Role::Read) if request.method() == Method::POST => Refusal(
            StatusCode::FORBIDDEN,
            format!(
                "{} changes a session: it needs the operator token, and this one is read-only",
                request.uri().path()
            ),
        )
        .into_response(),
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("secret-token", "secret-token"));
        assert!(!same("secret-token", "secret-toke"));
        assert!(!same("secret-token", "secret-tokenX"));
        assert!(!same("secret-token", ""));
        assert!(!same("", "x"));
    }

    #[test]
    fn a_token_is_read_from_the_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_of(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; agency_token=t2"),
        );
        assert_eq!(token_of(&headers), Some("t2"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t1"));
        assert_eq!(token_of(&headers), Some("t1"));
        assert_eq!(query_token(Some("x=1&token=abc")), Some("abc"));
        assert_eq!(query_token(None), None);
        let access = HttpAccess {
            operator: Some("op".into()),
            read: Some("ro".into()),
            ..HttpAccess::default()
        };
        assert_eq!(access.role_of("op"), Some(Role::Operator));
        assert_eq!(access.role_of("ro"), Some(Role::Read));
        assert_eq!(access.role_of("nope"), None);
        assert!(!format!("{access:?}").contains("op\""));
    }
}
