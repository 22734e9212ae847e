//! A real authoritative DNS server on loopback: NSD (Debian's `nsd`
//! package) serving one zone from a temp directory, for the discovery
//! crawler's tests and benchmark.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nsd {
    pub addr: SocketAddr,
    pub zone: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A zone file for `zone` with the given records (each a zone-file line
/// relative to the origin, such as `_askee.alpha IN TXT "v=1;…"`).
pub fn zone_file(zone: &str, serial: u32, records: &[String]) -> String {
    let mut out = format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ IN SOA ns.{zone}. hostmaster.{zone}. ({serial} 3600 600 86400 60)\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
    );
    for r in records {
        out.push_str(r);
        out.push('\n');
    }
    out
}

/// Quotes a TXT record's text as zone-file character-strings of at most
/// 255 bytes each.
pub fn txt_rdata(text: &str) -> String {
    text.as_bytes()
        .chunks(255)
        .map(|c| {
            let s = String::from_utf8_lossy(c);
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Nsd {
    /// Starts NSD on a free loopback port serving `zone_text` as `zone`,
    /// and waits until it answers.
    pub fn start(zone: &str, zone_text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_udp_port();
        let mut nsd = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone: zone.to_owned(),
            dir,
            child: None,
        };
        nsd.serve(zone_text);
        nsd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn serve(&mut self, zone_text: &str) {
        let d = self.dir.path().display();
        std::fs::write(self.path("zone"), zone_text).expect("write zone");
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 0\n  hide-version: yes\n  tcp-count: 200\n  round-robin: no\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: \"{zone}\"\n  zonefile: \"{d}/zone\"\n",
            port = self.addr.port(),
            zone = self.zone,
        );
        std::fs::write(self.path("nsd.conf"), conf).expect("write nsd.conf");
        let child = Command::new(nsd_binary())
            // Its own process group, so `stop` reaches the server and xfrd
            // processes NSD forks, not only the main one.
            .process_group(0)
            .arg("-d")
            .arg("-c")
            .arg(self.path("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd (Debian package nsd; see tests/setup.d/discovery.sh)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Replaces the zone: stops NSD and starts it again on the same port
    /// with the new zone, so no answer from the old zone can follow.
    pub fn replace_zone(&mut self, zone_text: &str) {
        self.stop();
        self.serve(zone_text);
    }

    /// Stops NSD (a DNS server that no longer answers). Killing only the
    /// main process left its forked server answering on the port for a
    /// while, so the whole process group goes, and `stop` returns once the
    /// port is free.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: kill(2) takes plain integers; a negative pid signals
            // the process group `serve` created for this NSD alone.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(30);
            while UdpSocket::bind(self.addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nsd's port {} still in use 30 s after it was killed",
                    self.addr
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("nsd.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let query = soa_query(&self.zone);
        let mut buf = [0u8; 512];
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nsd exited with {status}: {}", self.log());
            }
            let _ = socket.send_to(&query, self.addr);
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && n >= 12
                && buf[..2] == query[..2]
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nsd did not answer within 60 s: {}",
                self.log()
            );
        }
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nsd_binary() -> PathBuf {
    ["/usr/sbin/nsd", "/usr/local/sbin/nsd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nsd"))
}

/// A UDP port on loopback that was free a moment ago (and TCP too).
fn free_udp_port() -> u16 {
    loop {
        let port = crate::free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A minimal DNS query for the zone's SOA record.
fn soa_query(zone: &str) -> Vec<u8> {
    let mut q = vec![0x4a, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in zone.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 6, 0, 1]);
    q
}

/// A generated zone `zone` with `n` domains `d<i>.<zone>`, of which every
/// `every`-th has a signed `consent=ready` TXT record (the key for domain
/// i is derived from i). Returns the zone text, every domain, and the
/// opted-in ones.
pub fn generated_zone(
    zone: &str,
    n: usize,
    every: usize,
    now: i64,
) -> (String, Vec<String>, Vec<String>) {
    let mut records = Vec::with_capacity(n / every.max(1) + 1);
    let mut domains = Vec::with_capacity(n);
    let mut opted = Vec::new();
    for i in 0..n {
        let domain = format!("d{i}.{zone}");
        if every > 0 && i % every == 0 {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            seed[31] = 0xa5;
            let key = askee_core::SigningKey::from_bytes(&seed);
            let signal = askee_core::signal::sign(
                &key,
                &askee_core::signal::Statement {
                    domain: Some(domain.clone()),
                    capabilities: None,
                    coordinator: None,
                    timestamp: now - 60,
                },
            );
            records.push(format!(
                "_askee.d{i} IN TXT {}",
                txt_rdata(&askee_core::signal::to_txt(&signal))
            ));
            opted.push(domain.clone());
        }
        domains.push(domain);
    }
    (zone_file(zone, 1, &records), domains, opted)
}
