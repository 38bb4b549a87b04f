//! Where the servers are (`--kafka`, `--redis`, `--redis-cluster`, `--namespace` and the
//! Kafka settings, each with its `AGENCY_*` variable, and the deployment's own librdkafka
//! properties: [`crate::kafka_properties`]), and connecting to them.

use agency::{connect, Registry};
use events::{Broker, GroupProtocol, KafkaOptions, Namespaced, Store};
use std::sync::Arc;
use std::time::Duration;
use taskgroup::Rules;

/// Where the servers are.
#[derive(Debug, Clone, clap::Args)]
pub struct Servers {
    /// Kafka bootstrap servers
    #[arg(long, env = "AGENCY_KAFKA", default_value = "127.0.0.1:9092")]
    pub kafka: String,
    /// Redis URL (`redis://`, or `rediss://` for TLS; a password in it is never shown)
    #[arg(
        long,
        env = "AGENCY_REDIS",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis: String,
    /// A Redis Cluster instead of --redis: some of its nodes, HOST:PORT,... (the rest are found)
    #[arg(
        long,
        env = "AGENCY_REDIS_CLUSTER",
        value_name = "HOST:PORT,...",
        hide_env_values = true
    )]
    pub redis_cluster: Option<String>,
    /// The Redis ACL user, over one in the URL
    #[arg(long, env = "AGENCY_REDIS_USER", value_name = "USER")]
    pub redis_user: Option<String>,
    /// The Redis user's password, over one in the URL (better given by the variable than on a
    /// command line others can list)
    #[arg(
        long,
        env = "AGENCY_REDIS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,
    /// The CA (PEM) that signed Redis's certificate, when the system does not trust it; implies
    /// TLS (nodes given as HOST:PORT are reached as rediss://)
    #[arg(long, env = "AGENCY_REDIS_CA", value_name = "PATH")]
    pub redis_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a Redis that asks for one (with --redis-key)
    #[arg(
        long,
        env = "AGENCY_REDIS_CERT",
        value_name = "PATH",
        requires = "redis_key"
    )]
    pub redis_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(
        long,
        env = "AGENCY_REDIS_KEY",
        value_name = "PATH",
        requires = "redis_cert"
    )]
    pub redis_key: Option<std::path::PathBuf>,
    /// A prefix for every Kafka topic and consumer group, so deployments sharing a cluster stay apart
    #[arg(long, env = "AGENCY_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// How long a Kafka fetch waits for data, in ms. Apache Kafka answers a fetch as soon as data
    /// arrives, so this only bounds idle requests (5 ms cost an idle broker a fifth of a core);
    /// a broker that answers only at the deadline (Tansu) puts about this much on every hop.
    #[arg(long, env = "AGENCY_KAFKA_FETCH_WAIT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub kafka_fetch_wait_ms: u64,
    /// How consumer groups share partitions: `consumer` (KIP-848, Kafka 4; no member stops
    /// when another joins or leaves) or `classic` (cooperative-sticky, for brokers without it)
    #[arg(long, env = "AGENCY_KAFKA_GROUP_PROTOCOL", default_value = "consumer")]
    pub kafka_group_protocol: GroupProtocol,
    /// Partitions of the topics agency creates
    #[arg(long, env = "AGENCY_KAFKA_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,
    /// Replicas of each partition of the topics agency creates (at most the number of brokers)
    #[arg(long, env = "AGENCY_KAFKA_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub kafka_replication: i32,
    /// A librdkafka property for every Kafka client, e.g. `security.protocol=SASL_SSL` or
    /// `sasl.username=agency` (repeatable); over those of `--kafka-properties` and of the
    /// `AGENCY_KAFKA_SASL_*`, `AGENCY_KAFKA_SSL_*`, `AGENCY_KAFKA_SECURITY_PROTOCOL` and
    /// `AGENCY_KAFKA_PROPERTY_<NAME>` variables
    #[arg(long = "kafka-property", value_name = "NAME=VALUE", value_parser = crate::kafka_properties::flag)]
    pub kafka_property: Vec<(String, String)>,
    /// A file of librdkafka properties for every Kafka client (NAME=VALUE lines, # comments),
    /// as managed Kafka services hand them out
    #[arg(long, env = "AGENCY_KAFKA_PROPERTIES", value_name = "PATH")]
    pub kafka_properties: Option<std::path::PathBuf>,
    /// How long connecting waits for a server that does not answer: a one-shot command's few
    /// seconds unless a long-running server asks for more ([`Servers::waiting`]).
    #[arg(skip = connect::COMMAND_PATIENCE)]
    pub patience: Duration,
}

