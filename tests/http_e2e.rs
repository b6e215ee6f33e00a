//! The real `kho serve` on a free loopback port, driven by a real HTTP client and by the `kho` CLI:
//! the users' journey across a restart, and a SIGKILL in the middle of concurrent deposits and reads
//! after which every acknowledged deposit and every served read's access entry is still there. Raw
//! sockets play the clients that misbehave: bodies that never end, slow and silent connections.

mod common;
mod webdriver;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use kho::ids::{now_unix_ms, Digest, Title};
use kho::statement::{RecordRevocation, Signed};

const PURPOSE: &str = "H26.99-240301-0001";

struct Server {
    child: Child,
    base: String,
}

/// Writes the keys, the certificate and the config a server needs into `dir`.
fn prepare(dir: &Path) -> PathBuf {
    let anchor = key(1);
    kho::keys::write_public_key(&dir.join("anchor.pub.pem"), &anchor.public_key()).expect("anchor");
    kho::keys::write_secret_key(&dir.join("issuer.pem"), &key(2)).expect("issuer key");
    std::fs::write(dir.join("issuer.kho-cert"), current_certificate(&anchor, AGENCY, &key(2))).expect("certificate");
    let config = dir.join("kho.toml");
    let text = format!(
        "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\ntrust_anchors = [{:?}]\nshutdown_grace_seconds = 5\n[auth]\ndev_mode = true\n",
        dir.join("data"),
        dir.join("anchor.pub.pem")
    );
    std::fs::write(&config, text).expect("config");
    config
}

impl Server {
    fn start(config: &Path) -> Server {
        Server::start_with(config, &[])
    }

    /// Starts with `KHO_*` overrides of the config file.
    fn start_with(config: &Path, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kho"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kho serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("kho serve printed its address").expect("line");
            if let Some(address) = line.strip_prefix("kho listening on ") {
                break address.to_owned();
            }
        };
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw TCP connection to the server, with TCP_NODELAY as HTTP clients set it.
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.base.trim_start_matches("http://")).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        stream
    }

    /// SIGTERM, and wait for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "kho serve exited with {status} after SIGTERM");
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "kho serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn kho(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kho")).args(args).env("KHO_CONFIG", config).output().expect("run kho")
}

