//! Peak memory and size of writing the full-size resumable checkpoint (ViT-B/16 at 384x128, the
//! 12 x 512 text encoder, cross-modal transformer, DCA, a classifier of CUHK-PEDES's 11,003
//! identities) on the CPU, as `ccma train` writes `last.safetensors`: the model and optimiser are
//! built, then the peak resident memory is reset (Linux `/proc/self/clear_refs`) and measured
//! over the save alone.
//!
//! Run: `cargo bench --bench checkpoint_save`.
use ccma::config::Config;
use ccma::train::checkpoint::resumable_tensors;
use ccma::train::optimizer::Optimizer;
use prettytable::{row, Table};
use std::time::Instant;
use tch::Device;

const GIB: f64 = (1u64 << 30) as f64;

/// A `/proc/self/status` entry in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(key: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"));
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024.0
}

fn main() {
    let cfg = Config::default();
    tch::manual_seed(0);
    let (vs, _model) =
        ccma::factory::training_model(&cfg, 11_003, Device::Cpu).expect("full-size model");
    let opt = Optimizer::new(&vs, &cfg.optim);
    let params: f64 = vs
        .variables()
        .values()
        .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as f64)
        .sum();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("last.safetensors");
    let tensors = resumable_tensors(&vs, &opt);
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS (Linux 4.0+)");
    let before = status_bytes("VmRSS:");
    let t0 = Instant::now();
    ccma::io::safetensors::save(&path, &tensors, &Default::default()).expect("saved");
    let secs = t0.elapsed().as_secs_f64();
    let peak = status_bytes("VmHWM:");
    let size = std::fs::metadata(&path).expect("written").len() as f64;
    let mut t = Table::new();
    t.set_titles(row!["full-size resumable checkpoint (CPU)", "value"]);
    t.add_row(row!["parameters", format!("{:.2} GiB", params / GIB)]);
    t.add_row(row![
        "file",
        format!(
            "{:.2} GiB ({:.2}x the parameters)",
            size / GIB,
            size / params
        )
    ]);
    t.add_row(row![
        "resident before the save",
        format!("{:.2} GiB", before / GIB)
    ]);
    t.add_row(row![
        "peak while saving",
        format!("{:.2} GiB ({:+.2} GiB)", peak / GIB, (peak - before) / GIB)
    ]);
    t.add_row(row!["save time", format!("{secs:.1} s")]);
    t.printstd();
}
