//! A real headless Chromium driven through W3C WebDriver (`chromedriver`,
//! Debian's `chromium-driver`).
//!
//! The few commands the browser test needs (new session, navigate,
//! refresh, find an element, read its text and size) are spoken directly
//! as JSON over HTTP with the `reqwest` the agent already builds, rather
//! than through `fantoccini`: no new dependency tree to compile on a
//! shared machine, and nothing here that a client library would hide.
//! Missing `chromium` or `chromedriver` fails the test, never skips it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver may take to start.
const START: Duration = Duration::from_secs(30);

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the status page test needs `{tool}` on PATH: apt-get install -y chromium chromium-driver \
         (scripts/test installs them)"
    );
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height`
    /// CSS pixel viewport (as root: `--no-sandbox`).
    pub fn start(width: u32, height: u32) -> Self {
        require("chromium");
        require("chromedriver");
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: reqwest::Client::new(),
            runtime,
        };
        let deadline = Instant::now() + START;
        while browser.call("GET", "/status", None).is_err_or_not_ready() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage"],
                // A window cannot be made phone-narrow (Chromium has a
                // minimum width); the device emulation sets the viewport.
                "mobileEmulation": {"deviceMetrics": {
                    "width": width, "height": height, "pixelRatio": 2.0,
                }},
            },
        }}});
        let answer = browser
            .call("POST", "/session", Some(capabilities))
            .expect("a new Chromium session");
        browser.session = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or the error text.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let ok = response.status().is_success();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if ok {
                Ok(value["value"].clone())
            } else {
                Err(value["value"].to_string())
            }
        })
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url})));
    }

    /// Reloads the page.
    pub fn refresh(&self) {
        self.session_call("POST", "/refresh", None);
    }

    /// The page title.
    pub fn title(&self) -> String {
        self.session_call("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        self.session_call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, if any.
    fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css});
        let found = self.call("POST", &path, Some(body)).ok()?;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    /// The visible text of the element `css` selects (`None`: no such element).
    pub fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css)?;
        let text = self.session_call("GET", &format!("/element/{element}/text"), None);
        Some(text.as_str().unwrap_or_default().to_owned())
    }

    /// The rendered width of the element `css` selects, in CSS pixels.
    pub fn width(&self, css: &str) -> Option<f64> {
        let element = self.find(css)?;
        self.session_call("GET", &format!("/element/{element}/rect"), None)["width"].as_f64()
    }

    /// The window's inner width, in CSS pixels (the `<html>` element's).
    pub fn viewport_width(&self) -> Option<f64> {
        self.width("html")
    }
}

/// A WebDriver `/status` answer that says "not ready" or none at all.
trait NotReady {
    fn is_err_or_not_ready(&self) -> bool;
}

impl NotReady for Result<Value, String> {
    fn is_err_or_not_ready(&self) -> bool {
        !matches!(self, Ok(v) if v["ready"] == json!(true))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
