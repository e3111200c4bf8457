//! The `ccma serve` page in a real browser: headless Chromium driven over the W3C WebDriver
//! protocol (chromedriver), typing a query and reading the results from the DOM, following a
//! shared URL, opening a result large, and the test-split browser showing the worst query first.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the test
//! says so loudly and passes. `CCMA_SERVE_RUN=RUN_DIR` serves that trained run instead of a tiny
//! one trained here; `CCMA_SCREENSHOT_DIR=DIR` keeps the page's screenshots (`search.png`,
//! `failures.png`), as in the README.
mod common;
use base64::Engine;
use common::serve::{tiny_synth_run, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver on an ephemeral loopback port; killed when dropped.
struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Driver {
    fn start(exe: &Path) -> Driver {
        let mut child = Command::new(exe)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("started successfully on port ")
                    .map(|(_, p)| p.trim_end_matches('.').to_string())
            })
            .expect("chromedriver prints its port");
        std::thread::spawn(move || lines.for_each(drop));
        Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut r = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(b.unwrap_or(json!({})).to_string()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let v: Value = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session; ended when dropped.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl<'a> Session<'a> {
    fn new(driver: &'a Driver, chromium: &Path) -> Session<'a> {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let v = driver.call("POST", "/session", Some(caps));
        let id = v["sessionId"].as_str().unwrap().to_string();
        let s = Session {
            driver,
            id,
            _profile: profile,
        };
        // Finding an element waits up to this long for it to appear (the page fetches its data).
        s.call("POST", "/timeouts", Some(json!({ "implicit": 60_000 })));
        s
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// The first element matching `css`, waiting for it.
    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn attribute(&self, element: &str, name: &str) -> Value {
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None)
    }

    fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until every image in the window (each `img` with a source that the window shows:
    /// the closed viewer has none, tiles below the fold load lazily) has loaded, polling for at
    /// most 60 s, and asserts that each one has pixels: no tile in a screenshot is left empty.
    fn wait_for_images(&self) {
        let script = "return Array.from(document.images).filter(i => {\
                          const r = i.getBoundingClientRect();\
                          return i.getAttribute('src') && r.bottom > 0 && r.right > 0\
                              && r.top < innerHeight && r.left < innerWidth; })\
                      .map(i => i.complete ? i.naturalWidth : -1)";
        for _ in 0..600 {
            let widths = self.call(
                "POST",
                "/execute/sync",
                Some(json!({ "script": script, "args": [] })),
            );
            let widths: Vec<i64> = widths
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_i64().unwrap())
                .collect();
            if widths.iter().all(|&w| w >= 0) {
                assert!(
                    !widths.is_empty() && widths.iter().all(|&w| w > 0),
                    "images that did not load: {widths:?}"
                );
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the page's images did not finish loading in 60 s");
    }

    /// Waits for every image ([`Session::wait_for_images`]), then keeps a screenshot as `name`
    /// under `CCMA_SCREENSHOT_DIR`, when it is set.
    fn screenshot(&self, name: &str) {
        self.wait_for_images();
        let Some(dir) = std::env::var_os("CCMA_SCREENSHOT_DIR") else {
            return;
        };
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(Path::new(&dir).join(name), bytes).unwrap();
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .agent
            .delete(format!("{}/session/{}", self.driver.base, self.id))
            .call();
    }
}

#[test]
fn the_page_searches_shares_and_shows_the_worst_test_query_first() {
    let (Some(chromium), Some(chromedriver)) = (
        on_path(&["chromium", "chromium-browser"]),
        on_path(&["chromedriver"]),
    ) else {
        eprintln!(
            "\n########\n# SKIPPED serve_browser: chromium and chromedriver are not installed\n\
             # (apt-get install -y chromium chromium-driver; .ci/run installs them)\n########\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = match std::env::var_os("CCMA_SERVE_RUN") {
        Some(r) => PathBuf::from(r),
        None => tiny_synth_run(dir.path()),
    };
    let server = Server::start(&["--run", run.to_str().unwrap()]);
    let driver = Driver::start(&chromedriver);
    let browser = Session::new(&driver, &chromium);

    // Typing a query: the results are the API's, best first, and the URL holds the query.
    let query = "a woman in a red coat with a black skirt and a backpack";
    let answer = server.search(query, "10").json();
    let results = answer["results"].as_array().unwrap();
    let want: Vec<&str> = results
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    browser.open(&format!("{}/", server.base));
    let input = browser.find("body[data-state=ready] #q");
    browser.call(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({ "text": format!("{query}\u{E007}") })),
    );
    let first = browser.find("body[data-state=ready] #results li.result");
    assert_eq!(browser.attribute(&first, "title"), want[0]);
    assert!(
        browser.text(&first).starts_with("#1"),
        "{}",
        browser.text(&first)
    );
    let cards = browser.find_all("#results li.result");
    assert_eq!(cards.len(), want.len());
    let titles: Vec<Value> = cards
        .iter()
        .map(|c| browser.attribute(c, "title"))
        .collect();
    assert_eq!(titles, want);
    let url = browser.call("GET", "/url", None);
    assert!(
        url.as_str().unwrap().contains("q=a+woman+in+a+red+coat")
            && url.as_str().unwrap().contains("k=10"),
        "{url}"
    );
    browser.screenshot("search.png");

    // Clicking a result shows it large.
    browser.call("POST", &format!("/element/{first}/click"), None);
    let viewer = browser.find("#viewer:not([hidden]) #viewer-img");
    let src = browser.attribute(&viewer, "src");
    assert!(
        src.as_str()
            .unwrap()
            .ends_with(&format!("/img/g/{}", results[0]["index"])),
        "{src}"
    );

    // A shared URL shows the same results, with its own k.
    browser.open(url.as_str().unwrap().replace("k=10", "k=3").as_str());
    browser.find("body[data-state=ready] #results li.result");
    let cards = browser.find_all("#results li.result");
    let titles: Vec<Value> = cards
        .iter()
        .map(|c| browser.attribute(c, "title"))
        .collect();
    assert_eq!(titles, want[..3]);

    // The test-split browser: worst query first, with its rank and caption.
    let worst = server.get("/api/failures?limit=1").json()["queries"][0].clone();
    browser.open(&format!("{}/?view=failures", server.base));
    let item = browser.find("body[data-state=ready] #failures li.failure");
    assert_eq!(
        browser.attribute(&item, "data-query"),
        worst["query"].to_string()
    );
    let text = browser.text(&item);
    assert!(
        text.contains(&format!(
            "first correct image at rank {}",
            worst["first_match"]
        )) && text.contains(worst["caption"].as_str().unwrap()),
        "{text}\n{worst}"
    );
    let marked = browser.find_all("#failures li.failure:first-child li.thumb.correct");
    let correct = worst["top"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["correct"] == true)
        .count();
    assert_eq!(marked.len(), correct);
    browser.screenshot("failures.png");
}
