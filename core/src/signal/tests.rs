use super::*;

const NOW: i64 = 1_800_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn statement(domain: Option<&str>) -> Statement {
    Statement {
        domain: domain.map(str::to_owned),
        capabilities: Some(b64::encode([7u8; 32])),
        coordinator: Some("https://coord.example/askee".into()),
        timestamp: NOW - 60,
    }
}

fn signed(domain: &str) -> ParticipationSignal {
    sign(&key(1), &statement(Some(domain)))
}

fn records(texts: &[&str]) -> Vec<Vec<Vec<u8>>> {
    texts
        .iter()
        .map(|t| txt_strings(t).into_iter().map(String::into_bytes).collect())
        .collect()
}

fn check_dns(domain: &str, texts: &[&str]) -> Result<Verdict, Rejection> {
    let signal = parse_txt(domain, &records(texts))?.expect("a v=1 record");
    verify(signal, Some(domain), NOW, Freshness::default())
}

#[test]
fn txt_round_trip_verifies() {
    let s = signed("example.org");
    let text = to_txt(&s);
    assert!(text.starts_with("v=1;consent=ready;pubkey="));
    let verdict = check_dns("Example.ORG.", &[&text]).unwrap();
    let Verdict::Ready(v) = verdict else {
        panic!("expected ready, got {verdict:?}")
    };
    assert_eq!(v.signal.domain.as_deref(), Some("example.org"));
    assert_eq!(v.signal.source, "dns");
    assert_eq!(v.signal.public_key, s.public_key);
}

#[test]
fn long_records_split_at_255_bytes_are_rejoined() {
    let s = signed("example.org");
    let text = to_txt(&s);
    assert!(text.len() > 255, "record is {} bytes", text.len());
    let recs = records(&[&text]);
    assert!(recs[0].len() > 1);
    assert!(recs[0].iter().all(|c| c.len() <= 255));
    assert!(matches!(
        check_dns("example.org", &[&text]),
        Ok(Verdict::Ready(_))
    ));
}

#[test]
fn unknown_keys_and_foreign_records_are_ignored() {
    let text = format!("{};future=thing;x=1", to_txt(&signed("example.org")));
    assert!(matches!(
        check_dns("example.org", &[&text, "v=spf1 -all", "hello"]),
        Ok(Verdict::Ready(_))
    ));
    assert_eq!(
        parse_txt("example.org", &records(&["v=spf1 -all"])),
        Ok(None)
    );
    assert_eq!(parse_txt("example.org", &[]), Ok(None));
}

#[test]
fn each_bad_input_has_its_own_reason() {
    let good = signed("example.org");
    let text = to_txt(&good);
    let reason = |r: Result<Verdict, Rejection>| r.unwrap_err().reason();

    // duplicate: two v=1 records
    assert_eq!(
        parse_txt("example.org", &records(&[&text, &text])).unwrap_err(),
        Rejection::Duplicate { count: 2 }
    );
    // malformed: missing key, bad ts, bad key encoding, repeated key
    for bad in [
        "v=1;consent=ready;ts=1".to_string(),
        text.replace(&format!("ts={}", good.timestamp), "ts=soon"),
        text.replace(&good.public_key, "not-a-key"),
        format!("{text};ts=5"),
        "v=1;consent".to_string(),
    ] {
        let err = parse_txt("example.org", &records(&[&bad])).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{bad}: {err}");
    }
    // oversized
    let huge = format!("{text};pad={}", "a".repeat(MAX_TXT_BYTES));
    assert_eq!(
        parse_txt("example.org", &records(&[&huge]))
            .unwrap_err()
            .reason(),
        "oversized"
    );
    // unsigned
    let unsigned = text.split(";sig=").next().unwrap().to_string();
    assert_eq!(reason(check_dns("example.org", &[&unsigned])), "unsigned");
    // wrongly signed: signed by another key, or a field changed after signing
    let other = sign(&key(2), &statement(Some("example.org")));
    let forged = text.replace(
        good.signature.as_deref().unwrap(),
        other.signature.as_deref().unwrap(),
    );
    assert_eq!(
        reason(check_dns("example.org", &[&forged])),
        "bad_signature"
    );
    let tampered = text.replace(
        &format!("ts={}", good.timestamp),
        &format!("ts={}", good.timestamp + 1),
    );
    assert_eq!(
        reason(check_dns("example.org", &[&tampered])),
        "bad_signature"
    );
    // wrong domain: a record copied to another domain
    assert_eq!(reason(check_dns("evil.example", &[&text])), "bad_signature");
    let doc = serde_json::to_vec(&to_document(&good).unwrap()).unwrap();
    let err = verify(
        parse_document(&doc).unwrap(),
        Some("evil.example"),
        NOW,
        Freshness::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "wrong_domain");
    // stale and future-dated
    let mut old = statement(Some("example.org"));
    old.timestamp = NOW - Freshness::default().max_age_secs - 1;
    let old = to_txt(&sign(&key(1), &old));
    assert_eq!(reason(check_dns("example.org", &[&old])), "stale");
    let mut future = statement(Some("example.org"));
    future.timestamp = NOW + 301;
    let future = to_txt(&sign(&key(1), &future));
    assert_eq!(reason(check_dns("example.org", &[&future])), "future_dated");
}

