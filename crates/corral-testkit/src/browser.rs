//! A browser as the console's server side sees one: cookies kept by hand, redirects not
//! followed, the sign-in form's double-submit CSRF token and the session's CSRF token for API
//! changes. For tests of the console and of everything a signed-in user may reach.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::TestServer;

/// A browser without a cookie jar: cookies are kept by hand, redirects are not followed.
pub struct Browser {
    pub http: reqwest::Client,
    base: String,
    pub cookies: Vec<(String, String)>,
    pub csrf: String,
}

impl Browser {
    pub fn new(server: &TestServer) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: server.base.clone(), cookies: Vec::new(), csrf: String::new() }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for header in response.headers().get_all(SET_COOKIE) {
            let text = header.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    pub async fn request(&mut self, method: Method, path: &str, body: Option<(&str, String)>, csrf: bool) -> reqwest::Response {
        let cookie = self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let mut request = self.http.request(method, format!("{}{path}", self.base)).header(COOKIE, cookie);
        if csrf {
            request = request.header("x-csrf-token", &self.csrf);
        }
        if let Some((kind, body)) = body {
            request = request.header("content-type", kind).body(body);
        }
        let response = request.send().await.unwrap();
        self.keep(&response);
        response
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let response = self.request(Method::GET, path, None, false).await;
        (response.status(), response.text().await.unwrap())
    }

    /// Fills in and posts the sign-in form; returns the response status and where it leads.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> (StatusCode, String) {
        let (_, form) = self.get("/login?next=/devices").await;
        let token = hidden(&form, "csrf");
        let body = serde_urlencoded(&[("name", name), ("password", password), ("csrf", &token), ("next", "/devices")]);
        let response = self.request(Method::POST, "/login", Some(("application/x-www-form-urlencoded", body)), false).await;
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
        if status == StatusCode::SEE_OTHER {
            let (_, page) = self.get("/").await;
            self.csrf = meta(&page, "csrf-token");
        }
        (status, location)
    }

    pub async fn api(&mut self, method: Method, path: &str, body: Option<Value>, csrf: bool) -> (StatusCode, Value) {
        let response = self.request(method, path, body.map(|b| ("application/json", b.to_string())), csrf).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

pub fn serde_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.bytes()
                    .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                    .collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub fn hidden(html: &str, name: &str) -> String {
    let at = html.find(&format!(r#"name="{name}" value=""#)).unwrap_or_else(|| panic!("no hidden {name} in {html}"));
    html[at + name.len() + 15..].split('"').next().unwrap().to_string()
}

pub fn meta(html: &str, name: &str) -> String {
    let at = html.find(&format!(r#"<meta name="{name}" content=""#)).unwrap_or_else(|| panic!("no meta {name} in {html}"));
    html[at + name.len() + 23..].split('"').next().unwrap().to_string()
}
