//! Participation signals: one signed opt-in statement carried by three
//! channels (DNS TXT at `_askee.<domain>`, the JSON document at
//! `/.well-known/askee-participation`, and an `askee:` QR URI), their
//! parsers, and the pure checks that turn them into a decision.
//!
//! The statement is signed by the volunteer's Ed25519 node key over
//! domain-separated canonical bytes that include the domain, so a record
//! copied to another domain does not verify there.
//!
//! Encodings: keys and signatures are base64url without padding (the
//! DKIM-like raw 32-byte Ed25519 key, RFC 8463 style, in URL-safe form);
//! `ts` is unix seconds in decimal; `caps` is the base64url SHA-256 of the
//! canonical JSON of the declared capabilities.

use ed25519_dalek::{Signer as _, SigningKey};

use crate::b64;
use crate::wire::v1::{PARTICIPATION_SIGNAL_VERSION, ParticipationDocument, ParticipationSignal};

const SIGNAL_CONTEXT: &[u8] = b"askee-participation-v1\0";

/// Longest joined TXT record, well-known body and QR URI accepted.
pub const MAX_TXT_BYTES: usize = 2048;
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
pub const MAX_URI_BYTES: usize = 2048;
/// Longest coordinator hint.
const MAX_COORDINATOR_BYTES: usize = 512;

/// The DNS name a domain publishes its TXT record at.
pub fn txt_name(domain: &str) -> String {
    format!("_askee.{domain}")
}

/// The well-known path (RFC 8615).
pub const WELL_KNOWN_PATH: &str = "/.well-known/askee-participation";

/// Why a signal was refused. Each bad input has its own reason, which is
/// what gets logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed signal: {detail}")]
    Malformed { detail: String },
    #[error("signal of {size} bytes exceeds the limit of {max}")]
    Oversized { size: usize, max: usize },
    #[error("signal carries no signature")]
    Unsigned,
    #[error("signal signature does not verify")]
    BadSignature,
    #[error("signal timestamp {timestamp} is older than {max_age}s at {now}")]
    Stale {
        timestamp: i64,
        now: i64,
        max_age: i64,
    },
    #[error("signal timestamp {timestamp} is in the future at {now}")]
    FutureDated { timestamp: i64, now: i64 },
    #[error("signal for domain {signed:?} served by {served:?}")]
    WrongDomain { signed: String, served: String },
    #[error("{count} v=1 records where exactly one is allowed")]
    Duplicate { count: usize },
    #[error("dns and well-known signals disagree on {field}")]
    Conflict { field: &'static str },
}

impl Rejection {
    /// The stable reason code used in logs, metrics and the CLI summary.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::Oversized { .. } => "oversized",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Stale { .. } => "stale",
            Self::FutureDated { .. } => "future_dated",
            Self::WrongDomain { .. } => "wrong_domain",
            Self::Duplicate { .. } => "duplicate",
            Self::Conflict { .. } => "conflict",
        }
    }

    /// Every reason code, for metrics and summaries.
    pub const REASONS: [&'static str; 9] = [
        "malformed",
        "oversized",
        "unsigned",
        "bad_signature",
        "stale",
        "future_dated",
        "wrong_domain",
        "duplicate",
        "conflict",
    ];
}

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::Malformed {
        detail: detail.into(),
    }
}

/// Checks and normalises a domain name: ASCII (IDNs in their `xn--` form),
/// lower case, no trailing dot, labels of 1 to 63 letters, digits or
/// hyphens not at either end, at most 253 bytes.
pub fn normalize_domain(domain: &str) -> Result<String, Rejection> {
    let d = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 {
        return Err(malformed(format!("domain length {} out of range", d.len())));
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(malformed(format!("bad domain label {label:?}")));
        }
    }
    Ok(d)
}

