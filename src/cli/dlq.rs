//! `hookstream dlq list | replay | purge`: dead letters of a running service, through
//! `GET /v1/dlq`, `POST /v1/dlq/replay` and `POST /v1/dlq/purge`.
//!
//! Replays and purges go in pages (`--page-size`) so that a long one shows progress and
//! a failure part-way loses nothing: what was not done stays in `HS_DLQ`, and running
//! the same command again does the rest (a dead letter replayed just before a failure is
//! not sent twice, see `dlq/replay.rs`). Before a replay, a dry run over the selection
//! counts it for the progress bar and surfaces a refused destination before anything is
//! sent; `--dry-run` stops there.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

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

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Base URL of the service's HTTP API.
    #[arg(
        long,
        env = "HOOKSTREAM_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key sent as `Authorization: Bearer` (an admin key, or a tenant key for its
    /// own dead letters).
    #[arg(
        long,
        env = "HOOKSTREAM_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List(ListArgs),
    /// Send dead letters again to their destination only, then remove them.
    Replay(ReplayArgs),
    /// Remove dead letters without sending them.
    Purge(PurgeArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this tenant's dead letters.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this destination's dead letters.
    #[arg(long = "destination")]
    pub destination_id: Option<String>,
    /// Only this event type, or pattern (`order.*`, `order.>`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Dead-lettered at or after this time (RFC 3339, e.g. 2026-01-31T08:00:00Z).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered at or before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut add = |name, value: Option<String>| {
            if let Some(v) = value {
                out.push((name, v));
            }
        };
        add("tenant", self.tenant.clone());
        add("destination_id", self.destination_id.clone());
        add("event_type", self.event_type.clone());
        add("since", self.since.map(|t| t.to_rfc3339()));
        add("until", self.until.map(|t| t.to_rfc3339()));
        out
    }

    fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Oldest first instead.
    #[arg(long)]
    pub oldest_first: bool,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Dead-letter ids instead of filters (repeat, or separate with commas).
    #[arg(long = "id", value_delimiter = ',', conflicts_with_all = ["tenant", "destination_id", "event_type", "since", "until"])]
    pub ids: Vec<u64>,
    /// Re-enable a disabled destination instead of refusing.
    #[arg(long)]
    pub enable_destination: bool,
    /// Count what would be replayed; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Dead letters per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_size: u64,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Dead-letter ids instead of filters (repeat, or separate with commas).
    #[arg(long = "id", value_delimiter = ',', conflicts_with_all = ["tenant", "destination_id", "event_type", "since", "until"])]
    pub ids: Vec<u64>,
    /// Count what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Dead letters per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_size: u64,
}

/// Ids per request (the API takes at most 1000).
const IDS_PER_REQUEST: usize = 1000;
/// Page size of the counting dry run.
const COUNT_PAGE: u64 = 10_000;

pub async fn run(args: DlqArgs) -> Result<(), CliError> {
    let api = Api::new(&args.url, args.api_key.as_deref())?;
    let mut out = std::io::stdout().lock();
    match args.command {
        DlqCommand::List(a) => list(&api, a, &mut out).await,
        DlqCommand::Replay(a) => replay(&api, a, &mut out).await,
        DlqCommand::Purge(a) => purge(&api, a, &mut out).await,
    }
}

