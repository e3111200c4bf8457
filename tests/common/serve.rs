//! `ccma serve` in tests: a tiny trained run to serve, the server on an ephemeral loopback port,
//! HTTP requests to it.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};

/// The folder a generated TOY-PEDES of `synth_ids` with `synth_seed` lives in, under `root`.
pub fn synth_dir(root: &Path, ids: (usize, usize, usize), synth_seed: u64) -> PathBuf {
    root.join(format!(
        "TOY-PEDES-{}-{}-{}-s{synth_seed}",
        ids.0, ids.1, ids.2
    ))
}

/// Trains a tiny from-scratch model (16-wide, 32x16 images, one epoch) on a generated
/// TOY-PEDES of 24 / 2 / 10 identities under `<dir>/data`; returns the run folder `<dir>/run`.
pub fn tiny_synth_run(dir: &Path) -> PathBuf {
    let cfg = dir.join("serve.yaml");
    std::fs::write(
        &cfg,
        format!(
            "dataset_name: TOY-PEDES\nroot_dir: {}\nsynth_ids: [24, 2, 10]\nseed: 3\nsynth_seed: 3\n{}\
             text_length: 40\nbatch_size: 8\nnum_epoch: 1\n\
             global_caption: clean\nloss_names: sdm+itc+id\n",
            dir.join("data").display(),
            super::MODEL_16
        ),
    )
    .unwrap();
    let run = dir.join("run");
    let out = super::train_command(&cfg, &run, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "training the tiny model: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// The test split of the generated set that [`tiny_synth_run`] trains on: its captions with
/// their person ids, in annotation order (as ccma reads them).
pub fn tiny_synth_test_captions(dir: &Path) -> Vec<(String, i64)> {
    let ann = synth_dir(&dir.join("data"), (24, 2, 10), 3).join("reid_raw.json");
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(ann).unwrap()).unwrap();
    entries
        .iter()
        .filter(|e| e["split"] == "test")
        .flat_map(|e| {
            let pid = e["id"].as_i64().unwrap();
            e["captions"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |c| (c.as_str().unwrap().to_string(), pid))
        })
        .collect()
}

/// How long a server may take to stop after a signal before it counts as hung (it takes well
/// under a second, or a few seconds with clients that do not read).
pub const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A running `ccma serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The log read so far and whether it has ended, and a signal for each piece read.
    stderr: Arc<(Mutex<(String, bool)>, Condvar)>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    agent: ureq::Agent,
}

/// An HTTP answer: status, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Server {
    /// Starts `ccma serve --port 0 <args>` and returns once it has printed the address it
    /// listens on (after loading everything) and its log holds the line that precedes that
    /// (`bound to ...`: stdout and stderr are separate pipes).
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ccma"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ccma serve");
        let stderr = Arc::new((Mutex::new((String::new(), false)), Condvar::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let (text, read) = &*sink;
            loop {
                match pipe.read(&mut buf) {
                    Ok(n) if n > 0 => text
                        .lock()
                        .unwrap()
                        .0
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                    _ => {
                        text.lock().unwrap().1 = true;
                        read.notify_all();
                        return;
                    }
                }
                read.notify_all();
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim_end_matches('/').to_string();
                    }
                }
                _ => {
                    let status = child.wait().unwrap();
                    stderr_thread.join().unwrap();
                    panic!(
                        "ccma serve {args:?} ended ({status}) before listening: {}",
                        stderr.0.lock().unwrap().0
                    );
                }
            }
        };
        // Nothing more is expected on stdout; drain it so the server can never block on it.
        std::thread::spawn(move || lines.for_each(drop));
        let (text, read) = &*stderr;
        let logged = read
            .wait_while(text.lock().unwrap(), |(t, ended)| {
                !t.contains("bound to") && !*ended
            })
            .unwrap();
        assert!(
            logged.0.contains("bound to"),
            "no `bound to` line: {}",
            logged.0
        );
        drop(logged);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server {
            child,
            base,
            stderr,
            stderr_thread: Some(stderr_thread),
            agent,
        }
    }

    /// `GET path` (with its query string, already encoded).
    pub fn get(&self, path: &str) -> Answer {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Answer {
            status: r.status().as_u16(),
            content_type,
            body: r.body_mut().read_to_vec().unwrap(),
        }
    }

    /// `GET /api/search?q=query&k=k`.
    pub fn search(&self, query: &str, k: &str) -> Answer {
        self.get(&format!(
            "/api/search?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("q", query)
                .append_pair("k", k)
                .finish()
        ))
    }

    /// The status code of `METHOD target` sent as written, on a plain socket (no client that
    /// could normalise the target).
    pub fn raw_status(&self, method: &str, target: &str) -> u16 {
        let addr = self.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        reply
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("status line {reply:?}"))
    }

    /// `host:port` the server listens on.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.stderr.0.lock().unwrap().0.clone()
    }

    /// Sends `signal`, waits for the server to end (failing the test if it has not after
    /// [`STOP_LIMIT`]); its exit status and whole log.
    pub fn stop(mut self, signal: i32) -> (ExitStatus, String) {
        // SAFETY: kill only sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < STOP_LIMIT,
                "ccma serve did not stop within {STOP_LIMIT:?} of signal {signal}: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        self.stderr_thread.take().unwrap().join().unwrap();
        (status, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