/// The exact bytes the node key signs. The channel (`source`) is left out,
/// so one signature serves all three; the domain is in, so it binds.
pub fn signing_bytes(signal: &ParticipationSignal) -> Vec<u8> {
    let text = format!(
        "v={}\ndomain={}\nconsent={}\npubkey={}\nts={}\ncaps={}\ncoordinator={}",
        PARTICIPATION_SIGNAL_VERSION,
        signal.domain.as_deref().unwrap_or(""),
        signal.consent,
        signal.public_key,
        signal.timestamp,
        signal.capabilities.as_deref().unwrap_or(""),
        signal.coordinator.as_deref().unwrap_or(""),
    );
    let mut out = SIGNAL_CONTEXT.to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// What a volunteer states; [`sign`] turns it into a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub domain: Option<String>,
    pub capabilities: Option<String>,
    pub coordinator: Option<String>,
    pub timestamp: i64,
}

/// Signs an opt-in (`consent=ready`) statement with the node key.
pub fn sign(key: &SigningKey, statement: &Statement) -> ParticipationSignal {
    let mut signal = ParticipationSignal {
        source: "qr".into(),
        domain: statement.domain.clone(),
        consent: "ready".into(),
        public_key: b64::encode(key.verifying_key().as_bytes()),
        capabilities: statement.capabilities.clone(),
        coordinator: statement.coordinator.clone(),
        timestamp: statement.timestamp,
        signature: None,
    };
    let sig = key.sign(&signing_bytes(&signal));
    signal.signature = Some(b64::encode(sig.to_bytes()));
    signal
}

// ---------------------------------------------------------------- DNS TXT

/// The TXT record text for a signal (`v=1;consent=ready;pubkey=…;ts=…;sig=…`
/// plus `caps` and `coordinator` when present).
pub fn to_txt(signal: &ParticipationSignal) -> String {
    let mut out = format!(
        "v=1;consent={};pubkey={};ts={}",
        signal.consent, signal.public_key, signal.timestamp
    );
    if let Some(c) = &signal.capabilities {
        out.push_str(&format!(";caps={c}"));
    }
    if let Some(c) = &signal.coordinator {
        out.push_str(&format!(";coordinator={c}"));
    }
    if let Some(s) = &signal.signature {
        out.push_str(&format!(";sig={s}"));
    }
    out
}

/// Splits record text into DNS character-strings of at most 255 bytes.
pub fn txt_strings(text: &str) -> Vec<String> {
    text.as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn is_v1(record: &[u8]) -> bool {
    let text = String::from_utf8_lossy(record);
    let first = text.split(';').next().unwrap_or("");
    let mut kv = first.splitn(2, '=');
    kv.next().map(str::trim) == Some("v") && kv.next().map(str::trim) == Some("1")
}

/// Parses the TXT records found at `_askee.<domain>`. Each record is given
/// as its character-strings, which are re-joined. Records whose first
/// element is not `v=1` are someone else's and skipped; no v=1 record is
/// `Ok(None)`; more than one is [`Rejection::Duplicate`].
pub fn parse_txt(
    domain: &str,
    records: &[Vec<Vec<u8>>],
) -> Result<Option<ParticipationSignal>, Rejection> {
    let joined: Vec<Vec<u8>> = records.iter().map(|r| r.concat()).collect();
    let ours: Vec<&Vec<u8>> = joined.iter().filter(|r| is_v1(r)).collect();
    match ours.len() {
        0 => Ok(None),
        1 => parse_txt_record(domain, ours[0]).map(Some),
        count => Err(Rejection::Duplicate { count }),
    }
}

/// Parses one (joined) v=1 TXT record served for `domain`.
pub fn parse_txt_record(domain: &str, record: &[u8]) -> Result<ParticipationSignal, Rejection> {
    if record.len() > MAX_TXT_BYTES {
        return Err(Rejection::Oversized {
            size: record.len(),
            max: MAX_TXT_BYTES,
        });
    }
    let text = std::str::from_utf8(record).map_err(|_| malformed("record is not utf-8"))?;
    let mut fields = std::collections::BTreeMap::new();
    for part in text.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| malformed(format!("element {part:?} has no '='")))?;
        let (k, v) = (k.trim(), v.trim());
        if fields.insert(k, v).is_some() {
            return Err(malformed(format!("key {k:?} repeated")));
        }
    }
    if fields.get("v") != Some(&"1") {
        return Err(malformed("first element is not v=1"));
    }
    let domain = normalize_domain(domain)?;
    let field = |k: &str| fields.get(k).map(|v| v.to_string());
    signal_from_fields(
        "dns",
        Some(domain),
        field("consent"),
        field("pubkey"),
        field("ts"),
        field("caps"),
        field("coordinator"),
        field("sig"),
    )
}

