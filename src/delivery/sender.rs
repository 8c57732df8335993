//! The HTTP side of an attempt: one pooled keep-alive client for every destination, no
//! redirects, the SSRF guard in its resolver, a per-request timeout, and at most 4 KiB
//! of any response read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Client, Method, redirect};

use super::retry::parse_retry_after;
use crate::destinations::ssrf::{GuardedResolver, SsrfPolicy};

pub const RESPONSE_BODY_LIMIT: usize = 4096;

pub struct Request {
    pub method: Method,
    /// Parsed where it is built (once per destination unless a `GET` template fills it).
    pub url: url::Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    pub timeout: Duration,
}

/// What came back (or why nothing did).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub duration: Duration,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Clone)]
pub struct Sender {
    client: Client,
    ssrf: Arc<SsrfPolicy>,
}

impl Sender {
    pub fn new(
        ssrf: Arc<SsrfPolicy>,
        user_agent: &str,
        max_idle_per_host: usize,
    ) -> reqwest::Result<Self> {
        let client = Client::builder()
            .user_agent(user_agent)
            .redirect(redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver::new(ssrf.clone())))
            // A proxy from the environment would bypass the SSRF guard's view of the
            // destination; webhooks go direct.
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            // As many idle connections as deliveries may be in flight: many destinations
            // on one host must reuse connections rather than open and close them.
            .pool_max_idle_per_host(max_idle_per_host)
            .build()?;
        Ok(Self { client, ssrf })
    }

    pub async fn send(&self, request: Request) -> Response {
        let started = Instant::now();
        let failed = |error: String| Response {
            status: None,
            body: None,
            error: Some(error),
            retry_after: None,
            duration: started.elapsed(),
        };
        // Address literals never reach the resolver, so they are checked here. The parsed
        // URL is what reqwest gets: parsing (with IDNA) is not free at 20k requests/s.
        let url = request.url;
        if let Err(why) = self.ssrf.check_url(&url) {
            return failed(format!("refused by SSRF guard: {why}"));
        }
        let mut builder = self
            .client
            .request(request.method, url)
            .headers(request.headers)
            .timeout(request.timeout);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return failed(describe(&e, request.timeout)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        let mut error = None;
        while body.len() < RESPONSE_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    error = Some(describe(&e, request.timeout));
                    break;
                }
            }
        }
        body.truncate(RESPONSE_BODY_LIMIT);
        Response {
            status: Some(status),
            body: (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
            error,
            retry_after,
            duration: started.elapsed(),
        }
    }
}

/// A short, stable description: what users see in attempts and `Hs-Last-Error`.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    if e.is_connect() {
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut innermost = e.to_string();
        while let Some(s) = source {
            innermost = s.to_string();
            source = s.source();
        }
        return format!("connection failed: {innermost}");
    }
    let mut text = e.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
