//! `Receiver`: a real HTTP server standing in for a webhook destination. It records every
//! request and hands it to the test through a channel, answers with a status the test can
//! change (or script) mid-test, and tracks how many requests were open at once and how
//! many were abandoned by their sender before the answer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Path and query, e.g. `/hook?order=42`.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: Instant,
}

impl Request {
    /// The header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON; panics (failing the test) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body of {} {} is not JSON ({err}): {:?}",
                self.method, self.uri, self.body
            )
        })
    }

    /// Headers as (name, value) pairs, the shape `verify_with_python` takes.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

/// How the receiver answers; changed by the test at any time.
struct Behaviour {
    default_status: u16,
    /// Answered in order before falling back to `default_status`.
    script: VecDeque<u16>,
    delay: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    open: AtomicUsize,
    max_open: AtomicUsize,
    aborted: Mutex<Vec<Request>>,
    /// Per TLS connection (`start_tls`), the protocol ALPN chose.
    alpn: Mutex<Vec<Option<Vec<u8>>>>,
    requests: mpsc::UnboundedSender<Request>,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // A tokio mutex so `recv_timeout` can take `&self`: tests may share the receiver
    // (e.g. in an `Arc`) while changing its status.
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>,
    shutdown: CancellationToken,
}

impl Receiver {
    /// Starts a receiver on a free 127.0.0.1 port, answering 200 to everything.
    pub async fn start() -> Receiver {
        let (receiver, app, listener) = Self::parts().await;
        tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(receiver.shutdown.clone().cancelled_owned())
                .into_future(),
        );
        receiver
    }

    /// The same receiver over HTTPS (HTTP/1.1) with this TLS configuration; a handshake
    /// that fails is dropped without an answer, as a real server does.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Receiver {
        let (receiver, app, listener) = Self::parts().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let shutdown = receiver.shutdown.clone();
        let shared = receiver.shared.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let (acceptor, app, shared) = (acceptor.clone(), app.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    shared.alpn.lock().expect("receiver alpn lock").push(alpn);
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        receiver
    }

    async fn parts() -> (Receiver, Router, tokio::net::TcpListener) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
                default_status: 200,
                script: VecDeque::new(),
                delay: Duration::ZERO,
                headers: Vec::new(),
                body: Bytes::from_static(b"ok"),
            }),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            aborted: Mutex::new(Vec::new()),
            alpn: Mutex::new(Vec::new()),
            requests: tx,
        });
        let app = Router::new()
            .fallback(record)
            // Webhook bodies may exceed axum's 2 MB default in size-limit tests.
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test receiver");
        let addr = listener.local_addr().expect("receiver address");
        let receiver = Receiver {
            addr,
            shared,
            requests: tokio::sync::Mutex::new(rx),
            shutdown: CancellationToken::new(),
        };
        (receiver, app, listener)
    }

    /// The ALPN protocol each TLS connection agreed on so far (`None`: none was).
    pub fn negotiated_alpn(&self) -> Vec<Option<Vec<u8>>> {
        self.shared.alpn.lock().expect("receiver alpn lock").clone()
    }

    /// `http://127.0.0.1:PORT{path}`; every path is accepted.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// The status answered once the script (if any) is used up.
    pub fn set_status(&self, status: u16) {
        self.behaviour().default_status = status;
    }

    /// Answers these statuses to the next requests, in order, then the default status.
    /// Replaces any script not yet used up.
    pub fn script(&self, statuses: impl IntoIterator<Item = u16>) {
        self.behaviour().script = statuses.into_iter().collect();
    }

    /// Waits this long before answering each request (the request is recorded at once).
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour().delay = delay;
    }

    /// Adds a header to every answer from now on, e.g. `("retry-after", "1")`.
    pub fn set_header(&self, name: &str, value: &str) {
        let name = HeaderName::try_from(name).expect("valid header name");
        let value = HeaderValue::try_from(value).expect("valid header value");
        self.behaviour().headers.push((name, value));
    }

    pub fn clear_headers(&self) {
        self.behaviour().headers.clear();
    }

    /// The body of every answer from now on (default `ok`).
    pub fn set_body(&self, body: impl Into<Bytes>) {
        self.behaviour().body = body.into();
    }

    /// The most requests that were in progress at the same moment so far.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// Requests in progress right now.
    pub fn open_requests(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Requests whose sender went away (timed out, or died) before they were answered:
    /// the connection closed while the answer was delayed. They were also handed to the
    /// test on arrival, like every request; an abandoned request is not a delivery.
    pub fn aborted_requests(&self) -> Vec<Request> {
        self.shared
            .aborted
            .lock()
            .expect("receiver aborted lock")
            .clone()
    }

    /// The next request, or `None` if none arrives within `timeout`.
    pub async fn recv_timeout(&self, timeout: Duration) -> Option<Request> {
        let mut requests = self.requests.lock().await;
        tokio::time::timeout(timeout, requests.recv())
            .await
            .ok()
            .flatten()
    }

    /// Up to `n` requests; returns early with what arrived if `timeout` (for all of them)
    /// passes first, so the test can assert on the count and show what it got.
    pub async fn collect(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut requests = self.requests.lock().await;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, requests.recv()).await {
                Ok(Some(request)) => got.push(request),
                Ok(None) | Err(_) => break,
            }
        }
        got
    }

    /// Requests already received and not yet taken, without waiting.
    pub async fn drain(&self) -> Vec<Request> {
        let mut requests = self.requests.lock().await;
        std::iter::from_fn(|| requests.try_recv().ok()).collect()
    }

    fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.shared
            .behaviour
            .lock()
            .expect("receiver behaviour lock")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Decrements the open-request count however the request ends, including when the
/// client gives up (times out, or dies) and hyper drops the handler mid-delay: then it
/// keeps the request as aborted.
struct OpenGuard<'a> {
    shared: &'a Shared,
    /// Until the answer is ready.
    unanswered: Option<Request>,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
        if let Some(request) = self.unanswered.take() {
            self.shared
                .aborted
                .lock()
                .expect("receiver aborted lock")
                .push(request);
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
    let mut guard = OpenGuard {
        shared: &shared,
        unanswered: None,
    };
    shared.max_open.fetch_max(now_open, Ordering::SeqCst);

    // Decide the answer on arrival, so scripted statuses follow arrival order even when
    // answers are delayed.
    let (status, delay, extra_headers, answer_body) = {
        let mut behaviour = shared.behaviour.lock().expect("receiver behaviour lock");
        let status = behaviour
            .script
            .pop_front()
            .unwrap_or(behaviour.default_status);
        (
            status,
            behaviour.delay,
            behaviour.headers.clone(),
            behaviour.body.clone(),
        )
    };

    let uri = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string());
    let request = Request {
        method,
        uri,
        headers,
        body,
        received_at: Instant::now(),
    };
    guard.unanswered = Some(request.clone());
    // The test may have dropped its side already; the answer still goes out.
    let _ = shared.requests.send(request);

    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(status).expect("scripted status is a valid HTTP status");
    let mut response = (status, answer_body).into_response();
    response.headers_mut().extend(extra_headers);
    guard.unanswered = None;
    response
}
