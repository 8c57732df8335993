//! Fixtures shared by the integration tests: a real nats-server per test ([`nats`]) or a
//! 3-node cluster ([`cluster`]), the app in-process ([`app`]) or as the real binary
//! ([`process`]), a recording HTTP receiver ([`receiver`]) with per-id counts ([`seen`]),
//! steady HTTP load ([`load`]), an OTLP trace receiver ([`otlp`]), a test certificate
//! authority for HTTPS receivers ([`tls`]) and checks done with independent Python
//! libraries ([`verify`]).
//!
//! Every fixture binds 127.0.0.1 on a free port and cleans up on drop, so tests run in
//! parallel without sharing anything. `TEST_LOG=1` shows the logs of everything started.

// Each test module uses a different subset of these helpers and re-exports; what one
// module leaves unused is still part of the shared fixture, not dead code.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod cluster;
pub mod keys;
pub mod load;
pub mod nats;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod seen;
pub mod steps;
pub mod tls;
pub mod verify;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Once;

pub use app::{TestApp, spawn_app, spawn_app_on, spawn_app_with};
pub use nats::NatsServer;
pub use process::ServiceProcess;
pub use receiver::{Receiver, Request};
pub use verify::{publish_with_python_nats, verify_with_python};

/// Whether the test run asked to see logs (`TEST_LOG=1`) instead of capturing them in files.
pub fn test_log_enabled() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Sends the in-process app's `tracing` output to the test's output when `TEST_LOG=1`.
/// Safe to call from every test: only the first call installs the subscriber.
pub fn init_test_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if test_log_enabled() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // try_init: another test harness may already have installed one.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// A port that was free a moment ago. The OS picks it; we release it for the child
/// process to bind. Another process could grab it in between, but on a test machine
/// that race is rare, and the fixtures fail loudly (not silently) if it happens.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// Locates a test tool: `$env_var` if set, else the project venv made by `make tools`
/// (`.tools/venv/bin/<venv_name>`), else `<path_name>` on `PATH`.
pub fn find_tool(env_var: &str, venv_name: &str, path_name: Option<&str>) -> PathBuf {
    if let Some(explicit) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let explicit = PathBuf::from(explicit);
        assert!(
            is_executable(&explicit),
            "{env_var}={} is not an executable file; run `make tools` or fix {env_var}",
            explicit.display()
        );
        return explicit;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/venv/bin")
        .join(venv_name);
    if is_executable(&venv) {
        return venv;
    }
    if let Some(name) = path_name {
        let on_path = std::env::var_os("PATH")
            .map(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|candidate| is_executable(candidate));
        if let Some(found) = on_path {
            return found;
        }
    }
    panic!(
        "cannot find {venv_name}: set {env_var}, or run `make tools` to install it at {}",
        venv.display()
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
