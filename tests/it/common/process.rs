//! `ServiceProcess`: the real `hookstream` binary as a child process, for tests that crash
//! it (SIGKILL) or shut it down by signal (SIGTERM), which in-process apps cannot show.

use std::fs::File;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

/// A debug build starting cold on a busy 2-core machine can be slow to get ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ServiceProcess {
    child: Child,
    port: u16,
    /// Holds `hookstream.log`; removed on drop.
    log_dir: TempDir,
    client: reqwest::Client,
}

impl ServiceProcess {
    /// Runs `hookstream serve` against `nats_url` on a free port with test settings
    /// (private networks allowed, 500 ms sweep), then `extra_env` (which may override
    /// them), and waits until `/readyz` answers 200.
    pub async fn spawn(nats_url: &str, extra_env: &[(&str, &str)]) -> ServiceProcess {
        let port = super::free_port();
        let log_dir = tempfile::Builder::new()
            .prefix("hookstream-proc-")
            .tempdir()
            .expect("create a temp dir for the service log");

        let mut command = Command::new(env!("CARGO_BIN_EXE_hookstream"));
        command.arg("serve").stdin(Stdio::null());
        // The test runner's own HOOKSTREAM_TEST_* variables (and a developer's settings)
        // must not reach the service's config loader, which rejects unknown keys.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HOOKSTREAM_") {
                command.env_remove(&name);
            }
        }
        command
            .env("HOOKSTREAM_NATS_URL", nats_url)
            .env("HOOKSTREAM_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKSTREAM_ALLOW_PRIVATE_NETWORKS", "true")
            .env("HOOKSTREAM_DELIVERY__SWEEP_INTERVAL_MS", "500")
            // Tests of retries and dead letters fail receivers on purpose; the circuit
            // breaker (tested in flow.rs) would hold their events for its cool-down.
            .env("HOOKSTREAM_FLOW__CIRCUIT_FAILURE_THRESHOLD", "1000000000")
            .env("RUST_LOG", "info")
            .envs(super::app::small_streams_env())
            .envs(extra_env.iter().copied());
        if super::test_log_enabled() {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let log = File::create(log_dir.path().join("hookstream.log"))
                .expect("create the service log");
            let log_err = log.try_clone().expect("clone the log file handle");
            command
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err));
        }
        let child = command.spawn().expect("spawn the hookstream binary");

        let mut service = ServiceProcess {
            child,
            port,
            log_dir,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("build the HTTP client"),
        };
        service.wait_ready().await;
        service
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `POST {path}` with a JSON body; the status and the answer as JSON (see
    /// [`super::app::send`]).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let request = self
            .client
            .post(format!("{}{path}", self.base_url()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("serialise a JSON value"));
        super::app::send(request).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the service logged so far (empty with `TEST_LOG=1`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("hookstream.log")).unwrap_or_default()
    }

    /// A crash: SIGKILL, no chance to ack, nak or flush anything. Waits until it is gone.
    pub fn kill9(&mut self) {
        // std's Child::kill sends SIGKILL on Unix; it errs only if the child already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks for a graceful shutdown with SIGTERM. Uses the `kill` command rather than
    /// a libc dependency; follow with `wait_exit` to see how it ended.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run `kill -TERM`");
        assert!(
            status.success(),
            "`kill -TERM {}` failed: {status}",
            self.child.id()
        );
    }

    /// The exit status, or `None` if the process is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the service process") {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the service process") {
                panic!(
                    "hookstream exited before it was ready ({status}); log:\n{}",
                    self.log()
                );
            }
            let Err(last) = super::app::probe_ready(&self.client, &self.base_url()).await else {
                return;
            };
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "hookstream not ready within {READY_TIMEOUT:?} (last: {last}); log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
