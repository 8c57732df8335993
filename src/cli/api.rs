//! The service's HTTP API as the command-line clients see it: requests from the API's own
//! types, answers read into the API's answer types, an error answer as [`CliError::Api`]
//! with the API's code and message.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0} is not a valid URL: {1}")]
    Url(String, url::ParseError),
    #[error("could not reach the service at {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the service answered {status} ({code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the service answered something that is not JSON: {0}")]
    Answer(String),
    #[error("{0}")]
    Usage(String),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("the API key (--api-key, HOOKSTREAM_API_KEY) holds characters a header cannot carry")]
    ApiKey,
}

/// The service's HTTP API, answers parsed as JSON and errors in the API's format.
/// Shared with `hookstream upload`.
pub(crate) struct Api {
    base: url::Url,
    pub(crate) client: reqwest::Client,
}

impl Api {
    pub(crate) fn new(base: &str, api_key: Option<&str>) -> Result<Self, CliError> {
        let parsed = url::Url::parse(base).map_err(|e| CliError::Url(base.to_string(), e))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key.map(str::trim).filter(|k| !k.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| CliError::ApiKey)?;
            // Kept out of reqwest's debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            // A page of 10,000 dead letters takes seconds; the service's own request
            // timeout (api.request_timeout_ms) answers 503 before this.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| CliError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(Self {
            base: parsed,
            client,
        })
    }

    pub(crate) fn url(&self, path: &str, query: &[(&str, String)]) -> Result<url::Url, CliError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| CliError::Url(path.to_string(), e))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// `query` is any serde shape of the API's query types (`ListQuery`, ...).
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl Serialize,
    ) -> Result<T, CliError> {
        let mut url = self.url(path, &[])?;
        let encoded = serde_urlencoded::to_string(query)
            .map_err(|e| CliError::Usage(format!("cannot encode the query: {e}")))?;
        if !encoded.is_empty() {
            url.set_query(Some(&encoded));
        }
        self.send(self.client.get(url.clone()), &url).await
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        let url = self.url(path, &[])?;
        let body = serde_json::to_vec(body)
            .map_err(|e| CliError::Usage(format!("cannot encode the request: {e}")))?;
        let request = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request, &url).await
    }

    /// The answer as `T` (one of the API's answer types); an error answer as
    /// [`CliError::Api`] with the API's code and message.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &url::Url,
    ) -> Result<T, CliError> {
        let http = |source| CliError::Http {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        let unreadable = || CliError::Answer(String::from_utf8_lossy(&bytes).into_owned());
        if !status.is_success() {
            let answer: ErrorAnswer = serde_json::from_slice(&bytes).map_err(|_| unreadable())?;
            return Err(CliError::Api {
                status: status.as_u16(),
                code: answer.error.code,
                message: answer.error.message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|_| unreadable())
    }
}

/// The API's error answer (`{"error": {"code", "message"}}`, `api/error.rs`).
#[derive(serde::Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}