#[allow(clippy::too_many_arguments)]
fn signal_from_fields(
    source: &str,
    domain: Option<String>,
    consent: Option<String>,
    pubkey: Option<String>,
    ts: Option<String>,
    caps: Option<String>,
    coordinator: Option<String>,
    sig: Option<String>,
) -> Result<ParticipationSignal, Rejection> {
    let consent = consent.ok_or_else(|| malformed("consent missing"))?;
    let public_key = pubkey.ok_or_else(|| malformed("pubkey missing"))?;
    let ts = ts.ok_or_else(|| malformed("ts missing"))?;
    let timestamp = parse_ts(&ts)?;
    let signal = ParticipationSignal {
        source: source.into(),
        domain,
        consent,
        public_key,
        capabilities: caps.filter(|c| !c.is_empty()),
        coordinator: coordinator.filter(|c| !c.is_empty()),
        timestamp,
        signature: sig.filter(|s| !s.is_empty()),
    };
    check_shape(&signal)?;
    Ok(signal)
}

fn parse_ts(ts: &str) -> Result<i64, Rejection> {
    if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("ts {ts:?} is not unix seconds")));
    }
    ts.parse()
        .map_err(|_| malformed(format!("ts {ts:?} is not unix seconds")))
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

/// Field encodings every channel shares; the signature is checked later.
fn check_shape(signal: &ParticipationSignal) -> Result<(), Rejection> {
    if signal.consent.is_empty() || signal.consent.len() > 32 || !printable(&signal.consent) {
        return Err(malformed("consent is not a short token"));
    }
    b64::public_key(&signal.public_key).map_err(|e| malformed(format!("pubkey: {e}")))?;
    if let Some(c) = &signal.capabilities {
        b64::decode_array::<32>(c).map_err(|e| malformed(format!("caps: {e}")))?;
    }
    if let Some(c) = &signal.coordinator
        && (c.len() > MAX_COORDINATOR_BYTES
            || !printable(c)
            || !(c.starts_with("https://") || c.starts_with("http://")))
    {
        return Err(malformed("coordinator is not an http(s) url"));
    }
    if let Some(s) = &signal.signature {
        b64::signature(s).map_err(|e| malformed(format!("sig: {e}")))?;
    }
    if signal.timestamp < 0 {
        return Err(malformed("ts is negative"));
    }
    Ok(())
}

// ------------------------------------------------------------- well-known

/// The well-known document for a signal (which must name a domain).
pub fn to_document(signal: &ParticipationSignal) -> Option<ParticipationDocument> {
    Some(ParticipationDocument {
        version: PARTICIPATION_SIGNAL_VERSION,
        domain: signal.domain.clone()?,
        consent: signal.consent.clone(),
        public_key: signal.public_key.clone(),
        capabilities: signal.capabilities.clone(),
        coordinator: signal.coordinator.clone(),
        timestamp: signal.timestamp,
        signature: signal.signature.clone(),
    })
}

