//! The embedded default: with no NATS URL configured, hookstream starts a local
//! `nats-server` with JetStream, supervises it, and stops it on exit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::info;

use crate::config::EmbeddedConfig;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no nats-server binary found: set nats.embedded.binary or HOOKSTREAM_NATS_SERVER_BIN, put nats-server on PATH, or run `make tools`"
    )]
    NotFound,
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not create the data dir {dir}: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nats-server exited early ({status}); is port {port} in use?")]
    Exited { status: String, port: u16 },
    #[error("nats-server did not accept connections on port {port} within 10 s")]
    NotReady { port: u16 },
}

/// A running nats-server child process; killed when dropped.
pub struct EmbeddedServer {
    child: Child,
    url: String,
}

impl EmbeddedServer {
    pub async fn start(cfg: &EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let binary = find_binary(cfg.binary.as_deref()).ok_or(EmbeddedError::NotFound)?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| EmbeddedError::DataDir {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
        info!(binary = %binary.display(), port = cfg.port, dir = %cfg.data_dir.display(), "starting embedded nats-server");
        // A config file, because max_payload has no command-line flag: the API accepts
        // 1 MiB events by default, and the envelope and headers add a little to that.
        let conf = cfg.data_dir.join("nats-server.conf");
        let store = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
        let text = format!(
            "listen: 127.0.0.1:{}\nmax_payload: 2MB\njetstream {{ store_dir: {:?} }}\n",
            cfg.port,
            store.join("jetstream-store").display().to_string()
        );
        std::fs::write(&conf, text).map_err(|source| EmbeddedError::DataDir {
            dir: conf.display().to_string(),
            source,
        })?;
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            // Its own process group: a Ctrl-C in the terminal reaches hookstream, which
            // drains its deliveries and then stops the server, instead of both at once.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| EmbeddedError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        let addr = format!("127.0.0.1:{}", cfg.port);
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(EmbeddedError::Exited {
                    status: status.to_string(),
                    port: cfg.port,
                });
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(Self {
                    child,
                    url: format!("nats://{addr}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EmbeddedError::NotReady { port: cfg.port })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks the server to stop (SIGTERM lets it flush its store) and waits briefly.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Config, then `HOOKSTREAM_NATS_SERVER_BIN`, then `PATH`, then the project venv.
fn find_binary(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return path.is_file().then(|| path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("HOOKSTREAM_NATS_SERVER_BIN").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let venv = PathBuf::from(".tools/venv/bin/nats-server");
    venv.is_file().then_some(venv)
}
