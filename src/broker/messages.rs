//! Removing single messages from a stream (dead letters after their replay, or purged).

use async_nats::jetstream::{Context, ErrorCode};
use serde::Deserialize;

use super::error::{BrokerError, BrokerErrorKind};

#[derive(Deserialize)]
struct DeleteAnswer {
    #[serde(default)]
    success: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// nats-server's `JSStreamMsgDeleteFailedF`.
const MSG_DELETE_FAILED: u64 = 10057;

/// Deletes message `seq` of `stream`: `Ok(false)` when there is no such message.
///
/// `no_erase`: the server marks the message deleted without first overwriting its bytes
/// on disk (they go when their block is compacted or ages out, as after retention).
/// async-nats' `Stream::delete_message` asks for the overwrite, which costs milliseconds
/// per message (measured: ~4 ms, so a replay removed 250 dead letters a second); without
/// it a delete costs about what a direct get does.
pub async fn delete(js: &Context, stream: &str, seq: u64) -> Result<bool, BrokerError> {
    let answer: DeleteAnswer = js
        .request(
            format!("STREAM.MSG.DELETE.{stream}"),
            &serde_json::json!({ "seq": seq, "no_erase": true }),
        )
        .await
        .map_err(|e| BrokerError::new("deleting a message", e))?;
    match answer.error {
        None => Ok(answer.success),
        Some(e)
            if e.err_code == ErrorCode::NO_MESSAGE_FOUND.0
                || e.err_code == ErrorCode::SEQUENCE_NOT_FOUND.0
                // A sequence past the stream's last: nats-server answers its generic
                // delete failure (10057) with "stream store EOF".
                || (e.err_code == MSG_DELETE_FAILED && e.description.contains("EOF")) =>
        {
            Ok(false)
        }
        Some(e) => Err(BrokerError::with_kind(
            BrokerErrorKind::Other,
            "deleting a message",
            format!("{} (error {})", e.description, e.err_code),
        )),
    }
}