/// Parses a well-known body. The document's own `domain` is what the
/// signature covers; [`verify`] compares it with the domain it was
/// fetched from.
pub fn parse_document(body: &[u8]) -> Result<ParticipationSignal, Rejection> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(Rejection::Oversized {
            size: body.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    let doc: ParticipationDocument =
        serde_json::from_slice(body).map_err(|e| malformed(format!("json: {e}")))?;
    if doc.version != PARTICIPATION_SIGNAL_VERSION {
        return Err(malformed(format!("version {} is not 1", doc.version)));
    }
    let domain = normalize_domain(&doc.domain)?;
    let signal = ParticipationSignal {
        source: "wellknown".into(),
        domain: Some(domain),
        consent: doc.consent,
        public_key: doc.public_key,
        capabilities: doc.capabilities,
        coordinator: doc.coordinator,
        timestamp: doc.timestamp,
        signature: doc.signature,
    };
    check_shape(&signal)?;
    Ok(signal)
}

// -------------------------------------------------------------------- QR

const URI_PREFIX: &str = "askee:participate?";

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> Result<String, Rejection> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| malformed("bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| malformed("uri value is not utf-8"))
}

/// The `askee:participate?v=1&…` URI a QR code carries.
pub fn to_uri(signal: &ParticipationSignal) -> String {
    let mut parts = vec![("v", "1".to_string())];
    if let Some(d) = &signal.domain {
        parts.push(("domain", d.clone()));
    }
    parts.push(("consent", signal.consent.clone()));
    parts.push(("pubkey", signal.public_key.clone()));
    parts.push(("ts", signal.timestamp.to_string()));
    if let Some(c) = &signal.capabilities {
        parts.push(("caps", c.clone()));
    }
    if let Some(c) = &signal.coordinator {
        parts.push(("coordinator", c.clone()));
    }
    if let Some(s) = &signal.signature {
        parts.push(("sig", s.clone()));
    }
    let query: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{k}={}", pct_encode(v)))
        .collect();
    format!("{URI_PREFIX}{}", query.join("&"))
}

/// Parses a QR payload (`askee:participate?…`).
pub fn parse_uri(uri: &str) -> Result<ParticipationSignal, Rejection> {
    if uri.len() > MAX_URI_BYTES {
        return Err(Rejection::Oversized {
            size: uri.len(),
            max: MAX_URI_BYTES,
        });
    }
    let query = uri
        .strip_prefix(URI_PREFIX)
        .ok_or_else(|| malformed("not an askee:participate uri"))?;
    let mut fields = std::collections::BTreeMap::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| malformed(format!("parameter {part:?} has no '='")))?;
        if fields.insert(k.to_owned(), pct_decode(v)?).is_some() {
            return Err(malformed(format!("parameter {k:?} repeated")));
        }
    }
    if fields.get("v").map(String::as_str) != Some("1") {
        return Err(malformed("v is not 1"));
    }
    let domain = match fields.remove("domain") {
        Some(d) => Some(normalize_domain(&d)?),
        None => None,
    };
    signal_from_fields(
        "qr",
        domain,
        fields.remove("consent"),
        fields.remove("pubkey"),
        fields.remove("ts"),
        fields.remove("caps"),
        fields.remove("coordinator"),
        fields.remove("sig"),
    )
}

// ------------------------------------------------------------ validation

/// How old or how far ahead a signal's timestamp may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub max_age_secs: i64,
    pub max_future_secs: i64,
}

impl Default for Freshness {
    /// A year of age (a DNS record is published once and left), five
    /// minutes of clock skew.
    fn default() -> Self {
        Self {
            max_age_secs: 365 * 24 * 3600,
            max_future_secs: 300,
        }
    }
}

/// A signal that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub signal: ParticipationSignal,
}

/// What one channel says once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A signed, fresh `consent=ready` statement for this domain.
    Ready(Verified),
    /// The statement no longer says `ready`: a withdrawal. Not signature
    /// checked, since anyone able to change the record can also remove it.
    NotReady,
}