impl Servers {
    /// These settings as the `AGENCY_*` variables they are read from, for processes started
    /// with the same ones.
    pub fn env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = [
            ("AGENCY_KAFKA", self.kafka.clone()),
            ("AGENCY_REDIS", self.redis.clone()),
            (
                "AGENCY_KAFKA_FETCH_WAIT_MS",
                self.kafka_fetch_wait_ms.to_string(),
            ),
            (
                "AGENCY_KAFKA_GROUP_PROTOCOL",
                self.kafka_group_protocol.to_string(),
            ),
            ("AGENCY_KAFKA_PARTITIONS", self.kafka_partitions.to_string()),
            (
                "AGENCY_KAFKA_REPLICATION",
                self.kafka_replication.to_string(),
            ),
        ]
        .map(|(name, value)| (name.to_string(), value))
        .into();
        let optional = [
            ("AGENCY_REDIS_CLUSTER", self.redis_cluster.clone()),
            ("AGENCY_REDIS_USER", self.redis_user.clone()),
            ("AGENCY_REDIS_PASSWORD", self.redis_password.clone()),
            ("AGENCY_REDIS_CA", shown_path(&self.redis_ca)),
            ("AGENCY_REDIS_CERT", shown_path(&self.redis_cert)),
            ("AGENCY_REDIS_KEY", shown_path(&self.redis_key)),
            (
                "AGENCY_KAFKA_PROPERTIES",
                shown_path(&self.kafka_properties),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                env.push((name.to_string(), value));
            }
        }
        for (name, value) in self.kafka_client_properties()?.pairs() {
            env.push((
                crate::kafka_properties::variable_of(name),
                value.to_string(),
            ));
        }
        Ok(env)
    }

    /// The deployment's librdkafka properties: the file's, the variables', the flags'.
    fn kafka_client_properties(&self) -> anyhow::Result<events::KafkaProperties> {
        crate::kafka_properties::gather(
            self.kafka_properties.as_deref(),
            std::env::vars(),
            &self.kafka_property,
        )
    }

    /// These servers, waited for up to `patience` when they do not answer (a long-running
    /// server's [`connect::SERVER_PATIENCE`]: one starting beside it).
    pub fn waiting(&self, patience: Duration) -> Self {
        Self {
            patience,
            ..self.clone()
        }
    }

    /// The store: on the Redis Cluster when one is named, else on the Redis at `redis`.
    pub async fn store(&self) -> anyhow::Result<events::RedisStore> {
        let access = self.redis_access()?;
        Ok(match &self.redis_cluster {
            Some(nodes) => connect::connect_cluster_store(nodes, &access, self.patience).await?,
            None => connect::connect_store(&self.redis, &access, self.patience).await?,
        })
    }

    /// The Redis user, password and certificates given.
    fn redis_access(&self) -> anyhow::Result<events::RedisAccess> {
        let read = |path: &Option<std::path::PathBuf>, what: &str| {
            path.as_ref()
                .map(|path| {
                    std::fs::read(path)
                        .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", path.display()))
                })
                .transpose()
        };
        let client_cert = match (
            read(&self.redis_cert, "the Redis client certificate")?,
            read(&self.redis_key, "the Redis client key")?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        };
        Ok(events::RedisAccess {
            username: self.redis_user.clone(),
            password: self.redis_password.clone(),
            ca: read(&self.redis_ca, "the Redis CA")?,
            client_cert,
        })
    }

    /// Where the store is, for messages (passwords hidden).
    pub fn redis_address(&self) -> String {
        match &self.redis_cluster {
            Some(nodes) => {
                let shown: Vec<String> = nodes.split(',').map(events::shown_url).collect();
                format!("the Redis Cluster {}", shown.join(","))
            }
            None => events::shown_url(&self.redis),
        }
    }

    pub fn kafka_options(&self) -> anyhow::Result<KafkaOptions> {
        Ok(KafkaOptions {
            fetch_wait: Duration::from_millis(self.kafka_fetch_wait_ms),
            group_protocol: self.kafka_group_protocol,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            properties: self.kafka_client_properties()?,
            ..KafkaOptions::new(&self.kafka)
        })
    }
}

/// A path as a variable's value.
fn shown_path(path: &Option<std::path::PathBuf>) -> Option<String> {
    path.as_ref().map(|path| path.display().to_string())
}

/// The broker (namespaced when `--namespace` says) and the store.
pub async fn connect(servers: &Servers) -> anyhow::Result<(Arc<dyn Broker>, Arc<dyn Store>)> {
    let kafka = connect::connect_broker(servers.kafka_options()?, servers.patience).await?;
    let kafka: Arc<dyn Broker> = Arc::new(kafka);
    let broker: Arc<dyn Broker> = if servers.namespace.is_empty() {
        kafka
    } else {
        Arc::new(Namespaced::new(kafka, &servers.namespace))
    };
    let store = servers.store().await?;
    Ok((broker, Arc::new(store)))
}

/// Session rules with the workers' built-in executors.
pub fn rules(broker: Arc<dyn Broker>) -> Rules {
    Rules {
        executors: Some(Registry::builtin(broker).names()),
        ..Rules::default()
    }
}
