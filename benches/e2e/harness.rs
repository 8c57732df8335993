//! What every scenario needs: a nats-server, the hookstream release binary as a process
//! (so its CPU and memory are its own), a fast HTTP receiver, and process statistics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::Mutex;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A nats-server with JetStream in a temp dir; killed on drop.
pub struct Nats {
    child: Child,
    pub port: u16,
    monitor_port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let binary = std::env::var_os("HOOKSTREAM_TEST_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir().join(".tools/venv/bin/nats-server"));
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let monitor_port = free_port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\nmax_payload: 2MB\njetstream {{ store_dir: {:?} }}\n",
                dir.path().join("js").display().to_string()
            ),
        )
        .expect("write nats conf");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({e}); run `make tools`", binary.display()));
        wait_port(port);
        Nats {
            child,
            port,
            monitor_port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Messages the server has received from clients (publishes, acks, pulls, API
    /// requests) and JetStream API requests served, from its monitoring endpoints.
    pub async fn counts(&self) -> (u64, u64) {
        let get = |path: &'static str| async move {
            let url = format!("http://127.0.0.1:{}/{path}", self.monitor_port);
            let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            Some(body)
        };
        let in_msgs = get("varz").await.and_then(|v| v["in_msgs"].as_u64());
        let api = get("jsz").await.and_then(|v| v["api"]["total"].as_u64());
        (in_msgs.unwrap_or(0), api.unwrap_or(0))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// In a scenario's environment: the hookstream binary to run instead of this tree's.
pub const BINARY_ENV: &str = "BENCH_BINARY";

/// The hookstream release binary in one role; killed on drop.
pub struct Service {
    child: Child,
    pub port: u16,
}

impl Service {
    pub async fn start(nats_url: &str, role: &str, env: &[(&str, String)]) -> Service {
        let service = Self::spawn(nats_url, role, env);
        service.wait_ready().await;
        service
    }

    /// Starts the process without waiting for it to be ready.
    /// `env` may name the binary itself (`BINARY_ENV`, the old layout's for comparisons).
    pub fn spawn(nats_url: &str, role: &str, env: &[(&str, String)]) -> Service {
        let binary = env
            .iter()
            .find(|(k, _)| *k == BINARY_ENV)
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| std::env::var_os("HOOKSTREAM_BENCH_BIN").map(PathBuf::from))
            .unwrap_or_else(|| manifest_dir().join("target/release/hookstream"));
        let env: Vec<&(&str, String)> = env.iter().filter(|(k, _)| *k != BINARY_ENV).collect();
        let port = free_port();
        let mut command = Command::new(&binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HOOKSTREAM_") {
                command.env_remove(&name);
            }
        }
        command
            .arg(role)
            .env("HOOKSTREAM_NATS_URL", nats_url)
            .env("HOOKSTREAM_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKSTREAM_ALLOW_PRIVATE_NETWORKS", "true")
            .env(
                "RUST_LOG",
                std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // Logs go to stdout: shown only when BENCH_LOG asks for them.
            .stdout(if std::env::var_os("BENCH_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "start {} ({e}); run `cargo build --release`",
                binary.display()
            )
        });
        Service { child, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base())).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "service never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds since the epoch; producer and receiver share this machine's clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A fast receiver: counts requests, answers a configurable status, and when asked
/// records the latency from the event's `data.t` (ns since epoch) to its arrival.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    pub state: Arc<ReceiverState>,
}

pub struct ReceiverState {
    pub received: AtomicU64,
    /// Requests to the failing, hanging and spare routes.
    pub unhealthy: AtomicU64,
    pub record_latency: std::sync::atomic::AtomicBool,
    pub latencies_us: Mutex<Vec<u64>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState {
            received: AtomicU64::new(0),
            unhealthy: AtomicU64::new(0),
            record_latency: std::sync::atomic::AtomicBool::new(false),
            latencies_us: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/ok/{*rest}", axum::routing::any(ok))
            .route("/fail/{*rest}", axum::routing::any(fail))
            .route("/hang/{*rest}", axum::routing::any(hang))
            .route("/spare/{*rest}", axum::routing::any(spare))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, state }
    }

    pub fn url(&self, kind: &str, n: usize) -> String {
        format!("http://127.0.0.1:{}/{kind}/{n}", self.port)
    }

    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::Relaxed)
    }

    /// Waits until `n` requests arrived (or the timeout); returns when the last one came.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let trace = std::env::var_os("BENCH_TRACE").is_some();
        let mut last_print = Instant::now();
        loop {
            if trace && last_print.elapsed() > Duration::from_millis(250) {
                eprintln!("   received {}", self.received());
                last_print = Instant::now();
            }
            if self.received() >= n {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn ok(State(state): State<Arc<ReceiverState>>, body: Bytes) -> StatusCode {
    if state.record_latency.load(Ordering::Relaxed) {
        let arrived = now_ns();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            && let Some(t) = v.pointer("/data/t").and_then(|t| t.as_u64())
        {
            state
                .latencies_us
                .lock()
                .await
                .push(arrived.saturating_sub(t) / 1000);
        }
    }
    state.received.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// Answers like `ok`, counted apart: the others beside the destinations measured.
async fn spare(State(state): State<Arc<ReceiverState>>) -> StatusCode {
    state.unhealthy.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn fail(State(state): State<Arc<ReceiverState>>) -> StatusCode {
    state.unhealthy.fetch_add(1, Ordering::Relaxed);
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn hang(State(state): State<Arc<ReceiverState>>) -> StatusCode {
    state.unhealthy.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK
}

/// Resident memory (bytes) and CPU time (seconds) of a process, from /proc.
pub fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the ')'.
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    (rss_kb * 1024, cpu)
}

/// Percentiles of a sample, in the sample's unit.
pub fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0, 0);
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.50), at(0.90), at(0.99), *v.last().unwrap_or(&0))
}

/// The load driver's HTTP client: keep-alive connections for 256 requests in flight.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}
