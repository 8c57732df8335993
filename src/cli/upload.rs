//! `hookstream upload FILE --type …`: streams a file to `POST /v1/uploads` with a
//! progress bar of the bytes sent, then follows `GET /v1/uploads/{id}` with the lines
//! processed until the file is done. The file is streamed from disk, never read whole.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::io::ReaderStream;

use super::api::{Api, CliError};
use crate::api::uploads::{UploadAccepted, UploadView};
use crate::files::Status;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error("reading {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("upload {id} failed: {why}")]
    Failed { id: String, why: String },
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The file: CSV with a header row, or NDJSON.
    pub file: PathBuf,
    /// The event type of every line (CSV: unless --type-column names a column).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// CSV: the column holding each row's event type.
    #[arg(long)]
    pub type_column: Option<String>,
    /// The tenant the events belong to (default: `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// `csv` or `ndjson`; by default from the file's extension.
    #[arg(long)]
    pub format: Option<String>,
    /// Return once the file is stored, without following its lines.
    #[arg(long)]
    pub no_wait: bool,
    /// Base URL of the service's HTTP API.
    #[arg(
        long,
        env = "HOOKSTREAM_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// API key sent as `Authorization: Bearer` (a tenant key uploads for its tenant).
    #[arg(long, env = "HOOKSTREAM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

fn content_type(args: &UploadArgs) -> Result<&'static str, UploadError> {
    let by_name = || {
        let name = args.file.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".csv") {
            Some("csv")
        } else if name.ends_with(".ndjson") || name.ends_with(".jsonl") {
            Some("ndjson")
        } else {
            None
        }
    };
    match args.format.as_deref().or_else(by_name) {
        Some("csv") => Ok("text/csv"),
        Some("ndjson") => Ok("application/x-ndjson"),
        Some(other) => Err(UploadError::Usage(format!(
            "unknown format {other:?}: csv or ndjson"
        ))),
        None => Err(UploadError::Usage(
            "cannot tell the format from the file name: give --format csv or ndjson".into(),
        )),
    }
}

fn bar(template: &str, length: Option<u64>) -> ProgressBar {
    let bar = match length {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub async fn run(args: UploadArgs) -> Result<(), UploadError> {
    let media = content_type(&args)?;
    let path = args.file.display().to_string();
    let file_error = |source| UploadError::File {
        path: path.clone(),
        source,
    };
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(file_error)?;
    let size = file.metadata().await.map_err(file_error)?.len();
    let api = Api::new(&args.url, args.api_key.as_deref())?;
    let mut query = Vec::new();
    for (key, value) in [
        ("type", &args.event_type),
        ("type_column", &args.type_column),
        ("tenant", &args.tenant),
    ] {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    if let Some(name) = args.file.file_name() {
        query.push(("name", name.to_string_lossy().into_owned()));
    }
    let url = api.url("/v1/uploads", &query)?;

    let sending = bar(
        "sending [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        Some(size),
    );
    let counter = sending.clone();
    let body = ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            counter.inc(bytes.len() as u64);
        }
    });
    let request = api
        .client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, media)
        .header(reqwest::header::CONTENT_LENGTH, size)
        // A gigabyte takes longer than the client's usual request timeout.
        .timeout(Duration::from_secs(3600))
        .body(reqwest::Body::wrap_stream(body));
    let answer = api.send::<UploadAccepted>(request, &url).await;
    sending.finish_and_clear();
    let answer = answer?;
    let id = answer.id;
    if answer.duplicate == Some(true) {
        println!("{path} was uploaded already as {id}; not ingested again");
        return Ok(());
    }
    println!("{path} stored as {id}");
    if args.no_wait {
        return Ok(());
    }
    follow(&api, &id).await
}

/// Shows the lines processed until the file is done or failed.
async fn follow(api: &Api, id: &str) -> Result<(), UploadError> {
    let lines = bar("{spinner} {msg} ({elapsed})", None);
    let status = loop {
        let status: UploadView = api.get(&format!("/v1/uploads/{id}"), &()).await?;
        lines.set_message(format!(
            "{}: {} lines, {} accepted, {} rejected",
            status.status.as_str(),
            status.lines,
            status.accepted,
            status.rejected
        ));
        lines.tick();
        if status.status.is_finished() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    lines.finish_and_clear();
    report(id, &status)
}

fn report(id: &str, status: &UploadView) -> Result<(), UploadError> {
    println!(
        "{id} {}: {} lines, {} accepted, {} rejected, {} duplicates",
        status.status.as_str(),
        status.lines,
        status.accepted,
        status.rejected,
        status.duplicates
    );
    if status.rejected > 0 {
        println!("rejected lines: GET /v1/uploads/{id}/errors");
    }
    if status.status == Status::Failed {
        return Err(UploadError::Failed {
            id: id.to_string(),
            why: status
                .error
                .clone()
                .unwrap_or_else(|| "unknown".to_string()),
        });
    }
    Ok(())
}
