//! `NatsCluster`: three real nats-server processes forming one JetStream cluster, each on
//! its own free ports with its own store dir, all running the shipped `nats/cluster.conf`
//! (so the accounts and permissions of `nats/accounts.conf` are the ones under test). A
//! node can be killed with SIGKILL and restarted on the same ports and store; every node
//! is killed when the cluster is dropped.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Passwords of the users in `nats/accounts.conf`, for tests only.
pub const SERVICE_USER: &str = "hookstream";
pub const SERVICE_PASSWORD: &str = "test-service-password";
pub const PRODUCER_USER: &str = "producer";
pub const PRODUCER_PASSWORD: &str = "test-producer-password";
/// The producer of tenant `acme` only.
pub const TENANT_PRODUCER_USER: &str = "producer_acme";
pub const TENANT_PRODUCER_PASSWORD: &str = "test-producer-acme-password";
/// `nats.inbox_prefix`'s default, which `nats/accounts.conf` lets the service subscribe to.
pub const SERVICE_INBOX_PREFIX: &str = "_INBOX_hookstream";

/// Forming a cluster, electing a meta leader and (after a restart) catching up streams
/// takes a few seconds; a loaded 2-core machine can need far more.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(45);

struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    route_port: u16,
    /// Store and log of this node; kept across restarts, removed on drop.
    dir: TempDir,
    child: Mutex<Option<Child>>,
}

pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

impl NatsCluster {
    /// Starts three nodes and waits until each reports itself healthy (JetStream on and a
    /// meta leader known).
    pub async fn start() -> NatsCluster {
        let binary = super::find_tool(
            "HOOKSTREAM_TEST_NATS_SERVER",
            "nats-server",
            Some("nats-server"),
        );
        let mut ports = distinct_free_ports(9).into_iter();
        let mut port = move || ports.next().expect("nine ports");
        let nodes = (1..=3)
            .map(|i| Node {
                name: format!("nats-{i}"),
                client_port: port(),
                monitor_port: port(),
                route_port: port(),
                dir: tempfile::Builder::new()
                    .prefix(&format!("hookstream-cluster-{i}-"))
                    .tempdir()
                    .expect("create a temp dir for a cluster node"),
                child: Mutex::new(None),
            })
            .collect();
        let cluster = NatsCluster {
            binary,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("build the HTTP client"),
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_healthy(i).await;
        }
        cluster.wait_placement().await;
        cluster
    }

