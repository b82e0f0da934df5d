//! An OTLP/HTTP receiver of traces on 127.0.0.1, in the test's process:
//! what an OpenTelemetry collector would be told, decoded from the
//! protobuf the exporter sends.

use crate::{Behaviour, TestServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::Value;
use std::collections::BTreeMap;

/// A span as the receiver got it; ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, Value>,
    /// Its events: each one's name and attributes.
    pub events: Vec<(String, BTreeMap<String, Value>)>,
    /// The `service.name` of the resource that sent it.
    pub service_name: Option<String>,
}

impl ReceivedSpan {
    /// An attribute as text (numbers and booleans written out).
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }
}

/// The receiver. Stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    server: TestServer,
}

impl OtlpReceiver {
    /// Listens on an ephemeral port of 127.0.0.1, answering every export
    /// with success.
    pub async fn start() -> Self {
        let behaviour = Behaviour { status: 200, body: String::new(), ..Behaviour::default() };
        Self { server: TestServer::start(behaviour).await }
    }

    /// `http://127.0.0.1:port`: what `OTEL_EXPORTER_OTLP_ENDPOINT` says
    /// (the exporter adds `/v1/traces`).
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// The number of export requests received.
    pub fn requests(&self) -> usize {
        self.server.received().len()
    }

    /// Every span received so far, in the order received. A request that
    /// is not a trace export, or not protobuf, fails the test.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut spans = Vec::new();
        for request in self.server.received() {
            assert_eq!(request.uri, "/v1/traces", "an OTLP/HTTP trace export");
            assert_eq!(request.header("content-type"), Some("application/x-protobuf"));
            let export = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
            for resource in export.resource_spans {
                let service_name = resource
                    .resource
                    .as_ref()
                    .and_then(|r| attributes(&r.attributes).get("service.name").cloned())
                    .and_then(|name| name.as_str().map(String::from));
                for span in resource.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                    spans.push(ReceivedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        attributes: attributes(&span.attributes),
                        events: span.events.iter().map(|e| (e.name.clone(), attributes(&e.attributes))).collect(),
                        service_name: service_name.clone(),
                    });
                }
            }
        }
        spans
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, Value> {
    list.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json))).collect()
}

fn json(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Value::from(text.as_str()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(array)) => Value::Array(array.values.iter().map(json).collect()),
        Some(other) => Value::from(format!("{other:?}")),
        None => Value::Null,
    }
}
