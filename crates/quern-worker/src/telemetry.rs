//! Logging and tracing through `tracing`: readable text on a terminal or JSON lines for log shippers, and with
//! the `otlp` cargo feature, each job's span exported over OTLP as a child of the producer's `traceparent`.

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

/// Installs the global subscriber. `RUST_LOG` overrides the default filter (`info`, quieter lapin). A second call
/// (tests) keeps the first subscriber.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,amq_protocol=warn"));
    let text = (format == LogFormat::Text).then(|| fmt::layer().with_writer(std::io::stderr));
    // One JSON object per line; the job span's fields (job_id, collection, ...) under "span".
    let json = (format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
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
