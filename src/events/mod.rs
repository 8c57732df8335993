//! Events as they are stored and delivered, for reading: search over `HS_EVENTS`
//! ([`search`]) and the delivery status of events per destination ([`deliveries`]).
//! Nothing here knows HTTP; the API (`api/events.rs`) and the console use it.

pub mod deliveries;
pub mod search;

pub use deliveries::{Deliveries, Delivery, EventDetail, EventRef};
pub use search::{Cursor, EventSummary, Page, Query, SearchError};