async fn list(api: &Api, args: ListArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut cursor: Option<String> = None;
    let mut shown = 0;
    if !args.json {
        writeln!(
            out,
            "{:>8}  {:<25}  {:<12}  {:<24}  {:<28}  {:<20}  {:<15}  {:>3}  LAST",
            "ID", "DEAD-LETTERED AT", "TENANT", "DESTINATION", "EVENT ID", "TYPE", "REASON", "ATT"
        )?;
    }
    while shown < args.limit {
        let mut query = args.filter.pairs();
        query.push(("limit", (args.limit - shown).min(1000).to_string()));
        query.push((
            "order",
            if args.oldest_first {
                "oldest"
            } else {
                "newest"
            }
            .to_string(),
        ));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = api.get("/v1/dlq", &query).await?;
        for letter in page["data"].as_array().into_iter().flatten() {
            shown += 1;
            if args.json {
                writeln!(out, "{letter}")?;
            } else {
                writeln!(out, "{}", row(letter))?;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    if !args.json && shown == 0 {
        writeln!(out, "no dead letters")?;
    }
    Ok(())
}

fn row(letter: &Value) -> String {
    let text = |name: &str| match &letter[name] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let last = match (&letter["last_status"], letter["last_error"].as_str()) {
        (Value::Number(n), _) => format!("HTTP {n}"),
        (_, Some(e)) => e.chars().take(60).collect(),
        _ => "-".to_string(),
    };
    format!(
        "{:>8}  {:<25}  {:<12}  {:<24}  {:<28}  {:<20}  {:<15}  {:>3}  {last}",
        text("id"),
        text("dead_lettered_at")
            .chars()
            .take(25)
            .collect::<String>(),
        text("tenant"),
        text("destination_id"),
        text("event_id"),
        text("event_type"),
        text("reason"),
        text("attempts"),
    )
}

/// One request body per page: the ids of this chunk, or the filters and the cursor.
fn body(
    filter: &FilterArgs,
    ids: Option<&[u64]>,
    cursor: Option<&str>,
    limit: u64,
) -> Map<String, Value> {
    let mut body = Map::new();
    match ids {
        Some(ids) => {
            body.insert("ids".into(), json!(ids));
        }
        None => {
            for (name, value) in filter.pairs() {
                body.insert(name.into(), Value::String(value));
            }
            if let Some(c) = cursor {
                body.insert("cursor".into(), json!(c));
            }
            body.insert("limit".into(), json!(limit));
        }
    }
    body
}

/// Totals over the pages of a replay or purge.
#[derive(Default)]
struct Totals {
    matched: u64,
    done: u64,
    already: u64,
    not_found: u64,
    /// (destination, code) → (count, message)
    skipped: BTreeMap<(String, String), (u64, String)>,
}

impl Totals {
    fn add(&mut self, answer: &Value, done_field: &str) {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        self.matched += n(&answer["matched"]);
        self.done += n(&answer[done_field]);
        self.already += n(&answer["already_replayed"]);
        self.not_found += answer["not_found"].as_array().map_or(0, |a| a.len() as u64);
        for s in answer["skipped"].as_array().into_iter().flatten() {
            let key = (
                s["destination_id"].as_str().unwrap_or("").to_string(),
                s["code"].as_str().unwrap_or("").to_string(),
            );
            let entry = self
                .skipped
                .entry(key)
                .or_insert((0, s["message"].as_str().unwrap_or("").to_string()));
            entry.0 += n(&s["count"]);
        }
    }

    fn report_skipped(&self, out: &mut impl Write) -> Result<(), CliError> {
        for ((destination, code), (count, message)) in &self.skipped {
            writeln!(
                out,
                "left in the DLQ: {count} of {destination} ({code}): {message}"
            )?;
        }
        if self.not_found > 0 {
            writeln!(
                out,
                "{} ids were not dead letters (already replayed or purged?)",
                self.not_found
            )?;
        }
        Ok(())
    }
}

/// Runs `path` over the whole selection, a page at a time; `on_page` sees each answer.
async fn paged(
    api: &Api,
    path: &str,
    filter: &FilterArgs,
    ids: &[u64],
    page_size: u64,
    extra: &Map<String, Value>,
    mut on_page: impl FnMut(&Value),
) -> Result<(), CliError> {
    let mut send = async |mut body: Map<String, Value>| -> Result<Value, CliError> {
        body.extend(extra.clone());
        let answer = api.post(path, &Value::Object(body)).await?;
        on_page(&answer);
        Ok(answer)
    };
    if !ids.is_empty() {
        for chunk in ids.chunks(IDS_PER_REQUEST) {
            send(body(filter, Some(chunk), None, page_size)).await?;
        }
        return Ok(());
    }
    let mut cursor: Option<String> = None;
    loop {
        let answer = send(body(filter, None, cursor.as_deref(), page_size)).await?;
        match answer["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(()),
        }
    }
}

async fn replay(api: &Api, args: ReplayArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut extra = Map::new();
    if args.enable_destination {
        extra.insert("enable_destination".into(), json!(true));
    }
    // Count first (and learn about refused destinations before anything is sent).
    let mut counted = Totals::default();
    let mut dry = extra.clone();
    dry.insert("dry_run".into(), json!(true));
    paged(
        api,
        "/v1/dlq/replay",
        &args.filter,
        &args.ids,
        COUNT_PAGE,
        &dry,
        |a| counted.add(a, "replayed"),
    )
    .await?;
    let would = counted.matched - counted.skipped.values().map(|(n, _)| n).sum::<u64>();
    if args.dry_run {
        writeln!(out, "dry run: {would} dead letters would be replayed")?;
        counted.report_skipped(out)?;
        return Ok(());
    }
    let bar = progress_bar(counted.matched, "replaying");
    let mut totals = Totals::default();
    let result = paged(
        api,
        "/v1/dlq/replay",
        &args.filter,
        &args.ids,
        args.page_size,
        &extra,
        |a| {
            totals.add(a, "replayed");
            bar.set_length(bar.length().unwrap_or(0).max(totals.matched));
            bar.set_position(totals.matched);
        },
    )
    .await;
    bar.finish_and_clear();
    writeln!(
        out,
        "replayed {} dead letters ({} had been replayed already and were not sent again)",
        totals.done, totals.already
    )?;
    totals.report_skipped(out)?;
    result.map_err(|e| {
        CliError::Usage(format!(
            "replay stopped: {e}. Nothing is lost: run the same command again to replay the rest"
        ))
    })
}

async fn purge(api: &Api, args: PurgeArgs, out: &mut impl Write) -> Result<(), CliError> {
    if args.ids.is_empty() && args.filter.is_empty() {
        return Err(CliError::Usage(
            "purge needs --id or at least one of --tenant, --destination, --type, --since, --until"
                .into(),
        ));
    }
    let mut extra = Map::new();
    if args.dry_run {
        extra.insert("dry_run".into(), json!(true));
    }
    let bar = progress_bar(0, "purging");
    let mut totals = Totals::default();
    let result = paged(
        api,
        "/v1/dlq/purge",
        &args.filter,
        &args.ids,
        args.page_size,
        &extra,
        |a| {
            totals.add(a, "purged");
            bar.set_length(totals.matched);
            bar.set_position(totals.matched);
        },
    )
    .await;
    bar.finish_and_clear();
    result?;
    if args.dry_run {
        writeln!(
            out,
            "dry run: {} dead letters would be purged",
            totals.matched
        )?;
    } else {
        writeln!(out, "purged {} dead letters", totals.done)?;
    }
    totals.report_skipped(out)?;
    Ok(())
}

/// On stderr, and hidden when stderr is not a terminal.
fn progress_bar(length: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} dead letters ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
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

    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let url = self.url(path, query)?;
        self.send(self.client.get(url.clone()), &url).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let url = self.url(path, &[])?;
        let request = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request, &url).await
    }

    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &url::Url,
    ) -> Result<Value, CliError> {
        let http = |source| CliError::Http {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| CliError::Answer(String::from_utf8_lossy(&bytes).into_owned()))?;
        if !status.is_success() {
            return Err(CliError::Api {
                status: status.as_u16(),
                code: value["error"]["code"].as_str().unwrap_or("").to_string(),
                message: value["error"]["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_body_carries_filters_and_cursor_or_ids() {
        let filter = FilterArgs {
            destination_id: Some("d1".into()),
            event_type: Some("order.*".into()),
            since: DateTime::from_timestamp(0, 0),
            ..Default::default()
        };
        let page = Value::Object(body(&filter, None, Some("5-9"), 100));
        assert_eq!(page["destination_id"], "d1");
        assert_eq!(page["event_type"], "order.*");
        assert_eq!(page["since"], "1970-01-01T00:00:00+00:00");
        assert_eq!(page["cursor"], "5-9");
        assert_eq!(page["limit"], 100);
        let by_ids = Value::Object(body(&filter, Some(&[3, 4]), None, 100));
        assert_eq!(by_ids, json!({"ids": [3, 4]}));
    }

    #[test]
    fn totals_add_up_pages() {
        let mut totals = Totals::default();
        let page = json!({"matched": 3, "replayed": 2, "already_replayed": 0,
            "skipped": [{"destination_id": "d", "code": "malformed_event", "count": 1, "message": "m"}],
            "not_found": [7]});
        totals.add(&page, "replayed");
        totals.add(&page, "replayed");
        assert_eq!((totals.matched, totals.done, totals.not_found), (6, 4, 2));
        assert_eq!(totals.skipped[&("d".into(), "malformed_event".into())].0, 2);
    }
}
