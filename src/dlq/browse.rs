//! Pages of dead letters in either order, for a listing (the API's `GET /v1/dlq`, the
//! console). Reading one by id is [`super::letter::get`].

use super::DlqError;
use super::filter::DeadLetterFilter;
use super::letter::StoredDeadLetter;
use super::select::{self, Cursor, Order};
use crate::broker::Broker;

/// Messages looked at for one page at most, matching or not: a page of a selective
/// filter (an event type, say) over a large `HS_DLQ` ends early with a cursor instead of
/// reading the whole stream in one request.
pub const LIST_SCAN_BUDGET: usize = 20_000;

/// A page of dead letters and where the next one starts.
pub struct Page {
    pub letters: Vec<StoredDeadLetter>,
    pub next: Option<Cursor>,
}

/// Up to `limit` dead letters of the filter in `order`, after `cursor`.
pub async fn list(
    broker: &Broker,
    filter: &DeadLetterFilter,
    order: Order,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<Page, DlqError> {
    let scan = select::scan(broker, filter, order, cursor, limit, LIST_SCAN_BUDGET).await?;
    Ok(Page {
        letters: scan.letters,
        next: scan.next,
    })
}
