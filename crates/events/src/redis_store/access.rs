//! How a client gets into a secured Redis: TLS (`rediss://`) with the deployment's CA and a
//! client certificate, and an ACL user with its password; and addresses shown without the
//! password.

use super::connection::{self, Connection};
use super::{unavailable, RedisStore};
use crate::error::{Error, Result};
use redis::IntoConnectionInfo as _;
use std::sync::Arc;

/// What a client needs beyond an address to be let in. Each part is optional: a URL's own
/// user and password are used unless these name others; certificates are PEM.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAccess {
    /// The ACL user (`AUTH user password`), over the URL's.
    pub username: Option<String>,
    /// The user's password, over the URL's.
    pub password: Option<String>,
    /// The CA that signed the server's certificate, when it is not one the system trusts.
    pub ca: Option<Vec<u8>>,
    /// The client's certificate and private key, for a server that asks for one.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// `url` as it may be shown: a password in it replaced by `***`.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let shown = match user_info.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => user_info.to_string(),
            };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => url.to_string(),
    }
}

impl RedisAccess {
    /// Whether connections must use TLS: certificates were given.
    fn wants_tls(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some()
    }

    /// `node` (`host:port` or a URL) as a URL: `rediss://` when TLS is wanted.
    fn url_of(&self, node: &str) -> String {
        if node.contains("://") {
            node.to_string()
        } else if self.wants_tls() {
            format!("rediss://{node}")
        } else {
            format!("redis://{node}")
        }
    }

    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_cert
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }

    /// A client of `node` with these credentials and certificates.
    pub(super) fn client(&self, node: &str) -> redis::RedisResult<redis::Client> {
        let url = self.url_of(node);
        let mut info = url.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        if self.wants_tls() {
            redis::Client::build_with_tls(info, self.certificates())
        } else {
            redis::Client::open(info)
        }
    }
}

/// A connection's failure as connecting should take it: a TLS handshake that refused the
/// server's certificate (or whose server refused this client's) is a refusal, which waiting
/// cannot mend, said at once; anything else as every other call takes it.
fn connecting(error: redis::RedisError) -> Error {
    // redis-rs keeps the I/O error behind an `Arc`, which is what it gives as the source.
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let tls = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<Shared>())
        .and_then(|shared| shared.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            tls @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::AlertReceived(_)
            | rustls::Error::NoCertificatesPresented),
        ) => Error::Refused {
            backend: "redis",
            operation: "the TLS handshake".into(),
            message: tls.to_string(),
        },
        _ => unavailable(error),
    }
}

fn refused(message: String) -> Error {
    Error::Refused {
        backend: "redis",
        operation: "open".into(),
        message,
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379`); the connection reconnects by itself.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &RedisAccess::default()).await
    }

    /// Connects to `url` (`redis://` or `rediss://`) with `access`'s credentials and
    /// certificates; the connection reconnects by itself.
    pub async fn connect_with(url: &str, access: &RedisAccess) -> Result<Self> {
        let client = access
            .client(url)
            .map_err(|e| refused(format!("bad address `{}`: {e}", shown_url(url))))?;
        // One attempt first: the manager's own connecting retries for seconds, and whoever
        // connects decides how long an unreachable server is waited for (`events::retry`).
        drop(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(connecting)?,
        );
        let connection = client.get_connection_manager().await.map_err(unavailable)?;
        Ok(Self::with(
            vec![client],
            shown_url(url),
            Connection::Single(connection),
            access.clone(),
        ))
    }

    /// Connects to the Redis Cluster that `nodes` (`host:port` or `redis://` URLs, one or
    /// more of its nodes) belong to: commands go to the master of each key's slot, and follow
    /// a failover to the promoted replica by themselves.
    pub async fn connect_cluster(nodes: &[String]) -> Result<Self> {
        Self::connect_cluster_with(nodes, &RedisAccess::default()).await
    }

    /// [`RedisStore::connect_cluster`] with `access`'s credentials and certificates (nodes
    /// named `host:port` are reached over TLS when certificates are given).
    pub async fn connect_cluster_with(nodes: &[String], access: &RedisAccess) -> Result<Self> {
        let urls: Vec<String> = nodes
            .iter()
            .map(|node| node.trim())
            .filter(|node| !node.is_empty())
            .map(|node| access.url_of(node))
            .collect();
        let shown: Vec<String> = urls.iter().map(|url| shown_url(url)).collect();
        if urls.is_empty() {
            return Err(refused(
                "a Redis Cluster needs at least one node (HOST:PORT,...)".into(),
            ));
        }
        let clients = urls
            .iter()
            .zip(&shown)
            .map(|(url, shown)| {
                access
                    .client(url)
                    .map_err(|e| refused(format!("bad cluster node `{shown}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut builder = redis::cluster::ClusterClient::builder(urls.clone()).retries(6);
        if let Some(username) = &access.username {
            builder = builder.username(username);
        }
        if let Some(password) = &access.password {
            builder = builder.password(password);
        }
        if access.wants_tls() {
            builder = builder.certs(access.certificates());
        }
        let cluster = builder
            .build()
            .map_err(|e| refused(format!("bad cluster nodes {}: {e}", shown.join(","))))?;
        // The cluster client gives its nodes' errors as text only: one node is tried alone
        // first, so that a refusal (an untrusted certificate, a wrong password) is told at once
        // and a node out of reach is left to the cluster client, which tries the others.
        if let Err(error) = clients[0].get_multiplexed_async_connection().await {
            let error = connecting(error);
            if !error.is_retryable() {
                return Err(error);
            }
        }
        let connection = cluster.get_async_connection().await.map_err(unavailable)?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut connection.clone())
            .await
            .map_err(unavailable)?;
        let mut store = Self::with(
            clients,
            format!("cluster {}", shown.join(",")),
            Connection::Cluster(connection),
            access.clone(),
        );
        store.replicas = Arc::new(connection::ReplicaWait::cluster(&nodes, &store.address));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        assert_eq!(
            shown_url("rediss://agency:hunter2@127.0.0.1:6390/0"),
            "rediss://agency:***@127.0.0.1:6390/0"
        );
        assert_eq!(
            shown_url("redis://:hunter2@redis:6379"),
            "redis://:***@redis:6379"
        );
        assert_eq!(
            shown_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(shown_url("redis://agency@h:1"), "redis://agency@h:1");
        assert_eq!(shown_url("127.0.0.1:7000"), "127.0.0.1:7000");
        let access = RedisAccess {
            password: Some("hunter2".into()),
            ..RedisAccess::default()
        };
        assert!(!format!("{access:?}").contains("hunter2"));
    }

    #[test]
    fn nodes_without_a_scheme_use_tls_when_certificates_are_given() {
        let plain = RedisAccess::default();
        assert_eq!(plain.url_of("127.0.0.1:7000"), "redis://127.0.0.1:7000");
        let tls = RedisAccess {
            ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            ..RedisAccess::default()
        };
        assert_eq!(tls.url_of("127.0.0.1:7100"), "rediss://127.0.0.1:7100");
        assert_eq!(tls.url_of("redis://h:1"), "redis://h:1");
    }
}
