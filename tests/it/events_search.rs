//! `GET /v1/events`: newest first, filters (tenant, type pattern, time range, destination,
//! delivery status), cursors, events published straight on NATS, bad input.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::steps::{create, send};
use crate::common::{Receiver, TestApp, spawn_app};

const SETTLE: Duration = Duration::from_secs(20);

/// Ids of a page, in order.
fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list page: {page}"))
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (status, page) = app.get(&format!("/v1/events?{query}")).await;
    assert_eq!(status, StatusCode::OK, "GET /v1/events?{query}: {page}");
    page
}

/// Every page of `query` with `limit`, following cursors; the ids in order.
async fn all_pages(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut q = format!("limit={limit}");
        if !query.is_empty() {
            q = format!("{query}&{q}");
        }
        if let Some(c) = &cursor {
            q = format!("{q}&cursor={c}");
        }
        let page = list(app, &q).await;
        let got = ids(&page);
        assert!(got.len() <= limit, "page longer than its limit: {page}");
        out.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("more than 100 pages for {query}");
}

/// Publishes an envelope straight on JetStream, as a producer would.
async fn publish_on_nats(app: &TestApp, subject: &str, id: &str, tenant: &str, event_type: &str) {
    let client = app.nats.client().await;
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert("Hs-Event-Type", event_type);
    headers.insert("Hs-Tenant", tenant);
    let envelope = json!({
        "id": id, "tenant": tenant, "type": event_type, "source": "nats",
        "received_at": "2025-01-02T03:04:05Z", "data": {"n": 1}
    });
    js.publish_with_headers(
        subject.to_string(),
        headers,
        serde_json::to_vec(&envelope).unwrap().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("PubAck");
}

#[tokio::test]
async fn events_are_listed_newest_first_with_filters_and_cursors() {
    let app = spawn_app().await;
    let mut sent = Vec::new();
    for (i, (tenant, event_type)) in [
        ("acme", "order.created"),
        ("acme", "order.paid"),
        ("globex", "order.created"),
        ("acme", "user.signed_up"),
        ("acme", "order.created"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = send(
            &app,
            json!({"tenant": tenant, "type": event_type, "data": {"i": i}}),
        )
        .await;
        sent.push((id, tenant, event_type));
    }
    // A producer on NATS, tenant-wide and directed, and a replay-like message that is
    // not an event of its own.
    publish_on_nats(
        &app,
        "hs.ev.acme.order.shipped",
        "evt_nats_1",
        "acme",
        "order.shipped",
    )
    .await;
    sent.push(("evt_nats_1".into(), "acme", "order.shipped"));
    let newest_first: Vec<String> = sent.iter().rev().map(|(id, _, _)| id.clone()).collect();

    // Everything, newest first, and the same across pages of every size.
    let page = list(&app, "").await;
    assert_eq!(ids(&page), newest_first);
    assert!(page["next_cursor"].is_null(), "{page}");
    for limit in [1, 2, 4] {
        assert_eq!(
            all_pages(&app, "", limit).await,
            newest_first,
            "limit {limit}"
        );
    }
    let first = &page["data"][0];
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["type"], "order.shipped");
    assert_eq!(first["source"], "nats");
    let seqs: Vec<u64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {seqs:?}"
    );

    // Tenant and type pattern.
    let want = |f: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
        sent.iter()
            .rev()
            .filter(|(_, t, ty)| f(t, ty))
            .map(|(id, _, _)| id.clone())
            .collect()
    };
    assert_eq!(
        all_pages(&app, "tenant=acme", 2).await,
        want(&|t, _| t == "acme")
    );
    assert_eq!(
        all_pages(&app, "tenant=acme&event_type=order.*", 1).await,
        want(&|t, ty| t == "acme" && ty.starts_with("order."))
    );
    assert_eq!(
        all_pages(&app, "event_type=order.created", 10).await,
        want(&|_, ty| ty == "order.created")
    );
    assert_eq!(
        ids(&list(&app, "tenant=initech").await),
        Vec::<String>::new()
    );

    // Time range on the stored time, bounds included.
    let stored: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stored_at"].as_str().unwrap().to_string())
        .collect();
    let (since, until) = (&stored[4], &stored[1]);
    let range = all_pages(
        &app,
        &format!("since={}&until={}", urlencode(since), urlencode(until)),
        2,
    )
    .await;
    assert_eq!(range, newest_first[1..=4].to_vec());
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn events_are_filtered_by_destination_and_delivery_status() {
    let app = spawn_app().await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_status(500);
    let orders = create(
        &app,
        json!({"tenant": "acme", "url": ok.url("/orders"), "event_types": ["order.*"]}),
    )
    .await;
    let users = create(
        &app,
        json!({"tenant": "acme", "url": failing.url("/users"), "event_types": ["user.>"],
               "retry": {"schedule_ms": [], "max_attempts": 1}}),
    )
    .await;
    let o1 = send(
        &app,
        json!({"tenant": "acme", "type": "order.created", "data": {}}),
    )
    .await;
    let u1 = send(
        &app,
        json!({"tenant": "acme", "type": "user.created", "data": {}}),
    )
    .await;
    let o2 = send(
        &app,
        json!({"tenant": "acme", "type": "order.paid", "data": {}}),
    )
    .await;
    // Directed to `orders` although its type is not one `orders` subscribes to.
    let d1 = send(
        &app,
        json!({"tenant": "acme", "type": "invoice.sent", "destination_id": orders, "data": {}}),
    )
    .await;

    // Wait until every delivery has ended.
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let delivered = ids(&list(&app, "status=delivered").await);
        let dead = ids(&list(&app, "status=dead_lettered").await);
        if delivered.len() == 3 && dead.len() == 1 {
            assert_eq!(delivered, vec![d1.clone(), o2.clone(), o1.clone()]);
            assert_eq!(dead, vec![u1.clone()]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not end: delivered {delivered:?}, dead {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        all_pages(&app, &format!("destination_id={orders}"), 1).await,
        vec![d1.clone(), o2.clone(), o1.clone()]
    );
    assert_eq!(
        ids(&list(&app, &format!("destination_id={users}")).await),
        vec![u1.clone()]
    );
    assert_eq!(
        ids(&list(&app, &format!("destination_id={users}&status=delivered")).await),
        Vec::<String>::new()
    );
    let page = list(
        &app,
        &format!("destination_id={orders}&event_type=invoice.*"),
    )
    .await;
    assert_eq!(ids(&page), vec![d1.clone()]);
    assert_eq!(page["data"][0]["destination_id"], orders.as_str());
    let deliveries = &page["data"][0]["deliveries"];
    assert_eq!(deliveries[0]["destination_id"], orders.as_str());
    assert_eq!(deliveries[0]["status"], "delivered");
    assert_eq!(deliveries[0]["attempts"], 1);
    assert_eq!(deliveries[0]["last_status"], 200);

    // An event no destination wants has no deliveries; nothing is pending.
    send(
        &app,
        json!({"tenant": "acme", "type": "noone.cares", "data": {}}),
    )
    .await;
    let page = list(&app, "event_type=noone.*").await;
    assert_eq!(page["data"][0]["deliveries"], json!([]));
    assert_eq!(
        ids(&list(&app, "status=pending").await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn bad_search_filters_are_refused() {
    let app = spawn_app().await;
    send(&app, json!({"type": "a.b", "data": {}})).await;
    for (query, status) in [
        ("status=lost", StatusCode::BAD_REQUEST),
        ("event_type=a..b", StatusCode::BAD_REQUEST),
        ("tenant=Not%20A%20Tenant", StatusCode::BAD_REQUEST),
        ("cursor=abc", StatusCode::BAD_REQUEST),
        ("cursor=0", StatusCode::BAD_REQUEST),
        ("limit=0", StatusCode::BAD_REQUEST),
        ("limit=1001", StatusCode::BAD_REQUEST),
        ("since=yesterday", StatusCode::BAD_REQUEST),
        (
            "since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("unknown=1", StatusCode::BAD_REQUEST),
        ("destination_id=nope", StatusCode::NOT_FOUND),
    ] {
        let (got, body) = app.get(&format!("/v1/events?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body["error"]["code"].is_string(), "{query}: {body}");
    }
}

#[tokio::test]
async fn a_tenant_key_searches_its_own_tenant_only() {
    use crate::common::keys::{ADMIN_KEY, Keyed, make_key, spawn_keyed_app};
    let app = spawn_keyed_app().await;
    let admin = Keyed::new(&app, Some(ADMIN_KEY));
    let receiver = Receiver::start().await;
    let (status, other) = admin
        .post(
            "/v1/destinations",
            json!({"tenant": "globex", "url": receiver.url("/g"), "event_types": [">"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let other = other["id"].as_str().unwrap().to_string();
    let mut mine = Vec::new();
    for tenant in ["acme", "globex", "acme"] {
        let (status, body) = admin
            .post(
                "/v1/events",
                json!({"tenant": tenant, "type": "a.b", "data": {}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        if tenant == "acme" {
            mine.insert(0, body["id"].as_str().unwrap().to_string());
        }
    }
    let (_, key) = make_key(&app, "acme", "tenant").await;
    let acme = Keyed::new(&app, Some(&key));
    let (status, page) = acme.get("/v1/events").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), mine, "only its own tenant's events");
    let (status, page) = acme.get("/v1/events?tenant=acme").await;
    assert_eq!((status, ids(&page)), (StatusCode::OK, mine.clone()));
    let (status, body) = acme.get("/v1/events?tenant=globex").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = acme
        .get(&format!("/v1/events?destination_id={other}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, page) = admin.get("/v1/events").await;
    assert_eq!((status, ids(&page).len()), (StatusCode::OK, 3));
    let (_, ingest) = make_key(&app, "acme", "ingest").await;
    let (status, _) = Keyed::new(&app, Some(&ingest)).get("/v1/events").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = Keyed::new(&app, None).get("/v1/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A stream long enough for every path of the backward walk: pages spanning several
/// batch direct gets, gaps from deleted messages, a filter that skips most of the
/// stream, a sparse stretch before a dense one (a window with more than 4,096 matches,
/// cut in half), two filters (tenant-wide and directed) merged across windows.
#[tokio::test]
async fn long_streams_with_gaps_page_exactly_in_every_filter() {
    use futures::StreamExt;
    let app = spawn_app().await;
    let client = app.nats.client().await;
    let js = async_nats::jetstream::new(client);
    // (subject, tenant, type) in stream order: 4,800 `rare`, 3,000 `bulk` with a directed
    // `rare` event every 500, one `rare`, 100 `bulk`.
    let mut layout: Vec<(String, &str, &str)> = Vec::new();
    layout.extend((0..4_800).map(|_| ("hs.ev.rare.r.s".to_string(), "rare", "r.s")));
    for i in 0..3_000 {
        if i % 500 == 250 {
            layout.push(("hs.to.d_far.r.t".to_string(), "rare", "r.t"));
        }
        layout.push(("hs.ev.bulk.x.y".to_string(), "bulk", "x.y"));
    }
    layout.push(("hs.ev.rare.r.s".to_string(), "rare", "r.s"));
    layout.extend((0..100).map(|_| ("hs.ev.bulk.x.y".to_string(), "bulk", "x.y")));

    let mut acks = futures::stream::FuturesUnordered::new();
    let mut stored: Vec<(u64, String, &str, &str)> = Vec::new();
    for (i, (subject, tenant, event_type)) in layout.iter().enumerate() {
        let id = format!("evt_long_{i}");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Hs-Event-Type", *event_type);
        headers.insert("Hs-Tenant", *tenant);
        let envelope = json!({
            "id": id, "tenant": tenant, "type": event_type, "source": "nats",
            "received_at": "2025-01-02T03:04:05Z", "data": {"i": i}
        });
        let ack = js
            .publish_with_headers(
                subject.clone(),
                headers,
                serde_json::to_vec(&envelope).unwrap().into(),
            )
            .await
            .expect("publish");
        acks.push(async move { (ack.await.expect("PubAck").sequence, id) });
        while acks.len() >= 256 {
            let (seq, id) = acks.next().await.unwrap();
            stored.push((seq, id, "", ""));
        }
    }
    while let Some((seq, id)) = acks.next().await {
        stored.push((seq, id, "", ""));
    }
    stored.sort();
    for (k, entry) in stored.iter_mut().enumerate() {
        entry.2 = layout[k].1;
        entry.3 = layout[k].2;
    }
    // Gaps: every 13th message deleted.
    let stream = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS");
    for (seq, _, _, _) in stored.iter().filter(|e| e.0 % 13 == 0) {
        stream.delete_message(*seq).await.expect("delete");
    }
    stored.retain(|e| e.0 % 13 != 0);

    let want = |f: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
        stored
            .iter()
            .rev()
            .filter(|(_, _, t, ty)| f(t, ty))
            .map(|(_, id, _, _)| id.clone())
            .collect()
    };
    assert_eq!(all_pages(&app, "", 1000).await, want(&|_, _| true));
    assert_eq!(
        all_pages(&app, "tenant=rare", 100).await,
        want(&|t, _| t == "rare")
    );
    assert_eq!(
        all_pages(&app, "tenant=rare&event_type=r.t", 3).await,
        want(&|t, ty| t == "rare" && ty == "r.t")
    );
    assert_eq!(
        all_pages(&app, "event_type=x.y", 500).await,
        want(&|_, ty| ty == "x.y")
    );
    // Small pages across the sparse stretch and into the dense one.
    let rare = want(&|t, _| t == "rare");
    let mut cursor: Option<String> = None;
    let mut got = Vec::new();
    for _ in 0..5 {
        let q = match &cursor {
            Some(c) => format!("tenant=rare&limit=3&cursor={c}"),
            None => "tenant=rare&limit=3".to_string(),
        };
        let page = list(&app, &q).await;
        got.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    assert_eq!(got, rare[..15].to_vec());
}
