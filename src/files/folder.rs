//! The watched folder `[ingest.folder]`: inotify (the `notify` crate) wakes a scan, and
//! a scan runs every `ingest.rescan_ms` anyway (network file systems deliver no inotify
//! events). A file is taken once its size and modification time have not changed for
//! `settle_ms`, never while named `.*`, `*.tmp` or `*.part`. Taking it means hashing it
//! (its id is its tenant and content), then creating its record, or claiming it like any
//! file (`runner.rs`); content already ingested goes straight to `done/`. Files are read
//! where they lie: the folder is already their durable store (docs/adr/0011).

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::progress::{self, FileRecord, Lease, Observed, Origin, RejectedLine, Status};
use super::{Files, FilesError, Format, file_id, hex};
use crate::config::FolderConfig;
use crate::model::TenantId;
use crate::telemetry::metrics as m;

pub const DONE_DIR: &str = "done";
pub const REJECTED_DIR: &str = "rejected";

#[derive(Debug, thiserror::Error)]
#[error("ingest.folder.path {path}: {why}")]
pub struct FolderError {
    pub path: String,
    pub why: String,
}

/// At start: the folder exists, is a directory, and hookstream can write in it (it moves
/// files to `done/` and writes `rejected/`); else the start stops with this error.
pub fn check(cfg: &FolderConfig) -> Result<(), FolderError> {
    let fail = |why: String| FolderError {
        path: cfg.path.display().to_string(),
        why,
    };
    let meta = fs::metadata(&cfg.path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(fail("is not a directory".into()));
    }
    for dir in [DONE_DIR, REJECTED_DIR] {
        fs::create_dir_all(cfg.path.join(dir))
            .map_err(|e| fail(format!("cannot create {dir}/ in it: {e}")))?;
    }
    let probe = cfg
        .path
        .join(format!(".hookstream-probe-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| fail(format!("is not writable: {e}")))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Whether a name is one to leave alone until it is renamed.
pub fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

/// A file seen in the folder: its size and time, since when unchanged, and (once
/// hashed) its id, hash and size, so that a file another replica works on is hashed
/// only once.
struct Seen {
    size: u64,
    modified: Option<SystemTime>,
    since: Instant,
    hashed: Option<(String, [u8; 32], u64)>,
}

impl Files {
    /// Watches the folder until `token` is cancelled.
    pub async fn run_folder(
        self,
        cfg: FolderConfig,
        tracker: TaskTracker,
        token: CancellationToken,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Kept alive for the loop; a failure leaves the periodic rescan.
        let _watcher = match notify::recommended_watcher(move |_event| {
            let _ = tx.send(());
        })
        .and_then(|mut w| {
            use notify::Watcher;
            w.watch(&cfg.path, notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no inotify on the watched folder; rescanning only");
                None
            }
        };
        info!(path = %cfg.path.display(), "watching folder");
        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        let mut observed = Observed::default();
        let rescan = self.cfg.ingest.rescan;
        let settle = cfg.settle;
        loop {
            if let Err(e) = self
                .scan_folder(&cfg, &mut seen, &mut observed, &tracker, &token)
                .await
            {
                warn!(error = %e, "folder scan failed; trying again");
            }
            // A file settling is looked at again when its settle time is up.
            let settling = seen.values().any(|s| s.hashed.is_none());
            let next = if settling { settle.min(rescan) } else { rescan };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
                Some(()) = rx.recv() => {
                    // A burst of events is one wake-up.
                    while rx.try_recv().is_ok() {}
                }
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn scan_folder(
        &self,
        cfg: &FolderConfig,
        seen: &mut HashMap<PathBuf, Seen>,
        observed: &mut Observed,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) -> Result<(), FilesError> {
        let settle = cfg.settle;
        let now = Instant::now();
        let mut present = Vec::new();
        for entry in fs::read_dir(&cfg.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || ignored(&name) {
                continue;
            }
            let path = entry.path();
            present.push(path.clone());
            let modified = meta.modified().ok();
            let s = seen.entry(path.clone()).or_insert(Seen {
                size: meta.len(),
                modified,
                since: now,
                hashed: None,
            });
            if s.size != meta.len() || s.modified != modified {
                *s = Seen {
                    size: meta.len(),
                    modified,
                    since: now,
                    hashed: None,
                };
            }
            if now.duration_since(s.since) < settle {
                continue;
            }
            let (id, sha, size) = match &s.hashed {
                Some(hashed) => hashed.clone(),
                None => {
                    let tenant = TenantId::parse(cfg.tenant.clone())
                        .map_err(|e| FilesError::Invalid(e.to_string()))?;
                    let hashing = path.clone();
                    let (sha, size) = tokio::task::spawn_blocking(move || hash_file(&hashing))
                        .await
                        .map_err(|e| FilesError::Corrupt(e.to_string()))??;
                    let hashed = (file_id(&tenant, &sha), sha, size);
                    s.hashed = Some(hashed.clone());
                    hashed
                }
            };
            if self.is_running(&id) {
                continue;
            }
            match progress::load(&self.kv, &id).await? {
                Some((record, revision)) => {
                    self.settled(cfg, &path, record, revision, observed, tracker, token)
                        .await?
                }
                None => {
                    let file = (name.as_str(), id.as_str(), &sha, size);
                    self.take_folder_file(cfg, &path, file, observed, tracker, token)
                        .await?
                }
            }
        }
        seen.retain(|p, _| present.contains(p));
        Ok(())
    }

    /// Creates the record of a settled file nobody has recorded (`file`: its name, id,
    /// hash and size) and starts its ingest.
    async fn take_folder_file(
        &self,
        cfg: &FolderConfig,
        path: &Path,
        (name, id, sha, size): (&str, &str, &[u8; 32], u64),
        observed: &mut Observed,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) -> Result<(), FilesError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // Looked at again at the next scan.
            return Ok(());
        };
        let now = Utc::now();
        let format =
            Format::parse(&cfg.format).ok_or_else(|| FilesError::Invalid(cfg.format.clone()))?;
        let record = FileRecord {
            id: id.to_string(),
            tenant: cfg.tenant.clone(),
            name: Some(name.to_string()),
            origin: Origin::Folder {
                path: path.display().to_string(),
            },
            format,
            event_type: cfg.event_type.clone(),
            type_column: cfg.type_column.clone(),
            sha256: hex(sha),
            size,
            status: Status::Processing,
            lines: 0,
            accepted: 0,
            rejected: 0,
            duplicates: 0,
            checkpoint_line: 0,
            owner: Some(self.owner.clone()),
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            heartbeat_at: Some(now),
            error: None,
        };
        match progress::create(&self.kv, &record).await? {
            Ok(revision) => {
                metrics::counter!(m::FILES, "status" => "queued").increment(1);
                self.start(
                    Lease::created(&self.kv, record, revision),
                    permit,
                    tracker,
                    token,
                );
                Ok(())
            }
            Err((existing, revision)) => {
                drop(permit);
                self.settled(cfg, path, existing, revision, observed, tracker, token)
                    .await
            }
        }
    }

    /// A settled file whose record exists: done already (moved to `done/` with a log
    /// line), or someone's to finish (claimed once its owner is silent).
    #[allow(clippy::too_many_arguments)]
    async fn settled(
        &self,
        cfg: &FolderConfig,
        path: &Path,
        record: FileRecord,
        revision: u64,
        observed: &mut Observed,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) -> Result<(), FilesError> {
        if !record.status.is_finished() {
            // The record names the path it was first taken from; a file of the same
            // content under another name waits until that one is done.
            if matches!(&record.origin, Origin::Folder { path: p } if Path::new(p) == path) {
                self.try_take(record, revision, observed, tracker, token)
                    .await?;
            }
            return Ok(());
        }
        let to = move_to(path, &cfg.path.join(DONE_DIR))?;
        metrics::counter!(m::FILES, "status" => "duplicate").increment(1);
        info!(file = %record.id, path = %path.display(), moved_to = %to.display(), "content already ingested; not ingested again");
        Ok(())
    }
}

/// SHA-256 and size of a file, streamed.
fn hash_file(path: &Path) -> Result<([u8; 32], u64), FilesError> {
    let mut file = fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hash.finalize().into(), size));
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
}

/// Moves a file into `dir`, under its own name or, if that is taken, with a suffix.
fn move_to(path: &Path, dir: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("a file path without a name"))?
        .to_string_lossy()
        .into_owned();
    let mut to = dir.join(&name);
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(path, &to)?;
    Ok(to)
}

fn rejected_dir(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join(REJECTED_DIR)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<path>/rejected/<name>.errors.ndjson`, written as lines are rejected (as a hidden
/// `.part` file until the file is done). A new owner keeps the lines up to its
/// checkpoint and writes the rest again.
pub struct ErrorsFile {
    part: PathBuf,
    done: PathBuf,
    out: BufWriter<fs::File>,
    written: u64,
}

impl ErrorsFile {
    pub fn open(path: &Path, checkpoint: u64) -> Result<Self, FilesError> {
        let dir = rejected_dir(path);
        let name = name_of(path);
        let part = dir.join(format!(".{name}.errors.ndjson.part"));
        let done = dir.join(format!("{name}.errors.ndjson"));
        let mut kept = Vec::new();
        if let Ok(existing) = fs::File::open(&part) {
            for line in io::BufReader::new(existing).lines() {
                let line = line?;
                if let Ok(r) = serde_json::from_str::<RejectedLine>(&line)
                    && r.line <= checkpoint
                {
                    kept.push(line);
                }
            }
        }
        let mut out = BufWriter::new(fs::File::create(&part)?);
        for line in &kept {
            writeln!(out, "{line}")?;
        }
        Ok(Self {
            part,
            done,
            out,
            written: kept.len() as u64,
        })
    }

    pub fn write(&mut self, rejected: &RejectedLine) -> Result<(), FilesError> {
        serde_json::to_writer(&mut self.out, rejected).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), FilesError> {
        self.out.flush()?;
        Ok(())
    }
}

/// A folder file's ingest is over: it moves to `done/` (or, when it could not be read
/// on, to `rejected/`), and its errors file takes its final name.
pub fn file_done(
    path: &Path,
    errors: Option<ErrorsFile>,
    failure: Option<&str>,
    lines: u64,
) -> Result<(), FilesError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    if let Some(mut errors) = errors {
        if let Some(why) = failure {
            let last = RejectedLine {
                line: lines,
                reason: why.to_string(),
                text: String::new(),
            };
            errors.write(&last)?;
        }
        errors.flush()?;
        let ErrorsFile {
            part,
            done,
            written,
            ..
        } = errors;
        if written > 0 {
            fs::rename(&part, &done)?;
        } else {
            let _ = fs::remove_file(&part);
        }
    }
    let dir = if failure.is_some() {
        REJECTED_DIR
    } else {
        DONE_DIR
    };
    let to = move_to(path, &parent.join(dir))?;
    info!(path = %path.display(), moved_to = %to.display(), "folder file finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_ignored() {
        for name in [".users.csv", "users.csv.tmp", "users.csv.part"] {
            assert!(ignored(name), "{name}");
        }
        for name in ["users.csv", "users.tmp.csv", "part"] {
            assert!(!ignored(name), "{name}");
        }
    }

    #[test]
    fn a_missing_or_plain_file_folder_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = FolderConfig {
            path: dir.path().join("nope"),
            tenant: "default".into(),
            event_type: Some("a.b".into()),
            type_column: None,
            format: "csv".into(),
            settle: std::time::Duration::from_millis(10),
        };
        let err = check(&cfg).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
        fs::write(dir.path().join("file"), b"").unwrap();
        cfg.path = dir.path().join("file");
        assert!(
            check(&cfg)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        cfg.path = dir.path().to_path_buf();
        check(&cfg).unwrap();
        assert!(dir.path().join(DONE_DIR).is_dir());
        assert!(dir.path().join(REJECTED_DIR).is_dir());
    }

    #[test]
    fn moving_to_a_taken_name_adds_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join(DONE_DIR);
        fs::create_dir(&done).unwrap();
        for expected in ["a.csv", "a.csv.1"] {
            let file = dir.path().join("a.csv");
            fs::write(&file, b"x").unwrap();
            assert_eq!(move_to(&file, &done).unwrap(), done.join(expected));
        }
    }
}
