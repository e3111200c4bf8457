//! The HTTP/1.1 server under `ccma serve`: over std's sockets, with `httparse` to read requests,
//! and a bound on everything a client controls.
//!
//! - A request's line and headers: at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers (else
//!   431), arriving within [`HEAD_TIMEOUT`] (else the connection is closed); a line that is not
//!   HTTP, or not UTF-8, is a 400. A request body is never read: a request that has one is
//!   answered and its connection closed.
//! - Answers: each write may wait [`WRITE_TIMEOUT`] for a client that does not read, a whole
//!   answer [`ANSWER_TIME`]; past either the connection is closed.
//! - Connections: one thread each, at most [`MAX_CONNECTIONS`] at once and [`MAX_PER_CLIENT`] from
//!   one address (more are answered 503 and closed), at most [`MAX_REQUESTS`] requests each.
//! - Stopping ([`Server::stop`]): no new connection is taken, idle ones are closed, answers in
//!   progress get [`STOP_GRACE`] to finish, then their connections are cut.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most bytes of a request line and headers.
pub const MAX_HEAD: usize = 16 << 10;
/// The most headers of a request.
pub const MAX_HEADERS: usize = 64;
/// How long a request's line and headers may take to arrive (and an idle connection stay open).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may wait for a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole answer may take to send.
pub const ANSWER_TIME: Duration = Duration::from_secs(120);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections served at once from one address.
pub const MAX_PER_CLIENT: usize = 32;
/// Requests answered on one connection.
pub const MAX_REQUESTS: usize = 1000;
/// How long a stop waits for the answers in progress before it cuts their connections.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a refused client may still send before its connection is closed: bytes, time.
const LINGER_BYTES: u64 = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Bytes sent per write of a body.
const CHUNK: usize = 64 << 10;

/// An answer before it is sent.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers beyond Content-Type, Content-Length and Connection.
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// The first `len` bytes of a file, streamed.
    File {
        file: std::fs::File,
        len: u64,
    },
}

impl Reply {
    /// A plain-text answer (the server's own refusals).
    fn plain(status: u16, text: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: Body::Bytes(format!("{text}\n").into_bytes()),
        }
    }
}

/// What answers a request: (method, target as sent) to the reply.
pub type Handler = dyn Fn(&str, &str) -> Reply + Send + Sync;

/// The connections being served: a handle on each socket (to close it on stop) and its client.
#[derive(Default)]
struct Live {
    sockets: Mutex<HashMap<u64, (IpAddr, TcpStream)>>,
    ended: Condvar,
}

impl Live {
    fn count(&self, client: IpAddr) -> (usize, usize) {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let from = sockets.values().filter(|(ip, _)| *ip == client).count();
        (sockets.len(), from)
    }

    fn remove(&self, id: u64) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.remove(&id);
        self.ended.notify_all();
    }

    /// Shuts down `how` every socket; waits until none is left or `wait` has passed. How many are
    /// left.
    fn close_all(&self, how: Shutdown, wait: Duration) -> usize {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        for (_, s) in sockets.values() {
            let _ = s.shutdown(how);
        }
        let (sockets, _) = self
            .ended
            .wait_timeout_while(sockets, wait, |s| !s.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        sockets.len()
    }
}

/// A running server: the thread that takes connections, and the connections.
pub struct Server {
    stopping: Arc<AtomicBool>,
    live: Arc<Live>,
    acceptor: JoinHandle<()>,
}

impl Server {
    /// Serves `listener` with `handler` until [`Server::stop`].
    pub fn start(listener: TcpListener, handler: Arc<Handler>) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Live::default());
        let (s, l) = (stopping.clone(), live.clone());
        let acceptor = std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept(&listener, &handler, &s, &l))?;
        Ok(Server {
            stopping,
            live,
            acceptor,
        })
    }

    /// Stops: takes no new connection, closes idle ones, gives answers in progress
    /// [`STOP_GRACE`], then cuts the connections left (a client that does not read its answer).
    /// How many connection threads had still not ended [`WRITE_TIMEOUT`] after that.
    pub fn stop(self) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.acceptor.join();
        // Reading ends: idle connections close, those answering go on.
        if self.live.close_all(Shutdown::Read, STOP_GRACE) == 0 {
            return 0;
        }
        let left = self.live.close_all(Shutdown::Both, WRITE_TIMEOUT);
        tracing::warn!(
            "cut the connections whose answers were not taken in {STOP_GRACE:?}{}",
            match left {
                0 => String::new(),
                n => format!(" ({n} still ending)"),
            }
        );
        left
    }
}

/// Takes connections until `stopping`, each to a thread of its own within the bounds.
fn accept(listener: &TcpListener, handler: &Arc<Handler>, stopping: &AtomicBool, live: &Arc<Live>) {
    let next_id = AtomicU64::new(0);
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => admit(stream, peer, handler, live, &next_id),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(listener),
            Err(e) => {
                // Out of descriptors, a connection reset before it was taken: wait, go on.
                tracing::warn!("cannot take a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits up to 100 ms for a connection on `listener`.
fn wait_readable(listener: &TcpListener) {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, 100) };
}

fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    handler: &Arc<Handler>,
    live: &Arc<Live>,
    next_id: &AtomicU64,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (all, from) = live.count(peer.ip());
    let refuse = |mut stream: TcpStream, why: &str| {
        tracing::warn!("refused a connection from {}: {why}", peer.ip());
        // A short answer to a fresh connection: the write does not wait, nor does the close.
        let _ = send(&mut stream, Reply::plain(503, why), false, false);
    };
    if all >= MAX_CONNECTIONS {
        return refuse(stream, &format!("{MAX_CONNECTIONS} connections are open"));
    }
    if from >= MAX_PER_CLIENT {
        return refuse(
            stream,
            &format!("{MAX_PER_CLIENT} connections from this address are open"),
        );
    }
    let Ok(handle) = stream.try_clone() else {
        return refuse(stream, "out of resources");
    };
    let id = next_id.fetch_add(1, Ordering::SeqCst);
    live.sockets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, (peer.ip(), handle));
    let (handler, live_here) = (handler.clone(), live.clone());
    let spawned = std::thread::Builder::new()
        .name("connection".into())
        .spawn(move || {
            serve_connection(stream, &*handler);
            live_here.remove(id);
        });
    if spawned.is_err() {
        live.remove(id);
        tracing::warn!("refused a connection from {}: no thread for it", peer.ip());
    }
}

