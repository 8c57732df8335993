//! The console's pages, one file per area; each handler takes the [`Viewer`] first.
//!
//! [`Viewer`]: super::session::Viewer

pub mod destinations;
pub mod dlq;
pub mod events;
pub mod sign_in;
pub mod uploads;

use serde::Deserialize;

/// A form with nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct Plain {
    #[serde(default)]
    pub csrf: String,
}

/// `Some` for a non-empty form or query field.
pub fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}
