//! Sign-in with an API key, and sign-out.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::Plain;
use crate::api::AppState;
use crate::console::ConsoleError;
use crate::console::layout::page;
use crate::console::session::{self, Viewer};

pub async fn form() -> Response {
    sign_in_page(None, StatusCode::OK)
}

fn sign_in_page(error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        @if let Some(e) = error { div.error { (e) } }
        form method="post" action="/console/sign-in" {
            label { "API key" input type="password" name="key" id="key" autocomplete="off" size="60"; }
            p.muted { "While the API runs without keys (open mode), leave it empty." }
            button type="submit" id="sign-in" { "Sign in" }
        }
    };
    (status, page("Sign in", None, body)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    #[serde(default)]
    key: String,
}

/// The key becomes the session cookie once the access check accepts it.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    match session::session_for_key(&state, &form.key) {
        Ok(value) => (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    session::set_cookie(&headers, Some(&value)),
                ),
                (
                    header::LOCATION,
                    "/console/destinations".parse().expect("a path"),
                ),
            ],
        )
            .into_response(),
        Err(ConsoleError::Unauthorized(m)) => sign_in_page(Some(&m), StatusCode::UNAUTHORIZED),
        Err(e) => e.into_response(),
    }
}

pub async fn sign_out(
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<Plain>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::set_cookie(&headers, None)),
            (
                header::LOCATION,
                "/console/sign-in".parse().expect("a path"),
            ),
        ],
    )
        .into_response())
}