/// Checks one parsed signal: domain binding (`served` is the domain it was
/// found under, `None` for a QR code), signature, and freshness at `now`.
pub fn verify(
    signal: ParticipationSignal,
    served: Option<&str>,
    now: i64,
    freshness: Freshness,
) -> Result<Verdict, Rejection> {
    if let Some(served) = served {
        let served = normalize_domain(served)?;
        let signed = signal.domain.clone().unwrap_or_default();
        if signed != served {
            return Err(Rejection::WrongDomain { signed, served });
        }
    }
    if signal.consent != "ready" {
        return Ok(Verdict::NotReady);
    }
    let sig = signal.signature.as_deref().ok_or(Rejection::Unsigned)?;
    let key = b64::public_key(&signal.public_key).map_err(|e| malformed(format!("pubkey: {e}")))?;
    let sig = b64::signature(sig).map_err(|e| malformed(format!("sig: {e}")))?;
    key.verify_strict(&signing_bytes(&signal), &sig)
        .map_err(|_| Rejection::BadSignature)?;
    if signal.timestamp > now.saturating_add(freshness.max_future_secs) {
        return Err(Rejection::FutureDated {
            timestamp: signal.timestamp,
            now,
        });
    }
    if signal.timestamp < now.saturating_sub(freshness.max_age_secs) {
        return Err(Rejection::Stale {
            timestamp: signal.timestamp,
            now,
            max_age: freshness.max_age_secs,
        });
    }
    Ok(Verdict::Ready(Verified { signal }))
}

/// What looking at one channel of one domain gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Nothing published there (NXDOMAIN, no v=1 record, HTTP 404).
    Absent,
    /// No answer (timeout, SERVFAIL, connection error): a lost answer is not
    /// a "no", so this never withdraws anything.
    Unknown,
    /// Something was published and checked.
    Checked(Result<Verdict, Rejection>),
}

/// What the crawler does about one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue an invitation for this (domain, key), once.
    Invite(Verified),
    /// Nothing (valid) is published: withdraw pending discovered invitations.
    Withdraw,
    /// A bad signal: logged with its reason; like a withdrawal it leaves no
    /// pending invitation behind.
    Reject(Rejection),
    /// Some channel gave no answer: try again later, change nothing.
    Retry,
}

fn agree(a: &ParticipationSignal, b: &ParticipationSignal) -> Result<(), Rejection> {
    let field = if a.public_key != b.public_key {
        "pubkey"
    } else if a.capabilities != b.capabilities {
        "caps"
    } else if a.coordinator != b.coordinator {
        "coordinator"
    } else {
        return Ok(());
    };
    Err(Rejection::Conflict { field })
}

/// Combines the DNS and well-known channels of one domain. Where both carry
/// a statement they must agree (key, capabilities, coordinator and
/// readiness); the newer timestamp's statement is kept.
pub fn decide(dns: Channel, well_known: Channel) -> Decision {
    use Channel::*;
    match (dns, well_known) {
        (Checked(Err(r)), _) | (_, Checked(Err(r))) => Decision::Reject(r),
        (Unknown, _) | (_, Unknown) => Decision::Retry,
        (Absent, Absent) => Decision::Withdraw,
        (Checked(Ok(Verdict::NotReady)), Absent | Checked(Ok(Verdict::NotReady)))
        | (Absent, Checked(Ok(Verdict::NotReady))) => Decision::Withdraw,
        (Checked(Ok(Verdict::Ready(v))), Absent) | (Absent, Checked(Ok(Verdict::Ready(v)))) => {
            Decision::Invite(v)
        }
        (Checked(Ok(Verdict::Ready(_))), Checked(Ok(Verdict::NotReady)))
        | (Checked(Ok(Verdict::NotReady)), Checked(Ok(Verdict::Ready(_)))) => {
            Decision::Reject(Rejection::Conflict { field: "consent" })
        }
        (Checked(Ok(Verdict::Ready(a))), Checked(Ok(Verdict::Ready(b)))) => {
            match agree(&a.signal, &b.signal) {
                Ok(()) if b.signal.timestamp > a.signal.timestamp => Decision::Invite(b),
                Ok(()) => Decision::Invite(a),
                Err(r) => Decision::Reject(r),
            }
        }
    }
}

#[cfg(test)]
mod tests;
