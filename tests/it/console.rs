//! The console over plain HTTP (no browser): sign-in and its cookie, the 401/403/404
//! rules, CSRF on every form, and what the pages show. `console_browser.rs` drives the
//! same pages in a real Chromium.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::steps::{create, eventually, send};
use crate::common::{Receiver, TestApp, spawn_app};

/// A client that keeps cookies, signed in (open mode: the empty key).
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
    pub cookie: String,
}

impl Browser {
    pub async fn sign_in(app: &TestApp, key: &str) -> Result<Browser, (StatusCode, String)> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let base = app.base_url();
        let response = client
            .post(format!("{base}/console/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "key={}",
                percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
            ))
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status != StatusCode::SEE_OTHER {
            return Err((status, response.text().await.unwrap_or_default()));
        }
        let set = response
            .headers()
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_string();
        assert!(set.contains("HttpOnly"), "{set}");
        assert!(set.contains("SameSite=Strict"), "{set}");
        assert!(set.contains("Path=/console"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        Ok(Browser {
            client,
            base,
            cookie,
        })
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &str) -> (StatusCode, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// The CSRF token of the forms on `page`.
    pub fn csrf(page: &str) -> String {
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field on the page");
        page[at + 19..at + 19 + 64].to_string()
    }
}

#[tokio::test]
async fn console_pages_need_a_session_and_show_destinations_events_and_dead_letters() {
    let app = spawn_app().await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_status(500);
    let good = create(
        &app,
        json!({"tenant": "acme", "url": ok.url("/ok"), "event_types": ["order.*"]}),
    )
    .await;
    let bad = create(
        &app,
        json!({"tenant": "acme", "url": failing.url("/bad"), "event_types": ["order.*"],
               "retry": {"schedule_ms": [], "max_attempts": 1}}),
    )
    .await;
    let event = send(
        &app,
        json!({"tenant": "acme", "type": "order.created", "data": {"n": 7}}),
    )
    .await;
    ok.recv_timeout(Duration::from_secs(20))
        .await
        .expect("delivered");

    // Without a session: 401 with a way to sign in, for pages and forms alike.
    let anonymous = reqwest::Client::new();
    for path in [
        "/console/destinations",
        "/console/events",
        &format!("/console/events/{event}"),
    ] {
        let r = anonymous
            .get(format!("{}{path}", app.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.text().await.unwrap().contains("/console/sign-in"));
    }
    // A wrong key is refused at sign-in.
    let (status, _) = Browser::sign_in(&app, "hsk_not_a_key")
        .await
        .err()
        .expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let browser = Browser::sign_in(&app, "")
        .await
        .expect("open mode signs in");
    // The failing destination turns red once its attempt is recorded.
    let page = eventually(Duration::from_secs(20), async || {
        let (status, page) = browser.get("/console/destinations").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if page.contains(&format!(
            "data-destination=\"{bad}\" data-health=\"failing\""
        )) {
            Ok(page)
        } else {
            Err(format!("never failing: {page}"))
        }
    })
    .await;
    assert!(
        page.contains(&format!(
            "data-destination=\"{good}\" data-health=\"healthy\""
        )),
        "{page}"
    );
    assert!(page.contains("HTTP 500"), "last error shown: {page}");

    let (status, page) = browser.get(&format!("/console/events/{event}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&quot;n&quot;: 7") || page.contains("\"n\": 7"),
        "envelope: {page}"
    );
    assert!(
        page.contains(&format!(
            "data-destination=\"{good}\" data-status=\"delivered\""
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "data-destination=\"{bad}\" data-status=\"dead_lettered\""
        )),
        "{page}"
    );

    let (status, page) = browser.get("/console/events?event_type=order.*").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&event), "{page}");
    let (status, page) = browser.get("/console/dlq").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&bad), "{page}");

    // Forms need the session's CSRF token.
    let (status, _) = browser
        .post(&format!("/console/destinations/{good}/pause"), "csrf=0000")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, view) = app.get(&format!("/v1/destinations/{good}")).await;
    assert_eq!(view["paused"], false, "nothing changed");
    let csrf = Browser::csrf(&page);
    let (status, _) = browser
        .post(
            &format!("/console/destinations/{good}/pause"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, view) = app.get(&format!("/v1/destinations/{good}")).await;
    assert_eq!(view["paused"], true);

    // Rotating shows the new secret once, and it signs from then on.
    let (status, page) = browser
        .post(
            &format!("/console/destinations/{good}/rotate-secret"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("whsec_"), "{page}");
    let (_, page) = browser.get(&format!("/console/destinations/{good}")).await;
    assert!(!page.contains("whsec_"), "the secret is shown only once");

    // Dry run first, then the replay; the dead letter reaches its receiver again.
    failing.set_status(200);
    failing.drain().await;
    let (status, page) = browser
        .post(
            "/console/dlq/preview-replay",
            &format!("csrf={csrf}&destination_id={bad}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Dry run: 1 dead letters would be replayed"),
        "{page}"
    );
    let (status, page) = browser
        .post(
            "/console/dlq/replay",
            &format!("csrf={csrf}&destination_id={bad}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Replayed 1 of 1"), "{page}");
    let mut seen = false;
    while let Some(request) = failing.recv_timeout(Duration::from_secs(20)).await {
        if request.header("webhook-id") == Some(event.as_str()) && request.uri == "/bad" {
            seen = true;
            break;
        }
    }
    assert!(seen, "the replay reached the receiver");

    // Unknown ids are 404 pages; sign-out ends the session cookie.
    let (status, _) = browser.get("/console/destinations/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = browser.get("/console/events/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = browser.get("/console/throughput.svg").await;
    assert_eq!(status, StatusCode::OK);
    let r = browser
        .client
        .post(format!("{}/console/sign-out", browser.base))
        .header("cookie", &browser.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn a_tenant_key_sees_only_its_tenant_in_the_console() {
    use crate::common::keys::{ADMIN_KEY, Keyed, make_key, spawn_keyed_app};
    let app = spawn_keyed_app().await;
    let admin = Keyed::new(&app, Some(ADMIN_KEY));
    let receiver = Receiver::start().await;
    let mut ids = Vec::new();
    for tenant in ["acme", "globex"] {
        let (status, d) = admin
            .post(
                "/v1/destinations",
                json!({"tenant": tenant, "url": receiver.url("/r"), "event_types": [">"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{d}");
        let (status, e) = admin
            .post(
                "/v1/events",
                json!({"tenant": tenant, "type": "a.b", "data": {}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{e}");
        ids.push((
            d["id"].as_str().unwrap().to_string(),
            e["id"].as_str().unwrap().to_string(),
        ));
    }
    let ((mine, my_event), (theirs, their_event)) = (ids[0].clone(), ids[1].clone());

    // With keys required, the open session is gone and a wrong key is refused.
    assert_eq!(
        Browser::sign_in(&app, "").await.err().map(|e| e.0),
        Some(StatusCode::UNAUTHORIZED)
    );
    let (_, ingest) = make_key(&app, "acme", "ingest").await;
    assert_eq!(
        Browser::sign_in(&app, &ingest).await.err().map(|e| e.0),
        Some(StatusCode::FORBIDDEN)
    );
    let (key_id, key) = make_key(&app, "acme", "tenant").await;
    let browser = Browser::sign_in(&app, &key)
        .await
        .expect("a tenant key signs in");

    let (status, page) = browser.get("/console/destinations").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&mine) && !page.contains(&theirs), "{page}");
    let (status, page) = browser.get("/console/events").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&my_event) && !page.contains(&their_event),
        "{page}"
    );
    for path in [
        format!("/console/destinations/{theirs}"),
        format!("/console/events/{their_event}"),
        format!("/console/events?destination_id={theirs}"),
    ] {
        let (status, _) = browser.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/console/events?tenant=globex",
        "/console/destinations?tenant=globex",
        "/console/dlq?tenant=globex",
    ] {
        let (status, _) = browser.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, page) = browser.get(&format!("/console/destinations/{mine}")).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = Browser::csrf(&page);
    let (status, _) = browser
        .post(
            &format!("/console/destinations/{theirs}/pause"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, view) = admin.get(&format!("/v1/destinations/{theirs}")).await;
    assert_eq!(
        view["paused"], false,
        "another tenant's destination is untouched"
    );

    // Deleting the key ends the session.
    let (status, _) = admin.delete(&format!("/v1/api-keys/{key_id}")).await;
    assert!(status.is_success());
    eventually(Duration::from_secs(5), async || {
        match browser.get("/console/destinations").await {
            (StatusCode::UNAUTHORIZED, _) => Ok(()),
            (status, _) => Err(format!("the deleted key still works ({status})")),
        }
    })
    .await;
}

/// Uploads a file as `admin` for `tenant` and waits until its ingest is finished;
/// answers its id.
pub async fn uploaded(app: &TestApp, admin_key: &str, tenant: &str, ndjson: &str) -> String {
    let base = app.base_url();
    let request = app
        .client
        .post(format!(
            "{base}/v1/uploads?tenant={tenant}&type=user.imported&name=users.ndjson"
        ))
        .bearer_auth(admin_key)
        .header("content-type", "application/x-ndjson")
        .body(ndjson.to_string());
    let (status, answer) = crate::common::app::send(request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("upload id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = app
            .client
            .get(format!("{base}/v1/uploads/{id}"))
            .bearer_auth(admin_key);
        let (_, file) = crate::common::app::send(request).await;
        if file["status"] == "done" {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upload not done: {file}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_uploads_page_shows_a_tenants_own_files_with_their_rejected_lines() {
    use crate::common::keys::{ADMIN_KEY, make_key, spawn_keyed_app};
    let app = spawn_keyed_app().await;
    let mine = uploaded(
        &app,
        ADMIN_KEY,
        "acme",
        "{\"n\":1}\n{\"broken\":\n{\"type\":\"bad type!\",\"data\":{}}\n",
    )
    .await;
    let theirs = uploaded(&app, ADMIN_KEY, "globex", "{\"n\":2}\n").await;

    let (_, key) = make_key(&app, "acme", "tenant").await;
    let browser = Browser::sign_in(&app, &key)
        .await
        .expect("a tenant key signs in");
    let (status, page) = browser.get("/console/uploads").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&mine) && !page.contains(&theirs), "{page}");
    let (status, page) = browser.get(&format!("/console/uploads/{mine}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("data-status=\"done\"") && page.contains("3 read: 1 accepted, 2 rejected"),
        "{page}"
    );
    assert!(
        page.contains("invalid JSON") && page.contains("event type"),
        "the rejected lines with their reasons: {page}"
    );
    // Another tenant's file is unknown, as in the API; naming another tenant is refused.
    let (status, _) = browser.get(&format!("/console/uploads/{theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = browser.get("/console/uploads/upl_nonsense").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = browser.get("/console/uploads?tenant=globex").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let admin = Browser::sign_in(&app, ADMIN_KEY)
        .await
        .expect("the admin key signs in");
    let (_, page) = admin.get("/console/uploads").await;
    assert!(page.contains(&mine) && page.contains(&theirs), "{page}");
    let (_, page) = admin.get("/console/uploads?tenant=globex").await;
    assert!(!page.contains(&mine) && page.contains(&theirs), "{page}");
}

/// A multipart body: text fields in order, then `file` (ndjson) last.
fn upload_form(fields: &[(&str, &str)], file: &str) -> (String, String) {
    let boundary = "hookstream-test-boundary";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"users.ndjson\"\r\ncontent-type: application/x-ndjson\r\n\r\n{file}\r\n--{boundary}--\r\n"
    ));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Browser {
    async fn upload(&self, fields: &[(&str, &str)], file: &str) -> (StatusCode, String) {
        let (content_type, body) = upload_form(fields, file);
        let r = self
            .client
            .post(format!("{}/console/uploads/new", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let to = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            status,
            if to.is_empty() {
                r.text().await.unwrap()
            } else {
                to
            },
        )
    }
}

#[tokio::test]
async fn a_file_uploaded_from_the_console_is_ingested_for_the_keys_own_tenant_only() {
    use crate::common::keys::{ADMIN_KEY, make_key, spawn_keyed_app};
    let app = spawn_keyed_app().await;
    let (_, key) = make_key(&app, "acme", "tenant").await;
    let acme = Browser::sign_in(&app, &key).await.expect("signs in");
    let (status, page) = acme.get("/console/uploads").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("enctype=\"multipart/form-data\""), "{page}");
    let csrf = Browser::csrf(&page);
    let file = "{\"n\":1}\n{\"n\":2}\n";

    // No token, a wrong one, another tenant: refused, nothing stored.
    for (fields, want) in [
        (vec![("type", "user.imported")], StatusCode::FORBIDDEN),
        (
            vec![("csrf", "0000"), ("type", "user.imported")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                ("csrf", csrf.as_str()),
                ("tenant", "globex"),
                ("type", "user.imported"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("csrf", csrf.as_str()), ("type", "not a type!")],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = acme.upload(&fields, file).await;
        assert_eq!(status, want, "{fields:?}: {body}");
    }
    let (status, listed) = crate::common::app::send(
        app.client
            .get(format!("{}/v1/uploads", app.base_url()))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["uploads"], json!([]), "nothing stored: {listed}");

    // The form: stored for the key's tenant, ingested like `POST /v1/uploads`.
    let (status, to) = acme
        .upload(&[("csrf", &csrf), ("type", "user.imported")], file)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{to}");
    let id = to
        .strip_prefix("/console/uploads/")
        .expect("to the upload's page")
        .to_string();
    eventually(Duration::from_secs(20), async || {
        let (_, page) = acme.get(&to).await;
        if page.contains("data-status=\"done\"") && page.contains("2 read: 2 accepted") {
            Ok(())
        } else {
            Err(page)
        }
    })
    .await;
    let (_, file_record) = crate::common::app::send(
        app.client
            .get(format!("{}/v1/uploads/{id}", app.base_url()))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(file_record["tenant"], "acme", "{file_record}");
    assert_eq!(file_record["name"], "users.ndjson", "{file_record}");

    // The admin uploads for another tenant; the acme key cannot see that file.
    let admin = Browser::sign_in(&app, ADMIN_KEY).await.expect("signs in");
    let (_, page) = admin.get("/console/uploads").await;
    let admin_csrf = Browser::csrf(&page);
    let (status, to) = admin
        .upload(
            &[
                ("csrf", &admin_csrf),
                ("tenant", "globex"),
                ("type", "user.imported"),
            ],
            file,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{to}");
    let (status, _) = acme.get(&to).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
