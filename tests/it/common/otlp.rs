//! `OtlpReceiver`: a real OTLP trace receiver, the part of a collector (or Jaeger) that
//! hookstream's exporter talks to. Over gRPC it is the `TraceService` generated from the
//! OTLP protos (tonic); over HTTP/protobuf an axum route decoding
//! `ExportTraceServiceRequest` with prost. Both keep every span they receive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// OTLP `Span.SpanKind` values.
pub mod kind {
    pub const SERVER: i32 = 2;
    pub const CLIENT: i32 = 3;
    pub const PRODUCER: i32 = 4;
    pub const CONSUMER: i32 = 5;
}

/// OTLP `Status.StatusCode` values.
pub mod status {
    pub const UNSET: i32 = 0;
    pub const OK: i32 = 1;
    pub const ERROR: i32 = 2;
}

/// One received span, ids in lowercase hex as in a `traceparent`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    pub status: i32,
    pub attributes: HashMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
}

impl Collected {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("span list lock");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        status: span.status.map_or(status::UNSET, |s| s.code),
                        attributes: span
                            .attributes
                            .into_iter()
                            .map(|kv| (kv.key, kv.value.as_ref().map(text).unwrap_or_default()))
                            .collect(),
                        links: span
                            .links
                            .into_iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                    });
                }
            }
        }
        drop(spans);
        self.arrived.notify_waiters();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Any attribute value as text (ints as decimal), enough for assertions.
fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

pub struct OtlpReceiver {
    addr: SocketAddr,
    collected: Arc<Collected>,
    shutdown: CancellationToken,
}

struct GrpcService(Arc<Collected>);

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// OTLP/gRPC on a free 127.0.0.1 port (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    pub async fn start_grpc() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP gRPC receiver");
        let addr = listener.local_addr().expect("receiver address");
        let collected = Arc::new(Collected::default());
        let shutdown = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcService(collected.clone())))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown.clone().cancelled_owned(),
            );
        tokio::spawn(async move { server.await.expect("OTLP gRPC receiver") });
        OtlpReceiver {
            addr,
            collected,
            shutdown,
        }
    }

    /// OTLP/HTTP with protobuf bodies on `POST /v1/traces`
    /// (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
    pub async fn start_http() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP HTTP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let collected = Arc::new(Collected::default());
        let shutdown = CancellationToken::new();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export_http))
            .with_state(collected.clone());
        tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );
        OtlpReceiver {
            addr,
            collected,
            shutdown,
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected.spans.lock().expect("span list lock").clone()
    }

    /// Waits until `done` holds for the spans received so far; panics after `timeout`
    /// with what did arrive.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.collected.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let spans = self.spans();
                if done(&spans) {
                    return spans;
                }
                panic!(
                    "the expected spans did not arrive within {timeout:?}; received {}:\n{spans:#?}",
                    spans.len()
                );
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn export_http(State(collected): State<Arc<Collected>>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            collected.add(request);
            let answer = ExportTraceServiceResponse {
                partial_success: None,
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                answer.encode_to_vec(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
