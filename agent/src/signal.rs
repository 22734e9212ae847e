//! `askee-agent signal`: the volunteer's opt-in for discovery, one signed
//! statement in three forms — the DNS TXT record to publish at
//! `_askee.<domain>`, the JSON for `/.well-known/askee-participation`, and
//! an `askee:` QR code (terminal, PNG and SVG) for a volunteer without a
//! domain.

use askee_core::SigningKey;
use askee_core::signal::{self, Statement};
use askee_core::signing::{canonical_json, sha256};
use askee_core::wire::v1::ParticipationSignal;
use qrcode::QrCode;
use qrcode::render::{svg, unicode};

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("domain {domain:?}: {cause}")]
    Domain {
        domain: String,
        cause: signal::Rejection,
    },
    #[error("the statement does not fit a qr code: {0}")]
    Qr(#[from] qrcode::types::QrError),
    #[error("cannot encode the png: {0}")]
    Png(#[from] image::ImageError),
}

/// Everything the volunteer publishes, from one signature.
#[derive(Debug, Clone)]
pub struct Published {
    pub signal: ParticipationSignal,
    /// `_askee.<domain>.`, when a domain was given.
    pub txt_name: Option<String>,
    /// The record's text (publish it as one TXT record; DNS tools split it
    /// into strings of at most 255 bytes).
    pub txt_record: Option<String>,
    /// A zone-file line with the text already split and quoted.
    pub zone_line: Option<String>,
    /// The well-known document, when a domain was given.
    pub well_known_json: Option<String>,
    /// The `askee:participate?…` URI the QR code carries.
    pub uri: String,
}

/// base64url SHA-256 of the canonical JSON of declared capabilities.
pub fn capabilities_digest(capabilities: &serde_json::Value) -> String {
    askee_core::b64::encode(sha256(&canonical_json(capabilities)))
}

pub fn publish(
    key: &SigningKey,
    domain: Option<&str>,
    coordinator: Option<&str>,
    capabilities: Option<&serde_json::Value>,
    now: i64,
) -> Result<Published, SignalError> {
    let domain = domain
        .map(|d| {
            signal::normalize_domain(d).map_err(|cause| SignalError::Domain {
                domain: d.to_owned(),
                cause,
            })
        })
        .transpose()?;
    let signal = signal::sign(
        key,
        &Statement {
            domain: domain.clone(),
            capabilities: capabilities.map(capabilities_digest),
            coordinator: coordinator.map(str::to_owned),
            timestamp: now,
        },
    );
    let txt_record = domain.as_ref().map(|_| signal::to_txt(&signal));
    let zone_line = domain.as_ref().zip(txt_record.as_ref()).map(|(d, t)| {
        let strings: Vec<String> = signal::txt_strings(t)
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect();
        format!("{}. 3600 IN TXT {}", signal::txt_name(d), strings.join(" "))
    });
    let well_known_json = signal::to_document(&signal)
        .map(|doc| serde_json::to_string_pretty(&doc).expect("document serialises") + "\n");
    Ok(Published {
        txt_name: domain.as_ref().map(|d| format!("{}.", signal::txt_name(d))),
        txt_record,
        zone_line,
        well_known_json,
        uri: signal::to_uri(&signal),
        signal,
    })
}

fn code(uri: &str) -> Result<QrCode, SignalError> {
    Ok(QrCode::new(uri.as_bytes())?)
}

/// The QR code drawn with Unicode half blocks, for a terminal.
pub fn qr_terminal(uri: &str) -> Result<String, SignalError> {
    Ok(code(uri)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

pub fn qr_svg(uri: &str) -> Result<String, SignalError> {
    Ok(code(uri)?
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build())
}

pub fn qr_png(uri: &str) -> Result<Vec<u8>, SignalError> {
    let image = code(uri)?
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// `askee-agent signal`: opt in to discovery by publishing a signed
/// participation signal.
#[derive(Debug, Clone, clap::Args)]
pub struct SignalArgs {
    /// Your domain: prints the DNS TXT record for `_askee.<domain>` and
    /// writes the well-known document. Leave out for a QR code only.
    #[arg(long)]
    pub domain: Option<String>,
    /// Coordinator you prefer (an https URL), carried as a hint.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// JSON file describing the capabilities you offer; its digest is signed.
    #[arg(long)]
    pub capabilities: Option<std::path::PathBuf>,
    /// Directory for `askee-participation` (the well-known document) and
    /// `askee-participation.png` / `.svg` (the QR code).
    #[arg(long, default_value = ".")]
    pub out: std::path::PathBuf,
    /// Do not draw the QR code in the terminal.
    #[arg(long)]
    pub no_terminal_qr: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SignalCommandError {
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("cannot read capabilities {path}: {cause}")]
    Capabilities {
        path: std::path::PathBuf,
        cause: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn write(path: std::path::PathBuf, bytes: &[u8]) -> Result<std::path::PathBuf, SignalCommandError> {
    std::fs::write(&path, bytes).map_err(|source| SignalCommandError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Runs the command and returns what to print.
pub fn run(key: &SigningKey, args: &SignalArgs, now: i64) -> Result<String, SignalCommandError> {
    let capabilities = args
        .capabilities
        .as_ref()
        .map(|path| {
            std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|cause| SignalCommandError::Capabilities {
                    path: path.clone(),
                    cause,
                })
        })
        .transpose()?;
    let p = publish(
        key,
        args.domain.as_deref(),
        args.coordinator.as_deref(),
        capabilities.as_ref(),
        now,
    )?;
    let mut out = String::new();
    if let (Some(name), Some(line), Some(json)) = (&p.txt_name, &p.zone_line, &p.well_known_json) {
        let path = write(args.out.join("askee-participation"), json.as_bytes())?;
        out.push_str(&format!(
            "1. Publish this DNS TXT record at {name}\n   (exactly one v=1 record; zone-file form below)\n\n{line}\n\n\
             2. Or serve {} at https://{}{} with content-type application/json.\n   \
             Where both exist they must agree.\n\n",
            path.display(),
            p.signal.domain.as_deref().unwrap_or(""),
            signal::WELL_KNOWN_PATH
        ));
    }
    let png = write(args.out.join("askee-participation.png"), &qr_png(&p.uri)?)?;
    let svg = write(
        args.out.join("askee-participation.svg"),
        qr_svg(&p.uri)?.as_bytes(),
    )?;
    out.push_str(&format!(
        "QR code (for an operator to scan or upload): {} and {}\n{}\n",
        png.display(),
        svg.display(),
        p.uri
    ));
    if !args.no_terminal_qr {
        out.push('\n');
        out.push_str(&qr_terminal(&p.uri)?);
        out.push('\n');
    }
    out.push_str("\nTo withdraw, remove the record and the document (or publish consent=off).\n");
    Ok(out)
}
