//! The pooled HTTP/1.1 client every attempt goes through (ADR 0018): hyper-util's client
//! over a TCP connector whose resolver is the SSRF guard, TLS by rustls with the platform
//! verifier. It is the stack reqwest 0.13 (`rustls` feature) builds, with the same
//! settings, minus reqwest's per-request layers; `sender.rs` adds what reqwest added per
//! request (default headers, total timeout, error texts).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio::net::TcpStream;
use tower::Service;

use crate::destinations::ssrf::{GuardedResolver, SsrfPolicy};

pub type HttpClient = Client<Connector, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Covers TCP and the TLS handshake, as reqwest's `connect_timeout` does.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What reqwest does by default; dead peers of idle pooled connections are noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("TLS could not be set up: {0}")]
pub struct TlsSetupError(#[from] rustls::Error);

pub fn build(ssrf: Arc<SsrfPolicy>, max_idle_per_host: usize) -> Result<HttpClient, TlsSetupError> {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(ssrf));
    // The connector serves https too (the TLS layer above it checks the scheme).
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_keepalive_interval(Some(TCP_KEEPALIVE));
    http.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    // No proxy anywhere in this stack: a proxy from the environment would bypass the SSRF
    // guard's view of the destination; webhooks go direct.
    let connector = Connector {
        inner: HttpsConnector::from((http, tls_config()?)),
    };
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        // As many idle connections as deliveries may be in flight: many destinations on
        // one host must reuse connections rather than open and close them.
        .pool_max_idle_per_host(max_idle_per_host)
        .build(connector))
}

/// reqwest 0.13's `rustls` configuration: the process's default crypto provider or
/// aws-lc-rs, TLS 1.2 and 1.3, the platform verifier (on Linux: the system's CA store,
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), SNI, and ALPN offering only HTTP/1.1.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .with_platform_verifier()?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The TLS connector with a deadline on the whole connect (resolve, TCP, handshake).
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<HttpConnector<GuardedResolver>>,
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(connected) => connected,
                // `TimedOut` is what makes the attempt's error say "timed out".
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into()),
            }
        })
    }
}
