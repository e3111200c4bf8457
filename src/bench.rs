//! `ccma bench`: training-step and encoder throughput of the full-size model (ViT-B/16 at
//! 384x128, 12-layer 512-wide text encoder, cross-modal transformer, DCA, the `imal` loss set with
//! MLM), on synthetic batches already on the device or, with `--with-loader`, on SYNTH-PEDES JPEGs
//! through the data pipeline. Reports medians over the timed steps after warm-up.
use crate::config::Config;
use crate::data::batch::TrainBatch;
use crate::data::loader::{LoaderOptions, TrainLoader};
use crate::train::optimizer::Optimizer;
use anyhow::{Context, Result};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Waits for the device's queued work (timings must include it).
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// A random batch shaped like real data: [B,3,H,W] images, captions of 10-60 tokens with EOT,
/// 15% of caption tokens masked with labels, pids in pairs.
pub fn synthetic_batch(cfg: &Config, b: i64, num_classes: i64, device: Device) -> TrainBatch {
    let (h, w, l) = (cfg.img_size.0, cfg.img_size.1, cfg.text_length);
    let opts = (Kind::Int64, device);
    let ids = Tensor::randint_low(1, 49405, [b, l], opts);
    let lens = Tensor::randint_low(10, 60.min(l), [b, 1], opts);
    let pos = Tensor::arange(l, opts).unsqueeze(0);
    let ids = ids.where_self(&pos.lt_tensor(&lens), &Tensor::zeros_like(&ids));
    let ids = ids.where_self(&pos.ne_tensor(&lens), &Tensor::full_like(&ids, 49407));
    let ids = ids.where_self(&pos.ne(0), &Tensor::full_like(&ids, 49406));
    let selected = Tensor::rand([b, l], (Kind::Float, device))
        .lt(0.15)
        .logical_and(&pos.gt(0))
        .logical_and(&pos.lt_tensor(&lens));
    let mlm_labels = ids.where_self(&selected, &Tensor::zeros_like(&ids));
    let mlm_ids = ids.where_self(&selected.logical_not(), &Tensor::full_like(&ids, 49405));
    TrainBatch {
        images: Tensor::randn([b, 3, h, w], (Kind::Float, device)),
        caption_ids: ids,
        mlm_ids,
        mlm_labels,
        pids: (Tensor::arange(b, opts) / 2).remainder(num_classes),
        image_ids: Tensor::arange(b, opts),
    }
}

/// `ccma bench`.
pub fn run_cli(args: &crate::cli::BenchArgs) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let mut cfg =
        Config::default().with_overrides(&[("batch_size".into(), args.batch_size.to_string())])?;
    cfg.pretrained = None;
    let num_classes = 11_003; // CUHK-PEDES's training identities
    tch::manual_seed(1);
    let (vs, model) = crate::model::from_config(&cfg, num_classes, device)?;
    let mut opt = Optimizer::new(&vs, &cfg)?;
    opt.set_lr(|base| base);
    let losses = cfg.losses();
    let b = args.batch_size as i64;
    let loader = if args.with_loader {
        let mut data_cfg = cfg.clone();
        data_cfg.dataset_name = "SYNTH-PEDES".into();
        let dataset =
            crate::data::load_dataset(&data_cfg).context("--with-loader needs SYNTH-PEDES")?;
        Some(TrainLoader::new(
            dataset.train,
            LoaderOptions::from_config(&cfg, device),
        )?)
    } else {
        None
    };
    let fixed = synthetic_batch(&cfg, b, num_classes, device);
    let mut batches = loader.as_ref().map(|l| l.epoch(1, 0));
    let warmup = 3;
    let mut times = Vec::new();
    for i in 0..warmup + args.steps {
        sync(device);
        let t0 = Instant::now();
        let loaded;
        let batch = match batches.as_mut() {
            Some(it) => {
                loaded = it
                    .next()
                    .context("the loader ran out of batches; use fewer --steps")??
                    .to_device(device);
                &loaded
            }
            None => &fixed,
        };
        let out = model.forward_train(batch, &losses);
        let terms = crate::loss::compute(&cfg, &out, &batch.pids);
        opt.zero_grad();
        terms.total().backward();
        opt.step();
        sync(device);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_ms = median(times) * 1e3;
    // Encoders alone, no grad, at the evaluation batch size.
    let enc_b: i64 = if device.is_cuda() { 512 } else { b };
    let images = Tensor::randn(
        [enc_b, 3, cfg.img_size.0, cfg.img_size.1],
        (Kind::Float, device),
    );
    let texts = synthetic_batch(&cfg, enc_b, num_classes, device).caption_ids;
    let time_of = |f: &dyn Fn()| {
        f();
        let mut v = Vec::new();
        for _ in 0..3 {
            sync(device);
            let t0 = Instant::now();
            f();
            sync(device);
            v.push(t0.elapsed().as_secs_f64());
        }
        median(v)
    };
    let img_s = enc_b as f64 / time_of(&|| drop(tch::no_grad(|| model.image_features(&images))));
    let txt_s = enc_b as f64 / time_of(&|| drop(tch::no_grad(|| model.text_features(&texts))));
    let peak = crate::device::used_memory_gib(device);
    let json = serde_json::json!({
        "device": format!("{device:?}"), "batch_size": b, "steps": args.steps, "with_loader": args.with_loader,
        "step_ms": step_ms, "samples_per_s": b as f64 / step_ms * 1e3,
        "encoder_batch": enc_b, "images_per_s": img_s, "texts_per_s": txt_s, "gpu_used_gib": peak,
    });
    if args.json {
        println!("{json}");
    } else {
        let mut t = prettytable::Table::new();
        t.set_titles(prettytable::row![
            "device",
            "batch",
            "ms/step",
            "samples/s",
            "images/s",
            "texts/s",
            "GPU used GiB"
        ]);
        t.add_row(prettytable::row![
            format!("{device:?}"),
            b,
            format!("{step_ms:.1}"),
            format!("{:.1}", b as f64 / step_ms * 1e3),
            format!("{img_s:.1}"),
            format!("{txt_s:.1}"),
            peak.map_or("-".into(), |p| format!("{p:.2}"))
        ]);
        t.printstd();
    }
    Ok(())
}
