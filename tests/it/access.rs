//! Access: API keys, roles and open mode (contract, "Access"; docs/adr/0009).
//!
//! The role × route matrix runs every route with no key, a wrong key, the admin key, a
//! tenant key and an ingest key; the other tests show revocation across replicas, that
//! keys never leave their one answer, and the start-up policy.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::keys::{ADMIN_KEY, Keyed, make_key, spawn_keyed_app, spawn_keyed_app_with};
use crate::common::prometheus::Scrape;
use crate::common::steps::eventually;
use crate::common::{Receiver, ServiceProcess, spawn_app_on, spawn_app_with};

const WRONG_KEY: &str = "hsk_thisIsNotAKeyOfThisServiceAtAll0123456789ab";

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    /// admin, tenant, ingest (no key and a wrong key: 401 on /v1, the same as admin on
    /// open routes).
    want: [u16; 3],
}

fn route(method: Method, path: impl Into<String>, body: Option<Value>, want: [u16; 3]) -> Route {
    Route {
        method,
        path: path.into(),
        body,
        want,
    }
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_contract_says() {
    let app = spawn_keyed_app_with(|cfg| cfg.api.auth.protect_metrics = true).await;
    let receiver = Receiver::start().await;
    let (_, tenant_key) = make_key(&app, "acme", "tenant").await;
    let (_, ingest_key) = make_key(&app, "acme", "ingest").await;
    let tenant = Keyed::new(&app, Some(&tenant_key));
    let (status, dest) = tenant
        .post(
            "/v1/destinations",
            json!({"url": receiver.url("/hook"), "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dest}");
    let d = dest["id"].as_str().unwrap().to_string();
    let (status, event) = tenant
        .post(
            "/v1/events",
            json!({"type": "order.created", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");
    let e = event["id"].as_str().unwrap().to_string();
    receiver
        .recv_timeout(Duration::from_secs(15))
        .await
        .expect("the tenant's event is delivered");

    let ev = || Some(json!({"type": "order.created", "data": {}}));
    let new_dest = || Some(json!({"url": receiver.url("/x"), "event_types": ["a.b"]}));
    let routes = [
        route(Method::POST, "/v1/events", ev(), [202, 202, 202]),
        route(
            Method::POST,
            "/v1/events/batch",
            Some(json!({"events": [ev()]})),
            [200, 200, 200],
        ),
        route(
            Method::GET,
            format!("/v1/events/{e}"),
            None,
            [200, 200, 403],
        ),
        route(
            Method::GET,
            format!("/v1/events/{e}/attempts"),
            None,
            [200, 200, 403],
        ),
        route(
            Method::POST,
            format!("/v1/events/{e}/resend"),
            Some(json!({})),
            [202, 202, 403],
        ),
        route(
            Method::POST,
            "/v1/destinations",
            new_dest(),
            [201, 201, 403],
        ),
        route(Method::GET, "/v1/destinations", None, [200, 200, 403]),
        route(
            Method::GET,
            format!("/v1/destinations/{d}"),
            None,
            [200, 200, 403],
        ),
        route(
            Method::PUT,
            format!("/v1/destinations/{d}"),
            Some(json!({"url": receiver.url("/hook"), "event_types": ["order.*"]})),
            [200, 200, 403],
        ),
        route(
            Method::PATCH,
            format!("/v1/destinations/{d}"),
            Some(json!({"description": "x"})),
            [200, 200, 403],
        ),
        route(
            Method::POST,
            format!("/v1/destinations/{d}/rotate-secret"),
            Some(json!({})),
            [200, 200, 403],
        ),
        route(
            Method::POST,
            format!("/v1/destinations/{d}/pause"),
            None,
            [200, 200, 403],
        ),
        route(
            Method::POST,
            format!("/v1/destinations/{d}/resume"),
            None,
            [200, 200, 403],
        ),
        route(
            Method::POST,
            format!("/v1/destinations/{d}/test"),
            None,
            [202, 202, 403],
        ),
        route(
            Method::DELETE,
            "/v1/destinations/no-such-destination",
            None,
            [404, 404, 403],
        ),
        route(Method::GET, "/v1/dlq", None, [200, 200, 403]),
        route(Method::GET, "/v1/dlq/999999", None, [404, 404, 403]),
        route(Method::DELETE, "/v1/dlq/999999", None, [404, 404, 403]),
        route(
            Method::POST,
            "/v1/dlq/replay",
            Some(json!({"ids": [999999]})),
            [200, 200, 403],
        ),
        route(
            Method::POST,
            "/v1/dlq/purge",
            Some(json!({"ids": [999999]})),
            [200, 200, 403],
        ),
        route(Method::GET, "/v1/stats", None, [200, 200, 403]),
        route(
            Method::POST,
            "/v1/api-keys",
            Some(json!({"tenant": "acme", "role": "ingest"})),
            [201, 403, 403],
        ),
        route(Method::GET, "/v1/api-keys", None, [200, 403, 403]),
        route(
            Method::DELETE,
            "/v1/api-keys/key_nosuchkey",
            None,
            [404, 403, 403],
        ),
        route(Method::GET, "/v1/no-such-route", None, [404, 404, 404]),
        route(Method::GET, "/metrics", None, [200, 403, 403]),
    ];
    let open = [
        route(Method::GET, "/healthz", None, [200; 3]),
        route(Method::GET, "/readyz", None, [200; 3]),
        route(Method::GET, "/openapi.json", None, [200; 3]),
    ];

    let principals = [
        ("admin", Some(ADMIN_KEY)),
        ("tenant", Some(tenant_key.as_str())),
        ("ingest", Some(ingest_key.as_str())),
    ];
    let mut failures = Vec::new();
    for r in routes.iter().chain(open.iter()) {
        let guarded = !open.iter().any(|o| o.path == r.path);
        for (who, key) in [("no key", None), ("a wrong key", Some(WRONG_KEY))] {
            let a = Keyed::new(&app, key)
                .call(r.method.clone(), &r.path, r.body.as_ref())
                .await;
            if guarded {
                let challenge = a
                    .headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok());
                if a.status != StatusCode::UNAUTHORIZED
                    || a.body["error"]["code"] != "unauthorized"
                    || challenge != Some("Bearer")
                {
                    failures.push(format!(
                        "{} {} with {who}: {} {challenge:?} {}",
                        r.method, r.path, a.status, a.body
                    ));
                }
            } else if a.status != StatusCode::OK {
                failures.push(format!(
                    "{} {} with {who}: {} {}",
                    r.method, r.path, a.status, a.body
                ));
            }
        }
        for ((who, key), want) in principals.iter().zip(r.want) {
            let a = Keyed::new(&app, *key)
                .call(r.method.clone(), &r.path, r.body.as_ref())
                .await;
            let status = a.status.as_u16();
            let ok = status == want;
            let code_ok = status != 403 || a.body["error"]["code"] == "forbidden";
            if !ok || !code_ok {
                failures.push(format!(
                    "{} {} as {who}: want {want}, got {status} {}",
                    r.method, r.path, a.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} routes answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // 401 and 403 are counted like every other answer.
    let (status, text) = admin_text(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let scrape = Scrape::parse(&text).expect("Prometheus text");
    for code in ["401", "403"] {
        let counted: f64 = scrape
            .matching("hookstream_http_requests_total", &[("status", code)])
            .map(|s| s.value)
            .sum();
        assert!(counted >= 5.0, "{code} answers counted: {counted}");
    }
}

async fn admin_text(app: &crate::common::TestApp, path: &str) -> (StatusCode, String) {
    let response = app
        .client
        .get(format!("{}{path}", app.base_url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.text().await.expect("text"))
}

#[tokio::test]
async fn a_deleted_key_is_refused_on_another_replica_within_two_seconds() {
    let first = spawn_keyed_app().await;
    let second = spawn_app_on(&first.nats, crate::common::keys::with_admin_key).await;
    let (id, key) = make_key(&first, "acme", "tenant").await;
    let on_first = Keyed::new(&first, Some(&key));
    let on_second = Keyed::new(&second, Some(&key));
    assert_eq!(on_first.get("/v1/destinations").await.0, StatusCode::OK);
    wait_for_status(&on_second, StatusCode::OK, Duration::from_secs(2)).await;

    let (status, body) = Keyed::new(&first, Some(ADMIN_KEY))
        .delete(&format!("/v1/api-keys/{id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let deleted = Instant::now();
    assert_eq!(
        on_first.get("/v1/destinations").await.0,
        StatusCode::UNAUTHORIZED
    );
    wait_for_status(&on_second, StatusCode::UNAUTHORIZED, Duration::from_secs(2)).await;
    let took = deleted.elapsed();
    eprintln!("a deleted key was refused on the second replica after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "refused on the second replica after {took:?}"
    );
    // Deleted once: a second delete finds nothing.
    let (status, _) = Keyed::new(&second, Some(ADMIN_KEY))
        .delete(&format!("/v1/api-keys/{id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Polls `GET /v1/destinations` until it answers `want`; panics after `within`.
async fn wait_for_status(keyed: &Keyed<'_>, want: StatusCode, within: Duration) {
    eventually(within, async || match keyed.get("/v1/destinations").await {
        (status, _) if status == want => Ok(()),
        (status, _) => Err(format!("still {status}, not {want}")),
    })
    .await
}

#[tokio::test]
async fn a_hashed_admin_key_lets_its_key_in_and_not_its_hash() {
    use sha2::Digest;
    let key = "an-admin-key-only-its-hash-is-configured";
    let hex: String = sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hashed = format!("sha256:{hex}");
    let app = spawn_app_with(|cfg| {
        cfg.api.auth.admin_keys = hookstream::config::AdminKeys(vec![hashed.clone()]);
    })
    .await;
    assert_eq!(
        Keyed::new(&app, Some(key)).get("/v1/api-keys").await.0,
        StatusCode::OK
    );
    assert_eq!(
        Keyed::new(&app, Some(&hashed)).get("/v1/api-keys").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        Keyed::new(&app, None).get("/v1/api-keys").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_malformed_admin_key_stops_the_start_naming_the_setting_before_nats() {
    let mut cfg = hookstream::config::Config::defaults();
    // Nothing listens there: the refusal must come before any connection.
    cfg.nats.url = Some("nats://127.0.0.1:1".into());
    cfg.api.auth.admin_keys = hookstream::config::AdminKeys(vec!["x9q-k3y".into()]);
    let refused = match hookstream::app::App::build(cfg).await {
        Ok(_) => panic!("built with a malformed admin key"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("api.auth.admin_keys"), "{refused}");
    assert!(
        !refused.contains("x9q-k3y"),
        "the key itself is never printed: {refused}"
    );
}

#[tokio::test]
async fn with_no_admin_key_it_refuses_to_start_open_on_a_public_address() {
    // In-process: the check comes before NATS is even reached.
    let mut cfg = hookstream::config::Config::defaults();
    cfg.nats.url = Some("nats://127.0.0.1:1".into());
    cfg.api.listen = "0.0.0.0:0".into();
    let refused = match hookstream::app::App::build(cfg).await {
        Ok(_) => panic!("an open API on 0.0.0.0 was built"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("HOOKSTREAM_ADMIN_API_KEYS"), "{refused}");
    assert!(refused.contains("api.auth.mode = \"off\""), "{refused}");

    // The binary says the same and exits.
    let port = crate::common::free_port();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookstream"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOOKSTREAM_LISTEN", format!("0.0.0.0:{port}"))
        .env("HOOKSTREAM_NATS_URL", "nats://127.0.0.1:1")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("hookstream exits")
        .expect("run hookstream");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HOOKSTREAM_ADMIN_API_KEYS"), "{stderr}");
}

#[tokio::test]
async fn open_mode_on_loopback_acts_as_admin_but_still_checks_presented_keys() {
    let app = spawn_app_with(|_| {}).await;
    let open = Keyed::new(&app, None);
    let (status, created) = open
        .post("/v1/api-keys", json!({"tenant": "acme", "role": "tenant"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap();
    // The tenant key is held to its tenant even while the API is open.
    let (status, body) = Keyed::new(&app, Some(key))
        .get("/v1/destinations?tenant=other")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    assert_eq!(
        Keyed::new(&app, Some(WRONG_KEY)).get("/v1/stats").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(open.get("/v1/stats").await.0, StatusCode::OK);
}

#[tokio::test]
async fn keys_are_shown_once_and_never_logged_or_stored() {
    let nats = crate::common::NatsServer::start().await;
    let service = ServiceProcess::spawn(
        &nats.url(),
        &[
            ("RUST_LOG", "trace"),
            ("HOOKSTREAM_LOG__FORMAT", "json"),
            ("HOOKSTREAM_ADMIN_API_KEYS", ADMIN_KEY),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let base = service.base_url();
    let call = |method: Method, path: &str, key: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, created) = call(
        Method::POST,
        "/v1/api-keys",
        ADMIN_KEY,
        Some(json!({"tenant": "acme", "role": "tenant", "name": "ci"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("the key, once").to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("hsk_") && key.len() >= 4 + 43, "{key}");
    assert_eq!(created["role"], "tenant");
    assert_eq!(created["tenant"], "acme");

    let (status, _) = call(Method::GET, "/v1/destinations", &key, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        Method::GET,
        "/v1/destinations",
        "hsk_wrong-key-for-the-log-test",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, listed) = call(Method::GET, "/v1/api-keys", ADMIN_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("key").is_none(), "{listed}");
    assert!(!listed.to_string().contains(&key));

    // The bucket holds the hash, never the key.
    let client_nats = nats.client().await;
    let js = async_nats::jetstream::new(client_nats);
    let bucket = js.get_key_value("hs_api_keys").await.expect("hs_api_keys");
    let stored = bucket
        .get(&id)
        .await
        .expect("read")
        .expect("the key's record");
    let stored = String::from_utf8_lossy(&stored).into_owned();
    assert!(!stored.contains(&key), "{stored}");
    let record: Value = serde_json::from_str(&stored).unwrap();
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(record["sha256"], hex.as_str());

    let (status, _) = call(
        Method::DELETE,
        &format!("/v1/api-keys/{id}"),
        ADMIN_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let log = service.log();
    assert!(
        log.contains("api_key.create") && log.contains(&id),
        "no audit line with the key id"
    );
    for secret in [ADMIN_KEY, key.as_str(), "hsk_wrong-key-for-the-log-test"] {
        assert!(!log.contains(secret), "a key is in the trace-level log");
    }
    // The key part alone, too (a log could cut the prefix).
    assert!(!log.contains(&key[4..]), "a key is in the trace-level log");
}

#[tokio::test]
async fn bad_key_requests_are_clear_400s_and_change_nothing() {
    let app = spawn_keyed_app().await;
    let admin = Keyed::new(&app, Some(ADMIN_KEY));
    for (body, why) in [
        (
            json!({"tenant": "acme", "role": "admin"}),
            "admin keys come from config",
        ),
        (json!({"tenant": "acme", "role": "owner"}), "unknown role"),
        (
            json!({"tenant": "Not A Tenant", "role": "tenant"}),
            "bad tenant",
        ),
        (
            json!({"tenant": "acme", "role": "tenant", "extra": 1}),
            "unknown field",
        ),
        (
            json!({"tenant": "acme", "role": "tenant", "name": ""}),
            "empty name",
        ),
    ] {
        let (status, answer) = admin.post("/v1/api-keys", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {answer}");
    }
    let (_, listed) = admin.get("/v1/api-keys").await;
    assert_eq!(listed["data"], json!([]));
    // A made key works with its default tenant.
    let (status, created) = admin.post("/v1/api-keys", json!({"role": "ingest"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["tenant"], "default");
    let ingest = Keyed::new(&app, created["key"].as_str());
    let id = steps_send(&ingest).await;
    assert!(!id.is_empty());
}

async fn steps_send(keyed: &Keyed<'_>) -> String {
    let (status, body) = keyed
        .post("/v1/events", json!({"type": "order.created", "data": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// One tenant's things: its key and the ids of a destination, an event and its dead
/// letter.
struct World {
    tenant: &'static str,
    key: String,
    destination: String,
    event: String,
    dead_letter: u64,
}

async fn world(app: &crate::common::TestApp, receiver: &Receiver, tenant: &'static str) -> World {
    let (_, key) = make_key(app, tenant, "tenant").await;
    let me = Keyed::new(app, Some(&key));
    let (status, dest) = me
        .post(
            "/v1/destinations",
            json!({"url": receiver.url(&format!("/{tenant}")), "event_types": ["order.*"],
                   "retry": {"schedule_ms": [], "max_attempts": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dest}");
    let event = steps_send(&me).await;
    let dead_letter = eventually(Duration::from_secs(20), async || {
        let (_, page) = me.get("/v1/dlq").await;
        page["data"][0]["id"]
            .as_u64()
            .ok_or_else(|| format!("no dead letter for {tenant}: {page}"))
    })
    .await;
    World {
        tenant,
        key,
        destination: dest["id"].as_str().unwrap().to_string(),
        event,
        dead_letter,
    }
}

#[tokio::test]
async fn two_tenants_cannot_see_count_or_touch_each_others_anything() {
    let app = spawn_keyed_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let acme = world(&app, &receiver, "acme").await;
    let globex = world(&app, &receiver, "globex").await;
    let admin = Keyed::new(&app, Some(ADMIN_KEY));

    for (me, other) in [(&acme, &globex), (&globex, &acme)] {
        let keyed = Keyed::new(&app, Some(&me.key));
        let (oe, od, ol, ot) = (
            &other.event,
            &other.destination,
            other.dead_letter,
            other.tenant,
        );
        let ev = |extra: Value| {
            let mut e = json!({"type": "order.created", "data": {}});
            e.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            e
        };
        let dest = json!({"url": receiver.url("/x"), "event_types": ["a.b"], "tenant": ot});
        let checks: Vec<(Method, String, Option<Value>, u16)> = vec![
            (Method::GET, format!("/v1/events/{oe}"), None, 404),
            (Method::GET, format!("/v1/events/{oe}/attempts"), None, 404),
            (
                Method::POST,
                format!("/v1/events/{oe}/resend"),
                Some(json!({})),
                404,
            ),
            (
                Method::POST,
                format!("/v1/events/{}/resend", me.event),
                Some(json!({"destination_id": od})),
                404,
            ),
            (Method::GET, format!("/v1/destinations/{od}"), None, 404),
            (
                Method::PUT,
                format!("/v1/destinations/{od}"),
                Some(json!({"url": receiver.url("/y"), "event_types": ["a.b"]})),
                404,
            ),
            (
                Method::PATCH,
                format!("/v1/destinations/{od}"),
                Some(json!({"description": "mine now"})),
                404,
            ),
            (
                Method::POST,
                format!("/v1/destinations/{od}/rotate-secret"),
                Some(json!({})),
                404,
            ),
            (
                Method::POST,
                format!("/v1/destinations/{od}/pause"),
                None,
                404,
            ),
            (
                Method::POST,
                format!("/v1/destinations/{od}/resume"),
                None,
                404,
            ),
            (
                Method::POST,
                format!("/v1/destinations/{od}/test"),
                None,
                404,
            ),
            (Method::DELETE, format!("/v1/destinations/{od}"), None, 404),
            (Method::GET, format!("/v1/dlq/{ol}"), None, 404),
            (Method::DELETE, format!("/v1/dlq/{ol}"), None, 404),
            (
                Method::POST,
                "/v1/dlq/replay".into(),
                Some(json!({"tenant": ot})),
                403,
            ),
            (
                Method::POST,
                "/v1/dlq/purge".into(),
                Some(json!({"tenant": ot})),
                403,
            ),
            (
                Method::POST,
                "/v1/dlq/replay".into(),
                Some(json!({"destination_id": od})),
                409,
            ),
            (Method::GET, format!("/v1/dlq?tenant={ot}"), None, 403),
            (
                Method::GET,
                format!("/v1/destinations?tenant={ot}"),
                None,
                403,
            ),
            (Method::GET, format!("/v1/stats?tenant={ot}"), None, 403),
            (
                Method::POST,
                "/v1/events".into(),
                Some(ev(json!({"tenant": ot}))),
                403,
            ),
            (
                Method::POST,
                "/v1/events".into(),
                Some(ev(json!({"destination_id": od}))),
                400,
            ),
            (Method::POST, "/v1/destinations".into(), Some(dest), 403),
            (
                Method::PUT,
                format!("/v1/destinations/{}", me.destination),
                Some(json!({"url": receiver.url("/y"), "event_types": ["a.b"], "tenant": ot})),
                403,
            ),
        ];
        let mut failures = Vec::new();
        for (method, path, body, want) in &checks {
            let a = keyed.call(method.clone(), path, body.as_ref()).await;
            if a.status.as_u16() != *want {
                failures.push(format!(
                    "{} as {}: {method} {path}: {} {}",
                    want, me.tenant, a.status, a.body
                ));
            }
            // A refusal never names what it refused to show.
            if *want == 404 && a.body.to_string().contains(ot) {
                failures.push(format!(
                    "{method} {path}: the 404 names tenant {ot}: {}",
                    a.body
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // Replays and purges by id treat the other's dead letters as unknown ids.
        for path in ["/v1/dlq/replay", "/v1/dlq/purge"] {
            let (status, answer) = keyed.post(path, json!({"ids": [ol]})).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer["not_found"], json!([ol]), "{path}: {answer}");
            assert_eq!(answer["matched"], 0, "{path}: {answer}");
        }
        let (_, purged) = keyed
            .post("/v1/dlq/purge", json!({"destination_id": od}))
            .await;
        assert_eq!(purged["matched"], 0, "{purged}");
        let (_, batch) = keyed
            .post(
                "/v1/events/batch",
                json!({"events": [ev(json!({"tenant": ot}))]}),
            )
            .await;
        assert_eq!(batch["results"][0]["status"], 403, "{batch}");

        // Lists and counts hold only its own.
        for path in ["/v1/destinations", "/v1/stats", "/v1/dlq"] {
            let (status, page) = keyed.get(path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let rows = page["data"].as_array().expect("a list");
            assert!(!rows.is_empty(), "{path}: {page}");
            assert!(
                rows.iter().all(|r| r["tenant"] == me.tenant),
                "{path} shows another tenant: {page}"
            );
        }
        // Guessing dead-letter ids finds only its own.
        for guess in 1..=acme.dead_letter.max(globex.dead_letter) + 2 {
            let (status, letter) = keyed.get(&format!("/v1/dlq/{guess}")).await;
            if status == StatusCode::OK {
                assert_eq!(letter["tenant"], me.tenant, "{letter}");
            } else {
                assert_eq!(status, StatusCode::NOT_FOUND, "{letter}");
            }
        }

        // The other's things are as they were.
        let (status, d) = admin.get(&format!("/v1/destinations/{od}")).await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(
            (d["paused"].as_bool(), d.get("description")),
            (Some(false), None),
            "{d}"
        );
        assert_eq!(admin.get(&format!("/v1/dlq/{ol}")).await.0, StatusCode::OK);
        let (_, attempts) = admin.get(&format!("/v1/events/{oe}/attempts")).await;
        assert_eq!(
            attempts["destinations"][0]["attempts"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{attempts}"
        );
    }
}

#[tokio::test]
async fn an_event_naming_another_tenant_than_its_subject_is_dead_lettered_tenant_mismatch() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let open = Keyed::new(&app, None);
    let (status, dest) = open
        .post(
            "/v1/destinations",
            json!({"tenant": "acme", "url": receiver.url("/"), "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dest}");
    let d = dest["id"].as_str().unwrap().to_string();
    let js = async_nats::jetstream::new(app.nats.client().await);
    let envelope = |id: &str, tenant: &str| {
        json!({"id": id, "tenant": tenant, "type": "order.created",
               "received_at": "2026-12-01T00:00:00Z", "data": {}})
        .to_string()
    };
    // The envelope names another tenant; Hs-Tenant does; a directed event of another
    // tenant aimed at acme's destination.
    let cases = [
        (
            "hs.ev.acme.order.created".to_string(),
            envelope("evt_env", "globex"),
            "globex",
        ),
        (
            "hs.ev.acme.order.created".to_string(),
            envelope("evt_hdr", "acme"),
            "globex",
        ),
        (
            format!("hs.to.{d}.order.created"),
            envelope("evt_dir", "globex"),
            "globex",
        ),
    ];
    for (subject, body, header_tenant) in &cases {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Hs-Tenant", *header_tenant);
        js.publish_with_headers(subject.clone(), headers, body.clone().into())
            .await
            .expect("publish")
            .await
            .expect("PubAck");
    }
    let letters = eventually(Duration::from_secs(20), async || {
        let (_, page) = open
            .get(&format!("/v1/dlq?destination_id={d}&order=oldest"))
            .await;
        let letters = page["data"].as_array().cloned().unwrap_or_default();
        if letters.len() >= cases.len() {
            Ok(letters)
        } else {
            Err(format!("dead letters so far: {page}"))
        }
    })
    .await;
    let mut ids: Vec<&str> = letters
        .iter()
        .filter_map(|l| l["event_id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["evt_dir", "evt_env", "evt_hdr"]);
    for letter in &letters {
        assert_eq!(letter["reason"], "tenant_mismatch", "{letter}");
        assert_eq!(
            letter["tenant"], "acme",
            "filed under the subject's tenant: {letter}"
        );
    }
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none(),
        "a mismatched event was delivered"
    );
}

#[tokio::test]
async fn a_producer_user_of_one_tenant_cannot_publish_for_another() {
    use crate::common::cluster::NatsCluster;
    let cluster = NatsCluster::start().await;
    // The stream as the service would make it (the service user may use the JS API).
    let service = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(cluster.service_client().await);
    // Retried: on a machine loaded by the other tests, a cluster's stream create can
    // outlast one API timeout (seen in CI); creating the same stream again is harmless.
    let stream = eventually(Duration::from_secs(30), async || {
        service
            .create_stream(async_nats::jetstream::stream::Config {
                name: "HS_EVENTS".into(),
                subjects: vec!["hs.ev.>".into(), "hs.to.>".into()],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create HS_EVENTS: {e}"))
    })
    .await;
    let producer = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(cluster.tenant_producer_client().await);
    let publish = |subject: &'static str| {
        let producer = producer.clone();
        async move {
            match producer.publish(subject, "{}".into()).await {
                Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    // A stream just created in a cluster may have no leader for a moment: nobody answers
    // ("no stream found"), nothing is stored, and the publish is tried again.
    let own = eventually(Duration::from_secs(15), async || {
        match publish("hs.ev.acme.order.created").await {
            Err(e) if e.contains("no stream found") => Err(e),
            answered => Ok(answered),
        }
    })
    .await;
    assert_eq!(own, Ok(1), "its own tenant");
    for other in [
        "hs.ev.globex.order.created",
        "hs.ev.acmex.order.created",
        "hs.to.d1.order.created",
    ] {
        assert!(publish(other).await.is_err(), "{other} was acknowledged");
    }
    let info = stream.get_info().await.expect("stream info");
    assert_eq!(
        info.state.messages, 1,
        "only the own tenant's event was stored"
    );
}
