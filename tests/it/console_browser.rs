//! The console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `make test`) driven over WebDriver with fantoccini.
//! Sign in, watch a failing destination turn red (the page's script refreshes the table),
//! open an event's timeline, replay a dead letter and see it arrive, sign out. Each page
//! is saved as a PNG under `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::keys::{ADMIN_KEY, Keyed, make_key, spawn_keyed_app};
use crate::common::{Receiver, free_port};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PATIENCE: Duration = Duration::from_secs(30);

/// A chromedriver on a free port, killed on drop, with a fresh profile directory.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: `make test` installs chromium and chromium-driver"
        );
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            port,
            profile: tempfile::tempdir().expect("a profile directory"),
        }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save screenshot");
}

/// Waits for an element matching `css`.
async fn wait_for(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {PATIENCE:?}: {e}"))
}

/// Finds `css` and reads it with `read`, finding it again when the page replaced the
/// element between the find and the read: the destinations table is re-rendered every 3 s,
/// and a form's answer page can still be loading when the find meets the page before it.
async fn read<T, F, Fut>(browser: &Client, css: &str, read: F) -> T
where
    F: Fn(Element) -> Fut,
    Fut: std::future::Future<Output = Result<T, CmdError>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match read(wait_for(browser, css).await).await {
            Ok(value) => return value,
            Err(e) if e.is_stale_element_reference() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
}

/// The text of `css`, read as [`read`] does.
async fn text_of(browser: &Client, css: &str) -> String {
    read(browser, css, |element| async move { element.text().await }).await
}

