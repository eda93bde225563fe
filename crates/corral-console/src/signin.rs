//! `GET/POST /login` and `POST /logout`.
//!
//! The sign-in form is protected against cross-site posting by a double-submit token: a random
//! value in a `SameSite=Strict` cookie that the form must carry too. Sign-in sets the session
//! cookie (`HttpOnly`, `SameSite=Lax`, `Secure` over HTTPS) and the page then knows the session's
//! CSRF token for everything it changes. Failed attempts are throttled (`throttle.rs`).

use crate::Console;
use crate::pages::escape;
use axum::Extension;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use corral_http::{OverTls, SESSION_COOKIE, constant_time_eq, cookie};
use corral_registry::SESSION_HOURS;
use serde::Deserialize;
use std::net::SocketAddr;

const LOGIN_COOKIE: &str = "corral_login";

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: Option<String>,
    /// Set by the account page after a password change, which ended the session.
    #[serde(default)]
    changed: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Credentials {
    name: String,
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignOut {
    #[serde(default)]
    csrf: String,
}

/// Only a path of this site: `next` must not send a signed-in user elsewhere. Printable ASCII
/// only (browsers drop tabs and newlines from a `Location`, which could turn `/\t/x` into `//x`).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.chars().all(|c| c.is_ascii_graphic()) => {
            p
        }
        _ => "/",
    }
}

fn secure(tls: &Option<Extension<OverTls>>) -> &'static str {
    if tls.is_some() { "; Secure" } else { "" }
}

fn random_token() -> String {
    rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// The sign-in page, with a fresh double-submit token.
pub async fn form(Query(next): Query<Next>, tls: Option<Extension<OverTls>>) -> Response {
    let say = if next.changed.is_some() { Say::Notice("Password changed. Sign in with the new one.") } else { Say::Nothing };
    page(StatusCode::OK, say, next.next.as_deref(), "", &tls)
}

/// What the sign-in page says above the form.
enum Say<'a> {
    Nothing,
    Notice(&'a str),
    Error(&'a str),
}

fn page(status: StatusCode, say: Say, next: Option<&str>, name: &str, tls: &Option<Extension<OverTls>>) -> Response {
    let token = random_token();
    let said = match say {
        Say::Nothing => String::new(),
        Say::Notice(text) => format!(r#"<p class="notice" role="status">{}</p>"#, escape(text)),
        Say::Error(text) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(text)),
    };
    let html = include_str!("../pages/login.html")
        .replace("{said}", &said)
        .replace("{csrf}", &token)
        .replace("{next}", &escape(local_path(next)))
        .replace("{name}", &escape(name));
    let cookie = format!("{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}", secure(tls));
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII cookie"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn sign_in(
    State(console): State<Console>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    tls: Option<Extension<OverTls>>,
    headers: HeaderMap,
    Form(credentials): Form<Credentials>,
) -> Response {
    let next = credentials.next.as_deref();
    let name = credentials.name.trim();
    let posted_from_our_form = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !c.is_empty() && constant_time_eq(c.as_bytes(), credentials.csrf.as_bytes()));
    if !posted_from_our_form {
        return page(
            StatusCode::FORBIDDEN,
            Say::Error("The form expired or came from another site; please sign in again."),
            next,
            name,
            &tls,
        );
    }
    let address = peer.map(|Extension(ConnectInfo(p))| p.ip());
    if let Err(wait) = console.throttle.attempt(name, address) {
        tracing::warn!(user = name, ?address, "console sign-in throttled");
        let minutes = wait.as_secs().div_ceil(60);
        let mut response = page(
            StatusCode::TOO_MANY_REQUESTS,
            Say::Error(&format!("Too many failed sign-ins. Try again in {minutes} minutes.")),
            next,
            name,
            &tls,
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        return response;
    }
    // Each check costs 19 MiB and tens of milliseconds by design: only a few run at once.
    let Ok(_permit) = console.hashing.clone().try_acquire_owned() else {
        let mut response =
            page(StatusCode::SERVICE_UNAVAILABLE, Say::Error("Many sign-ins at once; try again in a moment."), next, name, &tls);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return response;
    };
    match console.registry.sign_in(name, &credentials.password).await {
        Ok(session) => {
            console.throttle.succeeded(name, address);
            tracing::info!(user = name, "console sign-in");
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                session.secret,
                SESSION_HOURS * 3600,
                secure(&tls)
            );
            let mut response = Redirect::to(local_path(next)).into_response();
            response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII cookie"));
            response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_static("corral_login=; Path=/login; Max-Age=0"));
            response
        }
        Err(e) => {
            tracing::info!(user = name, ?address, error = %e, "console sign-in refused");
            let (status, message) = match e {
                corral_registry::RegistryError::Unauthenticated(_) => {
                    (StatusCode::UNAUTHORIZED, "Wrong user name or password.".to_string())
                }
                other => (StatusCode::SERVICE_UNAVAILABLE, format!("Sign-in is not possible right now: {other}")),
            };
            page(status, Say::Error(&message), next, name, &tls)
        }
    }
}

/// Ends the session (the form carries the session's CSRF token) and forgets the cookie.
pub async fn sign_out(State(console): State<Console>, headers: HeaderMap, Form(form): Form<SignOut>) -> Response {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        match console.registry.session(secret).await {
            Ok((_, csrf)) if constant_time_eq(csrf.as_bytes(), form.csrf.as_bytes()) => {
                let _ = console.registry.sign_out(secret).await;
            }
            Ok(_) => {
                return (StatusCode::FORBIDDEN, Html("<p>Missing or wrong CSRF token; reload the page and sign out again.</p>"))
                    .into_response();
            }
            Err(_) => {} // already ended
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")).expect("ASCII"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_path(Some("/devices?site=roof")), "/devices?site=roof");
        for outside in ["https://evil.example", "//evil.example", "/\\evil.example", "devices", "/\t/evil.example", "/a\nb", "/é"]
        {
            assert_eq!(local_path(Some(outside)), "/", "{outside}");
        }
        assert_eq!(local_path(None), "/");
    }
}
