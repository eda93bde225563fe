//! The console's pages: an HTML shell per page (navigation, the signed-in user, the session's
//! CSRF token) around a body the page's script fills from the REST API; and the embedded assets.
//! A request without a live session is sent to the sign-in page and back.

use crate::Console;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use corral_http::{SESSION_COOKIE, cookie};
use corral_registry::Principal;

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: its script name, title, and body (static HTML the script fills in).
struct Page {
    name: &'static str,
    title: &'static str,
    body: &'static str,
}

const OVERVIEW: Page = Page { name: "overview", title: "Overview", body: include_str!("../pages/overview.html") };
const INVENTORY: Page = Page { name: "inventory", title: "Inventory", body: include_str!("../pages/inventory.html") };
const DEVICE: Page = Page { name: "device", title: "Device", body: include_str!("../pages/device.html") };
const ALARMS: Page = Page { name: "alarms", title: "Alarms", body: include_str!("../pages/alarms.html") };
const SQL: Page = Page { name: "sql", title: "SQL", body: include_str!("../pages/sql.html") };
const ACCOUNT: Page = Page { name: "account", title: "Account", body: include_str!("../pages/account.html") };
/// The list of campaigns and one campaign's detail are two views of one page (its script switches
/// between them without a reload, and stops the detail's polling when it is left).
const CAMPAIGNS: Page = Page { name: "campaigns", title: "Campaigns", body: include_str!("../pages/campaigns.html") };
const COMMANDS: Page = Page { name: "commands", title: "Commands", body: include_str!("../pages/commands.html") };

pub async fn overview(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &OVERVIEW).await
}

pub async fn inventory(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &INVENTORY).await
}

pub async fn device(State(c): State<Console>, headers: HeaderMap, uri: Uri, Path(_id): Path<String>) -> Response {
    render(&c, &headers, &uri, &DEVICE).await
}

pub async fn alarms(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &ALARMS).await
}

pub async fn sql(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &SQL).await
}

pub async fn account(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &ACCOUNT).await
}

pub async fn commands(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &COMMANDS).await
}

pub async fn campaigns(State(c): State<Console>, headers: HeaderMap, uri: Uri) -> Response {
    render(&c, &headers, &uri, &CAMPAIGNS).await
}

pub async fn campaign(State(c): State<Console>, headers: HeaderMap, uri: Uri, Path(_id): Path<String>) -> Response {
    render(&c, &headers, &uri, &CAMPAIGNS).await
}

async fn render(console: &Console, headers: &HeaderMap, uri: &Uri, page: &Page) -> Response {
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(secret) => console.registry.session(secret).await.ok(),
        None => None,
    };
    let Some((user, csrf)) = session else {
        let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        return Redirect::to(&format!("/login?next={}", percent_encode(next))).into_response();
    };
    let html = shell(page, &user, &csrf, &console.ports);
    let mut response = Html(html).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn shell(page: &Page, user: &Principal, csrf: &str, ports: &crate::DevicePorts) -> String {
    let nav = [
        ("overview", "/", "Overview"),
        ("inventory", "/devices", "Inventory"),
        ("alarms", "/alarms", "Alarms"),
        ("commands", "/commands", "Commands"),
        ("campaigns", "/campaigns", "Campaigns"),
        ("sql", "/sql", "SQL"),
    ]
    .iter()
    .map(|(name, href, label)| {
        let current =
            if *name == page.name || (page.name == "device" && *name == "inventory") { r#" aria-current="page""# } else { "" };
        format!(r#"<a href="{href}"{current}>{label}</a>"#)
    })
    .collect::<String>();
    // `data-mqtt-port` and the like, only for the listeners that are on.
    let ports = [("mqtt", ports.mqtt), ("mqtts", ports.mqtts), ("coap", ports.coap), ("coaps", ports.coaps)]
        .iter()
        .filter_map(|(proto, port)| port.map(|port| format!(r#" data-{proto}-port="{port}""#)))
        .collect::<String>();
    let scope = user.tenant.as_ref().map(|t| format!(" · tenant {}", escape(t.as_str()))).unwrap_or_default();
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · Corral</title>
<link rel="stylesheet" href="/assets/console.css">
<link rel="icon" href="/assets/icon.svg" type="image/svg+xml">
</head>
<body data-page="{name}" data-role="{role}" data-user="{user}" data-tenant="{tenant}"{ports}>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="brand" href="/">Corral</a>
  <nav aria-label="Main">{nav}</nav>
  <div class="who"><a href="/account" title="Your account"{account_current}>{user} · {role}{scope}</a>
    <form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="link">Sign out</button></form>
  </div>
</header>
<main id="main" tabindex="-1">
{body}
</main>
<script src="/assets/app.js"></script>
<script src="/assets/chart.js"></script>
<script src="/assets/{name}.js"></script>
</body>
</html>
"##,
        csrf = escape(csrf),
        title = page.title,
        name = page.name,
        role = user.role,
        tenant = user.tenant.as_ref().map(|t| escape(t.as_str())).unwrap_or_default(),
        account_current = if page.name == "account" { r#" aria-current="page""# } else { "" },
        user = escape(&user.name),
        body = page.body,
    )
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/favicon.ico`, which browsers ask for whatever the page says: the same icon.
pub async fn favicon() -> Response {
    asset(Path("icon.svg".to_string())).await
}

/// The embedded stylesheet, scripts and icon. They change only with the binary, so browsers may keep
/// them for an hour.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("../assets/console.css"), "text/css; charset=utf-8"),
        "app.js" => (include_str!("../assets/app.js"), "text/javascript; charset=utf-8"),
        "chart.js" => (include_str!("../assets/chart.js"), "text/javascript; charset=utf-8"),
        "overview.js" => (include_str!("../assets/overview.js"), "text/javascript; charset=utf-8"),
        "inventory.js" => (include_str!("../assets/inventory.js"), "text/javascript; charset=utf-8"),
        "device.js" => (include_str!("../assets/device.js"), "text/javascript; charset=utf-8"),
        "alarms.js" => (include_str!("../assets/alarms.js"), "text/javascript; charset=utf-8"),
        "sql.js" => (include_str!("../assets/sql.js"), "text/javascript; charset=utf-8"),
        "account.js" => (include_str!("../assets/account.js"), "text/javascript; charset=utf-8"),
        "campaigns.js" => (include_str!("../assets/campaigns.js"), "text/javascript; charset=utf-8"),
        "commands.js" => (include_str!("../assets/commands.js"), "text/javascript; charset=utf-8"),
        "icon.svg" => (include_str!("../assets/icon.svg"), "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape(r#"<b a="1">'&'</b>"#), "&lt;b a=&quot;1&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;");
    }

    #[test]
    fn next_is_percent_encoded() {
        assert_eq!(percent_encode("/devices?site=a b&x=1"), "/devices%3Fsite%3Da%20b%26x%3D1");
    }
}
