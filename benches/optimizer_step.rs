//! One optimiser step over the demo model's parameters (`configs/demo.yaml`, 6.9M, most of them
//! in the two 49,408-row vocabulary matrices): the single-pass host loop against libtorch's fused
//! Adam kernel (one call per parameter group, what runs on CUDA). Medians of the timed steps, one
//! run.
//!
//! Run: `cargo bench --bench optimizer_step [-- STEPS]` (default 50 steps per variant).
use ccma::config::Config;
use ccma::train::optimizer::{Kernel, Optimizer};
use prettytable::{row, Table};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds per step (median over `steps`, after 3 warm-up steps).
fn time_steps(cfg: &Config, kernel: Kernel, steps: usize) -> f64 {
    tch::manual_seed(0);
    let (vs, _model) = ccma::factory::training_model(cfg, 1000, Device::Cpu).expect("demo model");
    let mut opt = Optimizer::new(&vs, &cfg.optim);
    opt.set_kernel(kernel).expect("CPU");
    opt.set_lr(|base| base);
    let vars: Vec<Tensor> = vs.trainable_variables();
    let loss = || {
        vars.iter()
            .map(|v| (v * 1e-3).square().sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
    };
    let mut times = Vec::new();
    for i in 0..steps + 3 {
        opt.zero_grad().unwrap();
        loss().backward();
        let t0 = Instant::now();
        opt.step().expect("a step");
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    median(times)
}

fn main() {
    let steps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let cfg =
        Config::from_file(std::path::Path::new("configs/demo.yaml")).expect("configs/demo.yaml");
    let host = time_steps(&cfg, Kernel::HostLoop, steps);
    let libtorch = time_steps(&cfg, Kernel::Libtorch, steps);
    let mut t = Table::new();
    t.set_titles(row!["optimiser step (demo model, CPU)", "median ms"]);
    t.add_row(row!["host loop (single pass)", format!("{host:.2}")]);
    t.add_row(row!["libtorch fused Adam", format!("{libtorch:.2}")]);
    t.add_row(row!["ratio", format!("{:.1}x", libtorch / host)]);
    t.printstd();
}