fn token(config: &Path, role: &str, extra: &[&str]) -> String {
    let output = kho(config, &[&["dev-token", "--role", role, "--subject", &format!("{role}-e2e")], extra].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}

/// As admin, adds the issuer certificate `prepare` wrote.
fn certify_issuer(server: &Server, config: &Path) {
    let admin = token(config, "admin", &[]);
    let certificate = std::fs::read(config.with_file_name("issuer.kho-cert")).expect("certificate");
    let status = agent()
        .post(server.url("/v1/certificates"))
        .header("Authorization", format!("Bearer {admin}"))
        .send(&certificate[..])
        .expect("add certificate")
        .status();
    assert_eq!(status.as_u16(), 201);
}

/// As the issuer (key 2, its token `issuer`), revokes record `id` over HTTP.
fn revoke(server: &Server, issuer: &str, id: &str) {
    let revocation = Signed::sign(
        RecordRevocation {
            record: Digest::parse_hex("id", id).expect("id"),
            issuer_agency: code(AGENCY),
            reason: Title::parse("issued in error").expect("reason"),
            signed_at_ms: now_unix_ms(),
        },
        &key(2),
    );
    let response = agent()
        .post(server.url(&format!("/v1/records/{id}/revocation")))
        .header("Authorization", format!("Bearer {issuer}"))
        .send(&revocation.to_envelope()[..])
        .expect("revoke");
    assert_eq!(response.status().as_u16(), 201);
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn deposit_fetch_see_the_access_revoke_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = prepare(d);
    let server = Server::start(&config);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let officer = token(&config, "officer", &["--agency", "000.00.00.H01"]);
    let citizen = token(&config, "citizen", &["--owner", OWNER]);

    let content = document(300_000, 42, true);
    std::fs::write(d.join("birth.pdf"), &content).expect("document");
    let client = |token: &str| vec!["--server".to_owned(), server.base.clone(), "--token".to_owned(), token.to_owned()];
    let deposit = kho(
        &config,
        &[
            vec!["deposit", "--key"],
            vec![d.join("issuer.pem").to_str().expect("path")],
            vec!["--owner", OWNER, "--type", "GKS", "--title", "Giấy khai sinh", "--agency", AGENCY],
            vec!["--procedure", "1.001193", "--dossier", "H26.22-240301-0001"],
            client(&issuer).iter().map(String::as_str).collect(),
            vec![d.join("birth.pdf").to_str().expect("path")],
        ]
        .concat(),
    );
    assert!(deposit.status.success(), "{}", text(&deposit));
    let out = text(&deposit);
    let id =
        out.split("as record ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("record id").to_owned();

    // The officer without a purpose is denied (exit 4); with one, gets the verified document.
    let got = d.join("got.pdf");
    let get = |token: &str, purpose: Option<&str>| {
        let mut args: Vec<String> = vec!["get".into(), id.clone(), "--out".into(), got.display().to_string()];
        args.extend(client(token));
        if let Some(purpose) = purpose {
            args.extend(["--purpose".into(), purpose.into()]);
        }
        kho(&config, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let denied = get(&officer, None);
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied));
    assert!(text(&denied).contains("purpose_required"));
    let allowed = get(&officer, Some(PURPOSE));
    assert!(allowed.status.success(), "{}", text(&allowed));
    assert_eq!(std::fs::read(&got).expect("downloaded"), content);
    // The record and receipt are kept beside it, and the download verifies offline by the vault's rule.
    let vault_public = d.join("data").join("vault-key.pub.pem");
    let path = |p: &std::path::Path| p.display().to_string();
    let verified = kho(
        &config,
        &[
            "verify",
            &path(&got),
            "--certificate",
            &path(&d.join("issuer.kho-cert")),
            "--anchor",
            &path(&d.join("anchor.pub.pem")),
            "--vault-key",
            &path(&vault_public),
        ],
    );
    assert!(verified.status.success() && text(&verified).contains("VERIFIED"), "{}", text(&verified));
    assert!(d.join("birth.pdf.kho-receipt").is_file(), "kho deposit keeps the receipt beside the document");

    // The citizen sees both attempts, with the officer's purpose and the outcome.
    let args: Vec<String> = [vec!["access-log".to_owned(), OWNER.to_owned()], client(&citizen)].concat();
    let log = kho(&config, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let log = text(&log);
    assert!(log.contains("read_content") && log.contains(PURPOSE) && log.contains("allowed"), "{log}");
    assert!(log.contains("denied purpose_required"), "{log}");

    // The server checkpoints on its own: within seconds a signed checkpoint covers the deposit, and its
    // inclusion proof verifies here against the vault key alone.
    let index: u64 = out
        .split("log entry #")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("log index in the deposit's output");
    let vault_key = d.join("data").join("vault-key.pub.pem");
    let log_args = |extra: &[&str]| -> Vec<String> {
        [
            extra.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            vec!["--server".into(), server.base.clone(), "--vault-key".into(), vault_key.display().to_string()],
        ]
        .concat()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first_size = loop {
        let checkpoint = kho(&config, &log_args(&["checkpoint"]).iter().map(String::as_str).collect::<Vec<_>>());
        let size = text(&checkpoint).lines().nth(1).and_then(|line| line.parse::<u64>().ok());
        if checkpoint.status.success() && size.is_some_and(|size| size > index) {
            break size.expect("size");
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint covered entry {index}: {}", text(&checkpoint));
        std::thread::sleep(Duration::from_millis(100));
    };
    let index_text = index.to_string();
    let proof =
        kho(&config, &log_args(&["proof", "inclusion", &index_text]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(proof.status.success() && text(&proof).contains("verified: entry"), "{}", text(&proof));
    let other_key = d.join("anchor.pub.pem");
    let forged =
        kho(&config, &["checkpoint", "--server", &server.base, "--vault-key", other_key.to_str().expect("path")]);
    assert_eq!(forged.status.code(), Some(3), "a checkpoint checked under another key fails: {}", text(&forged));

    // The citizen checks that their access log is complete: once a checkpoint covers the officer's
    // three attempts (denied; then the record and its content), the owner's chain (the deposit and
    // the accesses) walks back from the head the owner map commits to, and the access events in it
    // are exactly the three listed.
    let verify_args = |key: &std::path::Path| -> Vec<String> {
        [
            vec!["access-log".to_owned(), OWNER.to_owned(), "--verify".into(), "--vault-key".into()],
            vec![key.display().to_string()],
            client(&citizen),
        ]
        .concat()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let verified = kho(&config, &verify_args(&vault_key).iter().map(String::as_str).collect::<Vec<_>>());
        assert!(verified.status.success(), "{}", text(&verified));
        if text(&verified).contains("access events 3, all listed; records and status changes 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the accesses were never covered: {}", text(&verified));
        std::thread::sleep(Duration::from_millis(100));
    }
    let forged = kho(&config, &verify_args(&other_key).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(forged.status.code(), Some(3), "checked under another key: {}", text(&forged));

    // The issuer revokes; everyone sees the new status.
    revoke(&server, &issuer, &id);

    // Restart: everything is still there. Meanwhile the anchor certifies the vault key: from the next
    // start it is served, and checkpoints verify from the anchor alone.
    server.stop();
    kho::keys::write_secret_key(&d.join("anchor.pem"), &key(1)).expect("anchor key");
    let certified = kho(
        &config,
        &["certify-vault", "--anchor-key", &path(&d.join("anchor.pem")), "--data-dir", &path(&d.join("data"))],
    );
    assert!(certified.status.success(), "{}", text(&certified));
    let server = Server::start(&config);
    let served = agent().get(server.url("/v1/vault-certificate")).call().expect("vault certificate");
    assert_eq!(served.status().as_u16(), 200);
    let from_anchor = kho(
        &config,
        &[
            "checkpoint",
            "--server",
            &server.base,
            "--vault-certificate",
            &path(&d.join("data").join("vault-key.kho-cert")),
            "--anchor",
            &path(&d.join("anchor.pub.pem")),
        ],
    );
    assert!(from_anchor.status.success() && text(&from_anchor).contains("verified: log"), "{}", text(&from_anchor));
    let mut response = agent()
        .get(server.url(&format!("/v1/records/{id}")))
        .header("Authorization", format!("Bearer {citizen}"))
        .call()
        .expect("get record");
    let view: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(view["status"]["status"], "revoked");
    let mut response = agent()
        .get(server.url(&format!("/v1/records/{id}/content")))
        .header("Authorization", format!("Bearer {citizen}"))
        .call()
        .expect("get content");
    assert_eq!(response.body_mut().with_config().limit(1 << 20).read_to_vec().expect("content"), content);
    let mut response = agent()
        .get(server.url(&format!("/v1/owners/{OWNER}/access-log")))
        .header("Authorization", format!("Bearer {citizen}"))
        .call()
        .expect("access log");
    let log: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert!(log["entries"].as_array().expect("entries").len() >= 3, "{log}");
    let listed = kho(&config, &["ls", OWNER, "--server", &server.base, "--token", &citizen]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains(&id) && text(&listed).contains("revoked"), "{}", text(&listed));
    let filtered = kho(&config, &["ls", OWNER, "--status", "valid", "--server", &server.base, "--token", &citizen]);
    assert!(!text(&filtered).contains(&id), "{}", text(&filtered));

    // After the restart the log still extends the checkpoint signed before it (the shutdown signed
    // a last one covering the revocation).
    let first_size = first_size.to_string();
    let consistency = kho(
        &config,
        &["proof", "consistency", &first_size, "--server", &server.base, "--vault-key", vault_key.to_str().expect("p")],
    );
    assert!(consistency.status.success() && text(&consistency).contains("verified: log"), "{}", text(&consistency));
    server.stop();
}

#[test]
fn sigkill_during_deposits_and_reads_loses_no_acknowledged_deposit_or_access_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let mut server = Server::start(&config);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let officer = token(&config, "officer", &["--agency", "000.00.00.H01"]);
    let citizen = token(&config, "citizen", &["--owner", OWNER]);

    let acknowledged: Mutex<Vec<(Digest, Vec<u8>)>> = Mutex::new(Vec::new());
    let served: Mutex<Vec<Digest>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for writer in 0..2u64 {
            let (acknowledged, stop, issuer, base) = (&acknowledged, &stop, &issuer, server.base.clone());
            scope.spawn(move || {
                let issuer_key = key(2);
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let content = document(2_000 + (n % 7) as usize * 40_000, writer * 1_000_000 + n, n % 2 == 0);
                    let envelope = sign(record_for(&content, OWNER, AGENCY), &issuer_key);
                    let result = agent()
                        .post(format!("{base}/v1/records"))
                        .header("Authorization", format!("Bearer {issuer}"))
                        .header("Kho-Record", base64::engine::general_purpose::STANDARD.encode(&envelope))
                        .send(&content[..]);
                    match result {
                        Ok(response) if response.status().as_u16() == 201 => {
                            let id = Signed::<kho::statement::Record>::from_envelope(&envelope).expect("record").id();
                            acknowledged.lock().expect("lock").push((id, content));
                        }
                        _ => return, // the server is gone
                    }
                }
            });
        }
        let (acknowledged, served, stop, officer, base) =
            (&acknowledged, &served, &stop, &officer, server.base.clone());
        scope.spawn(move || {
            for n in 0usize.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let target = {
                    let done = acknowledged.lock().expect("lock");
                    if done.is_empty() {
                        None
                    } else {
                        Some(done[n % done.len()].clone())
                    }
                };
                let Some((id, content)) = target else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let result = agent()
                    .get(format!("{base}/v1/records/{id}/content"))
                    .header("Authorization", format!("Bearer {officer}"))
                    .header("Kho-Purpose", PURPOSE)
                    .call();
                let Ok(mut response) = result else { return };
                if response.status().as_u16() != 200 {
                    return;
                }
                match response.body_mut().with_config().limit(1 << 22).read_to_vec() {
                    Ok(bytes) => {
                        assert_eq!(bytes, content, "a served document must be exact");
                        served.lock().expect("lock").push(id);
                    }
                    Err(_) => return,
                }
            }
        });
        // Kill right after the k-th acknowledged deposit (k varies by run), once reads are being served:
        // deposits and reads are then in flight.
        let kill_after = 10 + (now_unix_ms() % 30) as usize;
        let waiting = Instant::now();
        while acknowledged.lock().expect("lock").len() < kill_after || served.lock().expect("lock").is_empty() {
            assert!(waiting.elapsed() < Duration::from_secs(60), "the load never reached {kill_after} deposits");
            std::thread::sleep(Duration::from_millis(1));
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reap");
        stop.store(true, Ordering::Relaxed);
    });
    let acknowledged = acknowledged.into_inner().expect("lock");
    let served = served.into_inner().expect("lock");
    eprintln!("killed after {} acknowledged deposits and {} served reads", acknowledged.len(), served.len());
    assert!(!served.is_empty(), "reads were served before the kill");

    let server = Server::start(&config);
    let auditor = token(&config, "auditor", &[]);
    for (id, content) in &acknowledged {
        let mut response = agent()
            .get(server.url(&format!("/v1/records/{id}/content")))
            .header("Authorization", format!("Bearer {auditor}"))
            .header("Kho-Purpose", PURPOSE)
            .call()
            .expect("get");
        assert_eq!(response.status().as_u16(), 200, "acknowledged deposit {id} is lost");
        assert_eq!(&response.body_mut().with_config().limit(1 << 22).read_to_vec().expect("body"), content);
    }
    // Every served read left an access entry before its first byte.
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = agent()
            .get(server.url(&format!("/v1/owners/{OWNER}/access-log")))
            .header("Authorization", format!("Bearer {citizen}"))
            .query("limit", "1000");
        if let Some(cursor) = &cursor {
            request = request.query("cursor", cursor);
        }
        let mut response = request.call().expect("access log");
        let page: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
        entries.extend(page["entries"].as_array().expect("entries").clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for id in &served {
        let logged = entries
            .iter()
            .filter(|e| e["record"] == id.to_hex() && e["subject"] == "officer-e2e" && e["action"] == "read_content")
            .count();
        let reads = served.iter().filter(|s| *s == id).count();
        assert!(logged >= reads, "{reads} served reads of {id} but {logged} access entries");
    }
    server.stop();
}

/// Sends `content` slowly, signalling once half of it has gone out.
struct SlowReader {
    content: Vec<u8>,
    position: usize,
    halfway: Option<std::sync::mpsc::Sender<()>>,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position >= self.content.len() {
            return Ok(0);
        }
        if self.position >= self.content.len() / 2 {
            if let Some(halfway) = self.halfway.take() {
                let _ = halfway.send(());
                std::thread::sleep(Duration::from_millis(500)); // SIGTERM lands now
            }
        }
        let count = buf.len().min(16 * 1024).min(self.content.len() - self.position);
        buf[..count].copy_from_slice(&self.content[self.position..self.position + count]);
        self.position += count;
        std::thread::sleep(Duration::from_millis(5));
        Ok(count)
    }
}

#[test]
fn sigterm_lets_an_in_flight_deposit_finish_and_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start(&config);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);

    let content = document(600_000, 3, false);
    let envelope = sign(record_for(&content, OWNER, AGENCY), &key(2));
    let id = Signed::<kho::statement::Record>::from_envelope(&envelope).expect("record").id();
    let (halfway_sender, halfway) = std::sync::mpsc::channel();
    let url = server.url("/v1/records");
    let upload = std::thread::spawn(move || {
        let mut reader = SlowReader { content, position: 0, halfway: Some(halfway_sender) };
        agent()
            .post(url)
            .header("Authorization", format!("Bearer {issuer}"))
            .header("Kho-Record", base64::engine::general_purpose::STANDARD.encode(&envelope))
            .send(ureq::SendBody::from_reader(&mut reader))
            .map(|response| response.status().as_u16())
    });
    halfway.recv().expect("the upload reached halfway");
    server.stop(); // SIGTERM mid-upload; returns once the server has exited
    assert_eq!(upload.join().expect("upload thread").expect("response"), 201, "the in-flight deposit was acknowledged");

    let server = Server::start(&config);
    let citizen = token(&config, "citizen", &["--owner", OWNER]);
    let status = agent()
        .get(server.url(&format!("/v1/records/{id}")))
        .header("Authorization", format!("Bearer {citizen}"))
        .call()
        .expect("get record")
        .status();
    assert_eq!(status.as_u16(), 200, "the acknowledged deposit survived the shutdown");
    server.stop();
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body). `None` if the connection
/// closed first.
fn read_response(stream: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).expect("ascii head");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .map_or(0, |v| v.parse().expect("length"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// Waits until the server closes `stream`; returns how long that took from `since`.
fn wait_closed(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => continue, // an error response before the close is fine
        }
    }
}

/// Regression: a deposit whose body never ended (Content-Length larger than what was sent, or a chunked
/// body without its last chunk) was answered 408 with an empty body, yet committed with a receipt,
/// because the upload worker took the dropped channel for the end of the body.
#[test]
fn unended_and_overlong_bodies_and_oversized_headers_get_json_errors_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start_with(&config, &[("KHO_REQUEST_TIMEOUT_SECONDS", "2")]);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let citizen = token(&config, "citizen", &["--owner", OWNER]);
    let content = document(90_000, 77, true);
    let envelope = sign(record_for(&content, OWNER, AGENCY), &key(2));
    let id = Signed::<kho::statement::Record>::from_envelope(&envelope).expect("record").id();
    let record_header = base64::engine::general_purpose::STANDARD.encode(&envelope);
    let head = |framing: &str| {
        format!(
            "POST /v1/records HTTP/1.1\r\nHost: kho\r\nAuthorization: Bearer {issuer}\r\nKho-Record: {record_header}\r\n{framing}\r\n"
        )
    };
    let record_status = || {
        agent()
            .get(server.url(&format!("/v1/records/{id}")))
            .header("Authorization", format!("Bearer {citizen}"))
            .call()
            .expect("get record")
            .status()
            .as_u16()
    };

    // Every byte of the document, then a body that does not end.
    let mut chunk_frame = format!("{:x}\r\n", content.len()).into_bytes();
    chunk_frame.extend_from_slice(&content);
    chunk_frame.extend_from_slice(b"\r\n");
    let unended: [(String, Vec<u8>); 2] = [
        (head(&format!("Content-Length: {}\r\n", content.len() + 100)), content.clone()),
        (head("Transfer-Encoding: chunked\r\n"), chunk_frame),
    ];
    for (request_head, body) in unended {
        let mut stream = server.connect();
        let started = Instant::now();
        stream.write_all(request_head.as_bytes()).expect("head");
        stream.write_all(&body).expect("body");
        let (status, answer) = read_response(&mut stream).expect("an answer before the close");
        assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON error");
        assert_eq!(answer["error"]["code"], "request_timeout");
        assert!(started.elapsed() >= Duration::from_millis(1900), "answered before the deadline");
        assert_eq!(record_status(), 404, "a deposit answered 408 must leave nothing");
    }

    // A body that runs past the record's size is rejected too.
    let mut stream = server.connect();
    stream.write_all(head(&format!("Content-Length: {}\r\n", content.len() + 10)).as_bytes()).expect("head");
    let mut longer = content.clone();
    longer.extend_from_slice(&[0; 10]);
    let _ = stream.write_all(&longer);
    let (status, answer) = read_response(&mut stream).expect("an answer");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(record_status(), 404);

    // Too many header fields, or too many bytes of them, reach Kho's own check through the real HTTP
    // parser and get the JSON shape; past the parser's own limit it answers a bare 431 itself.
    let many: String = (0..kho::http::REQUEST_HEADERS_MAX).map(|n| format!("X-Extra-{n}: 1\r\n")).collect();
    let large = format!("X-Large: {}\r\n", "a".repeat(kho::http::REQUEST_HEADER_BYTES_MAX));
    for extra in [many, large] {
        let mut stream = server.connect();
        stream.write_all(head(&format!("{extra}Content-Length: 0\r\n")).as_bytes()).expect("head");
        let (status, answer) = read_response(&mut stream).expect("an answer");
        assert_eq!(status, 431, "{}", String::from_utf8_lossy(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON error");
        assert_eq!(answer["error"]["code"], "headers_too_large");
    }
    let mut stream = server.connect();
    let beyond: String = (0..120).map(|n| format!("X-Extra-{n}: 1\r\n")).collect();
    stream.write_all(head(&format!("{beyond}Content-Length: 0\r\n")).as_bytes()).expect("head");
    assert_eq!(read_response(&mut stream).map(|(status, _)| status), Some(431), "the parser's own limit");
    assert_eq!(record_status(), 404);

    // The same record, sent whole, is accepted as new: nothing of the failed attempts was kept.
    let status = agent()
        .post(server.url("/v1/records"))
        .header("Authorization", format!("Bearer {issuer}"))
        .header("Kho-Record", &record_header)
        .send(&content[..])
        .expect("deposit")
        .status();
    assert_eq!(status.as_u16(), 201);
    assert_eq!(record_status(), 200);
    server.stop();
}

/// Regression: 200 slowloris and 50 silent connections stayed open indefinitely. Headers must arrive
/// within the header-read timeout, a connection that moves no bytes closes after the idle timeout, and
/// past the connection cap new clients wait until a slot frees.
#[test]
fn slow_silent_and_idle_connections_are_closed_and_open_connections_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start_with(
        &config,
        &[("KHO_HEADER_READ_TIMEOUT_SECONDS", "1"), ("KHO_IDLE_TIMEOUT_SECONDS", "2"), ("KHO_CONNECTIONS_MAX", "6")],
    );
    let admin = token(&config, "admin", &[]);
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    let slowloris: Vec<_> = (0..3)
        .map(|_| {
            let mut stream = server.connect();
            std::thread::spawn(move || {
                let started = Instant::now();
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: kho\r\n");
                // One header line every 200 ms: never idle, never done.
                for n in 0..50 {
                    std::thread::sleep(Duration::from_millis(200));
                    if stream.write_all(format!("X-Slow-{n}: a\r\n").as_bytes()).is_err() {
                        break;
                    }
                }
                wait_closed(&mut stream, started)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    // Six connections are open: a seventh is answered only once a slot frees.
    let mut seventh = server.connect();
    let asked = Instant::now();
    seventh.write_all(b"GET /healthz HTTP/1.1\r\nHost: kho\r\n\r\n").expect("request");
    let (status, _) = read_response(&mut seventh).expect("answered eventually");
    assert_eq!(status, 200);
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(500), "the seventh connection was served at once ({waited:?})");

    for stream in &mut silent {
        let closed = wait_closed(stream, opened);
        assert!(closed >= Duration::from_millis(900) && closed < Duration::from_secs(5), "silent: {closed:?}");
    }
    for thread in slowloris {
        let closed = thread.join().expect("slowloris thread");
        assert!(closed < Duration::from_secs(5), "a slowloris connection stayed open {closed:?}");
    }
    // A kept-alive connection that sends no next request is closed too.
    let idle_since = Instant::now();
    let closed = wait_closed(&mut seventh, idle_since);
    assert!(closed < Duration::from_secs(5), "an idle kept-alive connection stayed open {closed:?}");

    // A stalled body (headers done, then silence) is cut by the idle timeout, long before the request's.
    let mut stalled = server.connect();
    let started = Instant::now();
    let head = format!(
        "POST /v1/certificates HTTP/1.1\r\nHost: kho\r\nAuthorization: Bearer {admin}\r\nContent-Length: 1000\r\n\r\n"
    );
    stalled.write_all(head.as_bytes()).expect("head");
    stalled.write_all(&[0u8; 10]).expect("some body");
    let closed = wait_closed(&mut stalled, started);
    assert!(closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6), "stalled: {closed:?}");

    // The server still serves.
    let mut fresh = server.connect();
    fresh.write_all(b"GET /healthz HTTP/1.1\r\nHost: kho\r\n\r\n").expect("request");
    assert_eq!(read_response(&mut fresh).map(|(status, _)| status), Some(200));
    server.stop();
}

/// Regression: an officer's read of a 92-byte document took 42 ms at the median over a kept-alive
/// connection, because the server never set TCP_NODELAY and the response's second write waited for the
/// client's delayed ACK.
#[test]
fn a_small_read_over_a_kept_alive_connection_does_not_wait_for_a_delayed_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start(&config);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let officer = token(&config, "officer", &["--agency", "000.00.00.H01"]);
    let small = b"<ketqua><ma>H26.22-240301-0001</ma><trangthai>da cap</trangthai><ngay>2024-03-01</ngay></ketqua>";
    let mut timings_by_size = Vec::new();
    for content in [small[..92].to_vec(), document(65_536 + 92, 5, false)] {
        let envelope = sign(record_for(&content, OWNER, AGENCY), &key(2));
        let id = Signed::<kho::statement::Record>::from_envelope(&envelope).expect("record").id();
        let status = agent()
            .post(server.url("/v1/records"))
            .header("Authorization", format!("Bearer {issuer}"))
            .header("Kho-Record", base64::engine::general_purpose::STANDARD.encode(&envelope))
            .send(&content[..])
            .expect("deposit")
            .status();
        assert_eq!(status.as_u16(), 201);
        let mut stream = server.connect();
        let request = format!(
            "GET /v1/records/{id}/content HTTP/1.1\r\nHost: kho\r\nAuthorization: Bearer {officer}\r\nKho-Purpose: {PURPOSE}\r\n\r\n"
        );
        let mut timings = Vec::new();
        for _ in 0..21 {
            let started = Instant::now();
            stream.write_all(request.as_bytes()).expect("request");
            let (status, body) = read_response(&mut stream).expect("response on the kept-alive connection");
            timings.push(started.elapsed());
            assert_eq!(status, 200);
            assert!(body == content, "the document came back changed");
        }
        timings.sort();
        eprintln!(
            "{} bytes, logged reads over one connection: median {:?}, max {:?}",
            content.len(),
            timings[10],
            timings[20]
        );
        timings_by_size.push(timings[10]);
    }
    // Each read also fsyncs its access entry; a delayed-ACK stall alone would be about 40 ms.
    for median in timings_by_size {
        assert!(median < Duration::from_millis(25), "median read took {median:?}");
    }
    server.stop();
}

/// Rewrites one file of a bundle (same length, so the archive stays well-formed) with `change`.
fn rewrite_bundle(from: &Path, to: &Path, name: &str, change: impl Fn(&mut Vec<u8>)) {
    let mut archive = tar::Archive::new(std::fs::File::open(from).expect("bundle"));
    let mut builder = tar::Builder::new(std::fs::File::create(to).expect("copy"));
    let mut changed = false;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        if path == name {
            change(&mut bytes);
            changed = true;
        }
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        builder.append(&header, bytes.as_slice()).expect("append");
    }
    builder.finish().expect("finish");
    assert!(changed, "{name} is in the bundle");
}

/// The verdicts `kho verify --json` and the Python verifier give, by record id.
fn verdicts(config: &Path, bundle: &Path, trust: &[String]) -> (i32, serde_json::Value, i32, serde_json::Value) {
    let args: Vec<String> =
        [vec!["verify".to_owned(), bundle.display().to_string(), "--json".into()], trust.to_vec()].concat();
    let rust = kho(config, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let report: serde_json::Value = serde_json::from_slice(&rust.stdout).unwrap_or_else(|_| panic!("{}", text(&rust)));
    let by_id: serde_json::Map<String, serde_json::Value> = report["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| (d["id"].as_str().expect("id").to_owned(), d["verdict"].clone()))
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor/verify_bundle.py");
    let mut python = Command::new("python3");
    python.arg(script).arg(bundle);
    for pair in trust.chunks(2) {
        let key = kho::keys::read_public_key(Path::new(&pair[1])).expect("key");
        python.args([pair[0].as_str(), &hex::encode(key.raw_bytes())]);
    }
    let python = python.output().expect("python3 runs the auditor's bundle verifier");
    let summary = String::from_utf8_lossy(&python.stdout).lines().last().unwrap_or_default().to_owned();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap_or_else(|_| panic!("{}", text(&python)));
    (
        rust.status.code().unwrap_or(-1),
        serde_json::Value::Object(by_id),
        python.status.code().unwrap_or(-1),
        summary["documents"].clone(),
    )
}

#[test]
fn an_exported_store_verifies_offline_with_a_verdict_per_document_and_tampering_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = prepare(d);
    let server = Server::start(&config);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let officer = token(&config, "officer", &["--agency", "000.00.00.H01"]);
    let auditor = token(&config, "auditor", &[]);
    let citizen = token(&config, "citizen", &["--owner", OWNER]);
    let client = |token: &str| vec!["--server".to_owned(), server.base.clone(), "--token".to_owned(), token.to_owned()];
    let run = |args: Vec<String>| kho(&config, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let deposit = |name: &str, seed: u64, extra: &[&str]| -> String {
        std::fs::write(d.join(name), document(40_000 + seed as usize * 1000, seed, true)).expect("document");
        let args: Vec<String> = [
            vec!["deposit".into(), "--key".into(), d.join("issuer.pem").display().to_string()],
            ["--owner", OWNER, "--type", "GKS", "--title", name, "--agency", AGENCY, "--media-type", "application/pdf"]
                .map(String::from)
                .to_vec(),
            ["--procedure", "1.001193", "--dossier", "H26.22-240301-0001"].map(String::from).to_vec(),
            extra.iter().map(|s| (*s).to_owned()).collect(),
            client(&issuer),
            vec![d.join(name).display().to_string()],
        ]
        .concat();
        let output = run(args);
        assert!(output.status.success(), "{}", text(&output));
        text(&output).split("as record ").nth(1).and_then(|r| r.split_whitespace().next()).expect("id").to_owned()
    };
    let valid = deposit("valid.pdf", 1, &[]);
    let revoked = deposit("revoked.pdf", 2, &[]);
    let old = deposit("old.pdf", 3, &[]);
    let new = deposit("new.pdf", 4, &["--supersedes", &old]);
    let expired = deposit(
        "expired.pdf",
        5,
        &["--issued-on", "2020-01-01", "--valid-from", "2020-01-01", "--valid-until", "2021-01-01"],
    );
    revoke(&server, &issuer, &revoked);
    // An officer reads one document for a dossier; an officer may not export a whole store.
    let read = run([
        vec!["get".into(), valid.clone(), "--out".into(), d.join("got.pdf").display().to_string()],
        client(&officer),
        vec!["--purpose".into(), PURPOSE.into()],
    ]
    .concat());
    assert!(read.status.success(), "{}", text(&read));
    let refused = run([
        vec!["export".into(), OWNER.into(), "--out".into(), d.join("x.tar").display().to_string()],
        client(&officer),
        vec!["--purpose".into(), PURPOSE.into()],
    ]
    .concat());
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(!d.join("x.tar").exists() && !d.join("x.tar.partial").exists());

    // The citizen exports the store; it verifies offline from the anchor and the vault key.
    let store = d.join("store.tar");
    let exported =
        run([vec!["export".into(), OWNER.into(), "--out".into(), store.display().to_string()], client(&citizen)]
            .concat());
    assert!(exported.status.success(), "{}", text(&exported));
    assert!(text(&exported).contains("exported 5 records"), "{}", text(&exported));
    let trust = vec![
        "--anchor".to_owned(),
        d.join("anchor.pub.pem").display().to_string(),
        "--vault-key".to_owned(),
        d.join("data").join("vault-key.pub.pem").display().to_string(),
    ];
    let expected = serde_json::json!({
        valid.clone(): "valid", revoked.clone(): "revoked", old.clone(): "superseded", new.clone(): "valid",
        expired.clone(): "expired",
    });
    let (rust_code, rust, python_code, python) = verdicts(&config, &store, &trust);
    assert_eq!((rust_code, python_code), (0, 0));
    assert_eq!(rust, expected);
    assert_eq!(python, expected, "the Python verifier agrees");
    let human = run([vec!["verify".to_owned(), store.display().to_string()], trust.clone()].concat());
    let human = text(&human);
    assert!(human.contains("VERIFIED: 5 documents, 0 failed") && human.contains("complete through entry"), "{human}");
    assert!(human.contains("the access log holds exactly the owner's 3 access events"), "{human}");

    // One byte of one document: that document, and only it, is tampered.
    let tampered = d.join("tampered.tar");
    rewrite_bundle(&store, &tampered, &format!("records/{valid}/document.pdf"), |bytes| bytes[100] ^= 1);
    let (rust_code, rust, python_code, python) = verdicts(&config, &tampered, &trust);
    let mut expected_tampered = expected.clone();
    expected_tampered[&valid] = "tampered".into();
    assert_eq!((rust_code, python_code), (3, 1));
    assert_eq!(rust, expected_tampered);
    assert_eq!(python, expected_tampered, "the Python verifier agrees");

    // One hash of one inclusion proof: that record's proof fails.
    let log: serde_json::Value = {
        let mut archive = tar::Archive::new(std::fs::File::open(&store).expect("bundle"));
        let mut entry = archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry"))
            .find(|e| e.path().expect("path").to_str() == Some("log.json"))
            .expect("log.json");
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        serde_json::from_str(&text).expect("json")
    };
    let index = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| {
            let bytes = hex::decode(e["entry_hex"].as_str().expect("hex")).expect("hex");
            kho::log::Entry::decode(&bytes).expect("entry").id.to_hex() == new
        })
        .expect("the superseding record's entry");
    let hash = index["inclusion"][0].as_str().expect("a proof hash").to_owned();
    let altered = format!("{}{}", if hash.starts_with('0') { "1" } else { "0" }, &hash[1..]);
    let broken = d.join("broken-proof.tar");
    rewrite_bundle(&store, &broken, "log.json", |bytes| {
        let text = String::from_utf8(bytes.clone()).expect("utf-8").replacen(&hash, &altered, 1);
        *bytes = text.into_bytes();
    });
    let (rust_code, rust, python_code, python) = verdicts(&config, &broken, &trust);
    let mut expected_broken = expected.clone();
    expected_broken[&new] = "proof_fails".into();
    // The superseded record leans on the superseding record's entry too.
    expected_broken[&old] = "proof_fails".into();
    assert_eq!((rust_code, python_code), (3, 1));
    assert_eq!(rust, expected_broken);
    assert_eq!(python, expected_broken, "the Python verifier agrees");

    // Checked under another vault key, nothing verifies.
    let wrong = vec!["--anchor".to_owned(), trust[1].clone(), "--vault-key".to_owned(), trust[1].clone()];
    let (rust_code, _, python_code, _) = verdicts(&config, &store, &wrong);
    assert_eq!((rust_code, python_code), (3, 1));

    // One record's bundle, for a third party: the revoked record says so.
    let single = d.join("revoked.tar");
    let exported = run([
        vec!["export".into(), "--record".into(), revoked.clone(), "--out".into(), single.display().to_string()],
        client(&citizen),
    ]
    .concat());
    assert!(exported.status.success(), "{}", text(&exported));
    let (rust_code, rust, python_code, python) = verdicts(&config, &single, &trust);
    assert_eq!((rust_code, python_code), (0, 0));
    assert_eq!(rust, serde_json::json!({ revoked.clone(): "revoked" }));
    assert_eq!(python, rust);

    // An auditor exports with a purpose; the citizen sees it in the access log.
    let audited = d.join("audited.tar");
    let exported = run([
        vec!["export".into(), OWNER.into(), "--out".into(), audited.display().to_string()],
        client(&auditor),
        vec!["--purpose".into(), PURPOSE.into()],
    ]
    .concat());
    assert!(exported.status.success(), "{}", text(&exported));
    let log = run([vec!["access-log".to_owned(), OWNER.to_owned()], client(&citizen)].concat());
    assert!(text(&log).contains("export_store") && text(&log).contains("auditor-e2e"), "{}", text(&log));
    let (rust_code, _, python_code, _) = verdicts(&config, &audited, &trust);
    assert_eq!((rust_code, python_code), (0, 0));
    server.stop();

    // Offline, the operator's scrub re-reads all of it and finds nothing damaged.
    let scrubbed = kho(&config, &["scrub"]);
    assert!(scrubbed.status.success(), "{}", text(&scrubbed));
    assert!(
        text(&scrubbed).contains("5 records, 5 documents") && text(&scrubbed).contains("no damage found"),
        "{}",
        text(&scrubbed)
    );
}

/// A `kho witness` on a free port: its address and cosigner key.
struct WitnessProcess {
    child: Child,
    base: String,
    key: String,
    /// Its standard output, kept open while it runs.
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl WitnessProcess {
    fn start(dir: &Path, name: &str, log_key: &str) -> WitnessProcess {
        WitnessProcess::following(dir, name, &[log_key], "127.0.0.1:0")
    }

    /// A witness following a log by each of `log_keys` (a log that rotates its key), on `listen`.
    fn following(dir: &Path, name: &str, log_keys: &[&str], listen: &str) -> WitnessProcess {
        let logs = log_keys.iter().flat_map(|key| ["--log", key]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kho"))
            .args(["witness", "--name", name])
            .args(logs)
            .args(["--listen", listen, "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn,kho::vault::witnessing=debug,kho::witness=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kho witness");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || lines.next().expect("kho witness printed its address").expect("line");
        let base = next().strip_prefix("kho witness listening on ").expect("address line").to_owned();
        let key = next().strip_prefix("witness key: ").expect("key line").to_owned();
        WitnessProcess { child, base, key, _stdout: lines }
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deposits a generated document through `kho deposit` as the issuer; returns the record id.
fn deposit_as_issuer(config: &Path, server: &Server, issuer: &str, name: &str, seed: u64) -> String {
    let content = document(20_000 + seed as usize * 100, seed, true);
    deposit_document(config, server, issuer, name, "application/pdf", &content)
}

/// Waits until the server's checkpoint covers at least `size` entries and is cosigned by `cosigned`
/// witnesses; returns the note and the witnesses header.
fn wait_for_checkpoint(server: &Server, size: u64, cosigned: usize) -> (String, String) {
    let started = Instant::now();
    loop {
        let mut response = agent().get(server.url("/v1/log/checkpoint")).call().expect("checkpoint");
        let header = response.headers().get("kho-witnesses").map(|v| v.to_str().expect("ascii").to_owned());
        let note = response.body_mut().read_to_string().expect("note");
        let checkpoint_size: u64 = note.lines().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let header = header.unwrap_or_default();
        if checkpoint_size >= size && header.starts_with(&format!("cosigned={cosigned};")) {
            return (note, header);
        }
        // Generous: each witness makes its state durable before it answers, and an fsync on a shared
        // machine under heavy disk load can take seconds (a round that times out is asked again).
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint of {size}+ cosigned by {cosigned}: {header}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_size(server: &Server) -> u64 {
    let note = agent().get(server.url("/v1/log/checkpoint")).call().expect("checkpoint").body_mut().read_to_string();
    note.expect("note").lines().nth(1).and_then(|s| s.parse().ok()).expect("size")
}

/// Makes the vault key of the server `prepare` configured in `dir` before it starts, so that witnesses
/// can be told the log's checkpoint key: the log's origin and that verifier key.
fn make_vault_key(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir.join("data")).expect("data");
    let vault_key = kho::keys::load_or_create_secret_key(&dir.join("data/vault-key.pem")).expect("vault key");
    let origin = kho::vault::default_log_origin(&vault_key.public_key());
    let log_key = kho::log::checkpoint::verifier_key(&origin, &vault_key.public_key());
    (origin, log_key)
}

#[test]
fn two_witnesses_cosign_to_quorum_and_a_forked_copy_is_refused_by_them_and_reported_by_the_auditor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = prepare(d);
    let (origin, log_key) = make_vault_key(d);
    let w1 = WitnessProcess::start(&d.join("w1"), "witness.test/w1", &log_key);
    let w2 = WitnessProcess::start(&d.join("w2"), "witness.test/w2", &log_key);
    let witnesses = format!("{}@{},{}@{}", w1.key, w1.base, w2.key, w2.base);
    let env = [("KHO_WITNESSES", witnesses.as_str()), ("KHO_WITNESS_QUORUM", "2")];
    let server = Server::start_with(&config, &env);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    deposit_as_issuer(&config, &server, &issuer, "a.pdf", 1);

    // Both witnesses cosign; the served checkpoint carries both cosignatures and says so.
    let (note, header) = wait_for_checkpoint(&server, 2, 2);
    assert_eq!(header, "cosigned=2; quorum=2");
    let keys: Vec<_> =
        [&w1.key, &w2.key].iter().map(|k| kho::log::checkpoint::VerifierKey::parse(k).expect("witness key")).collect();
    assert_eq!(kho::log::checkpoint::Note::parse(&note).expect("note").cosigners(&keys).len(), 2);

    // The auditor follows the log, trusting a checkpoint only with both witnesses' cosignatures.
    let state = d.join("audit.checkpoint");
    let vault_pub = d.join("data/vault-key.pub.pem").display().to_string();
    let audit = |server: &Server, witnessed: bool| {
        let mut args = vec!["audit", "--server", &server.base, "--vault-key", &vault_pub, "--state"];
        let state = state.display().to_string();
        let mut owned = vec![state];
        if witnessed {
            owned.extend(["--witness".into(), w1.key.clone(), "--witness".into(), w2.key.clone()]);
        }
        args.extend(owned.iter().map(String::as_str));
        kho(&config, &args)
    };
    let first = audit(&server, true);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("first checkpoint of log"), "{}", text(&first));
    deposit_as_issuer(&config, &server, &issuer, "b.pdf", 2);
    let grown_to = log_size(&server) + 1;
    wait_for_checkpoint(&server, grown_to, 2);
    let second = audit(&server, true);
    assert!(second.status.success() && text(&second).contains("consistently"), "{}", text(&second));

    // A bundle says how many witnesses cosigned its checkpoint, and kho verify checks them.
    let citizen = token(&config, "citizen", &["--owner", OWNER]);
    let bundle = d.join("store.tar").display().to_string();
    let export = kho(&config, &["export", OWNER, "--out", &bundle, "--server", &server.base, "--token", &citizen]);
    assert!(export.status.success(), "{}", text(&export));
    let anchor = d.join("anchor.pub.pem").display().to_string();
    let verified = kho(
        &config,
        &[
            "verify",
            &bundle,
            "--anchor",
            &anchor,
            "--vault-key",
            &vault_pub,
            "--witness",
            &w1.key,
            "--witness",
            &w2.key,
        ],
    );
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("cosigned by 2 of the 2 witnesses given"), "{}", text(&verified));

    // The operator copies the data folder and runs both copies: two histories under one key.
    server.stop();
    let fork = d.join("fork");
    copy_dir(&d.join("data"), &fork.join("data"));
    let fork_config = fork.join("kho.toml");
    let fork_text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&format!("{:?}", d.join("data")), &format!("{:?}", fork.join("data")));
    std::fs::write(&fork_config, fork_text).expect("fork config");
    std::fs::copy(d.join("issuer.pem"), fork.join("issuer.pem")).expect("issuer key");
    let server = Server::start_with(&config, &env);
    deposit_as_issuer(&config, &server, &issuer, "c.pdf", 3);
    let honest_size = log_size(&server) + 1;
    wait_for_checkpoint(&server, honest_size, 2);
    let third = audit(&server, true);
    assert!(third.status.success(), "{}", text(&third));

    let forked = Server::start_with(&fork_config, &env);
    for seed in 10..13 {
        deposit_as_issuer(&fork_config, &forked, &issuer, &format!("fork-{seed}.pdf"), seed);
    }
    // The witnesses refuse the other history: no cosignature, the refused checkpoint kept as evidence.
    let fork_size = log_size(&forked) + 1;
    let (_, header) = wait_for_checkpoint(&forked, fork_size, 0);
    assert_eq!(header, "cosigned=0; quorum=2; below-quorum");
    let started = Instant::now();
    while !(d.join("w1/refused").exists() && d.join("w2/refused").exists()) {
        assert!(started.elapsed() < Duration::from_secs(20), "the witnesses did not refuse the fork");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A witnessed audit does not move to the fork's checkpoint; an unwitnessed one proves the fork.
    let held = audit(&forked, true);
    assert!(held.status.success() && text(&held).contains("below the quorum"), "{}", text(&held));
    let caught = audit(&forked, false);
    assert_eq!(caught.status.code(), Some(3), "{}", text(&caught));
    assert!(text(&caught).contains("AUDIT FAILED") && text(&caught).contains("contradicts"), "{}", text(&caught));
    let evidence = std::fs::read_to_string(d.join("audit.checkpoint.evidence")).expect("evidence kept");
    assert_eq!(evidence.matches(&format!("{origin}\n")).count(), 2, "{evidence}");
    forked.stop();
    server.stop();
}

#[test]
fn the_vault_key_rotates_while_witnesses_auditors_and_old_bundles_keep_following() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = prepare(d);
    let (origin, old_log_key) = make_vault_key(d);
    let witness = WitnessProcess::start(&d.join("w1"), "witness.test/w1", &old_log_key);
    let witness_listen = witness.base.trim_start_matches("http://").to_owned();
    let witness_key = witness.key.clone();
    let witnesses = format!("{}@{}", witness.key, witness.base);
    let env = [("KHO_WITNESSES", witnesses.as_str()), ("KHO_WITNESS_QUORUM", "1")];
    let server = Server::start_with(&config, &env);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let before = deposit_as_issuer(&config, &server, &issuer, "before.pdf", 1);
    wait_for_checkpoint(&server, 2, 1);
    // The auditor knows the old key only, and keeps it.
    let old_pub = d.join("old-vault-key.pub.pem");
    std::fs::copy(d.join("data/vault-key.pub.pem"), &old_pub).expect("old public key");
    let state = d.join("audit.checkpoint");
    let audit = |server: &Server| {
        let args = ["audit", "--server", &server.base, "--vault-key", &old_pub.display().to_string(), "--state"];
        kho(&config, &[&args[..], &[&state.display().to_string(), "--witness", &witness_key]].concat())
    };
    let first = audit(&server);
    assert!(first.status.success(), "{}", text(&first));
    let backups = d.join("backups").display().to_string();
    let backup = kho(&config, &["backup", &backups]);
    assert!(backup.status.success(), "{}", text(&backup));

    // While serving: the rotation itself is refused (the store is the server's), preparing is not.
    let refused = kho(&config, &["rotate-key"]);
    assert!(!refused.status.success() && text(&refused).contains("stop the server first"), "{}", text(&refused));
    assert!(!d.join("data/retired-keys").exists() && !d.join("data/vault-key.next.pem").exists());
    let prepared = kho(&config, &["rotate-key", "--prepare"]);
    assert!(prepared.status.success(), "{}", text(&prepared));
    let new_log_key = String::from_utf8_lossy(&prepared.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("  ").map(str::to_owned))
        .expect("the verifier key for the witnesses");
    assert!(new_log_key.starts_with(&format!("{origin}+")), "{new_log_key}");
    // The witness operator adds the new key beside the old one (same state, same address).
    drop(witness);
    let witness =
        WitnessProcess::following(&d.join("w1"), "witness.test/w1", &[&old_log_key, &new_log_key], &witness_listen);

    server.stop();
    let rotated = kho(&config, &["rotate-key"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert!(text(&rotated).contains("retired vault key"), "{}", text(&rotated));
    let server = Server::start_with(&config, &env);
    let after = deposit_as_issuer(&config, &server, &issuer, "after.pdf", 2);
    let grown = log_size(&server) + 1;
    let (note, _) = wait_for_checkpoint(&server, grown, 1);
    let new_key = kho::keys::read_public_key(&d.join("data/vault-key.pub.pem")).expect("new public key");
    kho::log::checkpoint::open(&note, &origin, &new_key).expect("checkpoints are signed by the new key, and witnessed");
    let listed = agent().get(server.url("/v1/vault-keys")).call().expect("vault keys").body_mut().read_to_string();
    let listed: serde_json::Value = serde_json::from_str(&listed.expect("body")).expect("json");
    assert_eq!(listed["origin"], origin.as_str());
    assert_eq!(listed["current"]["verifier_key"], new_log_key.as_str());
    assert_eq!(listed["retired"][0]["verifier_key"], old_log_key.as_str());

    // The auditor holding the old key follows the handover and finds one consistent history.
    let followed = audit(&server);
    assert!(followed.status.success(), "{}", text(&followed));
    assert!(text(&followed).contains("handed over") && text(&followed).contains("consistently"), "{}", text(&followed));
    let checkpoint =
        kho(&config, &["checkpoint", "--server", &server.base, "--vault-key", &old_pub.display().to_string()]);
    assert!(checkpoint.status.success(), "{}", text(&checkpoint));

    // The owner's bundle, exported now, verifies both documents from the anchor and the new key.
    let citizen = token(&config, "citizen", &["--owner", OWNER]);
    let bundle = d.join("store.tar").display().to_string();
    let export = kho(&config, &["export", OWNER, "--out", &bundle, "--server", &server.base, "--token", &citizen]);
    assert!(export.status.success(), "{}", text(&export));
    let anchor = d.join("anchor.pub.pem").display().to_string();
    let new_pub = d.join("data/vault-key.pub.pem").display().to_string();
    let verified = kho(&config, &["verify", &bundle, "--anchor", &anchor, "--vault-key", &new_pub, "--json"]);
    assert!(verified.status.success(), "{}", text(&verified));
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("json report");
    let verdict = |id: &str| {
        report["documents"].as_array().expect("documents").iter().find(|d| d["id"] == id).expect("listed")["verdict"]
            .clone()
    };
    assert_eq!((verdict(&before), verdict(&after)), ("valid".into(), "valid".into()), "{report}");
    // The same backup folder goes on across the rotation (the vault is named by its first key), and
    // a restore brings back the key history with everything.
    let backup = kho(&config, &["backup", &backups]);
    assert!(backup.status.success() && text(&backup).contains("incremental"), "{}", text(&backup));
    server.stop();
    let scrub = kho(&config, &["scrub"]);
    assert!(scrub.status.success(), "{}", text(&scrub));
    let restored = d.join("restored");
    let restore = kho(&config, &["restore", &backups, "--data-dir", &restored.display().to_string()]);
    assert!(restore.status.success() && text(&restore).contains("no damage found"), "{}", text(&restore));
    assert!(restored.join("retired-keys/0001/handover.note").exists());
    assert_eq!(kho::keys::read_public_key(&restored.join("vault-key.pub.pem")).expect("restored key"), new_key);
    drop(witness);
}

// ----- the citizen's pages in a real browser -----

/// As the issuer, deposits `content` for `owner` as `title` over HTTP; returns the record id.
fn deposit_document(
    config: &Path,
    server: &Server,
    issuer: &str,
    title: &str,
    media_type: &str,
    content: &[u8],
) -> String {
    let dir = config.parent().expect("dir");
    let file = dir.join(format!("{}.doc", title.len() + content.len()));
    std::fs::write(&file, content).expect("document");
    let key = dir.join("issuer.pem").display().to_string();
    let file = file.display().to_string();
    let args = [
        "deposit",
        "--key",
        &key,
        "--owner",
        OWNER,
        "--type",
        "GKS",
        "--title",
        title,
        "--agency",
        AGENCY,
        "--media-type",
        media_type,
        "--procedure",
        "1.001193",
        "--dossier",
        "H26.22-240301-0001",
        "--server",
        &server.base,
        "--token",
        issuer,
        &file,
    ];
    let output = kho(config, &args);
    assert!(output.status.success(), "{}", text(&output));
    text(&output).split("as record ").nth(1).and_then(|r| r.split_whitespace().next()).expect("id").to_owned()
}

/// Decodes a QR code image with zbar, an independent reader.
fn read_qr(image: &Path) -> String {
    let output = Command::new("zbarimg").args(["-q", "--raw"]).arg(image).output().expect("run zbarimg");
    assert!(output.status.success(), "zbarimg could not read {}", image.display());
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}

/// Two identity providers configured in the server's file, as a deployment has them: VNeID (Keycloak,
/// RS256, every user a citizen, the id number in `citizen_id`) and the agencies' provider (ES256, roles
/// in `realm_access.roles` under its own names). Tokens they sign reach the API and the pages; each
/// provider grants only its roles, in its algorithms.
#[test]
fn tokens_of_two_identity_providers_sign_in_within_the_roles_and_algorithms_each_is_allowed() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    const VNEID: &str = "https://sso.dancuquocgia.gov.vn/realms/vneid";
    const AGENCIES: &str = "https://sso.dichvucong.gov.vn/oauth2/token";
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let dir = tempfile::tempdir().expect("dir");
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("rsa");
    let ec_key = p256::SecretKey::random(&mut rand_core::OsRng);
    let point = ec_key.public_key().to_encoded_point(false);
    std::fs::write(
        dir.path().join("vneid.jwks"),
        serde_json::json!({"keys": [{"kty": "RSA", "kid": "vneid-2026", "use": "sig", "alg": "RS256",
            "n": b64(&rsa_key.n().to_bytes_be()), "e": b64(&rsa_key.e().to_bytes_be())}]})
        .to_string(),
    )
    .expect("jwks");
    std::fs::write(
        dir.path().join("agencies.jwks"),
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "dvc-1",
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))}]})
        .to_string(),
    )
    .expect("jwks");
    let config = dir.path().join("kho.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
listen = "127.0.0.1:0"
shutdown_grace_seconds = 5
[[auth.issuers]]
issuer = "{VNEID}"
jwks_file = {vneid:?}
algorithms = ["RS256"]
role = "citizen"
roles = ["citizen"]
owner_claim = "citizen_id"
[[auth.issuers]]
issuer = "{AGENCIES}"
jwks_file = {agencies:?}
algorithms = ["ES256"]
role_claim = "realm_access.roles"
role_values = {{ "kho-officer" = "officer", "kho-auditor" = "auditor" }}
roles = ["officer", "auditor"]
agency_claim = "ma_co_quan"
"#,
            data = dir.path().join("data"),
            vneid = dir.path().join("vneid.jwks"),
            agencies = dir.path().join("agencies.jwks"),
        ),
    )
    .expect("config");
    let server = Server::start(&config);
    let now = now_unix_ms() / 1000;
    let vneid_token = |claims: serde_json::Value, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = Some("vneid-2026".into());
        let key = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                EncodingKey::from_rsa_der(rsa_key.to_pkcs1_der().expect("der").as_bytes())
            }
            _ => EncodingKey::from_ec_der(ec_key.to_pkcs8_der().expect("der").as_bytes()),
        };
        jsonwebtoken::encode(&header, &claims, &key).expect("token")
    };
    let agencies_token = |claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("dvc-1".into());
        let key = EncodingKey::from_ec_der(ec_key.to_pkcs8_der().expect("der").as_bytes());
        jsonwebtoken::encode(&header, &claims, &key).expect("token")
    };
    let citizen = serde_json::json!({"iss": VNEID, "aud": "kho", "sub": "f3a1-vneid", "iat": now, "exp": now + 300,
        "citizen_id": OWNER, "typ": "Bearer"});
    let officer = serde_json::json!({"iss": AGENCIES, "aud": ["kho", "account"], "sub": "can-bo-07", "iat": now,
        "exp": now + 300, "realm_access": {"roles": ["offline_access", "kho-officer"]}, "ma_co_quan": AGENCY});
    let get = |path: &str, token: &str, purpose: Option<&str>| {
        let mut request = agent().get(server.url(path)).header("authorization", &format!("Bearer {token}"));
        if let Some(purpose) = purpose {
            request = request.header("kho-purpose", purpose);
        }
        let mut response = request.call().expect("request");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap_or_default())
    };
    let records = format!("/v1/owners/{OWNER}/records");
    let access = format!("/v1/owners/{OWNER}/access-log");

    // The citizen, from VNeID, reads their own store; the officer, from the agencies' provider, reads it
    // for a dossier, and that read is in the citizen's access log with the officer's agency.
    assert_eq!(get(&records, &vneid_token(citizen.clone(), Algorithm::RS256), None).0, 200);
    assert_eq!(get(&records, &agencies_token(officer.clone()), Some(PURPOSE)).0, 200);
    let (status, log) = get(&access, &vneid_token(citizen.clone(), Algorithm::RS256), None);
    assert_eq!(status, 200, "{log}");
    assert!(log.contains("can-bo-07") && log.contains(AGENCY) && log.contains(PURPOSE), "{log}");
    // The pages take the same token.
    let (status, page) = get("/documents", &vneid_token(citizen.clone(), Algorithm::RS256), None);
    assert_eq!(status, 200);
    assert!(page.contains(OWNER), "the page names the signed-in citizen");

    // Each provider within its own roles and algorithms.
    let refused = |token: String, code: &str| {
        let (status, body) = get(&records, &token, Some(PURPOSE));
        assert_eq!(status, 401, "{body}");
        assert!(body.contains(code), "{code} expected: {body}");
    };
    let mut admin_claim = citizen.clone();
    admin_claim["role"] = "admin".into();
    let (status, body) =
        get(&format!("/v1/owners/{OTHER_OWNER}/records"), &vneid_token(admin_claim, Algorithm::RS256), None);
    assert_eq!(status, 403, "a VNeID user is a citizen whatever the token claims: {body}");
    assert!(body.contains("not_your_store"), "{body}");
    refused(vneid_token(citizen.clone(), Algorithm::PS256), "algorithm_not_allowed");
    let mut as_citizen = officer.clone();
    as_citizen["realm_access"]["roles"] = serde_json::json!(["citizen"]);
    refused(agencies_token(as_citizen), "invalid_claims");
    let mut foreign = officer.clone();
    foreign["iss"] = format!("{VNEID}/").into();
    refused(agencies_token(foreign), "wrong_issuer");
    let mut long = officer;
    long["exp"] = (now + 24 * 3600).into();
    refused(agencies_token(long), "token_lifetime_too_long");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("vneid-2026".into());
    header.crit = Some(vec!["b64".into()]);
    let key = EncodingKey::from_rsa_der(rsa_key.to_pkcs1_der().expect("der").as_bytes());
    refused(jsonwebtoken::encode(&header, &citizen, &key).expect("token"), "unsupported_critical_header");
    server.stop();
}

