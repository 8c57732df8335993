//! Checks done by independent implementations, so the tests do not grade hookstream with
//! its own code: signatures are verified by the reference Standard Webhooks library, and
//! events are published by nats-py, another NATS client. Both run in the project venv
//! (`make tools`) through the scripts beside this module.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Verifies one delivery with `standardwebhooks.Webhook(secret).verify(body, headers)`.
/// `Err` carries the library's reason, e.g. "No matching signature found".
pub async fn verify_with_python(
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    let input = json!({
        "secret": secret,
        "headers": headers,
        "body_b64": BASE64.encode(body),
    });
    run_script("verify_standardwebhooks.py", &input)
        .await
        .map(drop)
}

/// Publishes `body` on `subject` with nats-py's JetStream publish and waits for the
/// PubAck, returned as `{"stream", "seq", "duplicate"}`. `Err` if it is not acknowledged
/// (e.g. no stream listens on the subject).
pub async fn publish_with_python_nats(
    nats_url: &str,
    subject: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Value, String> {
    let input = json!({
        "url": nats_url,
        "subject": subject,
        "headers": headers,
        "body_b64": BASE64.encode(body),
    });
    let stdout = run_script("publish_nats.py", &input).await?;
    serde_json::from_str(&stdout)
        .map_err(|err| format!("publish script printed no PubAck ({err}): {stdout}"))
}

pub fn python() -> PathBuf {
    super::find_tool("HOOKSTREAM_TEST_PYTHON", "python", None)
}

/// Runs `tests/it/<script>` with `input` as JSON on stdin; `Ok(stdout)` on exit 0,
/// `Err(stderr)` otherwise.
async fn run_script(script: &str, input: &Value) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it")
        .join(script);
    // tokio's Command: these scripts take a few hundred ms, during which the app under
    // test (often on the same current-thread runtime) must keep running.
    let mut child = Command::new(python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("run {}: {err}", path.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(&serde_json::to_vec(input).expect("serialise script input"))
        .await
        .expect("write the script's input");
    // Closing stdin is how the script knows the input is complete.
    drop(stdin);
    let output = child.wait_with_output().await.expect("wait for the script");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        Some(1) => Err(stderr),
        // 2 = the script could not read its input: a bug in this fixture, not a failed check.
        _ => panic!("{script} failed ({}): {stderr}", output.status),
    }
}
