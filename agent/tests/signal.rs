//! `askee-agent signal`: the TXT record, the well-known document and the
//! QR code carry one statement that verifies; the QR code round-trips
//! through PNG (encode → PNG → decode → verify).

use askee_agent::signal::{SignalArgs, publish, qr_png, run};
use askee_core::SigningKey;
use askee_core::signal::{self, Freshness, Verdict};

const NOW: i64 = 1_800_000_000;

fn ready(v: Result<Verdict, signal::Rejection>) -> bool {
    matches!(v, Ok(Verdict::Ready(_)))
}

#[test]
fn all_three_forms_verify() {
    let key = SigningKey::from_bytes(&[4; 32]);
    let caps = serde_json::json!({"cpu_cores": 8, "gpu": false});
    let p = publish(
        &key,
        Some("Volunteer.Example."),
        Some("https://coord.example"),
        Some(&caps),
        NOW,
    )
    .unwrap();
    assert_eq!(p.txt_name.as_deref(), Some("_askee.volunteer.example."));
    let record = p.txt_record.clone().unwrap();
    let strings: Vec<Vec<u8>> = signal::txt_strings(&record)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let dns = signal::parse_txt("volunteer.example", &[strings])
        .unwrap()
        .unwrap();
    assert!(ready(signal::verify(
        dns.clone(),
        Some("volunteer.example"),
        NOW,
        Freshness::default()
    )));
    let doc = signal::parse_document(p.well_known_json.as_ref().unwrap().as_bytes()).unwrap();
    assert!(ready(signal::verify(
        doc.clone(),
        Some("volunteer.example"),
        NOW,
        Freshness::default()
    )));
    assert_eq!(
        signal::decide(
            signal::Channel::Checked(signal::verify(
                dns,
                Some("volunteer.example"),
                NOW,
                Freshness::default()
            )),
            signal::Channel::Checked(signal::verify(
                doc,
                Some("volunteer.example"),
                NOW,
                Freshness::default()
            )),
        ),
        signal::Decision::Invite(signal::Verified {
            signal: {
                let mut s = p.signal.clone();
                s.source = "dns".into();
                s
            }
        })
    );
    assert!(
        p.zone_line
            .unwrap()
            .starts_with("_askee.volunteer.example. 3600 IN TXT \"v=1;")
    );
}

#[test]
fn qr_round_trips_through_png() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let p = publish(&key, None, None, None, NOW).unwrap();
    assert!(p.txt_record.is_none() && p.well_known_json.is_none());
    let png = qr_png(&p.uri).unwrap();
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, text) = grids[0].decode().unwrap();
    assert_eq!(text, p.uri);
    let parsed = signal::parse_uri(&text).unwrap();
    assert!(ready(signal::verify(
        parsed,
        None,
        NOW,
        Freshness::default()
    )));
}

#[test]
fn the_command_writes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[6; 32]);
    let args = SignalArgs {
        domain: Some("v.example".into()),
        coordinator: None,
        capabilities: None,
        out: dir.path().to_path_buf(),
        no_terminal_qr: false,
    };
    let printed = run(&key, &args, NOW).unwrap();
    assert!(printed.contains("_askee.v.example."), "{printed}");
    assert!(printed.contains('▀') || printed.contains('▄') || printed.contains('█'));
    let doc = std::fs::read(dir.path().join("askee-participation")).unwrap();
    assert!(ready(signal::verify(
        signal::parse_document(&doc).unwrap(),
        Some("v.example"),
        NOW,
        Freshness::default()
    )));
    let svg = std::fs::read_to_string(dir.path().join("askee-participation.svg")).unwrap();
    assert!(svg.contains("<svg"));
    assert!(
        std::fs::read(dir.path().join("askee-participation.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
}
