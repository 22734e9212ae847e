//! The discovery crawler against a real authoritative DNS server on
//! loopback (NSD) and a real HTTPS server with a test certificate: each bad
//! input gets its own reason and no invitation, a re-crawl creates no
//! duplicate, a withdrawn signal withdraws the invitation, and a DNS server
//! that stops answering changes nothing. QR codes round-trip through PNG.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askee_core::signal::{self, Statement};
use askee_core::{SigningKey, b64};
use askee_server::service::discovery::{
    Crawler, CrawlerConfig, DiscoveryError, Outcome, WellKnown,
};
use askee_server::store::InvitationState;
use askee_testkit::dns::{Nsd, txt_rdata, zone_file};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use support::{Backend, T0, TestServer};

type Pages = Arc<Mutex<HashMap<String, (StatusCode, &'static str, Vec<u8>)>>>;

async fn well_known(State(pages): State<Pages>, headers: HeaderMap) -> axum::response::Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_owned();
    match pages.lock().unwrap().get(&host).cloned() {
        Some((status, ct, body)) => (status, [(header::CONTENT_TYPE, ct)], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An HTTPS server on loopback with a test certificate for the test domains,
/// answering the well-known path per Host header.
struct WebServer {
    addr: SocketAddr,
    cert_pem: Vec<u8>,
    pages: Pages,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(
            DOMAINS.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.cert.pem().into_bytes(),
            cert.key_pair.serialize_pem().into_bytes(),
        )
        .await
        .unwrap();
        let pages: Pages = Arc::default();
        let app = axum::Router::new()
            .route(signal::WELL_KNOWN_PATH, axum::routing::get(well_known))
            .with_state(pages.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], askee_testkit::free_port()));
        let task = tokio::spawn(async move {
            axum_server::bind_rustls(addr, tls)
                .serve(app.into_make_service())
                .await
                .unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "https server did not listen");
            tokio::task::yield_now().await;
        }
        Self {
            addr,
            cert_pem: cert.cert.pem().into_bytes(),
            pages,
            task,
        }
    }

    fn serve_json(&self, host: &str, body: Vec<u8>) {
        self.serve(host, StatusCode::OK, "application/json", body);
    }

    fn serve(&self, host: &str, status: StatusCode, ct: &'static str, body: Vec<u8>) {
        self.pages
            .lock()
            .unwrap()
            .insert(host.to_owned(), (status, ct, body));
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn key_b64(k: &SigningKey) -> String {
    b64::encode(k.verifying_key().as_bytes())
}

fn signed(k: &SigningKey, domain: &str, ts: i64) -> askee_core::wire::v1::ParticipationSignal {
    signal::sign(
        k,
        &Statement {
            domain: Some(domain.into()),
            capabilities: Some(b64::encode([9u8; 32])),
            coordinator: Some("https://coordinator.test/askee".into()),
            timestamp: ts,
        },
    )
}

fn txt(label: &str, text: &str) -> String {
    format!("_askee.{label} IN TXT {}", txt_rdata(text))
}

fn doc(s: &askee_core::wire::v1::ParticipationSignal) -> Vec<u8> {
    serde_json::to_vec(&signal::to_document(s).unwrap()).unwrap()
}

fn config(nsd: &Nsd, web: &WebServer) -> CrawlerConfig {
    CrawlerConfig {
        name_servers: vec![nsd.addr],
        well_known: WellKnown::Https,
        well_known_connect: Some(web.addr),
        extra_roots_pem: vec![web.cert_pem.clone()],
        dns_timeout: Duration::from_millis(300),
        http_timeout: Duration::from_secs(5),
        retries: 1,
        retry_backoff: Duration::from_millis(50),
        ..CrawlerConfig::default()
    }
    .unlimited()
}

const DOMAINS: [&str; 13] = [
    "alpha.test",
    "beta.test",
    "gamma.test",
    "delta.test",
    "eps.test",
    "zeta.test",
    "eta.test",
    "theta.test",
    "iota.test",
    "kappa.test",
    "lambda.test",
    "mu.test",
    "nu.test",
];

async fn crawl_end_to_end(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let now = T0;
    let (a, b, c) = (key(1), key(2), key(3));
    let alpha = signed(&a, "alpha.test", now - 60);
    let beta = signed(&b, "beta.test", now - 30);
    let mut unsigned = signed(&a, "eta.test", now);
    unsigned.signature = None;
    let records = vec![
        // valid, longer than 255 bytes so split into several strings
        txt("alpha", &signal::to_txt(&alpha)),
        // valid in DNS, and the well-known document agrees
        txt("beta", &signal::to_txt(&beta)),
        // a record copied from alpha.test
        txt("gamma", &signal::to_txt(&alpha)),
        // two v=1 records
        txt("delta", &signal::to_txt(&signed(&a, "delta.test", now))),
        txt("delta", &signal::to_txt(&signed(&b, "delta.test", now))),
        txt(
            "eps",
            &signal::to_txt(&signed(&a, "eps.test", now - 400 * 24 * 3600)),
        ),
        txt(
            "zeta",
            &signal::to_txt(&signed(&a, "zeta.test", now + 3600)),
        ),
        txt("eta", &signal::to_txt(&unsigned)),
        txt("theta", "v=1;consent=ready;pubkey=nope"),
        // DNS and well-known name different keys
        txt("iota", &signal::to_txt(&signed(&a, "iota.test", now))),
        // someone else's TXT record at the name is ignored
        "_askee.mu IN TXT \"hello\"".to_string(),
    ];
    let mut nsd = Nsd::start("test", &zone_file("test", 1, &records));
    let web = WebServer::start().await;
    web.serve_json("beta.test", doc(&beta));
    web.serve_json("iota.test", doc(&signed(&c, "iota.test", now)));
    // kappa's document was signed for another domain
    web.serve_json("kappa.test", doc(&signed(&c, "other.test", now)));
    web.serve_json("lambda.test", vec![b' '; 70 * 1024]);
    web.serve(
        "nu.test",
        StatusCode::OK,
        "text/html",
        doc(&signed(&c, "nu.test", now)),
    );

    let crawler = Crawler::new(srv.state.clone(), config(&nsd, &web)).unwrap();
    let store = srv.state.store.discovery();
    let domains: Vec<String> = DOMAINS.iter().map(|d| d.to_string()).collect();
    assert_eq!(store.add_domains(&domains, now).await.unwrap(), 13);

    let summary = crawler.run_due().await.unwrap();
    assert_eq!(summary.checked, 13, "{summary:?}");
    assert_eq!((summary.opted_in, summary.invited), (2, 2), "{summary:?}");
    assert_eq!(summary.absent, 1, "{summary:?}");
    let reasons: Vec<(&str, u64)> = summary.invalid.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        reasons,
        vec![
            ("bad_signature", 1),
            ("conflict", 1),
            ("duplicate", 1),
            ("future_dated", 1),
            ("malformed", 2),
            ("oversized", 1),
            ("stale", 1),
            ("unsigned", 1),
            ("wrong_domain", 1),
        ]
    );
    let invited = store.discovered(100).await.unwrap();
    let mut pairs: Vec<(String, String, String)> = invited
        .iter()
        .map(|i| (i.domain.clone(), i.node_key.clone(), i.source.clone()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("alpha.test".into(), key_b64(&a), "dns".into()),
            ("beta.test".into(), key_b64(&b), "dns".into()),
        ]
    );
    // each is a real pending invitation with its manifest, for the key
    for i in &invited {
        let inv = srv
            .state
            .store
            .invitation(&i.manifest_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inv.state, InvitationState::Pending);
        assert_eq!(inv.node_key, i.node_key);
        assert_eq!(inv.domain.as_deref(), Some(i.domain.as_str()));
    }
    let metrics = srv.state.metrics.render();
    assert!(
        metrics.contains("askee_discovery_invited_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("askee_discovery_rejected_malformed_total 2"));

    // Nothing is due again before the TTL; resubmitting makes all due, and
    // a second crawl creates no duplicate.
    assert!(store.due_domains(now, 100).await.unwrap().is_empty());
    store.add_domains(&domains, now).await.unwrap();
    let again = crawler.run_due().await.unwrap();
    assert_eq!((again.opted_in, again.invited), (2, 0), "{again:?}");
    assert_eq!(store.discovered(100).await.unwrap().len(), 2);

    // The DNS server stops answering: a lost answer is not a "no".
    nsd.stop();
    srv.advance(7 * 24 * 3600);
    let lost = crawler.run_due().await.unwrap();
    // a bad well-known document is bad whatever DNS says; the rest wait
    assert_eq!(lost.retry, 10, "{lost:?}");
    assert_eq!(lost.invalid.values().sum::<u64>(), 3, "{lost:?}");
    assert!(
        store
            .discovered(100)
            .await
            .unwrap()
            .iter()
            .all(|i| i.state == InvitationState::Pending)
    );
    assert!(store.due_domains(srv.now(), 100).await.unwrap().is_empty());

    // alpha removes its record, beta turns consent off in both channels:
    // both pending invitations are withdrawn.
    let mut off = signed(&b, "beta.test", now);
    off.consent = "off".into();
    web.serve_json("beta.test", doc(&off));
    nsd.replace_zone(&zone_file("test", 2, &[txt("beta", &signal::to_txt(&off))]));
    store.add_domains(&domains[..2], srv.now()).await.unwrap();
    let gone = crawler.run_due().await.unwrap();
    assert_eq!((gone.checked, gone.withdrawn), (2, 2), "{gone:?}");
    for i in store.discovered(100).await.unwrap() {
        assert_eq!(i.state, InvitationState::Withdrawn, "{i:?}");
    }
}

async fn qr_round_trip(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let web = WebServer::start().await;
    let nsd = Nsd::start("test", &zone_file("test", 1, &[]));
    let crawler = Crawler::new(srv.state.clone(), config(&nsd, &web)).unwrap();
    let k = key(7);
    let statement = signal::sign(
        &k,
        &Statement {
            domain: None,
            capabilities: None,
            coordinator: None,
            timestamp: T0,
        },
    );
    let png = png_of(&signal::to_uri(&statement));
    let Outcome::Invited { manifest_id } = crawler.import_qr(&png).await.unwrap() else {
        panic!("expected an invitation")
    };
    let inv = srv
        .state
        .store
        .invitation(&manifest_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((inv.source.as_str(), inv.domain), ("qr", None));
    assert_eq!(inv.node_key, key_b64(&k));
    // the same code again: no second invitation
    assert_eq!(crawler.import_qr(&png).await.unwrap(), Outcome::Known);
    // a code whose statement was altered does not verify
    let mut forged = statement.clone();
    forged.timestamp += 1;
    let err = crawler.import_qr(&png_of(&signal::to_uri(&forged))).await;
    assert!(
        matches!(&err, Err(DiscoveryError::QrRejected(r)) if r.reason() == "bad_signature"),
        "{err:?}"
    );
    // an image without a code, and bytes that are no PNG
    let blank = {
        let img = image::GrayImage::from_pixel(64, 64, image::Luma([255]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    assert!(matches!(
        crawler.import_qr(&blank).await,
        Err(DiscoveryError::QrCode(_))
    ));
    assert!(matches!(
        crawler.import_qr(b"not a png").await,
        Err(DiscoveryError::QrImage(_))
    ));
    assert_eq!(
        srv.state
            .store
            .discovery()
            .discovered(10)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn png_of(text: &str) -> Vec<u8> {
    let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
    let img = code.render::<image::Luma<u8>>().build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

both_backends!(crawl_end_to_end, qr_round_trip);
