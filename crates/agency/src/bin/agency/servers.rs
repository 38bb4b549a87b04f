//! Where the servers are (`--kafka`, `--redis`, `--redis-cluster`, `--namespace` and the
//! Kafka settings, each with its `AGENCY_*` variable), and connecting to them.

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
    /// Redis URL
    #[arg(long, env = "AGENCY_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// A Redis Cluster instead of --redis: some of its nodes, HOST:PORT,... (the rest are found)
    #[arg(long, env = "AGENCY_REDIS_CLUSTER", value_name = "HOST:PORT,...")]
    pub redis_cluster: Option<String>,
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
    /// How long connecting waits for a server that does not answer: a one-shot command's few
    /// seconds unless a long-running server asks for more ([`Servers::waiting`]).
    #[arg(skip = connect::COMMAND_PATIENCE)]
    pub patience: Duration,
}

impl Servers {
    /// These settings as the `AGENCY_*` variables they are read from, for processes started
    /// with the same ones.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
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
        ];
        if let Some(nodes) = &self.redis_cluster {
            env.push(("AGENCY_REDIS_CLUSTER", nodes.clone()));
        }
        env
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
    pub async fn store(&self) -> agency::Result<events::RedisStore> {
        match &self.redis_cluster {
            Some(nodes) => connect::connect_cluster_store(nodes, self.patience).await,
            None => connect::connect_store(&self.redis, self.patience).await,
        }
    }

    /// Where the store is, for messages.
    pub fn redis_address(&self) -> String {
        match &self.redis_cluster {
            Some(nodes) => format!("the Redis Cluster {nodes}"),
            None => self.redis.clone(),
        }
    }

    pub fn kafka_options(&self) -> KafkaOptions {
        KafkaOptions {
            fetch_wait: Duration::from_millis(self.kafka_fetch_wait_ms),
            group_protocol: self.kafka_group_protocol,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            ..KafkaOptions::new(&self.kafka)
        }
    }
}

/// The broker (namespaced when `--namespace` says) and the store.
pub async fn connect(servers: &Servers) -> anyhow::Result<(Arc<dyn Broker>, Arc<dyn Store>)> {
    let kafka = connect::connect_broker(servers.kafka_options(), servers.patience).await?;
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
