//! The fake embedder's knobs: vector size, injected latency and faults, admission limits, and the ways real
//! self-hosted servers differ (one request computed at a time, floats only, a key refused for a while).

use std::fmt;

/// Default TCP port of the binary (the library binds whatever address it is given).
pub const DEFAULT_PORT: u16 = 8089;
/// Default vector dimension; 384 matches common small sentence-embedding models.
pub const DEFAULT_DIM: usize = 384;
/// Default largest batch accepted; OpenAI's own limit is 2048 inputs per request.
pub const DEFAULT_MAX_BATCH: usize = 2048;

/// How the server behaves. `Default` gives a fast, fault-free server with 384-dimensional vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeEmbedderConfig {
    /// Length of every returned vector; at least 1.
    pub dim: usize,
    /// Fixed delay added to every admitted, well-formed request, in milliseconds.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms` per request, in milliseconds.
    pub jitter_ms: u64,
    /// Fraction (0..=1) of well-formed requests answered `500`.
    pub error_rate: f64,
    /// Fraction (0..=1) of well-formed requests answered `429` with `Retry-After: 1`.
    /// Checked before `error_rate`; together they partition one random draw, so when they sum
    /// past 1 the error share is what the throttle share leaves.
    pub throttle_rate: f64,
    /// Most inputs one request may carry; more gets `400`.
    pub max_batch: usize,
    /// Most requests in flight at once (0 = unlimited); the extra ones get `429` immediately.
    pub max_concurrency: usize,
    /// Most characters of input one request may carry (0 = unlimited); more gets `413`, as a provider's
    /// per-request token limit would.
    pub max_request_chars: usize,
    /// Refuse with `400` any request with an input containing this text, as a provider's content policy would:
    /// a document that can never be embedded as it is.
    pub reject_marker: Option<String>,
    /// Compute one request at a time, as a CPU server does: the others wait in order, and a request whose
    /// client gave up is still computed in its turn. With `latency_ms`, each request takes that long once its
    /// turn comes.
    pub serial: bool,
    /// Refuse `encoding_format: "base64"` with `400` (`encoding_format "base64" is not supported; use
    /// "float"`), as servers that speak floats only do.
    pub refuse_base64: bool,
    /// Answer `401` (an OpenAI-style `invalid_api_key` error) to every embedding request for this many seconds
    /// after start, then serve normally: a key revoked, then restored.
    pub unauthorized_for_secs: u64,
}

impl Default for FakeEmbedderConfig {
    fn default() -> Self {
        Self {
            dim: DEFAULT_DIM,
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            throttle_rate: 0.0,
            max_batch: DEFAULT_MAX_BATCH,
            max_concurrency: 0,
            max_request_chars: 0,
            reject_marker: None,
            serial: false,
            refuse_base64: false,
            unauthorized_for_secs: 0,
        }
    }
}

impl FakeEmbedderConfig {
    /// Checks the values a caller could get wrong; the binary's flag parser enforces the same rules.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.dim == 0 {
            return Err(InvalidConfig("dim must be at least 1".into()));
        }
        for (name, rate) in [("error_rate", self.error_rate), ("throttle_rate", self.throttle_rate)] {
            // `contains` is false for NaN too, which is what we want.
            if !(0.0..=1.0).contains(&rate) {
                return Err(InvalidConfig(format!("{name} must be within 0..=1, got {rate}")));
            }
        }
        if self.max_batch == 0 {
            return Err(InvalidConfig("max_batch must be at least 1".into()));
        }
        Ok(())
    }
}

/// A configuration value out of range; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(pub String);

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fake embedder configuration: {}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_rejects_bad_values() {
        assert!(FakeEmbedderConfig::default().validate().is_ok());
        let bad = [
            FakeEmbedderConfig { dim: 0, ..Default::default() },
            FakeEmbedderConfig { error_rate: 1.5, ..Default::default() },
            FakeEmbedderConfig { throttle_rate: -0.1, ..Default::default() },
            FakeEmbedderConfig { throttle_rate: f64::NAN, ..Default::default() },
            FakeEmbedderConfig { max_batch: 0, ..Default::default() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} should be rejected");
        }
    }
}
