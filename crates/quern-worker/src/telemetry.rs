//! Logging and tracing through `tracing`: readable text on a terminal or JSON lines for log shippers, and with
//! the `otlp` cargo feature, each job's span exported over OTLP as a child of the producer's `traceparent`.
//! Also how an error and its causes read on one line ([`error_chain`]).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Flushes exported spans when dropped (at the end of `main`).
#[derive(Debug)]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter: `info`, and lapin off, since every
/// lapin error reaches Quern's code, which logs it once with what was being done (lapin's own lines repeated it).
/// A second call (tests) keeps the first subscriber.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=off,amq_protocol=warn"));
    // Colour only for a person at a terminal: redirected to a file, escape codes are noise.
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let text = (format == LogFormat::Text).then(|| fmt::layer().with_ansi(ansi).with_writer(std::io::stderr));
    // One JSON object per line; the job span's fields (job_id, collection, ...) under "span".
    let json = (format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
    });
    let registry = tracing_subscriber::registry().with(filter).with(text).with(json);

    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match otlp_endpoint.map(otlp::tracer) {
            Some(Ok((tracer, provider))) => (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider)),
            Some(Err(error)) => {
                eprintln!("quern-worker: OTLP export disabled: {error}");
                (None, None)
            }
            None => (None, None),
        };
        let _ = registry.with(layer).try_init();
        TelemetryGuard { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = registry.try_init();
        if otlp_endpoint.is_some() {
            tracing::warn!("--otlp-endpoint is set but this build has no `otlp` feature; spans are not exported");
        }
        TelemetryGuard {}
    }
}

/// Whether log lines get colour: on a terminal, unless `NO_COLOR` is set to anything but an empty string
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// `error` and its causes on one line, `a: b: c`, each said once. The adapters' errors (`StoreError`,
/// `QueueError`, `EmbedError`) put their cause, in plain words, in their own message, yet two of their variants
/// still return the driver's error from `source()` (a field named `source`), whose own chain repeats itself: the
/// line stops at them. Elsewhere a cause whose text the line already holds is left out. (anyhow's `{:#}` would
/// print every level.)
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let tells_its_cause = |e: &(dyn std::error::Error + 'static)| {
        e.is::<quern_store::StoreError>() || e.is::<quern_queue::QueueError>() || e.is::<quern_embed::EmbedError>()
    };
    let mut line = error.to_string();
    let mut current = error;
    while let (false, Some(next)) = (tells_its_cause(current), current.source()) {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        current = next;
    }
    line
}

/// Makes `span` continue the producer's trace in the tracing backend. Without the `otlp` feature the trace lives
/// in the span's `trace_id` and `parent_span_id` fields (and so in every log line of the job); with it, the
/// span is also exported over OTLP as a child of the producer's span.
#[cfg(not(feature = "otlp"))]
pub fn continue_trace(_span: &tracing::Span, _trace: &quern_core::TraceParent) {}

/// Makes `span` continue the producer's trace: exported over OTLP as a child of the producer's span.
#[cfg(feature = "otlp")]
pub fn continue_trace(span: &tracing::Span, trace: &quern_core::TraceParent) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let remote = SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.parent_id),
        TraceFlags::new(trace.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
    use opentelemetry_sdk::Resource;

    /// A tracer exporting in batches over OTLP/HTTP (protobuf) to `endpoint`.
    pub fn tracer(endpoint: &str) -> Result<(Tracer, SdkTracerProvider), String> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("quern-worker").build())
            .build();
        Ok((provider.tracer("quern-worker"), provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "redirected to a file");
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR does not count");
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let repeated = anyhow::Error::new(std::io::Error::new(io.kind(), format!("IO error: {io}")));
        let error = repeated.context("cannot connect");
        assert_eq!(error_chain(error.as_ref()), "cannot connect: IO error: connection refused");
        let distinct = anyhow::anyhow!("the root").context("the middle").context("the top");
        assert_eq!(error_chain(distinct.as_ref()), "the top: the middle: the root");
        // An adapter's error says its cause itself; its `source()` is not repeated.
        let lapin = quern_queue::lapin::Error::from(std::io::Error::from_raw_os_error(104));
        let broker = quern_queue::QueueError::Broker { operation: "queue.declare q".into(), cause: lapin };
        let error = anyhow::Error::new(broker).context("declaring the topology");
        assert_eq!(
            error_chain(error.as_ref()),
            "declaring the topology: RabbitMQ queue.declare q failed: connection reset by peer"
        );
    }
}
