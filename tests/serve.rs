//! `ccma serve` through the binary on loopback: the search API ranks as `ccma search --json` does,
//! hostile and bad requests get 404 / 400, concurrent searches all answer, a vanished image is a
//! placeholder, SIGTERM and Ctrl-C stop it cleanly; with `--run`, every test query with the rank of
//! its first correct image, worst first, agreeing with `ccma test`.
mod common;
use common::serve::{tiny_synth_run, tiny_synth_test_captions, Server};
use common::*;
use std::path::Path;

const QUERIES: [&str; 4] = [
    "a woman wearing a red coat and a black skirt",
    "a man in a blue shirt with a backpack",
    "the person has short blonde hair and grey trousers",
    "someone in white shorts",
];

#[test]
fn refuses_incomplete_or_conflicting_arguments_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = ccma(&["serve", "--checkpoint", "c.safetensors"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_error(&out, "give --gallery DIR|FILE to search");
    let out = ccma(&["serve", "--gallery", "g"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_error(&out, "give --checkpoint FILE or --pretrained FILE");
    let out = ccma(&["serve", "--run", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_error(&out, "no configs.yaml in it");
    let out = ccma(&["serve", "--run", "r", "--pretrained", "p.pt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = ccma(&[
        "serve",
        "--gallery",
        "g",
        "--checkpoint",
        "c",
        "--port",
        "70000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}

#[test]
fn serves_search_and_the_test_split_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_synth_run(dir.path());
    let gallery = dir.path().join("gallery");
    std::fs::create_dir(&gallery).unwrap();
    let test_images = common::serve::synth_dir(&dir.path().join("data"), (24, 2, 10), 3);
    let mut sources: Vec<_> = std::fs::read_dir(test_images.join("imgs/synth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sources.sort();
    for (i, src) in sources.iter().take(12).enumerate() {
        std::fs::copy(src, gallery.join(format!("p{i:02}.jpg"))).unwrap();
    }
    search_api_equals_ccma_search(&run, &gallery);
    run_browser_agrees_with_ccma_test(dir.path(), &run);
}

/// `ccma search --json` for each query (which also caches the gallery's features).
fn search_json(run: &Path, gallery: &Path, query: &str, k: &str) -> serde_json::Value {
    ccma_json(&[
        "search",
        "--checkpoint",
        run.join("best.safetensors").to_str().unwrap(),
        "--gallery",
        gallery.to_str().unwrap(),
        "--top-k",
        k,
        "--json",
        query,
    ])
}

/// The results of two answers agree: the same images in the same order, scores to 1e-5 (a
/// query embedded in a batch with others may differ in the last bits). The server names an image
/// relative to the gallery folder, `ccma search` by its path: the server's name is the path's end
/// (or the same name, from another answer of the server).
fn assert_same_ranking(api: &serde_json::Value, cli: &serde_json::Value) {
    let (a, c) = (
        api["results"].as_array().unwrap(),
        cli["results"].as_array().unwrap(),
    );
    assert_eq!(a.len(), c.len(), "{api}\n{cli}");
    for (x, y) in a.iter().zip(c) {
        for key in ["rank", "index"] {
            assert_eq!(x[key], y[key], "{api}\n{cli}");
        }
        let (name, path) = (x["image"].as_str().unwrap(), y["image"].as_str().unwrap());
        assert!(
            !name.starts_with('/') && (path == name || path.ends_with(&format!("/{name}"))),
            "{api}\n{cli}"
        );
        let (s, t) = (x["score"].as_f64().unwrap(), y["score"].as_f64().unwrap());
        assert!((s - t).abs() < 1e-5, "{api}\n{cli}");
    }
    assert_eq!(api["query"], cli["query"]);
}

fn search_api_equals_ccma_search(run: &Path, gallery: &Path) {
    let cli: Vec<serde_json::Value> = QUERIES
        .iter()
        .map(|q| search_json(run, gallery, q, "5"))
        .collect();
    assert_eq!(cli[0]["results"].as_array().unwrap().len(), 5);
    let server = Server::start(&[
        "--checkpoint",
        run.join("best.safetensors").to_str().unwrap(),
        "--gallery",
        gallery.to_str().unwrap(),
    ]);
    let log = server.log();
    assert!(
        log.contains("gallery features from"),
        "the search cache: {log}"
    );
    assert!(
        log.contains("bound to the loopback address 127.0.0.1"),
        "{log}"
    );

    for (q, want) in QUERIES.iter().zip(&cli) {
        let a = server.search(q, "5");
        assert_eq!(
            (a.status, a.content_type.as_str()),
            (200, "application/json")
        );
        assert_same_ranking(&a.json(), want);
    }
    // k above the gallery's size gives the whole gallery, as `--top-k` does.
    let all = server.search(QUERIES[0], "100").json();
    assert_same_ranking(&all, &search_json(run, gallery, QUERIES[0], "100"));
    assert_eq!(all["results"].as_array().unwrap().len(), 12);

    // Twenty searches at once all answer, each as it does alone.
    let alone: Vec<serde_json::Value> = (0..20)
        .map(|i| server.search(QUERIES[i % 4], &(i + 1).to_string()).json())
        .collect();
    let together: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = &server;
                s.spawn(move || server.search(QUERIES[i % 4], &(i + 1).to_string()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let a = h.join().unwrap();
                assert_eq!(a.status, 200);
                a.json()
            })
            .collect()
    });
    for (t, a) in together.iter().zip(&alone) {
        assert_same_ranking(t, a);
    }

    // Bad requests: 400 with a message; no file but a listed one, by index; 404 otherwise.
    for (query, k, needle) in [
        (
            "x".repeat(1001),
            "5",
            "the query has 1001 characters: at most 1000",
        ),
        (
            "a man".to_string(),
            "0",
            "k=\"0\": expected a whole number from 1 to 100",
        ),
        (
            "a man".to_string(),
            "101",
            "k=\"101\": expected a whole number from 1 to 100",
        ),
        ("a man".to_string(), "two", "k=\"two\""),
        ("   ".to_string(), "5", "the query is empty"),
    ] {
        let a = server.search(&query, k);
        assert_eq!(a.status, 400, "{k}");
        let msg = a.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{msg}");
    }
    assert_eq!(server.get("/api/search?k=3").status, 400);
    for target in [
        "/../../etc/passwd",
        "/img/g/../../etc/passwd",
        "/img/g/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/img/g/12",
        "/img/g/-1",
        "/img/g/99999999999999999999999",
        "/img/t/0",
        "/api/failures",
        "/gallery/p00.jpg",
    ] {
        assert_eq!(server.raw_status("GET", target), 404, "{target}");
    }
    assert_eq!(server.raw_status("POST", "/api/search?q=a&k=1"), 405);
    let first = server.get("/img/g/0");
    assert_eq!(
        (first.status, first.content_type.as_str()),
        (200, "image/jpeg")
    );
    assert_eq!(first.body, std::fs::read(gallery.join("p00.jpg")).unwrap());
    let page = server.get("/?q=red+coat&k=3");
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<script src=\"/app.js\">"));
    assert_eq!(
        server.get("/app.js").content_type,
        "text/javascript; charset=utf-8"
    );

    // An image removed after start is a placeholder, and the server goes on.
    std::fs::remove_file(gallery.join("p03.jpg")).unwrap();
    let gone = server.get("/img/g/3");
    assert_eq!(
        (gone.status, gone.content_type.as_str()),
        (200, "image/svg+xml")
    );
    assert!(String::from_utf8_lossy(&gone.body).contains("image missing"));
    assert_eq!(server.search(QUERIES[1], "3").status, 200);

    let (status, log) = server.stop(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}: {log}");
    // Read from the whole log, once the server has ended (its stderr is read on another thread).
    assert!(log.contains("p03.jpg"), "the placeholder is logged: {log}");
    assert!(
        log.contains("stopped") && !log.contains("panicked"),
        "{log}"
    );
}

fn run_browser_agrees_with_ccma_test(dir: &Path, run: &Path) {
    let config = run.join("configs.yaml");
    let test = ccma_json(&["test", "--config", config.to_str().unwrap(), "--json"]);
    let server = Server::start(&["--run", run.to_str().unwrap()]);
    let info = server.get("/api/info").json();
    let captions = tiny_synth_test_captions(dir);
    assert_eq!(info["run"]["queries"], captions.len(), "{info}");
    for key in ["R1", "R5", "R10", "mAP", "mINP"] {
        let (a, b) = (info["run"]["t2i"][key].as_f64(), test["t2i"][key].as_f64());
        assert!(
            (a.unwrap() - b.unwrap()).abs() < 1e-9,
            "{key}: {info} vs {test}"
        );
    }

    let page = server.get("/api/failures?limit=500").json();
    let queries = page["queries"].as_array().unwrap();
    assert_eq!(page["total"], captions.len());
    assert_eq!(queries.len(), captions.len());
    let firsts: Vec<u64> = queries
        .iter()
        .map(|q| q["first_match"].as_u64().unwrap())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] >= w[1]),
        "worst first: {firsts:?}"
    );
    assert!(firsts[0] > 1, "the tiny model misses some query");
    for (k, key) in [(1, "R1"), (5, "R5"), (10, "R10")] {
        let share = 100.0 * firsts.iter().filter(|&&r| r <= k).count() as f64 / firsts.len() as f64;
        assert!(
            (share - test["t2i"][key].as_f64().unwrap()).abs() < 1e-9,
            "{key}: {share} vs {test}"
        );
    }
    let gallery_size = captions.len() / 2; // TOY-PEDES writes two captions per image
    for q in queries {
        let i = q["query"].as_u64().unwrap() as usize;
        assert_eq!(q["caption"], captions[i].0.as_str());
        assert_eq!(q["pid"], captions[i].1);
        let top = q["top"].as_array().unwrap();
        assert_eq!(top.len(), 10.min(gallery_size));
        for t in top {
            assert_eq!(t["correct"], t["pid"] == q["pid"], "{q}");
        }
        // The first correct image of the top, where it is in the top 10, is at first_match.
        let first = top.iter().position(|t| t["correct"] == true);
        let f = q["first_match"].as_u64().unwrap() as usize;
        if f <= top.len() {
            assert_eq!(first, Some(f - 1), "{q}");
        } else {
            assert_eq!(first, None, "{q}");
        }
    }

    // Filtering by words of the caption: exactly the captions that have every word.
    let worst = queries[0]["caption"].as_str().unwrap();
    let word = worst
        .split(|c: char| !c.is_alphanumeric())
        .rfind(|w| w.len() > 3)
        .unwrap()
        .to_lowercase();
    let has = |c: &str| {
        c.split(|ch: char| !ch.is_alphanumeric())
            .any(|w| w.to_lowercase() == word)
    };
    let want = captions.iter().filter(|(c, _)| has(c)).count();
    let filtered = server
        .get(&format!(
            "/api/failures?words={}&limit=500",
            word.to_uppercase()
        ))
        .json();
    assert_eq!(filtered["matching"], want, "{word}");
    let got = filtered["queries"].as_array().unwrap();
    assert_eq!(got.len(), want);
    assert_eq!(got[0]["query"], queries[0]["query"], "still worst first");
    assert!(got.iter().all(|q| has(q["caption"].as_str().unwrap())));
    let paged = server.get("/api/failures?offset=3&limit=2").json();
    assert_eq!(paged["queries"].as_array().unwrap()[..], queries[3..5]);
    assert_eq!(server.get("/api/failures?limit=0").status, 400);
    assert_eq!(server.get("/api/failures?offset=-1").status, 400);
    assert_eq!(server.get("/img/t/0").status, 200);
    assert_eq!(
        server.raw_status("GET", &format!("/img/t/{gallery_size}")),
        404
    );
    // The run's test images are also the gallery searched. No answer names an absolute path.
    let s = server.search(QUERIES[0], "3").json();
    assert_eq!(s["results"].as_array().unwrap().len(), 3);
    let root = dir.to_str().unwrap();
    for answer in [&info, &s, &page] {
        assert!(!answer.to_string().contains(root), "{answer}");
    }
    assert_eq!(info["run"]["checkpoint"], "best.safetensors", "{info}");

    let (status, log) = server.stop(libc::SIGINT);
    assert!(status.success(), "Ctrl-C: {status}: {log}");
    assert!(log.contains("stopped"), "{log}");
}