#[test]
fn a_citizen_sees_documents_accesses_shares_and_a_printed_copy_check_in_real_chromium() {
    if !webdriver::available() || Command::new("zbarimg").arg("--version").output().is_err() {
        eprintln!(
            "\n!!! SKIPPED the browser test: it needs Debian's chromium, chromium-driver and zbar-tools.\n!!! \
             Install them with `apt-get install -y chromium chromium-driver zbar-tools`, or run `scripts/test`, \
             which does.\n"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start_with(&config, &[("KHO_CHECKPOINT_INTERVAL_MS", "300")]);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let birth_xml = "<giayKhaiSinh><hoTen>Nguyễn Văn An</hoTen><noiSinh>Hà Nội</noiSinh></giayKhaiSinh>\n";
    let birth = deposit_document(&config, &server, &issuer, "Giấy khai sinh", "application/xml", birth_xml.as_bytes());
    let qr_png = dir.path().join("portrait.png");
    assert!(kho(&config, &["qr", &birth, "--base-url", "https://kho.example.vn", "-o", &qr_png.display().to_string()])
        .status
        .success());
    let portrait =
        deposit_document(&config, &server, &issuer, "Ảnh thẻ", "image/png", &std::fs::read(&qr_png).expect("png"));
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    let browser = webdriver::Browser::start(&artifacts);

    // Sign in as the demo citizen: the documents, filtered.
    browser.go(&server.url("/"));
    assert!(browser.url().ends_with("/signin"), "{}", browser.url());
    browser.screenshot("01-signin");
    browser.click("#demo-signin");
    let listed = browser.wait_for("#documents", "Giấy khai sinh");
    assert!(browser.url().ends_with("/documents"), "{}", browser.url());
    assert!(
        listed.contains("Giấy khai sinh") && listed.contains("Ảnh thẻ") && listed.contains("Còn hiệu lực"),
        "{listed}"
    );
    browser.screenshot("02-documents");
    browser.type_into("#q", "khai");
    browser.click("#apply-filters");
    browser.wait_for_url("q=khai");
    let filtered = browser.text("#documents");
    assert!(filtered.contains("Giấy khai sinh") && !filtered.contains("Ảnh thẻ"), "{filtered}");

    // One document: verified in plain words once the log's checkpoint covers it; its text inline.
    browser.go(&server.url(&format!("/documents/{birth}")));
    browser.wait_for_text("#verdict", "Giấy tờ xác thực");
    assert!(browser.text("#preview").contains("Nguyễn Văn An"));
    browser.screenshot("03-document");
    browser.go(&server.url(&format!("/documents/{portrait}")));
    browser.find("img.viewer");
    browser.screenshot("03b-image-document");

    // An officer fetches it over the API; the citizen sees who, when and why, checked complete.
    let officer = token(&config, "officer", &["--agency", AGENCY]);
    let fetched = agent()
        .get(server.url(&format!("/v1/records/{birth}/content")))
        .header("Authorization", format!("Bearer {officer}"))
        .header("Kho-Purpose", PURPOSE)
        .call()
        .expect("officer read");
    assert_eq!(fetched.status().as_u16(), 200);
    browser.go(&server.url("/access"));
    let log = browser.text("#access-log");
    assert!(log.contains("officer-e2e") && log.contains(PURPOSE) && log.contains("Giấy khai sinh"), "{log}");
    browser.wait_for_text("#completeness", "Đầy đủ đến");
    browser.screenshot("04-access-log");

    // A share link for a bank: used (and logged), then revoked, then refused.
    browser.go(&server.url(&format!("/shares?record={birth}")));
    browser.type_into("#recipient", "Ngân hàng ABC");
    browser.click("#create-share");
    let link = browser.value("#share-link");
    assert!(link.starts_with(&format!("{}/s/", server.base)), "{link}");
    browser.find("#created img.qr");
    browser.screenshot("05-share-created");
    browser.go(&link);
    assert_eq!(browser.text("#owner"), OWNER);
    assert!(browser.text("#preview").contains("Nguyễn Văn An"));
    browser.screenshot("06-share-used");
    browser.go(&server.url("/access"));
    assert!(browser.text("#access-log").contains("Ngân hàng ABC"), "the share's use is in the access log");
    browser.go(&server.url("/shares"));
    browser.click("button[id^='revoke-']");
    // The revocation's answer must arrive before the next navigation, which would abort its form.
    browser.wait_for("#shares", "Đã thu hồi");
    browser.go(&link);
    assert!(browser.text("main").contains("thu hồi"), "{}", browser.text("main"));
    assert!(!browser.source().contains("Nguyễn Văn An"));
    browser.screenshot("07-share-revoked");

    // The QR code printed on a paper copy, read by an independent decoder, opens the public check.
    let printed = dir.path().join("printed.png");
    let qr = kho(&config, &["qr", &birth, "--base-url", &server.base, "-o", &printed.display().to_string()]);
    assert!(qr.status.success(), "{}", text(&qr));
    let url = read_qr(&printed);
    assert_eq!(url, format!("{}/verify/{birth}", server.base));
    browser.go(&url);
    assert!(browser.text("#verdict").contains("Giấy tờ xác thực"));
    assert!(browser.text("#public-fields").contains(AGENCY));
    // (The header names the signed-in citizen; the page itself names nobody.)
    let public = browser.text("main");
    assert!(
        !public.contains(OWNER) && !browser.source().contains("Nguyễn Văn An"),
        "no owner or content without a share"
    );
    browser.screenshot("08-printed-copy-check");

    // Upload a scan and ask the agency to certify it. The agency's officer looks the person up and
    // reads the scan for the dossier (both in the owner's log), compares it with the original, and the
    // agency's system signs the certification with `kho certify-copy`: the upload is a certified copy.
    let scan = std::fs::read(&qr_png).expect("a PNG to upload");
    browser.go(&server.url("/uploads"));
    browser.type_into("#upload-title", "Bằng tốt nghiệp THPT");
    browser.type_into("#upload-file", &qr_png.display().to_string());
    browser.click("#upload");
    let uploads = browser.wait_for("#uploads", "Bằng tốt nghiệp THPT");
    assert!(uploads.contains("Tự tải lên") && uploads.contains("chưa có giá trị pháp lý"), "{uploads}");
    browser.screenshot("08b-uploaded");
    browser.click("button[id^='request-']");
    browser.wait_for("#uploads", "Đã đề nghị chứng thực");
    let bearer = |token: &str| format!("Bearer {token}");
    let requests: serde_json::Value = serde_json::from_str(
        &agent()
            .get(server.url(&format!("/v1/agencies/{AGENCY}/certification-requests?owner={OWNER}")))
            .header("Authorization", bearer(&officer))
            .call()
            .expect("the agency's requests")
            .body_mut()
            .read_to_string()
            .expect("body"),
    )
    .expect("json");
    let upload = requests["requests"][0]["record"]["record"]["id"].as_str().expect("one request").to_owned();
    let read = agent()
        .get(server.url(&format!("/v1/records/{upload}/content")))
        .header("Authorization", bearer(&officer))
        .header("Kho-Purpose", PURPOSE)
        .call()
        .expect("the officer reads the scan")
        .body_mut()
        .read_to_vec()
        .expect("bytes");
    assert_eq!(read, scan, "the officer sees exactly the uploaded bytes");
    let statement = dir.path().join("copy.kho-certification");
    let key = dir.path().join("issuer.pem").display().to_string();
    let signed = kho(
        &config,
        &[
            "certify-copy",
            "--key",
            &key,
            "--agency",
            AGENCY,
            "--record",
            &upload,
            "--officer",
            "Nguyễn Thị Hoa",
            "--original-type",
            "BTN",
            "--original",
            "Bằng tốt nghiệp THPT số A123, bản chính",
            "--out",
            &statement.display().to_string(),
        ],
    );
    assert!(signed.status.success(), "{}", text(&signed));
    let posted = agent()
        .post(server.url("/v1/certifications"))
        .header("Authorization", bearer(&issuer))
        .send(&std::fs::read(&statement).expect("statement")[..])
        .expect("the agency posts its certification");
    assert_eq!(posted.status().as_u16(), 201);
    browser.go(&server.url("/uploads"));
    assert!(browser.text("#uploads").contains("Bản sao chứng thực"), "{}", browser.text("#uploads"));
    browser.go(&server.url(&format!("/documents/{upload}")));
    browser.wait_for_text("#verdict", "Giấy tờ xác thực");
    let page = browser.text("main");
    assert!(page.contains("Nguyễn Thị Hoa") && page.contains("Bằng tốt nghiệp THPT số A123"), "{page}");
    browser.screenshot("08c-certified-copy");
    // The exported store says so too, to Kho's verifier and to the auditor's independent one.
    let owner_token = token(&config, "citizen", &["--owner", OWNER]);
    let store = dir.path().join("store.tar");
    let store_path = store.display().to_string();
    let exported =
        kho(&config, &["export", OWNER, "--out", &store_path, "--server", &server.base, "--token", &owner_token]);
    assert!(exported.status.success(), "{}", text(&exported));
    let trust = vec![
        "--anchor".to_owned(),
        dir.path().join("anchor.pub.pem").display().to_string(),
        "--vault-key".to_owned(),
        dir.path().join("data").join("vault-key.pub.pem").display().to_string(),
    ];
    let (rust_code, rust, python_code, python) = verdicts(&config, &store, &trust);
    assert_eq!((rust_code, python_code), (0, 0), "{rust} {python}");
    assert_eq!(rust[&upload], "certified_copy");
    assert_eq!(python, rust, "the Python verifier agrees");

    // English, then back: the same pages, other words and formats.
    browser.click("#lang-en");
    browser.wait_for("h1", "Document");
    browser.go(&server.url("/documents"));
    assert_eq!(browser.text("h1"), "My documents");
    assert!(browser.text("#documents").contains("Valid"));
    browser.screenshot("09-english");
    browser.click("#lang-vi");
    browser.wait_for("h1", "Giấy tờ của tôi");

    // Another citizen sees nothing of it, and their attempt lands in the owner's log.
    browser.click("form[action='/signout'] button");
    browser.type_into("#owner", OTHER_OWNER);
    browser.click("#demo-signin");
    browser.wait_for("#no-documents", "");
    browser.go(&server.url(&format!("/documents/{birth}")));
    let refused = browser.source();
    assert!(!refused.contains("Nguyễn Văn An") && !refused.contains(OWNER) && !refused.contains("Giấy khai sinh"));
    browser.screenshot("10-other-citizen-refused");
    let citizen = token(&config, "citizen", &["--owner", OWNER]);
    let entries: serde_json::Value = serde_json::from_str(
        &agent()
            .get(server.url(&format!("/v1/owners/{OWNER}/access-log")))
            .header("Authorization", format!("Bearer {citizen}"))
            .call()
            .expect("access log")
            .body_mut()
            .read_to_string()
            .expect("body"),
    )
    .expect("json");
    let attempt = entries["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["subject"] == format!("demo-citizen-{OTHER_OWNER}"))
        .expect("the other citizen's attempt is logged");
    assert_eq!(attempt["outcome"]["reason"], "not_your_store", "{attempt}");
    drop(browser);
    server.stop();
}

/// `kho backup` while two clients keep depositing into the real server: the backup is taken twice into
/// one folder (a full run, then an incremental one that copies only what is new), and `kho restore` puts
/// it into a fresh folder, where every document acknowledged before the first run began is there byte
/// for byte, the log extends the backup's checkpoint, and the scrub finds nothing. A backup with one
/// flipped byte is refused and restores nothing.
#[test]
fn a_backup_taken_during_deposits_restores_every_acknowledged_document_and_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start_with(&config, &[("KHO_CHECKPOINT_INTERVAL_MS", "100")]);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let acknowledged: Mutex<Vec<(Digest, Vec<u8>)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let backup = dir.path().join("backup");
    let run_backup = || {
        let output = kho(&config, &["backup", backup.to_str().expect("path")]);
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let (before_first, first, second) = std::thread::scope(|scope| {
        for writer in 0..2u64 {
            let (acknowledged, stop, issuer, base) = (&acknowledged, &stop, &issuer, server.base.clone());
            scope.spawn(move || {
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let content = document(1_000 + (n % 5) as usize * 30_000, writer * 1_000_000 + n, n % 2 == 0);
                    let envelope = sign(record_for(&content, OWNER, AGENCY), &key(2));
                    let response = agent()
                        .post(format!("{base}/v1/records"))
                        .header("Authorization", format!("Bearer {issuer}"))
                        .header("Kho-Record", base64::engine::general_purpose::STANDARD.encode(&envelope))
                        .send(&content[..])
                        .expect("deposit");
                    assert_eq!(response.status().as_u16(), 201);
                    let id = Signed::<kho::statement::Record>::from_envelope(&envelope).expect("record").id();
                    acknowledged.lock().expect("lock").push((id, content));
                }
            });
        }
        let wait_for = |count: usize| {
            let started = Instant::now();
            while acknowledged.lock().expect("lock").len() < count {
                assert!(started.elapsed() < Duration::from_secs(60), "deposits stalled");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(30);
        let before_first = acknowledged.lock().expect("lock").len();
        let first = run_backup();
        let after_first = acknowledged.lock().expect("lock").len();
        wait_for(after_first + 20);
        let second = run_backup();
        stop.store(true, Ordering::Relaxed);
        (before_first, first, second)
    });
    server.stop();
    assert!(first.starts_with("full backup of "), "{first}");
    assert!(second.starts_with("incremental backup of "), "{second}");
    let manifest_bytes = std::fs::read(backup.join("kho-backup.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("json");
    assert_eq!(manifest["runs"], 2);
    let journal = manifest["files"].as_array().expect("files").iter().find(|f| f["path"] == "store/catalog.journal");
    assert_eq!(
        journal.expect("journal")["segments"].as_array().expect("segments").len(),
        2,
        "appended, not copied again"
    );
    let checkpoint_size = manifest["checkpoint"]["size"].as_u64().expect("a checkpoint");
    let log_size = manifest["snapshot"]["log_size"].as_u64().expect("log size");
    assert!(checkpoint_size > 0 && checkpoint_size <= log_size, "{manifest}");

    // Another vault backed up into the same folder: refused, the backup unchanged.
    let other = dir.path().join("other");
    drop(
        kho::vault::Vault::open(kho::vault::VaultConfig::new(&other, vec![key(1).public_key()])).expect("other vault"),
    );
    let output = kho(&config, &["backup", backup.to_str().expect("path"), "--data-dir", other.to_str().expect("path")]);
    assert!(!output.status.success() && text(&output).contains("another vault's backup"), "{}", text(&output));
    assert!(std::fs::read(backup.join("kho-backup.json")).expect("manifest") == manifest_bytes, "unchanged");

    // A flipped byte in a pack: refused, nothing restored.
    let damaged = dir.path().join("damaged");
    common::copy_dir(&backup, &damaged);
    let pack = damaged.join("store/packs/00000000.pack");
    let mut bytes = std::fs::read(&pack).expect("pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&pack, bytes).expect("write");
    let nowhere = dir.path().join("not-restored");
    let output =
        kho(&config, &["restore", damaged.to_str().expect("path"), "--data-dir", nowhere.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("do not have the hash the manifest names"), "{}", text(&output));
    assert!(!nowhere.exists(), "nothing restored");

    let restored = dir.path().join("restored");
    let output =
        kho(&config, &["restore", backup.to_str().expect("path"), "--data-dir", restored.to_str().expect("path")]);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains(&format!("{log_size} log entries")), "{printed}");
    assert!(printed.contains("no damage found"), "{printed}");
    // An empty target only: a second restore into it is refused.
    let again =
        kho(&config, &["restore", backup.to_str().expect("path"), "--data-dir", restored.to_str().expect("path")]);
    assert!(!again.status.success() && text(&again).contains("not empty"), "{}", text(&again));

    let vault =
        kho::vault::Vault::open(kho::vault::VaultConfig::new(&restored, vec![key(1).public_key()])).expect("open");
    assert_eq!(vault.log_size(), log_size);
    let note = std::fs::read_to_string(backup.join("log-checkpoint.note")).expect("note");
    let kept =
        kho::log::checkpoint::open(&note, note.lines().next().expect("origin"), &vault.public_key()).expect("signed");
    assert_eq!(kept.size, checkpoint_size);
    // The restored log extends the backup's checkpoint: a consistency proof from it to a new one.
    let newest = vault
        .sign_checkpoint()
        .expect("sign")
        .unwrap_or_else(|| vault.latest_checkpoint().expect("read").expect("one"));
    let proof = vault.consistency_proof(kept.size, Some(newest.checkpoint.size)).expect("proof");
    kho::log::verify_consistency(kept.size, newest.checkpoint.size, &kept.root, &newest.checkpoint.root, &proof.hashes)
        .expect("consistent with the backup's checkpoint");
    let acknowledged = acknowledged.into_inner().expect("lock");
    for (id, content) in &acknowledged[..before_first] {
        let view = vault.record(id).expect("read").unwrap_or_else(|| panic!("acknowledged record {id} restored"));
        assert_eq!(&read_all(&vault, &view.record.body().blake3, None), content);
    }
    assert!(acknowledged.len() > before_first, "deposits went on during the backups");
    eprintln!("{first}{second}{printed}acknowledged {} ({before_first} before the first run)", acknowledged.len());
}

/// The real server's `/metrics`, read by Prometheus' own OpenMetrics parser (the `prometheus-client`
/// package from PyPI, which `scripts/test` installs): it parses whole, and what it reads says what
/// happened (one deposit's bytes, the connection that asked).
#[test]
fn the_real_servers_metrics_parse_with_prometheus_own_parser() {
    let Ok(python) = std::env::var("KHO_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: set KHO_TEST_PYTHON to a Python with prometheus-client (`scripts/test` does: \
             pip install prometheus-client into target/pyenv)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    let server = Server::start(&config);
    certify_issuer(&server, &config);
    let issuer = token(&config, "issuer", &["--agency", AGENCY]);
    let content = document(25_000, 5, true);
    let envelope = sign(record_for(&content, OWNER, AGENCY), &key(2));
    let response = agent()
        .post(server.url("/v1/records"))
        .header("Authorization", format!("Bearer {issuer}"))
        .header("Kho-Record", base64::engine::general_purpose::STANDARD.encode(&envelope))
        .send(&content[..])
        .expect("deposit");
    assert_eq!(response.status().as_u16(), 201);
    let mut response = agent().get(server.url("/metrics")).call().expect("metrics");
    let text = response.body_mut().read_to_string().expect("text");
    server.stop();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &text).expect("write");
    let parse = "import json, sys\n\
                 from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                 samples = {}\n\
                 for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
                 \x20   for s in family.samples:\n\
                 \x20       samples[s.name + json.dumps(s.labels, sort_keys=True)] = s.value\n\
                 print(json.dumps(samples))";
    let output = Command::new(python).args(["-c", parse]).arg(&path).output().expect("python");
    assert!(output.status.success(), "{}\n{text}", String::from_utf8_lossy(&output.stderr));
    let samples: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(samples["kho_deposit_bytes_total{}"], content.len() as f64, "{samples}");
    assert!(samples["kho_open_connections{}"].as_f64().is_some_and(|n| n >= 1.0), "{samples}");
    let deposits = "kho_http_requests_total{\"method\": \"POST\", \"route\": \"/v1/records\", \"status\": \"201\"}";
    assert_eq!(samples[deposits], 1.0, "{samples}");
    assert_eq!(samples[format!("kho_documents_deposited_total{{\"agency\": \"{AGENCY}\"}}")], 1.0, "{samples}");
}

/// Makes a CA and a server certificate for 127.0.0.1 under it with the openssl tool, into `dir`:
/// `{name}-ca.pem`, `{name}.pem` (the certificate), `{name}.key`.
fn openssl_server_certificate(dir: &Path, name: &str) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let (key, csr, certificate) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &["-subj", &format!("/CN={name} CA"), "-days", "2", "-keyout", &ca_key, "-out", &ca],
    ]
    .concat());
    run(&[&["req"], &ec[..], &["-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]].concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        &certificate,
    ]);
}

/// curl's answer for `url` trusting only `ca`: the body, or the exit code (60: the certificate is not
/// trusted).
fn curl_with_ca(url: &str, ca: &Path, token: Option<&str>) -> Result<String, i32> {
    let mut command = Command::new("curl");
    command.args(["-sS", "--fail", "--max-time", "10", "--cacert"]).arg(ca).arg(url);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.output().expect("run curl");
    match output.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        code => Err(code.unwrap_or(-1)),
    }
}

/// With `[tls]` the real server speaks HTTPS only; a renewed certificate is served to new connections
/// after SIGHUP and, without a signal, once the files change; a broken renewal keeps the old one.
#[test]
fn https_with_a_certificate_replaced_while_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = prepare(dir.path());
    for name in ["first", "second"] {
        openssl_server_certificate(dir.path(), name);
    }
    let (live_certificate, live_key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    let install = |name: &str| {
        std::fs::copy(dir.path().join(format!("{name}.key")), &live_key).expect("key");
        std::fs::copy(dir.path().join(format!("{name}.pem")), &live_certificate).expect("certificate");
    };
    install("first");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text += &format!("[tls]\ncertificate = {live_certificate:?}\nprivate_key = {live_key:?}\nreload_seconds = 1\n");
    std::fs::write(&config, text).expect("config");
    let server = Server::start(&config);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let (first_ca, second_ca) = (dir.path().join("first-ca.pem"), dir.path().join("second-ca.pem"));
    let healthz = server.url("/healthz");
    assert_eq!(curl_with_ca(&healthz, &first_ca, None).as_deref(), Ok("ok"));
    assert_eq!(curl_with_ca(&healthz, &second_ca, None), Err(60), "served under the first CA only");
    let auditor = token(&config, "auditor", &[]);
    let records = curl_with_ca(&server.url(&format!("/v1/owners/{OWNER}/records")), &first_ca, Some(&auditor));
    let records: serde_json::Value = serde_json::from_str(&records.expect("records")).expect("json");
    assert_eq!(records["records"], serde_json::json!([]), "an authenticated call over HTTPS");
    let plain = agent().get(server.url("/healthz").replace("https://", "http://")).call();
    assert!(plain.is_err(), "no plain HTTP on the TLS port");

    let until_served_under = |ca: &Path, what: &str| {
        let started = Instant::now();
        while curl_with_ca(&healthz, ca, None).is_err() {
            assert!(started.elapsed() < Duration::from_secs(15), "{what}: the new certificate was never served");
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    };
    install("second");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let after = until_served_under(&second_ca, "after SIGHUP");
    eprintln!("renewed certificate served {after:?} after SIGHUP");
    assert_eq!(curl_with_ca(&healthz, &first_ca, None), Err(60), "the old certificate is gone");

    // A broken renewal (a truncated certificate) is refused and the current one kept.
    std::fs::write(&live_certificate, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("broken");
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(curl_with_ca(&healthz, &second_ca, None).as_deref(), Ok("ok"), "still serving the second");

    // No signal: the changed files are noticed within reload_seconds.
    install("first");
    let noticed = until_served_under(&first_ca, "without a signal");
    eprintln!("changed files noticed after {noticed:?}");
    server.stop();
}
