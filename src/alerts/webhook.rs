//! The receiver (`--alert-webhook`, `--alert-webhook-secret`) and one delivery attempt:
//! a POST of the event's exact bytes, bounded by a per-attempt timeout. Retrying is the
//! delivery loop's business (`delivery.rs`).

use super::signature;
use bytes::Bytes;
use reqwest::Url;
use std::fmt;
use std::time::Duration;

/// Where events go, and the key that signs them.
#[derive(Clone)]
pub struct Webhook {
    url: Url,
    secret: Option<Vec<u8>>,
}

impl fmt::Debug for Webhook {
    /// Neither the secret nor the URL's path and query (they often hold a token).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("target", &self.target())
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl Webhook {
    /// Refuses anything but an absolute `http://` or `https://` URL with a host, so that a
    /// typo stops start-up instead of losing every event. An empty secret signs nothing.
    pub fn new(url: &str, secret: Option<&str>) -> Result<Webhook, String> {
        let bad = |why: String| {
            format!(
                "--alert-webhook must be an http:// or https:// URL with a host, \
                 e.g. https://alerts.example.com/tollgate (got {url:?}): {why}"
            )
        };
        let parsed = Url::parse(url.trim()).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!("scheme {:?}", parsed.scheme())));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".into()));
        }
        Ok(Webhook {
            url: parsed,
            secret: secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn is_signed(&self) -> bool {
        self.secret.is_some()
    }

    /// Scheme, host and port: what logs show of the URL.
    pub fn target(&self) -> String {
        match self.url.port() {
            Some(port) => format!(
                "{}://{}:{port}",
                self.url.scheme(),
                self.url.host_str().unwrap_or("")
            ),
            None => format!(
                "{}://{}",
                self.url.scheme(),
                self.url.host_str().unwrap_or("")
            ),
        }
    }

    /// The signature header's value for `body`, when a secret is set.
    pub fn sign(&self, body: &[u8]) -> Option<String> {
        self.secret.as_deref().map(|s| signature::sign(s, body))
    }
}

/// Sends attempts to one webhook. Redirects are not followed: a signed body goes only
/// where the operator said (a 3xx counts as a failure and is retried).
pub(crate) struct Poster {
    client: reqwest::Client,
    url: Url,
}

impl Poster {
    pub(crate) fn new(webhook: &Webhook, attempt_timeout: Duration) -> Result<Poster, String> {
        let client = reqwest::Client::builder()
            .timeout(attempt_timeout)
            .connect_timeout(attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the alert webhook's HTTP client: {e}"))?;
        Ok(Poster {
            client,
            url: webhook.url.clone(),
        })
    }

    /// One attempt. `Err` says why it failed, without the URL (it may hold a token).
    pub(crate) async fn post(&self, body: Bytes, signature: Option<String>) -> Result<(), String> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(sig) = signature {
            request = request.header(signature::HEADER, sig);
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(e) if e.is_timeout() => Err("no answer within the attempt timeout".into()),
            Err(e) if e.is_connect() => Err(format!("cannot connect: {}", describe(e))),
            Err(e) => Err(describe(e)),
        }
    }
}

/// The error and its causes (reqwest's own message is generic), without the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_urls_with_a_host() {
        for ok in [
            "http://127.0.0.1:9000/hook",
            "https://alerts.example.com/tollgate?token=x",
            " https://h/ ",
        ] {
            assert!(Webhook::new(ok, None).is_ok(), "{ok}");
        }
        let w = Webhook::new("https://u:p@alerts.example.com:8443/x?token=t", Some("s")).unwrap();
        assert_eq!(w.target(), "https://alerts.example.com:8443");
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("token") && !shown.contains("u:p"),
            "{shown}"
        );
        assert!(
            !shown.contains("/x") && shown.contains("signed: true"),
            "{shown}"
        );
    }

    #[test]
    fn refuses_what_cannot_be_a_webhook_saying_why() {
        for (bad, why) in [
            ("alerts.example.com/hook", "relative URL"),
            ("ftp://alerts.example.com/hook", "scheme \"ftp\""),
            ("http://", "empty host"),
            ("", "relative URL"),
            ("unix:/run/hook.sock", "scheme \"unix\""),
        ] {
            let err = Webhook::new(bad, None).unwrap_err();
            assert!(
                err.contains("--alert-webhook") && err.contains("http://") && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_empty_secret_signs_nothing() {
        assert!(!Webhook::new("http://h/", Some("")).unwrap().is_signed());
        assert!(
            Webhook::new("http://h/", None)
                .unwrap()
                .sign(b"x")
                .is_none()
        );
        let w = Webhook::new("http://h/", Some("k")).unwrap();
        assert_eq!(w.sign(b"x"), Some(signature::sign(b"k", b"x")));
    }
}
