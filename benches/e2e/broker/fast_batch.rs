//! JetStream fast batch publishing (ADR-50 of nats-architecture-and-design, "Fast-ingest
//! Batch Publishing", nats-server 2.14+), sent by hand: async-nats 0.51 has no client for
//! it. The batch's state rides in each message's reply subject; the server answers on it
//! with flow acks, gap and error reports, and a PubAck for the commit.
//!
//! `checks` is the scenario that answers what a router on fast batches would rely on:
//! `Nats-Msg-Id` de-duplication inside a batch, and what a batch does when the stream
//! refuses one of its messages.

use std::time::Duration;

use async_nats::Subscriber;
use async_nats::jetstream;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::levers::{Out, delivery, shard_config};
use crate::harness::Nats;

/// Flow acknowledgements a batch may have outstanding (ADR-50: 2 is "generally optimal").
const OUTSTANDING_FLOW_ACKS: u64 = 2;
/// Where the replies to fast batches come, `<prefix>.<batch id>.…`.
pub const FAST_PREFIX: &str = "_INBOX.fastbatch";

/// What the server answered to one fast batch.
#[derive(Default)]
pub(super) struct BatchOutcome {
    /// The final PubAck (`{"stream", "seq", "batch", "count"}`) or its error.
    pub pub_ack: Value,
    /// Flow acknowledgements received (`{"type":"ack"}`), the first one included.
    pub flow_acks: usize,
    /// Gap and error reports (`{"type":"gap"|"err"}`), in arrival order.
    pub reports: Vec<Value>,
    /// Messages not sent because the server had already ended the batch.
    pub unsent: usize,
}

/// Sends `msgs` as one fast batch `id` (ADR-50 "Fast-ingest Batch Publishing"): the reply
/// subject `<prefix>.<id>.<flow>.<gap>.<batch seq>.<op>.$FI` carries the batch's state
/// (op 0 starts, 1 appends, 2 stores the last message and commits). The first message
/// waits for the server's flow acknowledgement (which says every how many messages it
/// will ack); then at most `OUTSTANDING_FLOW_ACKS` flow intervals are sent ahead of the
/// last ack; the commit waits for the PubAck. Replies come on `replies`
/// (`<FAST_PREFIX>.>`); those of other batches are skipped.
pub(super) async fn fast_batch(
    client: &async_nats::Client,
    replies: &mut Subscriber,
    id: &str,
    msgs: &[Out],
    flow: u16,
    gap: &str,
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let n = msgs.len() as u64;
    let (mut acked, mut every) = (0u64, u64::from(flow));
    for (i, m) in msgs.iter().enumerate() {
        let seq = i as u64 + 1;
        let op = match seq {
            _ if seq == n => 2,
            1 => 0,
            _ => 1,
        };
        client
            .publish_with_reply_and_headers(
                m.subject.clone(),
                format!("{FAST_PREFIX}.{id}.{flow}.{gap}.{seq}.{op}.$FI"),
                m.headers.clone(),
                m.payload.clone(),
            )
            .await
            .expect("publish");
        if op == 2 {
            break;
        }
        // The first message waits for the flow settings; later ones only when too far
        // ahead of the last flow ack. Replies already there are read either way.
        let mut wait = seq == 1;
        loop {
            let reply = if wait || acked + every * OUTSTANDING_FLOW_ACKS <= seq {
                next_reply(replies, id, Duration::from_secs(10)).await
            } else {
                match replies.next().now_or_never() {
                    Some(Some(msg)) if reply_batch(&msg) == id => {
                        serde_json::from_slice(&msg.payload).ok()
                    }
                    Some(Some(_)) => continue,
                    _ => break,
                }
            };
            let Some(reply) = reply else {
                outcome.pub_ack = json!({"error": "no reply within 10 s"});
                return outcome;
            };
            wait = false;
            match reply["type"].as_str() {
                Some("ack") => {
                    outcome.flow_acks += 1;
                    acked = acked.max(reply["seq"].as_u64().unwrap_or(0));
                    every = reply["msgs"].as_u64().unwrap_or(every).max(1);
                }
                Some(_) => outcome.reports.push(reply),
                None => {
                    // The batch ended early (refused, or a duplicate first message).
                    outcome.pub_ack = reply;
                    outcome.unsent = msgs.len() - i - 1;
                    return outcome;
                }
            }
        }
    }
    // After the commit: flow acks and reports until the PubAck.
    loop {
        let Some(reply) = next_reply(replies, id, Duration::from_secs(10)).await else {
            outcome.pub_ack = json!({"error": "no PubAck within 10 s"});
            return outcome;
        };
        match reply["type"].as_str() {
            Some("ack") => outcome.flow_acks += 1,
            Some(_) => outcome.reports.push(reply),
            None => {
                outcome.pub_ack = reply;
                return outcome;
            }
        }
    }
}

/// The batch id of a reply (`<FAST_PREFIX>.<id>.…`).
fn reply_batch(msg: &async_nats::Message) -> &str {
    msg.subject
        .strip_prefix(FAST_PREFIX)
        .and_then(|s| s.split('.').nth(1))
        .unwrap_or_default()
}

