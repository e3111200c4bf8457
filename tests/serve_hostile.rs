//! `ccma serve` against hostile files and clients, through the binary on loopback: gallery images
//! swapped after start (for a link out of the gallery, a hard link to another file, a FIFO) are
//! never sent and never block; clients that send requests but never read do not stall other
//! clients nor the stop; a request line of invalid UTF-8 is a 400; the request line and headers
//! are bounded; the API names no absolute path; a closed stdout does not end the server. Every
//! case is bounded in count and time.
mod common;
use common::serve::Server;
use common::{image, mkfifo, s, tiny_checkpoint, tiny_cuhk_config};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one exchange may take before the server counts as blocked (they take milliseconds;
/// the server drops a client that sends half a request after 10 s).
const BLOCKED_AFTER: Duration = Duration::from_secs(60);

/// Sends `request` as written on a fresh connection to `addr`; the status line of the answer.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BLOCKED_AFTER)).unwrap();
    stream.write_all(request).unwrap();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("no answer to {:?}: {e}", String::from_utf8_lossy(request)));
    line.trim_end().to_string()
}

/// `GET target` on a fresh connection: status line and body.
fn get(addr: &str, target: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BLOCKED_AFTER)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("GET {target}: {e}"));
    let at = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {target}: {}", String::from_utf8_lossy(&reply)));
    let head = String::from_utf8_lossy(&reply[..at]).into_owned();
    (
        head.lines().next().unwrap().to_string(),
        reply[at + 4..].to_vec(),
    )
}

/// A gallery of five images in `dir/gallery` (a, b, big, c, d: indices 0 to 4; `big.jpg` is a
/// JPEG followed by 24 MB that decoders ignore) and a checkpoint to serve it with.
fn setup(dir: &Path) -> std::path::PathBuf {
    let gallery = dir.join("gallery");
    for name in ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "big.jpg"] {
        image(&gallery.join(name));
    }
    let mut big = std::fs::OpenOptions::new()
        .append(true)
        .open(gallery.join("big.jpg"))
        .unwrap();
    big.write_all(&vec![0u8; 24 << 20]).unwrap();
    let ck = dir.join("model.safetensors");
    tiny_checkpoint(&tiny_cuhk_config(dir, dir), &ck, |t| t);
    ck
}

#[test]
fn serves_only_the_files_listed_at_start_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let ck = setup(dir.path());
    let gallery = dir.path().join("gallery");
    let server = Server::start(&["--checkpoint", s(&ck), "--gallery", s(&gallery)]);
    let addr = server.addr().to_string();
    let (status, big) = get(&addr, "/img/g/2");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        big.len(),
        std::fs::metadata(gallery.join("big.jpg")).unwrap().len() as usize
    );

    // The API names images relative to the gallery, never by an absolute path.
    let root = dir.path().to_str().unwrap();
    for target in ["/api/info", "/api/search?q=a+man&k=5"] {
        let (status, body) = get(&addr, target);
        assert_eq!(status, "HTTP/1.1 200 OK", "{target}");
        let body = String::from_utf8(body).unwrap();
        assert!(!body.contains(root), "{target} shows a path: {body}");
    }
    let (_, found) = get(&addr, "/api/search?q=a+man&k=5");
    let found: serde_json::Value = serde_json::from_slice(&found).unwrap();
    let names: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"big.jpg"), "{found}");

    // After start: c.jpg becomes a link out of the gallery, d.jpg a hard link to another file,
    // a.jpg a FIFO. None is sent (a placeholder is), none blocks.
    let secret = dir.path().join("secret.jpg");
    std::fs::write(&secret, "the secret, not an image").unwrap();
    std::fs::remove_file(gallery.join("c.jpg")).unwrap();
    std::os::unix::fs::symlink(&secret, gallery.join("c.jpg")).unwrap();
    std::fs::remove_file(gallery.join("d.jpg")).unwrap();
    std::fs::hard_link(&secret, gallery.join("d.jpg")).unwrap();
    std::fs::remove_file(gallery.join("a.jpg")).unwrap();
    mkfifo(&gallery.join("a.jpg"));
    for i in [3, 4] {
        let (status, body) = get(&addr, &format!("/img/g/{i}"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("<svg") && !body.contains("secret"),
            "{i}: {body}"
        );
    }
    // More requests for the FIFO at once than the earlier server had handlers.
    std::thread::scope(|scope| {
        let asks: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| get(&addr, "/img/g/0")))
            .collect();
        for ask in asks {
            let (status, body) = ask.join().unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert!(String::from_utf8_lossy(&body).contains("<svg"));
        }
    });

    // Eight clients each send two requests for the 24 MB image and never read: others are
    // still answered, and a stop does not wait for them.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            let one = format!("GET /img/g/2 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            c.write_all(format!("{one}{one}").as_bytes()).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(&addr, "/api/info").0, "HTTP/1.1 200 OK");
    assert_eq!(get(&addr, "/img/g/1").0, "HTTP/1.1 200 OK");
    let (status, log) = server.stop(libc::SIGTERM);
    drop(stalled);
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("stopped") && !log.contains("panicked"),
        "{log}"
    );
    assert!(log.contains("cut the connections"), "{log}");
    // The placeholders' reasons, in the whole log (read once the server has ended).
    assert!(log.contains("no longer the file listed at start"), "{log}");
    assert!(log.contains("a FIFO, not a regular file"), "{log}");
}