#[test]
fn a_copied_record_fails_on_the_served_domain() {
    // The record is parsed as served by evil.example: the domain comes from
    // the DNS name, so the signature (over example.org) cannot verify.
    let text = to_txt(&signed("example.org"));
    let signal = parse_txt("evil.example", &records(&[&text]))
        .unwrap()
        .unwrap();
    assert_eq!(signal.domain.as_deref(), Some("evil.example"));
    assert_eq!(
        verify(signal, Some("evil.example"), NOW, Freshness::default()),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn consent_off_is_a_withdrawal() {
    let text = to_txt(&signed("example.org")).replace("consent=ready", "consent=off");
    assert_eq!(check_dns("example.org", &[&text]), Ok(Verdict::NotReady));
}

#[test]
fn well_known_round_trip_and_bad_documents() {
    let s = signed("example.org");
    let body = serde_json::to_vec(&to_document(&s).unwrap()).unwrap();
    let parsed = parse_document(&body).unwrap();
    assert_eq!(parsed.source, "wellknown");
    assert!(matches!(
        verify(parsed, Some("example.org"), NOW, Freshness::default()),
        Ok(Verdict::Ready(_))
    ));
    // unknown fields are ignored
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["extra"] = serde_json::json!({"a": 1});
    assert!(parse_document(&serde_json::to_vec(&v).unwrap()).is_ok());
    assert_eq!(parse_document(b"{").unwrap_err().reason(), "malformed");
    assert_eq!(
        parse_document(&vec![b' '; MAX_DOCUMENT_BYTES + 1])
            .unwrap_err()
            .reason(),
        "oversized"
    );
    v["version"] = serde_json::json!(2);
    assert_eq!(
        parse_document(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .reason(),
        "malformed"
    );
}

#[test]
fn qr_uri_round_trip_with_and_without_domain() {
    for domain in [None, Some("example.org")] {
        let s = sign(&key(3), &statement(domain));
        let uri = to_uri(&s);
        assert!(uri.starts_with("askee:participate?v=1&"));
        let parsed = parse_uri(&uri).unwrap();
        assert_eq!(parsed.source, "qr");
        assert_eq!(parsed.coordinator, s.coordinator);
        assert_eq!(parsed.domain, s.domain);
        assert!(matches!(
            verify(parsed, None, NOW, Freshness::default()),
            Ok(Verdict::Ready(_))
        ));
    }
    assert_eq!(parse_uri("https://x").unwrap_err().reason(), "malformed");
    assert_eq!(
        parse_uri("askee:participate?v=1&ts=%zz")
            .unwrap_err()
            .reason(),
        "malformed"
    );
    let uri = to_uri(&signed("example.org"));
    assert_eq!(
        parse_uri(&format!("{uri}&v=1")).unwrap_err().reason(),
        "malformed"
    );
    // a QR statement bound to a domain cannot be moved to another
    let moved = uri.replace("domain=example.org", "domain=evil.example");
    assert_eq!(
        verify(parse_uri(&moved).unwrap(), None, NOW, Freshness::default()),
        Err(Rejection::BadSignature)
    );
}

fn ready(s: &ParticipationSignal) -> Channel {
    Channel::Checked(Ok(Verdict::Ready(Verified { signal: s.clone() })))
}

#[test]
fn channels_combine() {
    let a = signed("example.org");
    let b = sign(&key(2), &statement(Some("example.org")));
    let mut newer = a.clone();
    newer.timestamp += 10;
    assert_eq!(decide(Channel::Absent, Channel::Absent), Decision::Withdraw);
    assert_eq!(decide(ready(&a), Channel::Unknown), Decision::Retry);
    assert_eq!(decide(Channel::Unknown, Channel::Absent), Decision::Retry);
    assert_eq!(
        decide(ready(&a), Channel::Absent),
        Decision::Invite(Verified { signal: a.clone() })
    );
    assert_eq!(
        decide(ready(&a), ready(&newer)),
        Decision::Invite(Verified {
            signal: newer.clone()
        })
    );
    assert_eq!(
        decide(ready(&a), ready(&b)),
        Decision::Reject(Rejection::Conflict { field: "pubkey" })
    );
    assert_eq!(
        decide(ready(&a), Channel::Checked(Ok(Verdict::NotReady))),
        Decision::Reject(Rejection::Conflict { field: "consent" })
    );
    assert_eq!(
        decide(Channel::Checked(Ok(Verdict::NotReady)), Channel::Absent),
        Decision::Withdraw
    );
    assert_eq!(
        decide(ready(&a), Channel::Checked(Err(Rejection::Unsigned))),
        Decision::Reject(Rejection::Unsigned)
    );
}

#[test]
fn domains_normalise() {
    assert_eq!(normalize_domain("Ex-1.Org.").unwrap(), "ex-1.org");
    for bad in ["", "a..b", "-a.org", "a-.org", "ä.org", &"a".repeat(64)] {
        assert_eq!(normalize_domain(bad).unwrap_err().reason(), "malformed");
    }
}

#[test]
fn reasons_are_distinct() {
    let mut r = Rejection::REASONS.to_vec();
    r.sort();
    r.dedup();
    assert_eq!(r.len(), Rejection::REASONS.len());
}
