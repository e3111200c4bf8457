//! Report files read back by independent tools: TensorBoard event files by the `tensorboard` package.
mod common;
use common::python;
use std::process::Command;

#[test]
fn tensorboard_reads_our_event_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ccma::report::tfevents::EventWriter::create(dir.path()).unwrap();
    for step in 1..=3i64 {
        w.scalar("loss/sdm", 1.5 / step as f32, step).unwrap();
        w.scalar("test/R1", 10.0 * step as f32, step).unwrap();
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/tfevents_read.py"
    );
    let out = Command::new(python())
        .arg(script)
        .arg(&w.path)
        .output()
        .expect("run the tensorboard reader");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sdm: Vec<(i64, f64)> = v["loss/sdm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(sdm.len(), 3);
    for (k, (step, value)) in sdm.iter().enumerate() {
        assert_eq!(*step, k as i64 + 1);
        assert!((value - 1.5 / (k + 1) as f64).abs() < 1e-6, "{value}");
    }
    assert_eq!(v["test/R1"][2][1].as_f64().unwrap(), 30.0);
}
