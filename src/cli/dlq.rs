//! `hookstream dlq list | replay | purge`: dead letters of a running service, through
//! `GET /v1/dlq`, `POST /v1/dlq/replay` and `POST /v1/dlq/purge`.
//!
//! Replays and purges go in pages (`--page-size`) so that a long one shows progress and
//! a failure part-way loses nothing: what was not done stays in `HS_DLQ`, and running
//! the same command again does the rest (a dead letter replayed just before a failure is
//! not sent twice, see `dlq/replay.rs`). Before a replay, a dry run over the selection
//! counts it for the progress bar and surfaces a refused destination before anything is
//! sent; `--dry-run` stops there.
//!
//! About 500 lines, 70 of them unit tests: three subcommands with their arguments,
//! progress and output.

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::{Api, CliError};
use crate::api::dlq::{
    DeadLetterList, DeadLetterSelection, DeadLetterView, ListOrder, ListQuery, PurgeAnswer,
    ReplayAnswer, ReplayBody,
};
use crate::dlq::DeadLetterFilter;

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

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: DeadLetterFilter,
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
    pub filter: DeadLetterFilter,
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
    pub filter: DeadLetterFilter,
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
        let query = ListQuery {
            filter: args.filter.clone(),
            order: Some(if args.oldest_first {
                ListOrder::Oldest
            } else {
                ListOrder::Newest
            }),
            limit: Some((args.limit - shown).min(1000)),
            cursor: cursor.take(),
        };
        let page: DeadLetterList = api.get("/v1/dlq", &query).await?;
        for letter in &page.data {
            shown += 1;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(letter).unwrap_or_default())?;
            } else {
                writeln!(out, "{}", row(letter))?;
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if !args.json && shown == 0 {
        writeln!(out, "no dead letters")?;
    }
    Ok(())
}

fn row(letter: &DeadLetterView) -> String {
    let text = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
    let last = match (letter.last_status, &letter.last_error) {
        (Some(n), _) => format!("HTTP {n}"),
        (_, Some(e)) => e.chars().take(60).collect(),
        _ => "-".to_string(),
    };
    format!(
        "{:>8}  {:<25}  {:<12}  {:<24}  {:<28}  {:<20}  {:<15}  {:>3}  {last}",
        letter.id,
        letter
            .dead_lettered_at
            .to_rfc3339()
            .chars()
            .take(25)
            .collect::<String>(),
        letter.tenant,
        letter.destination_id,
        text(letter.event_id.clone()),
        text(letter.event_type.clone()),
        text(letter.reason.clone()),
        text(letter.attempts.map(|a| a.to_string())),
    )
}

/// One request's selection: the ids of this chunk, or the filter and the cursor.
fn selection(
    filter: &DeadLetterFilter,
    ids: Option<&[u64]>,
    cursor: Option<String>,
    limit: u64,
    dry_run: bool,
) -> DeadLetterSelection {
    match ids {
        Some(ids) => DeadLetterSelection {
            ids: Some(ids.to_vec()),
            dry_run,
            ..Default::default()
        },
        None => DeadLetterSelection {
            ids: None,
            filter: filter.clone(),
            limit: Some(limit as usize),
            cursor,
            dry_run,
        },
    }
}

/// The answers of a replay or purge, one per page.
trait PageAnswer: DeserializeOwned {
    fn next_cursor(&self) -> Option<&str>;
}

impl PageAnswer for ReplayAnswer {
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
}

impl PageAnswer for PurgeAnswer {
    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
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
    fn add_replay(&mut self, answer: &ReplayAnswer) {
        self.matched += answer.matched;
        self.done += answer.replayed;
        self.already += answer.already_replayed;
        self.not_found += answer.not_found.len() as u64;
        for s in &answer.skipped {
            let entry = self
                .skipped
                .entry((s.destination_id.clone(), s.code.clone()))
                .or_insert((0, s.message.clone()));
            entry.0 += s.count;
        }
    }

