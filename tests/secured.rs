//! The secured stack that `scripts/services.sh secure up` starts (Kafka over SASL_SSL, Redis
//! and a Redis Cluster over TLS with ACL users, a throwaway CA), read from the secrets file it
//! writes, and the settings a process needs to use it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The secured servers' addresses, certificates and passwords.
#[derive(Debug, Clone)]
pub struct Secured {
    values: HashMap<String, String>,
}

impl Secured {
    /// Reads `secure/secrets.env` of the services' state folder; says how to make it when it
    /// is missing.
    pub fn load() -> Self {
        let state = std::env::var("AGENCY_SERVICES_STATE").map_or_else(
            |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.services"),
            PathBuf::from,
        );
        let file = state.join("secure/secrets.env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the secured stack is started by `scripts/services.sh secure up` (scripts/test.sh does)",
                file.display()
            )
        });
        let values = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { values }
    }

    /// One value of the secrets file (`AGENCY_SECURE_KAFKA_PASSWORD`, ...).
    pub fn get(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("the secrets file has no {name}"))
    }

    /// The SASL_SSL listener, `host:port`.
    pub fn kafka(&self) -> &str {
        self.get("AGENCY_SECURE_KAFKA")
    }

    /// The TLS Redis as a `rediss://` URL (the user and password are given apart).
    pub fn redis_url(&self) -> String {
        format!("rediss://{}", self.get("AGENCY_SECURE_REDIS"))
    }

    /// The librdkafka properties of the SCRAM-SHA-512 user, with `password`.
    pub fn kafka_properties(&self, password: &str) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", self.get("AGENCY_SECURE_KAFKA_USER")),
            ("sasl.password", password),
            ("ssl.ca.location", self.get("AGENCY_SECURE_CA")),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    }

    /// The variables that give a process the Kafka user (`AGENCY_KAFKA_SASL_*`, ...).
    pub fn kafka_env(&self) -> Vec<(String, String)> {
        self.kafka_properties(self.get("AGENCY_SECURE_KAFKA_PASSWORD"))
            .into_iter()
            .map(|(name, value)| {
                let variable = format!("AGENCY_KAFKA_{}", name.to_uppercase().replace('.', "_"));
                (variable, value)
            })
            .collect()
    }

    /// The variables that give a process the Redis ACL user and certificates.
    pub fn redis_env(&self) -> Vec<(String, String)> {
        [
            ("AGENCY_REDIS_USER", "AGENCY_SECURE_REDIS_USER"),
            ("AGENCY_REDIS_PASSWORD", "AGENCY_SECURE_REDIS_PASSWORD"),
            ("AGENCY_REDIS_CA", "AGENCY_SECURE_CA"),
            ("AGENCY_REDIS_CERT", "AGENCY_SECURE_CLIENT_CERT"),
            ("AGENCY_REDIS_KEY", "AGENCY_SECURE_CLIENT_KEY"),
        ]
        .map(|(variable, secret)| (variable.to_string(), self.get(secret).to_string()))
        .into()
    }

    /// Every secret a run on this stack is given: none may appear in its outputs.
    pub fn secrets(&self) -> Vec<&str> {
        [
            "AGENCY_SECURE_KAFKA_PASSWORD",
            "AGENCY_SECURE_KAFKA_ADMIN_PASSWORD",
            "AGENCY_SECURE_KEYSTORE_PASSWORD",
            "AGENCY_SECURE_REDIS_PASSWORD",
        ]
        .map(|name| self.get(name))
        .into()
    }
}