    /// `/healthz` can answer 200 on every node a moment before the meta leader places
    /// streams (a just-elected leader still counts a peer offline, or a JS API request
    /// times out): creating and deleting a three-replica probe stream until it works is
    /// what proves the cluster takes the tests' own stream creates.
    async fn wait_placement(&self) {
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .build(self.service_client().await);
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let created = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "HS_TEST_PLACEMENT_PROBE".into(),
                    subjects: vec!["hs.test.placement.probe".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            let last = match created {
                Ok(_) => match js.delete_stream("HS_TEST_PLACEMENT_PROBE").await {
                    Ok(_) => return,
                    Err(err) => format!("delete the probe: {err}"),
                },
                Err(err) => format!("create the probe: {err}"),
            };
            if Instant::now() > deadline {
                panic!(
                    "the cluster does not place streams within {HEALTHY_TIMEOUT:?} (last: {last})"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every node's client URL, comma-separated: what `HOOKSTREAM_NATS_URL` takes.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].client_port)
    }

    /// The node index of a server name as JetStream reports it (e.g. a stream leader).
    pub fn node_named(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no cluster node is named {name:?}"))
    }

    /// A client logged in as the service user, with the service's inbox prefix (the only
    /// reply subjects that user may subscribe to).
    pub async fn service_client(&self) -> async_nats::Client {
        self.client(SERVICE_USER, SERVICE_PASSWORD, SERVICE_INBOX_PREFIX)
            .await
    }

    /// A client logged in as the producer user, with the default `_INBOX` prefix.
    pub async fn producer_client(&self) -> async_nats::Client {
        self.client(PRODUCER_USER, PRODUCER_PASSWORD, "_INBOX")
            .await
    }

    /// A client logged in as tenant `acme`'s producer, with the default `_INBOX` prefix.
    pub async fn tenant_producer_client(&self) -> async_nats::Client {
        self.client(TENANT_PRODUCER_USER, TENANT_PRODUCER_PASSWORD, "_INBOX")
            .await
    }

    async fn client(&self, user: &str, password: &str, inbox_prefix: &str) -> async_nats::Client {
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .custom_inbox_prefix(inbox_prefix)
            .connect(urls)
            .await
            .unwrap_or_else(|err| panic!("connect to the test cluster as {user}: {err}"))
    }

    /// A crash of one node: SIGKILL, nothing flushed. Its store stays for `restart`.
    pub fn kill9(&self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.lock().expect("node lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its ports and store, and waits until it is healthy,
    /// which includes having caught up with the streams it holds.
    pub async fn restart(&self, node: usize) {
        self.kill9(node);
        self.spawn(node);
        self.wait_healthy(node).await;
    }

    /// What the node logged so far, all runs included.
    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(log_path(self.nodes[node].dir.path())).unwrap_or_default()
    }

    fn spawn(&self, index: usize) {
        let node = &self.nodes[index];
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/cluster.conf");
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&config)
            .env("NATS_SERVER_NAME", &node.name)
            .env("NATS_LISTEN", format!("127.0.0.1:{}", node.client_port))
            .env("NATS_MONITOR", format!("127.0.0.1:{}", node.monitor_port))
            .env(
                "NATS_CLUSTER_LISTEN",
                format!("127.0.0.1:{}", node.route_port),
            )
            .env("NATS_STORE_DIR", node.dir.path().join("store"))
            .env("HS_SERVICE_PASSWORD", SERVICE_PASSWORD)
            .env("HS_PRODUCER_PASSWORD", PRODUCER_PASSWORD)
            .env("HS_PRODUCER_ACME_PASSWORD", TENANT_PRODUCER_PASSWORD)
            .stdin(Stdio::null());
        for (i, other) in self.nodes.iter().enumerate() {
            command.env(
                format!("NATS_ROUTE_{}", i + 1),
                format!("nats-route://127.0.0.1:{}", other.route_port),
            );
        }
        if super::test_log_enabled() {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path(node.dir.path()))
                .expect("open the node's log file");
            let log_err = log.try_clone().expect("clone the log file handle");
            command
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", self.binary.display()));
        *node.child.lock().expect("node lock") = Some(child);
    }

    /// Polls the node's `/healthz` (JetStream enabled, meta leader known, its streams
    /// and consumers current) until it answers 200.
    async fn wait_healthy(&self, index: usize) {
        let node = &self.nodes[index];
        let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let mut last = String::from("not tried");
        loop {
            if let Some(status) = node
                .child
                .lock()
                .expect("node lock")
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited early ({status}); log:\n{}",
                    node.name,
                    self.log(index)
                );
            }
            let accepting = TcpStream::connect_timeout(
                &([127, 0, 0, 1], node.client_port).into(),
                Duration::from_millis(200),
            )
            .is_ok();
            if accepting {
                match self.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        last = format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Err(err) => last = err.to_string(),
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not healthy within {HEALTHY_TIMEOUT:?} (last: {last}); log:\n{}",
                    node.name,
                    self.log(index)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `n` different free ports. Holding every listener until all are picked matters: a port
/// released at once can be handed out again by the next bind, and two nodes' ports then
/// collide (a route dialing a monitoring port gets an HTTP 400).
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("nats-server.log")
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // Kill before the TempDirs go, so no server writes into a directory being removed.
        for node in 0..self.nodes.len() {
            self.kill9(node);
        }
    }
}
