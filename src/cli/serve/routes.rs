//! What each request gets: the page and its two assets, the JSON API, and gallery images by index.
//!
//! - `GET /` (and `/app.js`, `/style.css`): the page, embedded in the binary.
//! - `GET /api/info`: the gallery, the weights, the run (when one is loaded) and the limits.
//! - `GET /api/search?q=SENTENCE&k=N`: what `ccma search --json` prints for the same query, each
//!   image named relative to the gallery's folder.
//! - `GET /api/failures?words=W&offset=O&limit=L`: the run's test queries, worst first.
//! - `GET /img/g/<i>`, `/img/t/<i>`: gallery image `i`, test-split image `i`.
//!
//! A file is only ever one of the images listed at start, chosen by its index, and only while it
//! is still that file ([`images`]); a path in a request is never opened. A listed image that is
//! gone, changed, or not a jpg/png file is sent as a placeholder. No answer names an absolute path.
use super::failures::TestRun;
use super::http::{Body, Reply};
use super::images::{self, Listed};
use super::searcher::Searcher;
use std::borrow::Cow;

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
    pub gallery: Vec<Listed>,
    /// What the API calls each gallery image (relative to the gallery's folder).
    pub names: Vec<String>,
    /// The run's test split images, when a run is loaded.
    pub test_images: Vec<Listed>,
    pub run: Option<TestRun>,
    /// The answer of `/api/info`.
    pub info: serde_json::Value,
}

fn text(status: u16, content_type: &'static str, text: &str) -> Reply {
    Reply {
        status,
        content_type,
        headers: Vec::new(),
        body: Body::Bytes(text.as_bytes().to_vec()),
    }
}

fn json(status: u16, value: &serde_json::Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: Body::Bytes(value.to_string().into_bytes()),
    }
}

fn error(status: u16, message: &str) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}

/// The answer to `method target`, with the headers every answer carries.
pub fn answer(state: &State, method: &str, target: &str) -> Reply {
    let mut reply = match method {
        "GET" | "HEAD" => route(state, target),
        _ => error(405, "only GET requests are served"),
    };
    reply.headers.extend([
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ]);
    if reply.content_type.starts_with("text/html") {
        reply.headers.push((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ));
    }
    reply
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
        "/" | "/index.html" => text(200, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => text(200, "text/javascript; charset=utf-8", APP_JS),
        "/style.css" => text(200, "text/css; charset=utf-8", STYLE_CSS),
        "/api/info" => json(200, &state.info),
        "/api/search" => search(state, param("q"), param("k")),
        "/api/failures" => match &state.run {
            Some(run) => failures(run, param("words"), param("offset"), param("limit")),
            None => error(
                404,
                "no run is loaded: start ccma serve with --run RUN_DIR to browse a test split",
            ),
        },
        _ => {
            if let Some(i) = path.strip_prefix("/img/g/") {
                image(&state.gallery, i)
            } else if let Some(i) = path.strip_prefix("/img/t/") {
                match &state.run {
                    Some(_) => image(&state.test_images, i),
                    None => error(404, "no run is loaded"),
                }
            } else {
                error(404, "no such page")
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
        _ => Err(error(
            400,
            &format!("{name}={v:?}: expected a whole number from {min} to {max}"),
        )),
    }
}

fn search(state: &State, q: Option<&str>, k: Option<&str>) -> Reply {
    let Some(q) = q else {
        return error(400, "no query: give q=SENTENCE");
    };
    if q.trim().is_empty() {
        return error(400, "the query is empty: give a sentence to search for");
    }
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return error(
            400,
            &format!("the query has {chars} characters: at most {MAX_QUERY_CHARS} are accepted"),
        );
    }
    let k = match number("k", k, 10, 1, MAX_K) {
        Ok(k) => k,
        Err(reply) => return reply,
    };
    match state.searcher.search(q.to_string(), k) {
        Ok(hits) => json(
            200,
            &crate::cli::output::results_json(q, &hits, &state.names),
        ),
        Err(e) => error(500, &e),
    }
}

fn failures(
    run: &TestRun,
    words: Option<&str>,
    offset: Option<&str>,
    limit: Option<&str>,
) -> Reply {
    if words.is_some_and(|w| w.chars().count() > MAX_QUERY_CHARS) {
        return error(
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
    json(200, &run.page(words.unwrap_or(""), offset, limit))
}

/// Image `index` of `files` (a decimal number), or the placeholder when it cannot be sent
/// ([`images::open`] says why, in the log).
fn image(files: &[Listed], index: &str) -> Reply {
    let Some(listed) = index
        .parse::<usize>()
        .ok()
        .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|i| files.get(i))
    else {
        return error(
            404,
            &format!(
                "no image {index:?}: images are numbered 0 to {}",
                files.len().saturating_sub(1)
            ),
        );
    };
    match images::open(listed) {
        Ok(opened) => Reply {
            status: 200,
            content_type: opened.content_type,
            headers: Vec::new(),
            body: Body::File {
                file: opened.file,
                len: opened.len,
            },
        },
        Err(why) => {
            tracing::warn!(
                "sent a placeholder for {}: {why}",
                crate::io::escape::shown(&listed.path)
            );
            text(200, "image/svg+xml", PLACEHOLDER_SVG)
        }
    }
}
