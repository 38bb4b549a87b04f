//! `--http` of the coordinator and the worker with who may use it: an operator token, a
//! read-only token (each given as itself, by a variable or in a file), `/metrics` open on its
//! own flag, or no token at all only when asked for.

use agency::http::HttpAccess;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where to serve HTTP and whom to answer.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpFlags {
    /// Serve `/metrics` (Prometheus), and on a coordinator the status page (`/`) and its JSON
    /// API (`/api/`), on this address (HOST:PORT, or a port for 127.0.0.1); every request
    /// needs a token (--http-token, --http-read-token) unless --http-open
    #[arg(long, env = "AGENCY_HTTP", value_name = "ADDR", value_parser = agency::http::address)]
    pub http: Option<SocketAddr>,
    /// The operator token: reads, and changes sessions (POST: cancel, pause, resume)
    #[arg(
        long,
        env = "AGENCY_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// A file holding the operator token (its first line)
    #[arg(
        long,
        env = "AGENCY_HTTP_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "http_token"
    )]
    pub http_token_file: Option<PathBuf>,
    /// A read-only token: the page, the API's reads and `/metrics`
    #[arg(
        long,
        env = "AGENCY_HTTP_READ_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_read_token: Option<String>,
    /// A file holding the read-only token (its first line)
    #[arg(
        long,
        env = "AGENCY_HTTP_READ_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "http_read_token"
    )]
    pub http_read_token_file: Option<PathBuf>,
    /// Serve `/metrics` without a token (for a scraper on a network of its own)
    #[arg(long)]
    pub http_metrics_open: bool,
    /// Serve without any token: only where every user who can reach the address is trusted
    #[arg(long, conflicts_with_all = ["http_token", "http_token_file", "http_read_token", "http_read_token_file"])]
    pub http_open: bool,
}

/// A token as given, or the first line of its file; checked to be one a header and a cookie
/// can carry.
fn token(
    given: &Option<String>,
    file: &Option<PathBuf>,
    flag: &str,
) -> anyhow::Result<Option<String>> {
    let token = match (given, file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{flag}-file {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    let fits = |c: char| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\');
    if token.len() < 16 || !token.chars().all(fits) {
        anyhow::bail!(
            "{flag}: a token must be at least 16 printable ASCII characters without spaces, `;`, `,`, `\"` or `\\`"
        );
    }
    Ok(Some(token))
}

impl HttpFlags {
    /// The address and who may use it; `--http` without a token or --http-open is refused.
    pub fn access(&self) -> anyhow::Result<Option<(SocketAddr, HttpAccess)>> {
        let Some(address) = self.http else {
            return Ok(None);
        };
        let access = HttpAccess {
            operator: token(&self.http_token, &self.http_token_file, "--http-token")?,
            read: token(
                &self.http_read_token,
                &self.http_read_token_file,
                "--http-read-token",
            )?,
            metrics_open: self.http_metrics_open,
            open: self.http_open,
        };
        if !access.is_configured() {
            anyhow::bail!(
                "--http {address}: give a token (--http-token for operators, --http-read-token for reading; AGENCY_HTTP_TOKEN, AGENCY_HTTP_READ_TOKEN, or their -file flags), or --http-open to serve without one"
            );
        }
        Ok(Some((address, access)))
    }
}
