//! The broker names every producer, worker and CLI derives from one prefix (default `quern`).

/// Default prefix for every exchange and queue name.
pub const DEFAULT_PREFIX: &str = "quern";
/// Routing key of ingestion jobs on the work exchange.
pub const INGEST_ROUTING_KEY: &str = "ingest";

/// Names of the exchanges and queues of one Quern deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

/// A prefix that would make invalid or confusing broker names.
#[derive(Debug, thiserror::Error)]
#[error("queue prefix `{0}` must be 1..=200 characters of ASCII letters, digits, '.', '-' or '_'")]
pub struct TopologyError(String);

impl Topology {
    /// Names derived from `prefix`.
    pub fn new(prefix: &str) -> Result<Topology, TopologyError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 200
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !valid {
            return Err(TopologyError(prefix.to_owned()));
        }
        Ok(Topology { prefix: prefix.to_owned() })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Durable direct exchange producers publish to.
    pub fn work_exchange(&self) -> String {
        self.prefix.clone()
    }

    /// Routing key of ingestion jobs.
    pub fn ingest_routing_key(&self) -> &'static str {
        INGEST_ROUTING_KEY
    }

    /// Durable quorum queue the workers consume.
    pub fn ingest_queue(&self) -> String {
        format!("{}.ingest", self.prefix)
    }

    /// Delay queue for one retry tier, e.g. `quern.retry.10s`; messages expire from it back to the work
    /// exchange. The delay is in the name because a queue's TTL can never change once declared.
    pub fn retry_queue(&self, delay: std::time::Duration) -> String {
        let millis = delay.as_millis();
        if millis.is_multiple_of(1000) {
            format!("{}.retry.{}s", self.prefix, millis / 1000)
        } else {
            format!("{}.retry.{millis}ms", self.prefix)
        }
    }

    /// Fanout exchange that dead letters are published to.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Durable queue holding dead letters until replayed or purged.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_prefix() {
        let topology = Topology::default();
        assert_eq!(topology.work_exchange(), "quern");
        assert_eq!(topology.ingest_queue(), "quern.ingest");
        assert_eq!(topology.dead_queue(), "quern.dead");
        assert!(Topology::new("").is_err());
        assert!(Topology::new("a b").is_err());
        assert!(Topology::new("test-1.x_y").is_ok());
        assert_eq!(topology.retry_queue(std::time::Duration::from_secs(300)), "quern.retry.300s");
        assert_eq!(topology.retry_queue(std::time::Duration::from_millis(250)), "quern.retry.250ms");
    }
}
