//! The router's doorbell (docs/adr/0010): one core NATS message per routed window naming
//! the destinations that just got deliveries and how many, so that every worker pulls
//! them at once. It is a hint, never the only way to find work: a doorbell lost while a
//! worker reconnects is made up for by the periodic shard scan (`delivery/backlog.rs`).
//!
//! Body: one line per destination, `<destination_id> <count>`.

use async_nats::{Client, Subscriber};
use bytes::Bytes;

use super::error::BrokerError;

/// Largest body of one doorbell message; a bigger window rings several times.
const MAX_BODY: usize = 60 * 1024;

/// Rings for `(destination, deliveries)` pairs.
pub async fn ring(
    client: &Client,
    subject: &str,
    rung: &[(std::sync::Arc<str>, usize)],
) -> Result<(), BrokerError> {
    let mut body = String::new();
    for (id, count) in rung {
        if body.len() + id.len() + 24 > MAX_BODY {
            send(client, subject, std::mem::take(&mut body)).await?;
        }
        body.push_str(id);
        body.push(' ');
        body.push_str(&count.to_string());
        body.push('\n');
    }
    if !body.is_empty() {
        send(client, subject, body).await?;
    }
    Ok(())
}

async fn send(client: &Client, subject: &str, body: String) -> Result<(), BrokerError> {
    client
        .publish(subject.to_string(), Bytes::from(body))
        .await
        .map_err(|e| BrokerError::new("ringing the doorbell", e))
}

pub async fn listen(client: &Client, subject: &str) -> Result<Subscriber, BrokerError> {
    client
        .subscribe(subject.to_string())
        .await
        .map_err(|e| BrokerError::new("listening to the doorbell", e))
}

/// The `(destination, deliveries)` pairs of one doorbell message; bad lines are skipped.
pub fn parse(body: &[u8]) -> impl Iterator<Item = (&str, usize)> {
    std::str::from_utf8(body)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (id, count) = line.split_once(' ')?;
            Some((id, count.parse().ok()?))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_parse_back() {
        let got: Vec<_> = super::parse(b"d1 3\nbad\nd2 x\nd3 1\n").collect();
        assert_eq!(got, vec![("d1", 3), ("d3", 1)]);
    }
}
