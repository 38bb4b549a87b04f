//! The deployment's own librdkafka properties, gathered from a properties file
//! (`--kafka-properties`, `AGENCY_KAFKA_PROPERTIES`), variables (`AGENCY_KAFKA_SECURITY_PROTOCOL`,
//! `AGENCY_KAFKA_SASL_*`, `AGENCY_KAFKA_SSL_*`, and `AGENCY_KAFKA_PROPERTY_<NAME>` for any
//! other) and `--kafka-property NAME=VALUE` flags, later ones winning in that order.

use events::KafkaProperties;
use std::path::Path;

/// The variables of any property: `AGENCY_KAFKA_PROPERTY_CLIENT_ID` is `client.id`.
const ANY: &str = "AGENCY_KAFKA_PROPERTY_";
/// The security families, read without `PROPERTY_`: `AGENCY_KAFKA_SASL_PASSWORD` is
/// `sasl.password`.
const SECURITY: [&str; 3] = [
    "AGENCY_KAFKA_SECURITY_",
    "AGENCY_KAFKA_SASL_",
    "AGENCY_KAFKA_SSL_",
];

/// A `--kafka-property` flag's `NAME=VALUE`.
pub fn flag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err("expected NAME=VALUE, e.g. security.protocol=SASL_SSL".to_string()),
    }
}

/// The property a variable sets, if it sets one.
fn property_of(variable: &str) -> Option<String> {
    let name = match variable.strip_prefix(ANY) {
        Some(name) => name,
        None if SECURITY.iter().any(|family| variable.starts_with(family)) => {
            &variable["AGENCY_KAFKA_".len()..]
        }
        None => return None,
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase().replace('_', "."))
}

/// The variable that sets `name`, for processes started with the same properties.
pub fn variable_of(name: &str) -> String {
    let upper = name.to_ascii_uppercase().replace('.', "_");
    let direct = format!("AGENCY_KAFKA_{upper}");
    if SECURITY.iter().any(|family| direct.starts_with(family)) {
        direct
    } else {
        format!("{ANY}{upper}")
    }
}

/// Every property from `file`, then the `variables`, then the `flags`.
pub fn gather(
    file: Option<&Path>,
    variables: impl IntoIterator<Item = (String, String)>,
    flags: &[(String, String)],
) -> anyhow::Result<KafkaProperties> {
    let mut properties = KafkaProperties::default();
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the Kafka properties file {shown}: {e}"))?;
        properties
            .read_file(&shown, &text)
            .map_err(|e| anyhow::anyhow!("the Kafka properties file {e}"))?;
    }
    let mut variables: Vec<(String, String)> = variables.into_iter().collect();
    variables.sort();
    for (variable, value) in variables {
        if let Some(name) = property_of(&variable) {
            properties.set(&name, &value, &variable);
        }
    }
    for (name, value) in flags {
        properties.set(name, value, &format!("--kafka-property {name}"));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_name_security_properties_directly_and_any_other_through_property() {
        let properties = gather(
            None,
            vars(&[
                ("AGENCY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                ("AGENCY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("AGENCY_KAFKA_SSL_CA_LOCATION", "/ca.pem"),
                ("AGENCY_KAFKA_PROPERTY_CLIENT_ID", "agency"),
                // Settings of agency's own and of scripts/services.sh are not properties.
                ("AGENCY_KAFKA_PARTITIONS", "8"),
                ("AGENCY_KAFKA_VERSION", "4.4.0"),
                ("AGENCY_KAFKA", "127.0.0.1:9092"),
            ]),
            &[],
        )
        .unwrap();
        let pairs: Vec<(&str, &str)> = properties.pairs().collect();
        assert_eq!(
            pairs,
            [
                ("client.id", "agency"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.location", "/ca.pem"),
            ]
        );
        for (name, _) in pairs {
            assert_eq!(property_of(&variable_of(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn flags_win_over_variables_and_variables_over_the_file() {
        let dir = std::env::temp_dir().join(format!("agency-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client.properties");
        std::fs::write(
            &file,
            "sasl.username=from-file\nsasl.password=file\nclient.id=f\n",
        )
        .unwrap();
        let properties = gather(
            Some(&file),
            vars(&[("AGENCY_KAFKA_SASL_USERNAME", "from-variable")]),
            &[flag("client.id=from-flag").unwrap()],
        )
        .unwrap();
        assert_eq!(properties.get("sasl.username"), Some("from-variable"));
        assert_eq!(properties.get("sasl.password"), Some("file"));
        assert_eq!(properties.get("client.id"), Some("from-flag"));
        let missing = gather(Some(&dir.join("none.properties")), vars(&[]), &[]).unwrap_err();
        assert!(missing.to_string().contains("none.properties"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(flag("no-equals").is_err());
    }
}
