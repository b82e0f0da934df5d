//! OpenTelemetry: the runtime's `tracing` spans (a transaction, its
//! attempts, the twins, the gate's decisions, the commit) exported as
//! traces over OTLP/HTTP, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not at all otherwise.
//!
//! The exporter reads the standard variables itself (the endpoint, to
//! which `/v1/traces` is added; `OTEL_EXPORTER_OTLP_HEADERS`; the batch's
//! `OTEL_BSP_*`), and the resource reads `OTEL_SERVICE_NAME` (`txmirror`
//! when unset) and `OTEL_RESOURCE_ATTRIBUTES`. Spans leave in batches from a
//! thread of their own, so a transaction never waits for the collector; a
//! collector that is down loses spans, never transactions.
//!
//! An HTTP request's W3C `traceparent` is continued (see
//! `server/trace_context.rs`): its transaction's spans join the caller's
//! trace.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_subscriber::registry::LookupSpan;

/// The variables that turn the exporter on.
const ENDPOINT_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// The spans exported: the runtime's and the service's, at `info` and
/// above, whatever `TXMIRROR_LOG` says of the log.
pub const EXPORTED_SPANS: &str = "txmirror_runtime=info,txmirror_service=info";

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The endpoint is not an `http://` URL.
    #[error(
        "{variable}={endpoint:?} is not usable: txmirror exports OTLP over plain HTTP (http://host:port), \
         to a collector beside it; https and gRPC are not built in"
    )]
    Endpoint {
        /// The variable that named it.
        variable: &'static str,
        /// What it said.
        endpoint: String,
    },
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` asks for what is not built in.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported: txmirror exports http/protobuf only")]
    Protocol(String),
    /// The exporter refused its configuration.
    #[error("the OTLP exporter cannot be built")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The exporter, while it runs. Dropping it sends what is left and stops it.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: Tracer,
}

impl Telemetry {
    /// The exporter the environment asks for, or `None` when no endpoint
    /// is set. Also makes the W3C trace context the process's propagator,
    /// so that a request's `traceparent` is continued.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let Some((variable, endpoint)) = ENDPOINT_VARIABLES
            .iter()
            .find_map(|variable| std::env::var(variable).ok().filter(|v| !v.is_empty()).map(|v| (*variable, v)))
        else {
            return Ok(None);
        };
        if !endpoint.starts_with("http://") {
            return Err(TelemetryError::Endpoint { variable, endpoint });
        }
        if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && !protocol.is_empty()
            && protocol != "http/protobuf"
        {
            return Err(TelemetryError::Protocol(protocol));
        }
        // The exporter reads the endpoint itself, adding `/v1/traces` to the
        // general one as the specification says.
        let exporter = SpanExporter::builder().with_http().build().map_err(TelemetryError::Exporter)?;
        Ok(Some(Self::with_exporter(exporter)))
    }

    /// An exporter to `endpoint`, the full URL of the traces
    /// (`http://host:port/v1/traces`), whatever the environment says; for
    /// benchmarks and tests that start their own receiver.
    pub fn to_endpoint(endpoint: &str) -> Result<Self, TelemetryError> {
        if !endpoint.starts_with("http://") {
            return Err(TelemetryError::Endpoint { variable: "endpoint", endpoint: endpoint.to_string() });
        }
        let exporter =
            SpanExporter::builder().with_http().with_endpoint(endpoint).build().map_err(TelemetryError::Exporter)?;
        Ok(Self::with_exporter(exporter))
    }

    fn with_exporter(exporter: SpanExporter) -> Self {
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("txmirror");
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        let tracer = provider.tracer("txmirror");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Self { provider, tracer }
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans; add it
    /// to the subscriber with the [`EXPORTED_SPANS`] filter.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.clone()).with_tracked_inactivity(false)
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // What is batched is sent before the process ends.
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the OTLP exporter did not stop cleanly; spans may be lost");
        }
    }
}