/// The next reply for batch `id`, parsed; `None` after `patience`.
async fn next_reply(replies: &mut Subscriber, id: &str, patience: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let msg = tokio::time::timeout_at(deadline, replies.next())
            .await
            .ok()??;
        if reply_batch(&msg) == id {
            return serde_json::from_slice(&msg.payload).ok();
        }
    }
}

/// The facts a router on fast batches would rely on: (1) a batch sent twice with the same
/// `Nats-Msg-Id`s, in gap mode `fail` and `ok`; (2) 20 messages on one subject of a stream
/// that keeps 10 per subject (discard new per subject, the shards' backlog limit).
pub async fn checks() -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let mut replies = client
        .subscribe(format!("{FAST_PREFIX}.>"))
        .await
        .expect("subscribe");
    let mut out = json!({});
    for (k, gap) in ["fail", "ok"].into_iter().enumerate() {
        // (1) De-duplication: the same 100 ids twice, then 100 of which the first 50 are
        // old (a window routed again after a crash half-way).
        let mut cfg = shard_config();
        cfg.name = format!("DEDUP_{gap}");
        cfg.subjects = vec![format!("dedup.{gap}.>")];
        let mut dedup = js.create_stream(cfg).await.expect("stream");
        let batch = |from: usize| -> Vec<Out> {
            (from..from + 100)
                .map(|n| {
                    let mut m = delivery(n, 10);
                    m.subject = format!("dedup.{gap}.d{}", n % 10);
                    m
                })
                .collect()
        };
        let first = fast_batch(
            &client,
            &mut replies,
            &format!("d{k}a"),
            &batch(0),
            500,
            gap,
        )
        .await;
        let again = fast_batch(
            &client,
            &mut replies,
            &format!("d{k}b"),
            &batch(0),
            500,
            gap,
        )
        .await;
        let stored_after_again = dedup.info().await.expect("info").state.messages;
        let half = fast_batch(
            &client,
            &mut replies,
            &format!("d{k}c"),
            &batch(50),
            500,
            gap,
        )
        .await;
        let stored_after_half = dedup.info().await.expect("info").state.messages;
        out[format!("dedup_gap_{gap}")] = json!({
            "first": outcome_json(&first),
            "same_ids_again": outcome_json(&again),
            "stored_after_same_ids_again": stored_after_again,
            "half_old_half_new": outcome_json(&half),
            "stored_after_half_old": stored_after_half,
        });

        // (2) A refused message: 20 on one subject, 10 allowed.
        let mut cfg = shard_config();
        cfg.name = format!("FULL_{gap}");
        cfg.subjects = vec![format!("full.{gap}.>")];
        cfg.max_messages_per_subject = 10;
        cfg.discard_new_per_subject = true;
        let mut full = js.create_stream(cfg).await.expect("stream");
        let msgs: Vec<Out> = (0..20)
            .map(|n| {
                let mut m = delivery(n, 1);
                m.subject = if n % 2 == 0 || n < 10 {
                    format!("full.{gap}.d0")
                } else {
                    format!("full.{gap}.d1")
                };
                m
            })
            .collect();
        let refused = fast_batch(&client, &mut replies, &format!("f{k}"), &msgs, 500, gap).await;
        // What the server still says about the batch after its PubAck.
        let mut after = Vec::new();
        while let Some(reply) =
            next_reply(&mut replies, &format!("f{k}"), Duration::from_millis(300)).await
        {
            after.push(reply);
        }
        let stored = full.info().await.expect("info").state.messages;
        let per_subject: std::collections::BTreeMap<String, usize> = full
            .info_with_subjects(format!("full.{gap}.>"))
            .await
            .expect("subjects")
            .filter_map(|s| async move { s.ok() })
            .collect()
            .await;
        out[format!("refused_gap_{gap}")] = json!({
            "sent": "messages 1-10 on d0, then 11-20 alternating d1 (even batch seq) and d0 (odd): d0 gets 15, 10 allowed",
            "outcome": outcome_json(&refused),
            "replies_after_pub_ack": after,
            "stored": stored,
            "per_subject": per_subject,
        });
    }
    // A message sent to a batch that has ended (its commit answered): stored? told?
    let mut m = delivery(500, 1);
    m.subject = "dedup.fail.d0".into();
    client
        .publish_with_reply_and_headers(
            m.subject,
            format!("{FAST_PREFIX}.d0a.500.fail.101.1.$FI"),
            m.headers,
            m.payload,
        )
        .await
        .expect("publish");
    let told = next_reply(&mut replies, "d0a", Duration::from_secs(2)).await;
    let mut dedup = js.get_stream("DEDUP_fail").await.expect("stream");
    out["message_to_ended_batch"] = json!({
        "reply": told,
        "stored_before": 150,
        "stored_after": dedup.info().await.expect("info").state.messages,
    });
    out
}

fn outcome_json(o: &BatchOutcome) -> Value {
    json!({
        "pub_ack": o.pub_ack, "flow_acks": o.flow_acks, "reports": o.reports, "unsent": o.unsent,
    })
}