#[tokio::test]
async fn an_operator_follows_a_failing_destination_to_its_dead_letter_and_replays_it() {
    let app = spawn_keyed_app().await;
    let admin = Keyed::new(&app, Some(ADMIN_KEY));
    let (_, key) = make_key(&app, "acme", "tenant").await;
    let create = |body: serde_json::Value| {
        let admin = &admin;
        async move {
            let (status, d) = admin.post("/v1/destinations", body).await;
            assert_eq!(status, reqwest::StatusCode::CREATED, "{d}");
            d["id"].as_str().unwrap().to_string()
        }
    };
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let base = app.base_url();

    // Sign in.
    browser
        .goto(&format!("{base}/console/destinations"))
        .await
        .unwrap();
    wait_for(&browser, "a[href='/console/sign-in']")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#key").await;
    wait_for(&browser, "#key")
        .await
        .send_keys(&key)
        .await
        .unwrap();
    shot(&browser, "sign-in").await;
    wait_for(&browser, "#sign-in").await.click().await.unwrap();
    wait_for(&browser, "#destinations").await;

    // A healthy destination and one that starts failing while the page is open.
    let good =
        create(json!({"tenant": "acme", "url": ok.url("/ok"), "event_types": ["order.*"]})).await;
    let bad = create(
        json!({"tenant": "acme", "url": failing.url("/bad"), "event_types": ["order.*"],
                            "retry": {"schedule_ms": [], "max_attempts": 1}}),
    )
    .await;
    let theirs =
        create(json!({"tenant": "globex", "url": ok.url("/g"), "event_types": ["order.*"]})).await;
    failing.set_status(503);
    let (status, sent) = admin
        .post(
            "/v1/events",
            json!({"tenant": "acme", "type": "order.created", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{sent}");
    let event = sent["id"].as_str().unwrap().to_string();
    // The table refreshes itself: no reload.
    let colour = read(
        &browser,
        &format!("tr[data-destination='{bad}'][data-health='failing'] .badge"),
        |badge| async move { badge.css_value("background-color").await },
    )
    .await;
    assert_eq!(colour, "rgba(207, 34, 46, 1)", "the failing badge is red");
    wait_for(
        &browser,
        &format!("tr[data-destination='{good}'][data-health='healthy']"),
    )
    .await;
    assert!(
        browser
            .find(Locator::Css(&format!("tr[data-destination='{theirs}']")))
            .await
            .is_err(),
        "another tenant's destination is not listed"
    );
    shot(&browser, "destinations").await;
    // Another tenant's page is "not found", as in the API.
    browser
        .goto(&format!("{base}/console/destinations/{theirs}"))
        .await
        .unwrap();
    assert!(
        text_of(&browser, ".error").await.starts_with("404"),
        "another tenant's destination: 404"
    );

    // The destination's page, then the event's timeline from its attempts.
    browser
        .goto(&format!("{base}/console/destinations/{bad}"))
        .await
        .unwrap();
    wait_for(&browser, "#attempts").await;
    shot(&browser, "destination").await;
    wait_for(
        &browser,
        &format!("#attempts a[href='/console/events/{event}']"),
    )
    .await
    .click()
    .await
    .unwrap();
    wait_for(
        &browser,
        &format!("section[data-destination='{bad}'][data-status='dead_lettered']"),
    )
    .await;
    wait_for(
        &browser,
        &format!("section[data-destination='{good}'][data-status='delivered']"),
    )
    .await;
    let timeline = text_of(
        &browser,
        &format!("section[data-destination='{bad}'] .timeline"),
    )
    .await;
    assert!(
        timeline.contains("HTTP 503"),
        "attempt status in the timeline"
    );
    shot(&browser, "event").await;

    browser
        .goto(&format!("{base}/console/events"))
        .await
        .unwrap();
    wait_for(
        &browser,
        &format!("#events a[href='/console/events/{event}']"),
    )
    .await;
    shot(&browser, "events").await;

    // Dead letters: dry run, then replay; the receiver now accepts it.
    failing.set_status(200);
    failing.drain().await;
    browser
        .goto(&format!("{base}/console/dlq?destination_id={bad}"))
        .await
        .unwrap();
    wait_for(&browser, "#dead-letters").await;
    shot(&browser, "dead-letters").await;
    wait_for(&browser, "#preview-replay")
        .await
        .click()
        .await
        .unwrap();
    // Each answer page is waited for by its outcome: both show a #report.
    assert!(
        text_of(&browser, "#report[data-outcome='dry-run']")
            .await
            .contains("Dry run: 1"),
        "dry run counted it"
    );
    wait_for(&browser, "#confirm-replay")
        .await
        .click()
        .await
        .unwrap();
    assert!(
        text_of(&browser, "#report[data-outcome='done']")
            .await
            .contains("Replayed 1 of 1"),
        "the confirmed replay replayed it"
    );
    let mut delivered = false;
    while let Some(request) = failing.recv_timeout(PATIENCE).await {
        if request.header("webhook-id") == Some(event.as_str()) {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the replayed dead letter reached the receiver");

    // Uploads: the tenant's own files, one of them with rejected lines.
    let upload = crate::console::uploaded(
        &app,
        ADMIN_KEY,
        "acme",
        "{\"name\":\"ada\"}\n{\"name\":\"grace\"}\n{\"broken\":\n",
    )
    .await;
    let their_upload =
        crate::console::uploaded(&app, ADMIN_KEY, "globex", "{\"name\":\"x\"}\n").await;
    browser
        .goto(&format!("{base}/console/destinations"))
        .await
        .unwrap();
    wait_for(&browser, "a[href='/console/uploads']")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, &format!("tr[data-upload='{upload}']")).await;
    assert!(
        browser
            .find(Locator::Css(&format!("tr[data-upload='{their_upload}']")))
            .await
            .is_err(),
        "another tenant's upload is not listed"
    );
    shot(&browser, "uploads").await;
    wait_for(&browser, &format!("a[href='/console/uploads/{upload}']"))
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#status[data-status='done']").await;
    assert!(
        text_of(&browser, "#rejected")
            .await
            .contains("invalid JSON"),
        "the rejected line and its reason"
    );
    shot(&browser, "upload").await;

    // Sign out: the pages want a session again.
    wait_for(&browser, "#sign-out").await.click().await.unwrap();
    wait_for(&browser, "#key").await;
    browser
        .goto(&format!("{base}/console/destinations"))
        .await
        .unwrap();
    wait_for(&browser, "a[href='/console/sign-in']").await;
    browser.close().await.unwrap();
}
