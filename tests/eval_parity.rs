//! `ccma rank` against an independent PyTorch implementation of the protocol, and its errors.
mod common;
use common::*;
use tch::{Kind, Tensor};

/// Random features with `n_pids` repeated pids; query pid 999 is absent from the gallery.
fn write_sets(dir: &std::path::Path, nq: i64, ng: i64, d: i64, n_pids: i64) -> (String, String) {
    tch::manual_seed(3);
    let qf = Tensor::randn([nq, d], (Kind::Float, tch::Device::Cpu));
    let gf = Tensor::randn([ng, d], (Kind::Float, tch::Device::Cpu));
    let mut qp: Vec<i64> = (0..nq).map(|i| (i * 7) % n_pids).collect();
    qp[5] = 999;
    let gp: Vec<i64> = (0..ng).map(|i| (i * 3) % n_pids).collect();
    let (q, g) = (dir.join("q.safetensors"), dir.join("g.safetensors"));
    save(&q, &[("features", &qf), ("pids", &Tensor::from_slice(&qp))]);
    save(&g, &[("features", &gf), ("pids", &Tensor::from_slice(&gp))]);
    (q.display().to_string(), g.display().to_string())
}

/// Few matches per query (ranks counted per match) and many (ranks from one binning pass).
#[test]
fn rank_matches_reference_protocol() {
    for (ng, n_pids) in [(130, 40), (300, 4)] {
        rank_matches_reference_protocol_with(ng, n_pids);
    }
}

fn rank_matches_reference_protocol_with(ng: i64, n_pids: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (q, g) = write_sets(dir.path(), 257, ng, 24, n_pids);
    let out = ccma(&["rank", "--queries", &q, "--gallery", &g, "--i2t", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&reference("eval_ref.py", &[&q, &g, "--i2t"])).unwrap();
    for task in ["t2i", "i2t"] {
        for k in ["R1", "R5", "R10", "mAP", "mINP"] {
            let (a, b) = (
                ours[task][k].as_f64().unwrap(),
                theirs[task][k].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-4, "{task} {k}: ours {a}, reference {b}");
        }
    }
    assert_eq!(ours["t2i"]["excluded"], 1);
    assert_eq!(theirs["t2i"]["excluded"], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 of 257 queries have no match"),
        "warning with a count: {err}"
    );
}

#[test]
fn rank_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (q, g) = write_sets(dir.path(), 20, 30, 8, 40);
    let out = ccma(&["rank", "--queries", &q, "--gallery", &g]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("task") && text.contains("mINP") && text.contains("t2i"),
        "{text}"
    );
}

#[test]
fn rank_errors_name_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (q, g) = write_sets(dir.path(), 20, 30, 8, 40);
    let p = |n: &str| dir.path().join(n).display().to_string();
    assert_one_line_error(
        &ccma(&["rank", "--queries", &p("none.safetensors"), "--gallery", &g]),
        "none.safetensors: no such file",
    );
    std::fs::write(p("junk.safetensors"), b"not a tensor file").unwrap();
    assert_one_line_error(
        &ccma(&["rank", "--queries", &p("junk.safetensors"), "--gallery", &g]),
        "not a safetensors file",
    );
    let f = Tensor::randn([4, 8], (Kind::Float, tch::Device::Cpu));
    save(&dir.path().join("nopids.safetensors"), &[("features", &f)]);
    assert_one_line_error(
        &ccma(&[
            "rank",
            "--queries",
            &p("nopids.safetensors"),
            "--gallery",
            &g,
        ]),
        "missing tensor `pids`",
    );
    save(
        &dir.path().join("f64.safetensors"),
        &[
            ("features", &f.to_kind(Kind::Double)),
            ("pids", &Tensor::from_slice(&[1i64, 2, 3, 4])),
        ],
    );
    assert_one_line_error(
        &ccma(&["rank", "--queries", &p("f64.safetensors"), "--gallery", &g]),
        "expected f32",
    );
    save(
        &dir.path().join("wide.safetensors"),
        &[
            (
                "features",
                &Tensor::randn([4, 9], (Kind::Float, tch::Device::Cpu)),
            ),
            ("pids", &Tensor::from_slice(&[1i64, 2, 3, 4])),
        ],
    );
    assert_one_line_error(
        &ccma(&["rank", "--queries", &p("wide.safetensors"), "--gallery", &g]),
        "feature widths differ",
    );
    save(
        &dir.path().join("short.safetensors"),
        &[("features", &f), ("pids", &Tensor::from_slice(&[1i64, 2]))],
    );
    assert_one_line_error(
        &ccma(&[
            "rank",
            "--queries",
            &p("short.safetensors"),
            "--gallery",
            &g,
        ]),
        "one per feature row",
    );
    save(
        &dir.path().join("empty.safetensors"),
        &[
            (
                "features",
                &Tensor::zeros([0, 8], (Kind::Float, tch::Device::Cpu)),
            ),
            ("pids", &Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu))),
        ],
    );
    assert_one_line_error(
        &ccma(&[
            "rank",
            "--queries",
            &p("empty.safetensors"),
            "--gallery",
            &g,
        ]),
        "empty set",
    );
    let nan = Tensor::randn([2, 8], (Kind::Float, tch::Device::Cpu));
    let _ = nan.get(1).get(3).fill_(f64::NAN);
    save(
        &dir.path().join("nan.safetensors"),
        &[
            ("features", &nan),
            ("pids", &Tensor::from_slice(&[1i64, 2])),
        ],
    );
    assert_one_line_error(
        &ccma(&["rank", "--queries", &p("nan.safetensors"), "--gallery", &g]),
        "nan.safetensors: tensor `features` has 1 NaN or infinite values",
    );
    let _ = q;
}
