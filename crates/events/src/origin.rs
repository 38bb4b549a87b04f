//! Where a session's action came from: its `agency_action` message's topic, partition and
//! offset. A session id is run for one origin at a time; a later action for the same id (a
//! higher offset in the same partition) supersedes an earlier one delivered again.

use std::fmt;
use std::str::FromStr;

/// An intake message's position, written `topic/partition/offset`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The topic (with its namespace prefix).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub offset: u64,
}

impl Origin {
    /// Whether `self` comes after `earlier` in the same partition.
    pub fn supersedes(&self, earlier: &Origin) -> bool {
        self.topic == earlier.topic
            && self.partition == earlier.partition
            && self.offset > earlier.offset
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

impl FromStr for Origin {
    type Err = String;

    /// Parses `topic/partition/offset` (the topic may itself contain `/`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{text}` is not an origin (topic/partition/offset)");
        let mut parts = text.rsplitn(3, '/');
        let offset = parts.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
        let partition = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let topic = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
        Ok(Self {
            topic: topic.to_string(),
            partition,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_and_order_within_a_partition() {
        let origin: Origin = "ns/agency_action/3/17"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (origin.topic.as_str(), origin.partition, origin.offset),
            ("ns/agency_action", 3, 17)
        );
        assert_eq!(origin.to_string(), "ns/agency_action/3/17");
        let later: Origin = "ns/agency_action/3/18"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let elsewhere: Origin = "ns/agency_action/4/99"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(later.supersedes(&origin) && !origin.supersedes(&later));
        assert!(
            !elsewhere.supersedes(&origin),
            "other partitions are not ordered"
        );
        for bad in ["", "topic", "topic/x/1", "topic/1/-2", "/1/2"] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
    }
}
