//! The coordinator client: every volunteer action is a request signed with
//! the node key. Plain HTTP is refused except to loopback, so consent and
//! tokens never cross a network in clear.

use std::net::IpAddr;

use askee_core::b64;
use askee_core::signing::signed_headers;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::now;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("coordinator url {url:?} is not http(s)")]
    Scheme { url: String },
    #[error("refusing plain http to {host}: only loopback may be reached without tls")]
    PlainHttp { host: String },
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("coordinator refused {url} ({status}): {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("coordinator answer from {url} is malformed: {detail}")]
    Answer { url: String, detail: String },
}

/// Checks the coordinator URL: https anywhere, http only to loopback.
pub fn check_url(url: &str) -> Result<String, ClientError> {
    let url = url.trim_end_matches('/').to_owned();
    if url.starts_with("https://") {
        return Ok(url);
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(ClientError::Scheme { url });
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(url)
    } else {
        Err(ClientError::PlainHttp {
            host: host.to_owned(),
        })
    }
}

/// Longest an ordinary request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Coordinator {
    base: String,
    http: reqwest::Client,
    key: SigningKey,
}

impl Coordinator {
    pub fn new(base: &str, key: SigningKey) -> Result<Self, ClientError> {
        Ok(Self {
            base: check_url(base)?,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|source| ClientError::Transport {
                    url: base.to_owned(),
                    source,
                })?,
            key,
        })
    }

    pub fn node_id(&self) -> String {
        b64::encode(self.key.verifying_key().as_bytes())
    }

    /// Sends the request and decodes the answer, or the problem's detail.
    async fn send<T: DeserializeOwned>(
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_owned(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_owned(),
                source,
            })?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Refused {
                url: url.to_owned(),
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Answer {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }

    /// POST with a node signature over method, path, time, nonce and body.
    pub async fn signed_post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = serde_json::to_vec(body).expect("request serialises");
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut req = self
            .http
            .post(&url)
            .timeout(REQUEST_TIMEOUT)
            .header("content-type", "application/json")
            .body(bytes.clone());
        for (k, v) in signed_headers(&self.key, "POST", path, &bytes, now(), &nonce) {
            req = req.header(k, v);
        }
        Self::send(&url, req).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        Self::send(
            &url,
            self.http.post(&url).timeout(REQUEST_TIMEOUT).json(body),
        )
        .await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        Self::send(&url, self.http.get(&url).timeout(REQUEST_TIMEOUT)).await
    }

    /// A long-poll GET: held open by the coordinator up to `wait`.
    pub async fn get_long<T: DeserializeOwned>(
        &self,
        path: &str,
        wait: std::time::Duration,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        Self::send(&url, self.http.get(&url).timeout(wait + REQUEST_TIMEOUT)).await
    }

    /// A GET with extra headers (the portal session), held open up to `wait`.
    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        wait: std::time::Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).timeout(wait + REQUEST_TIMEOUT);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::send(&url, req).await
    }

    /// A JSON POST with extra headers (the portal session).
    pub async fn post_with<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.post(&url).timeout(REQUEST_TIMEOUT).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::send(&url, req).await
    }

    /// GETs raw bytes, refusing bodies over `cap` bytes (announced or read).
    pub async fn get_bytes(&self, path: &str, cap: u64) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let mut resp = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT * 4)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(ClientError::Refused {
                url: url.clone(),
                status: resp.status().as_u16(),
                detail: "download refused".into(),
            });
        }
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(ClientError::Answer {
                url: url.clone(),
                detail: format!("body larger than {cap} bytes"),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() as u64 + chunk.len() as u64 > cap {
                return Err(ClientError::Answer {
                    url: url.clone(),
                    detail: format!("body larger than {cap} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Whether an error is the coordinator's considered refusal (a 4xx other
    /// than 408/429) rather than a failure to reach it.
    pub fn is_refusal(err: &ClientError) -> bool {
        matches!(err, ClientError::Refused { status, .. }
            if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("https://coordinator.example/").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http://localhost:8080/").is_ok());
        assert!(check_url("http://[::1]:8080").is_ok());
        assert!(matches!(
            check_url("http://coordinator.example"),
            Err(ClientError::PlainHttp { .. })
        ));
        assert!(matches!(
            check_url("http://10.0.0.1:8080"),
            Err(ClientError::PlainHttp { .. })
        ));
        assert!(matches!(
            check_url("ftp://x"),
            Err(ClientError::Scheme { .. })
        ));
    }
}