#[test]
fn bad_and_oversized_requests_are_answered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let ck = setup(dir.path());
    let gallery = dir.path().join("gallery");
    let server = Server::start(&["--checkpoint", s(&ck), "--gallery", s(&gallery)]);
    let addr = server.addr().to_string();
    let host = format!("Host: {addr}\r\n");

    let invalid = [
        b"GET /img/g/\xff\xfe HTTP/1.1\r\n".as_slice(),
        host.as_bytes(),
        b"\r\n",
    ]
    .concat();
    assert_eq!(exchange(&addr, &invalid), "HTTP/1.1 400 Bad Request");
    assert_eq!(
        exchange(&addr, b"NOT HTTP AT ALL\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    // A header past 16 KiB, and 100 headers, are refused without reading the rest.
    let long = format!(
        "GET / HTTP/1.1\r\n{host}X-Long: {}\r\n\r\n",
        "a".repeat(20 << 10)
    );
    assert_eq!(
        exchange(&addr, long.as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{host}{many}\r\n");
    assert_eq!(
        exchange(&addr, many.as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // A 50 MB header: the server stops reading at 16 KiB, answers and closes; the client's
    // writes then fail.
    let mut flood = TcpStream::connect(&addr).unwrap();
    flood.set_read_timeout(Some(BLOCKED_AFTER)).unwrap();
    flood.set_write_timeout(Some(BLOCKED_AFTER)).unwrap();
    write!(flood, "GET / HTTP/1.1\r\n{host}X-Flood: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let written = (0..50)
        .take_while(|_| flood.write_all(&chunk).is_ok())
        .count();
    assert!(written < 50, "the server read a 50 MB header");
    // A client that sends half a request and goes quiet is dropped (after 10 s).
    let mut quiet = TcpStream::connect(&addr).unwrap();
    quiet.set_read_timeout(Some(BLOCKED_AFTER)).unwrap();
    quiet.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = quiet.read_to_end(&mut rest);
    assert!(
        started.elapsed() < BLOCKED_AFTER,
        "a quiet client held its connection"
    );
    // Keep-alive and pipelining still work: two requests, two answers on one connection.
    let mut both = TcpStream::connect(&addr).unwrap();
    both.set_read_timeout(Some(BLOCKED_AFTER)).unwrap();
    let one = format!("GET /api/info HTTP/1.1\r\n{host}\r\n");
    let last = format!("GET /api/info HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
    both.write_all(format!("{one}{last}").as_bytes()).unwrap();
    let mut replies = String::new();
    both.read_to_string(&mut replies).unwrap();
    assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 2, "{replies}");
    let (status, log) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {log}");
}

#[test]
fn a_closed_stdout_does_not_end_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let ck = setup(dir.path());
    let gallery = dir.path().join("gallery");
    let port = common::free_port();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(["serve", "--checkpoint", s(&ck), "--gallery", s(&gallery)])
        .args(["--port", &port])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let answered = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("ccma serve ended ({status}): {err}");
        }
        if TcpStream::connect(&addr).is_ok() {
            break get(&addr, "/api/info").0;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answered, "HTTP/1.1 200 OK");
    // SAFETY: signals the child this test started, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("stdout is closed") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_feature_file_naming_a_fifo_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let ck = setup(dir.path());
    let gallery = dir.path().join("gallery");
    let feats = dir.path().join("feats.safetensors");
    let (a, b) = (gallery.join("a.jpg"), gallery.join("b.jpg"));
    let out = common::ccma(&[
        "embed",
        "--checkpoint",
        s(&ck),
        "--images",
        s(&a),
        s(&b),
        "--out",
        s(&feats),
    ]);
    common::succeeded(&out, "ccma embed");
    // b.jpg is a FIFO by the time the server starts, a.jpg becomes one after.
    std::fs::remove_file(&b).unwrap();
    mkfifo(&b);
    let server = Server::start(&["--checkpoint", s(&ck), "--gallery", s(&feats)]);
    let addr = server.addr().to_string();
    std::fs::remove_file(&a).unwrap();
    mkfifo(&a);
    for target in ["/img/g/0", "/img/g/1", "/img/g/1"] {
        let (status, body) = get(&addr, target);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(String::from_utf8_lossy(&body).contains("<svg"), "{target}");
    }
    let (status, log) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("not a regular file inside the gallery at start"),
        "{log}"
    );
    assert!(log.contains("a FIFO, not a regular file"), "{log}");
}

/// A feature file names its images itself: only those inside its own folder (or `--images-root`)
/// are sent; `--images-root` with a gallery folder is refused, as it could not act.
#[test]
fn a_feature_file_sends_only_images_inside_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let ck = setup(dir.path());
    let gallery = dir.path().join("gallery");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let feats = elsewhere.join("feats.safetensors");
    let out = common::ccma(&[
        "embed",
        "--checkpoint",
        s(&ck),
        "--images",
        s(&gallery.join("a.jpg")),
        "--out",
        s(&feats),
    ]);
    common::succeeded(&out, "ccma embed");
    let a = std::fs::read(gallery.join("a.jpg")).unwrap();

    // The image lies outside the feature file's folder: a placeholder.
    let server = Server::start(&["--checkpoint", s(&ck), "--gallery", s(&feats)]);
    let (status, body) = get(server.addr(), "/img/g/0");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(String::from_utf8_lossy(&body).contains("<svg"));
    let (status, log) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("inside the gallery"), "{log}");

    // With the folder that holds it as --images-root, the image itself.
    let server = Server::start(&[
        "--checkpoint",
        s(&ck),
        "--gallery",
        s(&feats),
        "--images-root",
        s(&gallery),
    ]);
    let (status, body) = get(server.addr(), "/img/g/0");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, a);
    let (status, log) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {log}");

    let out = common::ccma(&[
        "serve",
        "--checkpoint",
        s(&ck),
        "--gallery",
        s(&gallery),
        "--images-root",
        s(&gallery),
        "--port",
        "0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--images-root") && err.contains("acts only with a feature file"),
        "{err}"
    );
}