/// A request's line and headers, read.
struct Head {
    method: String,
    target: String,
    /// Whether the connection stays open after the answer.
    keep_alive: bool,
}

/// Why no request was read.
enum NoHead {
    /// The client closed, went quiet, or the server is stopping: close without a word.
    Closed,
    /// A request that cannot be served: answer this status and close.
    Refused(u16, String),
}

/// Answers the requests of one connection, in order, until it closes or a bound is reached.
fn serve_connection(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_nodelay(true);
    // Bytes read and not yet used: a request's head, and what a client sent after it.
    let mut pending = Vec::with_capacity(1024);
    for n in 1..=MAX_REQUESTS {
        let head = match read_head(&mut stream, &mut pending) {
            Ok(head) => head,
            Err(NoHead::Closed) => return,
            Err(NoHead::Refused(status, why)) => {
                if send(&mut stream, Reply::plain(status, &why), false, false).is_ok() {
                    close_gently(stream);
                }
                return;
            }
        };
        let keep_alive = head.keep_alive && n < MAX_REQUESTS;
        let reply = handler(&head.method, &head.target);
        let head_only = head.method == "HEAD";
        match send(&mut stream, reply, head_only, keep_alive) {
            Ok(()) if keep_alive => {}
            Ok(()) => return close_gently(stream),
            Err(_) => return,
        }
    }
}

/// Closes a connection whose answer was sent, first reading (and dropping) what the client still
/// sends (a request body, the rest of an oversized head), at most [`LINGER_BYTES`] for at most
/// [`LINGER_TIME`]: closing with unread bytes would reset the connection, and the client could
/// lose the answer.
fn close_gently(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let (mut left, mut buf) = (LINGER_BYTES, [0u8; 4096]);
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

/// Reads the next request's line and headers into `pending` (at most [`MAX_HEAD`] bytes, within
/// [`HEAD_TIMEOUT`]) and takes them out of it.
fn read_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Result<Head, NoHead> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(pending) {
            Ok(httparse::Status::Complete(len)) => {
                let head = head_of(&request)?;
                pending.drain(..len);
                return Ok(head);
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(NoHead::Refused(
                    431,
                    format!("more than {MAX_HEADERS} request headers"),
                ))
            }
            Err(e) => return Err(NoHead::Refused(400, format!("malformed request ({e})"))),
        }
        if pending.len() >= MAX_HEAD {
            return Err(NoHead::Refused(
                431,
                format!(
                    "the request line and headers are over {} KiB",
                    MAX_HEAD >> 10
                ),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(NoHead::Closed);
        }
        let mut chunk = [0u8; 4096];
        let room = chunk.len().min(MAX_HEAD - pending.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) | Err(_) => return Err(NoHead::Closed),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What a parsed request asks; a request with a body is answered and its connection closed.
fn head_of(request: &httparse::Request) -> Result<Head, NoHead> {
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(NoHead::Refused(400, "malformed request".into()));
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let has_body =
        header("transfer-encoding").is_some() || header("content-length").is_some_and(|n| n != "0");
    let close = header("connection").is_some_and(|c| c.split(',').any(|t| t.trim() == "close"));
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive: version == 1 && !close && !has_body,
    })
}

/// The reason phrase of the statuses sent.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Sends `reply` (its headers only when `head_only`) within [`ANSWER_TIME`].
fn send(
    stream: &mut TcpStream,
    reply: Reply,
    head_only: bool,
    keep_alive: bool,
) -> std::io::Result<()> {
    let deadline = Instant::now() + ANSWER_TIME;
    let len = match &reply.body {
        Body::Bytes(b) => b.len() as u64,
        Body::File { len, .. } => *len,
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nConnection: {}\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if head_only {
        return stream.flush();
    }
    let late = || std::io::Error::new(std::io::ErrorKind::TimedOut, "the answer took too long");
    match reply.body {
        Body::Bytes(bytes) => {
            for chunk in bytes.chunks(CHUNK) {
                if Instant::now() > deadline {
                    return Err(late());
                }
                stream.write_all(chunk)?;
            }
        }
        Body::File { file, len } => {
            let mut file = file.take(len);
            let mut buf = vec![0u8; CHUNK];
            let mut sent = 0;
            while sent < len {
                if Instant::now() > deadline {
                    return Err(late());
                }
                let n = file.read(&mut buf)?;
                if n == 0 {
                    // The file shrank since it was opened: the length sent cannot be kept.
                    return Err(std::io::Error::other("the file shrank while it was sent"));
                }
                stream.write_all(&buf[..n])?;
                sent += n as u64;
            }
        }
    }
    stream.flush()
}
