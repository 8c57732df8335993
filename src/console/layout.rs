//! The frame of every console page, and the stylesheet and script embedded in the binary
//! (no build step, no files to ship).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// A whole page: header with navigation and sign-out (when signed in), then `body`.
pub fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hookstream" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    strong { a href="/console/destinations" { "hookstream" } }
                    @if let Some(viewer) = viewer {
                        a href="/console/destinations" { "Destinations" }
                        a href="/console/events" { "Events" }
                        a href="/console/dlq" { "Dead letters" }
                        a href="/console/uploads" { "Uploads" }
                        span.who {
                            (viewer.key_id())
                            @if let Some(t) = viewer.tenant() { " · tenant " (t) } @else { " · admin" }
                        }
                        form.inline method="post" action="/console/sign-out" {
                            (csrf(viewer))
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// `/console/assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A time as the pages show it: UTC to the second.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
