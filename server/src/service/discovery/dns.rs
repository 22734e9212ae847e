//! TXT lookups of `_askee.<domain>` with hickory-resolver: one resolver per
//! configured name server, each with its own pacer (the per-name-server
//! rate limit), domains spread over them by hash.

use std::sync::Arc;

use askee_core::signal::{self, Channel, Freshness};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::{Answer, CrawlerConfig, DiscoveryError, Pacer};

pub(crate) struct Dns {
    servers: Vec<(TokioResolver, Option<Arc<Pacer>>)>,
    freshness: Freshness,
}

fn options(config: &CrawlerConfig) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = config.dns_timeout;
    // retries are ours (with backoff), not the resolver's
    opts.attempts = 1;
    // every check must see the zone as it is now
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.edns0 = true;
    opts
}

impl Dns {
    pub(crate) fn new(config: &CrawlerConfig) -> Result<Self, DiscoveryError> {
        let mut servers = Vec::new();
        let pacer = || {
            config
                .per_name_server_qps
                .and_then(Pacer::per_second)
                .map(Arc::new)
        };
        if config.name_servers.is_empty() {
            let mut builder =
                TokioResolver::builder_tokio().map_err(|e| DiscoveryError::Resolver {
                    name_server: "system".into(),
                    cause: e.to_string(),
                })?;
            *builder.options_mut() = options(config);
            let resolver = builder.build().map_err(|e| DiscoveryError::Resolver {
                name_server: "system".into(),
                cause: e.to_string(),
            })?;
            servers.push((resolver, pacer()));
        }
        for addr in &config.name_servers {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            *builder.options_mut() = options(config);
            let resolver = builder.build().map_err(|e| DiscoveryError::Resolver {
                name_server: addr.to_string(),
                cause: e.to_string(),
            })?;
            servers.push((resolver, pacer()));
        }
        Ok(Self {
            servers,
            freshness: config.freshness,
        })
    }

    pub(crate) async fn lookup(&self, domain: &str, now: i64) -> Answer {
        let pick = domain
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % self.servers.len();
        let (resolver, pacer) = &self.servers[pick];
        if let Some(p) = pacer {
            p.wait().await;
        }
        let name = format!("{}.", signal::txt_name(domain));
        match resolver.txt_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mut ttl: Option<u32> = None;
                let records: Vec<Vec<Vec<u8>>> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => {
                            ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
                            Some(txt.txt_data.iter().map(|s| s.to_vec()).collect())
                        }
                        _ => None,
                    })
                    .collect();
                let channel = match signal::parse_txt(domain, &records) {
                    Ok(None) => Channel::Absent,
                    Ok(Some(s)) => {
                        Channel::Checked(signal::verify(s, Some(domain), now, self.freshness))
                    }
                    Err(r) => Channel::Checked(Err(r)),
                };
                Answer {
                    channel,
                    ttl,
                    cause: None,
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Answer {
                channel: Channel::Absent,
                ttl: None,
                cause: None,
            },
            Err(e) => Answer {
                channel: Channel::Unknown,
                ttl: None,
                cause: Some(format!("dns: {e}")),
            },
        }
    }
}
