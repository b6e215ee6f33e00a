//! A small W3C WebDriver client for the browser tests: it starts Debian's `chromedriver`, which drives
//! real headless Chromium, and speaks the protocol's JSON over HTTP (ureq). Only the commands the tests
//! use: navigate, find, click, type, read text and values, the page source, screenshots.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser is installed; if not, the caller says how to install it and skips.
pub fn available() -> bool {
    std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists()
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    profile: tempfile::TempDir,
    /// Where screenshots go (test artifacts, not committed).
    pub artifacts: std::path::PathBuf,
}

pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with an empty profile.
    pub fn start(artifacts: &std::path::Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=412,915",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser =
            Browser { driver, base, session: String::new(), agent, profile, artifacts: artifacts.to_owned() };
        let created = browser.command("POST", "/session", capabilities);
        browser.session = created["sessionId"].as_str().expect("a session id").to_owned();
        std::fs::create_dir_all(artifacts).expect("artifacts dir");
        browser
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body).unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    fn try_command(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).header("content-type", "application/json").send(body.to_string()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let value: Value = serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("JSON");
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        if status == 200 {
            Ok(value)
        } else {
            Err(value)
        }
    }

    /// Runs a command on the element matching `selector`, finding it again if the page changed under
    /// it (a click's navigation lands a moment later). ChromeDriver reports that race either as a stale
    /// element or, when the new document replaced the node mid-command, as an inspector error.
    fn on_element(&self, selector: &str, method: &str, command: &str, body: Value) -> Value {
        let started = Instant::now();
        loop {
            let element = self.find(selector);
            let path = format!("/session/{}/element/{}{command}", self.session, element.0);
            match self.try_command(method, &path, body.clone()) {
                Ok(value) => return value,
                Err(error) if is_replaced_node(&error) && started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("{method} {command} on {selector}: {error}"),
            }
        }
    }

    fn session_command(&self, method: &str, path: &str, body: Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn go(&self, url: &str) {
        self.session_command("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.session_command("GET", "/url", json!({})).as_str().unwrap_or_default().to_owned()
    }

    pub fn source(&self) -> String {
        self.session_command("GET", "/source", json!({})).as_str().unwrap_or_default().to_owned()
    }

    /// The element matching a CSS selector, waiting up to 10 seconds for it to appear.
    pub fn find(&self, selector: &str) -> Element {
        let started = Instant::now();
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let mut response = self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(json!({"using": "css selector", "value": selector}).to_string())
                .expect("find element");
            let found = response.status().as_u16() == 200;
            let value: Value =
                serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("JSON");
            if found {
                return Element(value["value"][ELEMENT].as_str().expect("element id").to_owned());
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no element {selector} on {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, selector: &str) {
        self.on_element(selector, "POST", "/click", json!({}));
    }

    pub fn type_into(&self, selector: &str, text: &str) {
        self.on_element(selector, "POST", "/clear", json!({}));
        self.on_element(selector, "POST", "/value", json!({ "text": text }));
    }

    pub fn text(&self, selector: &str) -> String {
        self.on_element(selector, "GET", "/text", json!({})).as_str().unwrap_or_default().to_owned()
    }

    pub fn value(&self, selector: &str) -> String {
        self.on_element(selector, "GET", "/property/value", json!({})).as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `selector`'s text contains `wanted` (up to 15 seconds): after a click, the next
    /// page arrives a moment later.
    pub fn wait_for(&self, selector: &str, wanted: &str) -> String {
        self.wait(selector, wanted, false)
    }

    /// Waits until the page's address contains `part`.
    pub fn wait_for_url(&self, part: &str) {
        let started = Instant::now();
        while !self.url().contains(part) {
            assert!(started.elapsed() < Duration::from_secs(15), "never reached {part}: {}", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reloads until `selector`'s text contains `wanted` (up to 15 seconds), for what the server does
    /// on its own schedule (the next checkpoint).
    pub fn wait_for_text(&self, selector: &str, wanted: &str) -> String {
        self.wait(selector, wanted, true)
    }

    fn wait(&self, selector: &str, wanted: &str, reload: bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(selector);
            if text.contains(wanted) {
                return text;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{selector} never said {wanted:?}: {text}");
            std::thread::sleep(Duration::from_millis(if reload { 300 } else { 50 }));
            if reload {
                self.session_command("POST", "/refresh", json!({}));
            }
        }
    }

    /// Saves a screenshot of the page as `<artifacts>/<name>.png`.
    pub fn screenshot(&self, name: &str) {
        let encoded = self.session_command("GET", "/screenshot", json!({}));
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap_or_default()).expect("png");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.artifacts.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = &self.profile;
    }
}

/// Whether a WebDriver error says the element was replaced by a navigation (so finding it again helps).
fn is_replaced_node(error: &Value) -> bool {
    error["error"] == "stale element reference"
        || error["message"].as_str().is_some_and(|m| m.contains("does not belong to the document"))
}
