//! A real headless Chromium driven through chromedriver with the W3C
//! WebDriver JSON protocol (plain HTTP on loopback, no WebDriver crate):
//! navigation, script evaluation, keyboard input through the Actions API
//! (Tab, Space, Enter and text, never clicks) and PNG screenshots.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// W3C key codes.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";
pub const SPACE: &str = " ";
pub const CONTROL: &str = "\u{E009}";
pub const SHIFT: &str = "\u{E008}";

/// Where screenshots go: `$ASKEE_ARTIFACTS_DIR`, else
/// `target/browser-artifacts/` in the workspace.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("ASKEE_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/browser-artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// Chromium flags for a closed machine: no sandbox (root in CI), no GPU, no
/// network chatter of its own, a fresh profile.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    pub async fn start() -> Self {
        let port = crate::free_port();
        let driver = Command::new(
            std::env::var("ASKEE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
        )
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver (install chromium-driver: tests/setup.d/browser.sh)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let profile = tempfile::tempdir().expect("chromium profile dir");
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let binary = std::env::var("ASKEE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": chromium_args(profile.path())}
        }}});
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("a webdriver session id")
            .to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.expect("webdriver answers json");
        assert!(
            status.is_success(),
            "webdriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.path("/url"), Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs an async script: it must call `arguments[arguments.length - 1]`
    /// with its answer.
    pub async fn eval_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.path("/execute/async"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Presses and releases each key in turn (a W3C key action sequence).
    pub async fn keys(&self, keys: &[&str]) {
        let mut actions = Vec::new();
        for k in keys {
            actions.push(json!({"type": "keyDown", "value": k}));
            actions.push(json!({"type": "keyUp", "value": k}));
        }
        self.key_actions(actions).await;
    }

    /// Types `text` character by character.
    pub async fn type_text(&self, text: &str) {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        self.keys(&refs).await;
    }

    /// Ctrl+A: selects the focused field's content (typing then replaces it).
    pub async fn select_all(&self) {
        self.key_actions(vec![
            json!({"type": "keyDown", "value": CONTROL}),
            json!({"type": "keyDown", "value": "a"}),
            json!({"type": "keyUp", "value": "a"}),
            json!({"type": "keyUp", "value": CONTROL}),
        ])
        .await;
    }

    async fn key_actions(&self, actions: Vec<Value>) {
        self.call(
            "POST",
            &self.path("/actions"),
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    /// The id of the focused element (empty when none has one).
    pub async fn focused_id(&self) -> String {
        self.eval(
            "return document.activeElement ? (document.activeElement.id || '') : '';",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Presses Tab until the element matching `selector` has the focus, as a
    /// keyboard user would; fails after `max` presses.
    pub async fn tab_to(&self, selector: &str, max: usize) {
        for _ in 0..max {
            let there = self
                .eval(
                    "const e = document.querySelector(arguments[0]); return !!e && document.activeElement === e;",
                    json!([selector]),
                )
                .await;
            if there == json!(true) {
                return;
            }
            self.keys(&[TAB]).await;
        }
        panic!(
            "{selector} never got the focus in {max} Tab presses (focus is on #{})",
            self.focused_id().await
        );
    }

    /// Polls `condition` (a script returning a truthy value when met) until
    /// it holds or `limit` passes; answers the value.
    pub async fn wait_for(&self, what: &str, condition: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(condition, json!([])).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let text = self
                    .eval("return document.body.innerText;", json!([]))
                    .await;
                panic!(
                    "timed out waiting for {what}; the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.eval("return document.body.innerText;", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG screenshot of the page as `name` in the artifacts
    /// directory and answers its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.call("GET", &self.path("/screenshot"), None).await;
        let png = base64_decode(shot.as_str().expect("screenshot is base64"));
        let path = artifacts_dir().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session stops Chromium; then chromedriver itself.
        if !self.session.is_empty() {
            // A blocking DELETE over a plain socket: Drop cannot await.
            let addr = self.base.trim_start_matches("http://").to_owned();
            if let Ok(mut conn) = TcpStream::connect(&addr) {
                use std::io::{Read as _, Write as _};
                let _ = conn.set_read_timeout(Some(Duration::from_secs(15)));
                let _ = write!(
                    conn,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (with padding), as WebDriver screenshots come.
fn base64_decode(text: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = val(c).expect("screenshot is standard base64");
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Whether `bytes` start with the PNG signature and an IHDR chunk of a
/// non-empty image.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.len() > 33
        && bytes.starts_with(b"\x89PNG\r\n\x1a\n")
        && &bytes[12..16] == b"IHDR"
        && u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) > 0
        && u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_standard_alphabet_with_padding() {
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
        assert_eq!(base64_decode("+/8="), vec![0xfb, 0xff]);
        assert_eq!(base64_decode(""), Vec::<u8>::new());
    }

    #[test]
    fn png_signature_and_size() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 3]);
        png.extend_from_slice(&[0; 10]);
        assert!(is_png(&png));
        png[19] = 0;
        assert!(!is_png(&png));
        assert!(!is_png(b"GIF89a"));
    }
}
