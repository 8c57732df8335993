//! The HTTP side of an attempt: one pooled keep-alive client for every destination
//! (`http_client.rs`), no redirects, the SSRF guard in its resolver and on address
//! literals, a total timeout per request, and at most 4 KiB of any response read.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use percent_encoding::percent_decode_str;

use super::http_client::{self, HttpClient};
use super::retry::parse_retry_after;
use crate::destinations::ssrf::SsrfPolicy;

pub use super::http_client::TlsSetupError as SenderError;

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
    client: HttpClient,
    ssrf: Arc<SsrfPolicy>,
    user_agent: HeaderValue,
}

impl Sender {
    pub fn new(
        ssrf: Arc<SsrfPolicy>,
        user_agent: &str,
        max_idle_per_host: usize,
    ) -> Result<Self, SenderError> {
        let client = http_client::build(ssrf.clone(), max_idle_per_host)?;
        // The version string of this binary: always a valid header value.
        let user_agent = HeaderValue::from_str(user_agent)
            .unwrap_or_else(|_| HeaderValue::from_static("hookstream"));
        Ok(Self {
            client,
            ssrf,
            user_agent,
        })
    }

    pub async fn send(&self, request: Request) -> Response {
        let started = Instant::now();
        // One deadline for connect, send, headers and body, as reqwest's `timeout`.
        let deadline = tokio::time::Instant::from_std(started) + request.timeout;
        let failed = |error: String| Response {
            status: None,
            body: None,
            error: Some(error),
            retry_after: None,
            duration: started.elapsed(),
        };
        // Address literals never reach the resolver, so they are checked here.
        let url = request.url;
        if let Err(why) = self.ssrf.check_url(&url) {
            return failed(format!("refused by SSRF guard: {why}"));
        }
        let (uri, credentials) = match target(&url) {
            Ok(target) => target,
            Err(why) => return failed(format!("invalid URL: {why}")),
        };
        let mut headers = request.headers;
        // What reqwest added, each only where the request has none of its own.
        if let Some(credentials) = credentials {
            headers.entry(AUTHORIZATION).or_insert(credentials);
        }
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        headers
            .entry(USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        // The body is the event's shared bytes: `Full` hands them to hyper uncopied, and
        // its exact size becomes the Content-Length. hyper writes Host from the URI (with
        // the port when it is not the scheme's) and never follows a redirect.
        let mut http_request = http::Request::new(request.body.map(Full::new).unwrap_or_default());
        *http_request.method_mut() = request.method;
        *http_request.uri_mut() = uri;
        *http_request.headers_mut() = headers;
        let response =
            match tokio::time::timeout_at(deadline, self.client.request(http_request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return failed(describe_send(&e, &named(&url), request.timeout)),
                Err(_) => return failed(timed_out(request.timeout)),
            };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        let mut error = None;
        while body.len() < RESPONSE_BODY_LIMIT {
            match tokio::time::timeout_at(deadline, incoming.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(chunk) = frame.data_ref() {
                        body.extend_from_slice(chunk);
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    error = Some(describe_body(&e, request.timeout));
                    break;
                }
                Err(_) => {
                    error = Some(timed_out(request.timeout));
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

/// The URI hyper gets (no user info, no fragment) and the `Authorization` that user info
/// in the URL stands for, as reqwest made of it.
fn target(url: &url::Url) -> Result<(Uri, Option<HeaderValue>), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not http or https", url.scheme()));
    }
    let uri = match shown(url) {
        Cow::Borrowed(text) => Uri::try_from(text),
        Cow::Owned(text) => Uri::try_from(text),
    }
    .map_err(|e| e.to_string())?;
    if url.username().is_empty() && url.password().is_none() {
        return Ok((uri, None));
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut credentials = format!("{}:", decode(url.username()));
    if let Some(password) = url.password() {
        credentials.push_str(&decode(password));
    }
    let mut value = HeaderValue::try_from(format!("Basic {}", BASE64_STANDARD.encode(credentials)))
        .map_err(|e| e.to_string())?;
    value.set_sensitive(true);
    Ok((uri, Some(value)))
}

/// The URL as sent: without user info (it travels as `Authorization`) or fragment.
fn shown(url: &url::Url) -> Cow<'_, str> {
    without_user_info(url, url::Position::AfterQuery)
}

/// The URL as an error text names it: without user info, query or fragment. Receivers
/// often carry a token in the query, and the text goes into attempt records,
/// `Hs-Last-Error` and logs (reqwest showed the query).
fn named(url: &url::Url) -> Cow<'_, str> {
    without_user_info(url, url::Position::AfterPath)
}

fn without_user_info(url: &url::Url, end: url::Position) -> Cow<'_, str> {
    if url.username().is_empty() && url.password().is_none() {
        return Cow::Borrowed(&url[..end]);
    }
    let scheme = &url[..url::Position::BeforeUsername];
    let rest = &url[url::Position::BeforeHost..end];
    Cow::Owned(format!("{scheme}{rest}"))
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {} ms", timeout.as_millis())
}

/// The causes of `e`, outermost first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// A deadline inside the stack (the 10 s connect timeout, the kernel's) also reads as a
/// timeout of the attempt, as it did with reqwest.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    chain(e).any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || cause
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
    })
}

fn joined(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A short, stable description: what users see in attempts and `Hs-Last-Error`. The texts
/// are reqwest's, kept when it was replaced (ADR 0018).
fn describe_send(e: &hyper_util::client::legacy::Error, url: &str, timeout: Duration) -> String {
    if is_timeout(e) {
        return timed_out(timeout);
    }
    if e.is_connect() {
        let innermost = chain(e).last().map(ToString::to_string).unwrap_or_default();
        return format!("connection failed: {innermost}");
    }
    format!("error sending request for url ({url}): {}", joined(e))
}

fn describe_body(e: &hyper::Error, timeout: Duration) -> String {
    if is_timeout(e) {
        return timed_out(timeout);
    }
    format!(
        "error decoding response body: request or response body error: {}",
        joined(e)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(url: &str) -> Result<(String, Option<String>), String> {
        let (uri, auth) = target(&url::Url::parse(url).unwrap())?;
        Ok((
            uri.to_string(),
            auth.map(|v| v.to_str().unwrap().to_string()),
        ))
    }

    #[test]
    fn the_uri_sent_has_no_fragment_and_no_user_info() {
        assert_eq!(
            target_of("https://example.com:8443/a/b?c=1#frag"),
            Ok(("https://example.com:8443/a/b?c=1".into(), None))
        );
        let (uri, auth) = target_of("http://us%20er:pa%3Ass@example.com/x").unwrap();
        assert_eq!(uri, "http://example.com/x");
        let expected = format!("Basic {}", BASE64_STANDARD.encode("us er:pa:ss"));
        assert_eq!(auth.as_deref(), Some(expected.as_str()));
        let (_, auth) = target_of("http://token@example.com/").unwrap();
        let expected = format!("Basic {}", BASE64_STANDARD.encode("token:"));
        assert_eq!(auth.as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn only_http_and_https_are_sent() {
        assert!(target_of("ftp://example.com/x").is_err());
        assert!(target_of("http://example.com/").is_ok());
    }
}
