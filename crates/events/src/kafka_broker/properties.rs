//! librdkafka properties a deployment gives (security above all: `security.protocol`, SASL and
//! SSL settings), applied to every producer, consumer and admin client after agency's own, and
//! the refusals of credentials and certificates those clients meet, so connecting fails at once
//! with the cause instead of waiting out a broker that will never let it in.

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::{Arc, Mutex};

/// One property and where it was given (`--kafka-property`, a variable, a file and line).
#[derive(Clone, PartialEq, Eq)]
struct Property {
    name: String,
    value: String,
    source: String,
}

/// Properties for every Kafka client, in the order given; a later one of the same name wins.
/// Secret values (passwords, keys, tokens) never appear in its `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties {
    properties: Vec<Property>,
}

/// Whether a property's value is a secret, never to be shown: passwords, private keys, tokens
/// and client secrets.
pub fn is_secret(name: &str) -> bool {
    const SECRET: [&str; 6] = [
        "password",
        "secret",
        "key.pem",
        "token",
        "oauthbearer.config",
        "credential",
    ];
    let name = name.to_ascii_lowercase();
    SECRET.iter().any(|part| name.contains(part))
}

impl KafkaProperties {
    /// Sets `name` to `value`, given at `source` (named in errors about it); replaces an
    /// earlier value of the same name.
    pub fn set(&mut self, name: &str, value: &str, source: &str) {
        self.properties.retain(|p| p.name != name);
        self.properties.push(Property {
            name: name.to_string(),
            value: value.to_string(),
            source: source.to_string(),
        });
    }

    /// Reads a properties file's text (`name=value` or `name: value` lines, `#` and `!`
    /// comments, blank lines), `path` naming it in errors and sources.
    pub fn read_file(&mut self, path: &str, text: &str) -> Result<(), String> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let split = line.find(['=', ':']);
            let Some((name, value)) = split.map(|at| (&line[..at], &line[at + 1..])) else {
                return Err(format!(
                    "{path}:{}: `{}` is not NAME=VALUE",
                    number + 1,
                    shown(line)
                ));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{path}:{}: a property without a name", number + 1));
            }
            self.set(name, value.trim(), &format!("{path}:{}", number + 1));
        }
        Ok(())
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty()
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }

    /// Each property as `(name, value)`, in order: for processes started with the same ones.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
    }

    /// Sets every property on `config`, over what agency set.
    pub(super) fn apply(&self, config: &mut ClientConfig) {
        for property in &self.properties {
            config.set(&property.name, &property.value);
        }
    }

    /// A client's creation refused: a property librdkafka does not know or whose value it
    /// refuses is named with where it was given, never with its value.
    pub(super) fn creation_error(&self, client: &str, error: KafkaError) -> crate::Error {
        let message = match &error {
            KafkaError::ClientConfig(_, description, name, _) => {
                let source = self
                    .properties
                    .iter()
                    .find(|p| &p.name == name)
                    .map_or(String::new(), |p| format!(" (given by {})", p.source));
                format!("property `{name}`{source}: {description}")
            }
            other => other.to_string(),
        };
        crate::Error::Refused {
            backend: "kafka",
            operation: format!("creating the {client}"),
            message,
        }
    }
}

/// A line of a properties file as an error may show it: a secret's value hidden.
fn shown(line: &str) -> String {
    if is_secret(line) {
        "<a line naming a secret>".to_string()
    } else {
        line.to_string()
    }
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.properties.iter().map(|p| {
                let value = if is_secret(&p.name) {
                    "<redacted>"
                } else {
                    p.value.as_str()
                };
                (p.name.as_str(), value)
            }))
            .finish()
    }
}

/// The last refusal of this client's credentials or certificates (an SASL authentication that
/// failed, a TLS handshake that did not verify), shared by the clients of one broker: librdkafka
/// reports them only to its error callback and goes on reconnecting, so a check that times out
/// asks here whether the broker is out of reach or refuses this client.
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    last: Arc<Mutex<Option<String>>>,
}

impl Refusals {
    /// Notes and logs `error`: a refusal of this client as a warning kept for
    /// [`Refusals::last`], others (librdkafka retries them, and agency's own calls say what
    /// they meet) at debug level only.
    pub(super) fn note(&self, error: &KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::TopicAuthorizationFailed
            )
        );
        if refused {
            tracing::warn!(reason, "kafka refuses this client");
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        } else {
            tracing::debug!(target: "librdkafka", %error, reason, "librdkafka error");
        }
    }

    /// The last refusal noted, if any.
    pub(super) fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The context of agency's producer and admin client: librdkafka's errors, with refusals noted.
pub(super) struct Noticing {
    pub(super) refusals: Refusals,
}

impl rdkafka::ClientContext for Noticing {
    fn error(&self, error: KafkaError, reason: &str) {
        self.refusals.note(&error, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_as_names_and_values_and_later_ones_win() {
        let mut properties = KafkaProperties::default();
        properties
            .read_file(
                "client.properties",
                "# managed Kafka\nsecurity.protocol=SASL_SSL\n\n! old style comment\nsasl.mechanism: PLAIN\nsasl.mechanism = SCRAM-SHA-512\n",
            )
            .unwrap();
        properties.set("sasl.password", "hunter2", "AGENCY_KAFKA_SASL_PASSWORD");
        assert_eq!(properties.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(properties.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(properties.pairs().count(), 3);
        let shown = format!("{properties:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_line_that_is_not_a_property_is_named_with_its_place() {
        let mut properties = KafkaProperties::default();
        let error = properties
            .read_file("p.properties", "security.protocol=SSL\njunk\n")
            .unwrap_err();
        assert_eq!(error, "p.properties:2: `junk` is not NAME=VALUE");
        let error = properties
            .read_file("p.properties", "ssl.key.password hunter2\n")
            .unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn an_unknown_property_is_named_with_where_it_was_given_and_no_value() {
        let mut properties = KafkaProperties::default();
        properties.set("sasl.pasword", "hunter2", "AGENCY_KAFKA_SASL_PASWORD");
        let mut config = ClientConfig::new();
        properties.apply(&mut config);
        let error = config
            .create::<rdkafka::producer::BaseProducer>()
            .map(|_| ())
            .unwrap_err();
        let message = properties.creation_error("producer", error).to_string();
        assert!(message.contains("`sasl.pasword`"), "{message}");
        assert!(message.contains("AGENCY_KAFKA_SASL_PASWORD"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn secrets_are_told_by_their_names() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "ssl.keystore.password",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["security.protocol", "sasl.username", "ssl.ca.location"] {
            assert!(!is_secret(name), "{name}");
        }
    }
}
