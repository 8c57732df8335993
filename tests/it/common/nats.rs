//! `NatsServer`: a real nats-server with JetStream for one test, on its own free port and
//! store dir. It can be killed and restarted on the same port and store (to test NATS
//! outages), and it is killed when dropped.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a fresh nats-server may take to accept connections. Recovering a store after a
/// restart is included, so it is generous for a loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// Holds the JetStream store and the server log; removed on drop.
    dir: TempDir,
    /// Behind a mutex so that tests holding the server through an `Arc` (shared by app
    /// replicas) can still stop and restart it.
    child: Mutex<Option<Child>>,
}

impl NatsServer {
    /// Starts a JetStream-enabled nats-server on a free 127.0.0.1 port and waits until it
    /// accepts TCP connections.
    pub async fn start() -> NatsServer {
        let binary = super::find_tool(
            "HOOKSTREAM_TEST_NATS_SERVER",
            "nats-server",
            Some("nats-server"),
        );
        let dir = tempfile::Builder::new()
            .prefix("hookstream-nats-")
            .tempdir()
            .expect("create a temp dir for the JetStream store");
        let server = NatsServer {
            binary,
            port: super::free_port(),
            dir,
            child: Mutex::new(None),
        };
        server.spawn().await;
        server
    }

    /// `nats://127.0.0.1:PORT`, stable across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store dir (`-sd`); kept across `stop`/`restart`, removed on drop.
    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's pid while it runs, e.g. to check that drop really killed it.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("nats child lock")
            .as_ref()
            .map(Child::id)
    }

    /// What the server wrote so far (empty with `TEST_LOG=1`, where it goes to the terminal).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A plain async-nats client connected to this server.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .unwrap_or_else(|err| panic!("connect to test nats-server at {}: {err}", self.url()))
    }

    /// Kills the server with SIGKILL, like a crash: nothing is flushed or shut down
    /// cleanly. The store dir stays, so `restart` recovers what was persisted.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("nats child lock").take() {
            // kill() fails only if the process already exited; wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store (stopping it first if
    /// it is still running), and waits until it accepts connections.
    pub async fn restart(&self) {
        self.stop();
        self.spawn().await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    async fn spawn(&self) {
        let mut command = Command::new(&self.binary);
        command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null());
        if super::test_log_enabled() {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            // Appending keeps the log of every run of this server, restarts included.
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("open the nats-server log file");
            let log_err = log.try_clone().expect("clone the log file handle");
            command
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", self.binary.display()));
        *self.child.lock().expect("nats child lock") = Some(child);
        self.wait_until_accepting().await;
    }

    /// nats-server enables JetStream (and recovers its store) before it opens the client
    /// port, so an accepted connection means streams are ready to use.
    async fn wait_until_accepting(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                panic!(
                    "nats-server on port {} exited early ({status}); log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not accept connections on port {} within {READY_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().expect("nats child lock");
        guard
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kill before the TempDir field is dropped, so the server never writes into a
        // directory that is being removed.
        self.stop();
    }
}
