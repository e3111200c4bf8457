//! What each request gets: the page and its two assets, the JSON API, and gallery images by index.
//!
//! - `GET /` (and `/app.js`, `/style.css`): the page, embedded in the binary.
//! - `GET /api/info`: the gallery, the weights, the run (when one is loaded) and the limits.
//! - `GET /api/search?q=SENTENCE&k=N`: what `ccma search --json` prints for the same query.
//! - `GET /api/failures?words=W&offset=O&limit=L`: the run's test queries, worst first.
//! - `GET /img/g/<i>`, `/img/t/<i>`: gallery image `i`, test-split image `i`.
//!
//! A file is only ever one of the listed images, chosen by its index; a path in a request is never
//! opened. A listed image that is gone, or that is not a jpg/png file, is sent as a placeholder.
use super::failures::TestRun;
use super::searcher::Searcher;
use crate::retrieval::gallery::IMAGE_EXTENSIONS;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use tiny_http::{Header, Method, Request, Response, StatusCode};

/// Longest query accepted, in characters (captions are a few dozen words).
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most results one search returns.
pub const MAX_K: usize = 100;
/// Most test queries one page of the failure browser returns.
const MAX_PAGE: usize = 500;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const PLACEHOLDER_SVG: &str = include_str!("assets/missing.svg");

/// What the handlers share.
pub struct State {
    pub searcher: Searcher,
    pub gallery: Vec<PathBuf>,
    pub run: Option<TestRun>,
    /// The answer of `/api/info`.
    pub info: serde_json::Value,
}

/// A response before it is sent.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// An image file, streamed.
    File(std::fs::File),
}

impl Reply {
    fn text(status: u16, content_type: &'static str, text: &str) -> Reply {
        Reply {
            status,
            content_type,
            body: Body::Bytes(text.as_bytes().to_vec()),
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Body::Bytes(value.to_string().into_bytes()),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": message }))
    }
}

/// Answers one request (sending failures, such as a client that left, are only logged).
pub fn answer(state: &State, rq: Request) {
    let reply = match rq.method() {
        Method::Get | Method::Head => route(state, rq.url()),
        _ => Reply::error(405, "only GET requests are served"),
    };
    let mut headers = vec![
        header("Content-Type", reply.content_type),
        header("X-Content-Type-Options", "nosniff"),
        header("Cache-Control", "no-store"),
    ];
    if reply.content_type.starts_with("text/html") {
        headers.push(header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ));
    }
    let status = StatusCode(reply.status);
    let sent = match reply.body {
        Body::Bytes(b) => {
            let len = b.len();
            rq.respond(Response::new(status, headers, &b[..], Some(len), None))
        }
        Body::File(f) => {
            let len = f.metadata().ok().map(|m| m.len() as usize);
            rq.respond(Response::new(status, headers, f, len, None))
        }
    };
    if let Err(e) = sent {
        tracing::debug!("response not sent: {e}");
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

/// The reply to `GET url` (a path with an optional `?query`).
pub fn route(state: &State, url: &str) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let params: Vec<(Cow<str>, Cow<str>)> = form_urlencoded::parse(query.as_bytes()).collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    };
    match path {
        "/" | "/index.html" => Reply::text(200, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => Reply::text(200, "text/javascript; charset=utf-8", APP_JS),
        "/style.css" => Reply::text(200, "text/css; charset=utf-8", STYLE_CSS),
        "/api/info" => Reply::json(200, &state.info),
        "/api/search" => search(state, param("q"), param("k")),
        "/api/failures" => match &state.run {
            Some(run) => failures(run, param("words"), param("offset"), param("limit")),
            None => Reply::error(
                404,
                "no run is loaded: start ccma serve with --run RUN_DIR to browse a test split",
            ),
        },
        _ => {
            if let Some(i) = path.strip_prefix("/img/g/") {
                image(&state.gallery, i)
            } else if let Some(i) = path.strip_prefix("/img/t/") {
                match &state.run {
                    Some(run) => image(&run.images, i),
                    None => Reply::error(404, "no run is loaded"),
                }
            } else {
                Reply::error(404, "no such page")
            }
        }
    }
}

/// `value` as a whole number from `min` to `max`, or a 400 naming `name`.
fn number(
    name: &str,
    value: Option<&str>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, Reply> {
    let Some(v) = value else { return Ok(default) };
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Reply::error(
            400,
            &format!("{name}={v:?}: expected a whole number from {min} to {max}"),
        )),
    }
}

fn search(state: &State, q: Option<&str>, k: Option<&str>) -> Reply {
    let Some(q) = q else {
        return Reply::error(400, "no query: give q=SENTENCE");
    };
    if q.trim().is_empty() {
        return Reply::error(400, "the query is empty: give a sentence to search for");
    }
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Reply::error(
            400,
            &format!("the query has {chars} characters: at most {MAX_QUERY_CHARS} are accepted"),
        );
    }
    let k = match number("k", k, 10, 1, MAX_K) {
        Ok(k) => k,
        Err(reply) => return reply,
    };
    match state.searcher.search(q.to_string(), k) {
        Ok(hits) => Reply::json(
            200,
            &crate::cli::output::results_json(q, &hits, &state.gallery),
        ),
        Err(e) => Reply::error(500, &e),
    }
}

fn failures(
    run: &TestRun,
    words: Option<&str>,
    offset: Option<&str>,
    limit: Option<&str>,
) -> Reply {
    if words.is_some_and(|w| w.chars().count() > MAX_QUERY_CHARS) {
        return Reply::error(
            400,
            &format!("the filter is longer than {MAX_QUERY_CHARS} characters"),
        );
    }
    let offset = match number("offset", offset, 0, 0, usize::MAX) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let limit = match number("limit", limit, 50, 1, MAX_PAGE) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    Reply::json(200, &run.page(words.unwrap_or(""), offset, limit))
}

/// Image `index` of `files` (a decimal number), or the placeholder when it cannot be sent.
fn image(files: &[PathBuf], index: &str) -> Reply {
    let Some(path) = index
        .parse::<usize>()
        .ok()
        .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|i| files.get(i))
    else {
        return Reply::error(
            404,
            &format!(
                "no image {index:?}: images are numbered 0 to {}",
                files.len().saturating_sub(1)
            ),
        );
    };
    let Some(content_type) = image_type(path) else {
        tracing::warn!(
            "{} is not a jpg or png file: sent a placeholder",
            path.display()
        );
        return Reply::text(200, "image/svg+xml", PLACEHOLDER_SVG);
    };
    match std::fs::File::open(path).and_then(|f| {
        if f.metadata()?.is_file() {
            Ok(f)
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    }) {
        Ok(f) => Reply {
            status: 200,
            content_type,
            body: Body::File(f),
        },
        Err(e) => {
            tracing::warn!("cannot open {} ({e}): sent a placeholder", path.display());
            Reply::text(200, "image/svg+xml", PLACEHOLDER_SVG)
        }
    }
}

/// The content type of a gallery image, by its extension.
fn image_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_string_lossy().to_lowercase();
    match ext.as_str() {
        e if !IMAGE_EXTENSIONS.contains(&e) => None,
        "png" => Some("image/png"),
        _ => Some("image/jpeg"),
    }
}