    fn add_purge(&mut self, answer: &PurgeAnswer) {
        self.matched += answer.matched;
        self.done += answer.purged;
        self.not_found += answer.not_found.len() as u64;
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

/// What a replay or purge goes over, and how.
struct Pages<'a> {
    filter: &'a DeadLetterFilter,
    ids: &'a [u64],
    page_size: u64,
    dry_run: bool,
}

/// Runs `path` over the whole selection, a page at a time: `body` makes each request
/// from its selection, `on_page` sees each answer.
async fn paged<B: Serialize, A: PageAnswer>(
    api: &Api,
    path: &str,
    Pages {
        filter,
        ids,
        page_size,
        dry_run,
    }: Pages<'_>,
    body: impl Fn(DeadLetterSelection) -> B,
    mut on_page: impl FnMut(&A),
) -> Result<(), CliError> {
    let mut send = async |selection: DeadLetterSelection| -> Result<A, CliError> {
        let answer: A = api.post(path, &body(selection)).await?;
        on_page(&answer);
        Ok(answer)
    };
    if !ids.is_empty() {
        for chunk in ids.chunks(IDS_PER_REQUEST) {
            send(selection(filter, Some(chunk), None, page_size, dry_run)).await?;
        }
        return Ok(());
    }
    let mut cursor: Option<String> = None;
    loop {
        let answer = send(selection(filter, None, cursor.take(), page_size, dry_run)).await?;
        match answer.next_cursor() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(()),
        }
    }
}

async fn replay(api: &Api, args: ReplayArgs, out: &mut impl Write) -> Result<(), CliError> {
    let body = |selection| ReplayBody::new(selection, args.enable_destination);
    // Count first (and learn about refused destinations before anything is sent).
    let mut counted = Totals::default();
    paged(
        api,
        "/v1/dlq/replay",
        Pages {
            filter: &args.filter,
            ids: &args.ids,
            page_size: COUNT_PAGE,
            dry_run: true,
        },
        body,
        |a: &ReplayAnswer| counted.add_replay(a),
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
        Pages {
            filter: &args.filter,
            ids: &args.ids,
            page_size: args.page_size,
            dry_run: false,
        },
        body,
        |a: &ReplayAnswer| {
            totals.add_replay(a);
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
    if args.ids.is_empty() && args.filter.is_everything() {
        return Err(CliError::Usage(
            "purge needs --id or at least one of --tenant, --destination, --type, --since, --until"
                .into(),
        ));
    }
    let bar = progress_bar(0, "purging");
    let mut totals = Totals::default();
    let result = paged(
        api,
        "/v1/dlq/purge",
        Pages {
            filter: &args.filter,
            ids: &args.ids,
            page_size: args.page_size,
            dry_run: args.dry_run,
        },
        |selection| selection,
        |a: &PurgeAnswer| {
            totals.add_purge(a);
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

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use serde_json::json;

    use super::*;
    use crate::api::dlq::SkippedView;

    #[test]
    fn a_page_body_carries_filters_and_cursor_or_ids() {
        let filter = DeadLetterFilter {
            destination_id: Some(crate::model::DestinationId::parse("d1").unwrap()),
            event_type: Some(crate::model::EventPattern::parse("order.*").unwrap()),
            since: DateTime::from_timestamp(0, 0),
            ..Default::default()
        };
        let page =
            serde_json::to_value(selection(&filter, None, Some("5-9".into()), 100, false)).unwrap();
        assert_eq!(page["destination_id"], "d1");
        assert_eq!(page["event_type"], "order.*");
        assert_eq!(page["since"], "1970-01-01T00:00:00Z");
        assert_eq!(page["cursor"], "5-9");
        assert_eq!(page["limit"], 100);
        let by_ids =
            serde_json::to_value(selection(&filter, Some(&[3, 4]), None, 100, false)).unwrap();
        assert_eq!(by_ids, json!({"ids": [3, 4], "dry_run": false}));
        let replay = serde_json::to_value(ReplayBody::new(
            selection(&filter, Some(&[3]), None, 100, true),
            true,
        ))
        .unwrap();
        assert_eq!(
            replay,
            json!({"ids": [3], "dry_run": true, "enable_destination": true})
        );
        let query = serde_urlencoded::to_string(ListQuery {
            filter,
            order: Some(ListOrder::Oldest),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            query,
            "destination_id=d1&event_type=order.*&since=1970-01-01T00%3A00%3A00Z&order=oldest"
        );
    }

    #[test]
    fn totals_add_up_pages() {
        let mut totals = Totals::default();
        let page = ReplayAnswer {
            matched: 3,
            replayed: 2,
            already_replayed: 0,
            skipped: vec![SkippedView {
                destination_id: "d".into(),
                code: "malformed_event".into(),
                count: 1,
                message: "m".into(),
            }],
            not_found: vec![7],
            enabled_destinations: vec![],
            dry_run: false,
            next_cursor: None,
        };
        totals.add_replay(&page);
        totals.add_replay(&page);
        assert_eq!((totals.matched, totals.done, totals.not_found), (6, 4, 2));
        assert_eq!(totals.skipped[&("d".into(), "malformed_event".into())].0, 2);
    }
}
