//! A thin HTTP client: one request in, one [`Reply`] out (status, body, problem `code`).
//!
//! Transport failures (connection refused, timeout) are a [`Reply`] with status 0, so the
//! load loops count them like any other outcome instead of aborting the run.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Status recorded for a request that got no HTTP answer at all.
pub const TRANSPORT_ERROR: u16 = 0;

#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status, or [`TRANSPORT_ERROR`].
    pub status: u16,
    pub body: Vec<u8>,
    /// For transport errors: what went wrong.
    pub error: Option<String>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The RFC 9457 `code` of an error body (`transport_error` when there was no answer).
    pub fn code(&self) -> Option<String> {
        if self.status == TRANSPORT_ERROR {
            return Some("transport_error".into());
        }
        if self.is_success() {
            return None;
        }
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| Some("no_problem_code".into()))
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the server answered something that is not JSON")
    }

    /// The JSON body of a 2xx answer, or an error naming the request and the problem.
    pub fn ok_json(&self, what: &str) -> anyhow::Result<Value> {
        if !self.is_success() {
            bail!("{what}: {}", self.describe());
        }
        self.json().with_context(|| what.to_owned())
    }

    /// `404 not_found: detail…` or the transport error, for messages.
    pub fn describe(&self) -> String {
        if let Some(error) = &self.error {
            return format!("no answer ({error})");
        }
        let body = String::from_utf8_lossy(&self.body);
        let detail: String = body.chars().take(300).collect();
        format!("HTTP {} {}", self.status, detail)
    }
}

impl Api {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        // The workspace builds reqwest with `rustls-no-provider`; building a client without a
        // process-wide provider panics, even for plain http. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => Reply {
                        status,
                        body: bytes.to_vec(),
                        error: None,
                    },
                    Err(e) => Reply {
                        status: TRANSPORT_ERROR,
                        body: Vec::new(),
                        error: Some(format!("reading the body after HTTP {status}: {e}")),
                    },
                }
            }
            Err(e) => Reply {
                status: TRANSPORT_ERROR,
                body: Vec::new(),
                error: Some(e.to_string()),
            },
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call(Method::POST, path, token, Some(body), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            error: None,
        }
    }

    #[test]
    fn problem_codes_are_read_from_error_bodies_only() {
        let problem = reply(400, r#"{"status":400,"code":"insufficient_quantity"}"#);
        assert_eq!(problem.code().as_deref(), Some("insufficient_quantity"));
        assert_eq!(reply(200, r#"{"code":"x"}"#).code(), None);
        assert_eq!(
            reply(502, "<html>bad gateway</html>").code().as_deref(),
            Some("no_problem_code")
        );
        let transport = Reply {
            status: TRANSPORT_ERROR,
            body: Vec::new(),
            error: Some("refused".into()),
        };
        assert_eq!(transport.code().as_deref(), Some("transport_error"));
    }
}
