//! One signed webhook POST. The receiver verifies `X-Corral-Signature` (HMAC-SHA256 over
//! `"{timestamp}.{body}"` with the action's secret), rejects stale timestamps, and drops repeats
//! by `Idempotency-Key`, since the outbox delivers at least once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

use super::AttemptError;
use super::policy::TargetPolicy;

/// How much of a failing response's body goes into the error (enough to see the receiver's
/// complaint, small enough for a dead-letter row).
const ERROR_BODY_BYTES: usize = 200;

/// Sends webhooks. Holds a reqwest client (its connection pool) and the target policy; cloning
/// is cheap and shares both.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<TargetPolicy>,
}

impl WebhookClient {
    /// `timeout` bounds a whole attempt: connecting, sending and reading the response.
    pub fn new(policy: TargetPolicy, timeout: Duration) -> Result<Self, String> {
        policy.validate()?;
        let policy = Arc::new(policy);
        // HTTPS: reqwest's `rustls-no-provider` build has no crypto provider of its own; it takes
        // the process default. We install ring (the one rustls provider this workspace compiles;
        // a no-op if one is installed already) and reqwest then builds its rustls config with
        // rustls-platform-verifier, which on Linux trusts the system roots (/etc/ssl/certs, from
        // the ca-certificates package). Building our own `rustls::ClientConfig` for
        // `tls_backend_preconfigured` would need a direct dependency on the verifier crate.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // Every name goes through the policy on its resolved addresses.
            .dns_resolver(PolicyResolver { policy: policy.clone() })
            // A redirect would go to a target the policy never saw, and a proxy resolves names
            // itself; both would bypass the check.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {}", chain(&e)))?;
        Ok(WebhookClient { http, policy })
    }

    /// One POST. Ok on 2xx.
    pub async fn post(
        &self,
        url: &str,
        secret: &str,
        idempotency_key: &str,
        event: &str,
        body: &[u8],
    ) -> Result<(), AttemptError> {
        let target = self.check_url(url)?;
        let timestamp_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let response = self
            .http
            .post(target.clone())
            .header("Content-Type", "application/json")
            .header("X-Corral-Event", event)
            .header("Idempotency-Key", idempotency_key)
            .header("X-Corral-Timestamp", timestamp_secs.to_string())
            .header("X-Corral-Signature", signature(secret, timestamp_secs, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| send_error(&target, e))?;
        judge(&target, response).await
    }

    /// Malformed URLs and targets refused by an IP literal never reach the network. Names are
    /// checked by [`PolicyResolver`] on the addresses actually connected to.
    fn check_url(&self, url: &str) -> Result<reqwest::Url, AttemptError> {
        let target =
            reqwest::Url::parse(url).map_err(|e| AttemptError::permanent(format!("webhook URL {url:?} is invalid: {e}")))?;
        if !matches!(target.scheme(), "http" | "https") {
            return Err(AttemptError::permanent(format!(
                "webhook URL {} has scheme {:?}; only http and https are supported",
                redacted(&target),
                target.scheme()
            )));
        }
        let host = target.host_str().unwrap_or_default();
        let refusal = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => self.policy.check_ip(host, ip),
            Err(_) => self.policy.check_host(host),
        };
        refusal.map_err(AttemptError::permanent)?;
        Ok(target)
    }
}

/// `v1=<hex HMAC-SHA256(secret, "{timestamp_secs}.{body}")>`
pub fn signature(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(format!("{timestamp_secs}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Resolves with the system resolver, then refuses the whole name if any address is refused:
/// the connector may try any of them, and this is the last point before it does.
struct PolicyResolver {
    policy: Arc<TargetPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            policy.check_host(&host).map_err(PolicyRefused)?;
            // Port 0: reqwest puts the URL's port in afterwards.
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                policy.check_ip(&host, addr.ip()).map_err(PolicyRefused)?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A policy refusal raised inside the resolver. reqwest wraps it as a connect error; finding this
/// type in the source chain is how `send_error` tells it from a network failure.
#[derive(Debug)]
struct PolicyRefused(String);

impl std::fmt::Display for PolicyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyRefused {}

fn send_error(target: &reqwest::Url, error: reqwest::Error) -> AttemptError {
    // reqwest's message would repeat the full URL, query token included.
    let error = error.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<PolicyRefused>() {
            return AttemptError::permanent(refused.0.clone());
        }
        source = e.source();
    }
    let what = if error.is_timeout() { "timed out" } else { "failed" };
    AttemptError::retry(format!("webhook POST {} {what}: {}", redacted(target), chain(&error)))
}

/// Maps the response status to the attempt's outcome. Every failure except 410 is retried: a
/// 4xx often means the receiver is mid-deploy or misconfigured, and the outbox's attempt limit
/// moves a hopeless action to the dead-letter anyway.
async fn judge(target: &reqwest::Url, mut response: reqwest::Response) -> Result<(), AttemptError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let url = redacted(target);
    if status.is_redirection() {
        let location = response.headers().get("location").and_then(|v| v.to_str().ok());
        return Err(AttemptError::retry(format!(
            "webhook POST {url} answered {status} to {}; redirects are not followed, \
             point the action at the final URL",
            location.unwrap_or("(no Location)")
        )));
    }
    let mut head = Vec::new();
    while head.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(ERROR_BODY_BYTES);
    let message = format!("webhook POST {url} answered {status}: {}", String::from_utf8_lossy(&head).trim());
    if status == reqwest::StatusCode::GONE {
        return Err(AttemptError::permanent(message));
    }
    Err(AttemptError::retry(message))
}

/// The URL for messages and logs, without credentials or query (webhook URLs often carry a
/// token there).
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

/// "outer: inner: innermost", since reqwest's own Display hides the cause.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests;
