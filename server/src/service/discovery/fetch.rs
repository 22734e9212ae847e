//! Fetching `https://<domain>/.well-known/askee-participation` with
//! reqwest: HTTPS only (plain HTTP only behind an explicit test option),
//! a 64 KiB body cap, timeouts, at most 3 redirects and only within the
//! same domain, and `application/json` required.

use std::net::SocketAddr;
use std::sync::Arc;

use askee_core::signal::{self, Channel, Freshness, MAX_DOCUMENT_BYTES, Rejection};
use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

use super::{Answer, CrawlerConfig, DiscoveryError, WellKnown};

const MAX_REDIRECTS: usize = 3;

pub(crate) struct Fetcher {
    client: reqwest::Client,
    scheme: &'static str,
    port: Option<u16>,
}

/// Test option: every name resolves to one loopback address.
struct Fixed(SocketAddr);

impl Resolve for Fixed {
    fn resolve(&self, _: Name) -> Resolving {
        let addr = self.0;
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as Addrs) })
    }
}

fn malformed(detail: impl Into<String>) -> Answer {
    Answer {
        channel: Channel::Checked(Err(Rejection::Malformed {
            detail: detail.into(),
        })),
        ttl: None,
        cause: None,
    }
}

fn absent() -> Answer {
    Answer {
        channel: Channel::Absent,
        ttl: None,
        cause: None,
    }
}

fn unknown(cause: String) -> Answer {
    Answer {
        channel: Channel::Unknown,
        ttl: None,
        cause: Some(cause),
    }
}

impl Fetcher {
    pub(crate) fn new(config: &CrawlerConfig) -> Result<Self, DiscoveryError> {
        let insecure = config.well_known == WellKnown::InsecureHttpForTests;
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("more than 3 redirects");
            }
            let first = attempt.previous().first().and_then(|u| u.host_str());
            if attempt.url().host_str() != first {
                return attempt.error("redirect to another domain");
            }
            if attempt.url().scheme() != "https" && !insecure {
                return attempt.error("redirect away from https");
            }
            attempt.follow()
        });
        let mut builder = reqwest::Client::builder()
            .redirect(policy)
            .https_only(!insecure)
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .user_agent(concat!("askee-discovery/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(0);
        for pem in &config.extra_roots_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(DiscoveryError::Certificate)?;
            builder = builder.add_root_certificate(cert);
        }
        if let Some(addr) = config.well_known_connect {
            builder = builder.dns_resolver(Arc::new(Fixed(addr)));
        }
        Ok(Self {
            client: builder.build().map_err(DiscoveryError::Http)?,
            scheme: if insecure { "http" } else { "https" },
            port: config.well_known_connect.map(|a| a.port()),
        })
    }

    pub(crate) async fn fetch(&self, domain: &str, now: i64, freshness: Freshness) -> Answer {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let url = format!(
            "{}://{domain}{port}{}",
            self.scheme,
            signal::WELL_KNOWN_PATH
        );
        let mut response = match self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_redirect() => return malformed(format!("well-known: {e}")),
            // nothing listens there (or no usable TLS): nothing is published
            Err(e) if e.is_connect() && !e.is_timeout() => {
                tracing::debug!(%domain, error = %e, "well-known unreachable");
                return absent();
            }
            Err(e) => return unknown(format!("well-known: {e}")),
        };
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return unknown(format!("well-known: http {status}"));
        }
        if !status.is_success() {
            return absent();
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return malformed(format!("well-known content-type {content_type:?}"));
        }
        if let Some(len) = response.content_length()
            && len > MAX_DOCUMENT_BYTES as u64
        {
            return oversized(len as usize);
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_DOCUMENT_BYTES {
                        return oversized(body.len());
                    }
                }
                Ok(None) => break,
                Err(e) => return unknown(format!("well-known body: {e}")),
            }
        }
        let channel = match signal::parse_document(&body) {
            Ok(s) => Channel::Checked(signal::verify(s, Some(domain), now, freshness)),
            Err(r) => Channel::Checked(Err(r)),
        };
        Answer {
            channel,
            ttl: None,
            cause: None,
        }
    }
}

fn oversized(size: usize) -> Answer {
    Answer {
        channel: Channel::Checked(Err(Rejection::Oversized {
            size,
            max: MAX_DOCUMENT_BYTES,
        })),
        ttl: None,
        cause: None,
    }
}
