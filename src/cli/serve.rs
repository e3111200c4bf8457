//! `ccma serve`: a gallery searched from a browser page or a JSON API, and with `--run`, a browser
//! of a run's test split query by query (worst first), all from one model loaded once.
//!
//! Handler threads take requests from the HTTP server ([`routes`]); a search goes over a channel
//! to the one thread that owns the model ([`searcher`]), which embeds the searches waiting at that
//! moment as one batch. Ctrl-C or SIGTERM lets the requests in progress finish, then stops.
mod failures;
mod routes;
mod searcher;

use super::args::{ConfigArgs, DeviceArg, WeightsArgs};
use crate::factory::Inference;
use crate::retrieval::encode::EncodeOptions;
use crate::retrieval::gallery::{self, Gallery};
use crate::retrieval::topk::CosineIndex;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serve a gallery for text search in a browser and over HTTP.
///
/// The API: `GET /api/search?q=...&k=...`. With --run, also every test query of a run with its
/// top 10, worst first.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A ccma checkpoint (safetensors); its run's configs.yaml beside it supplies data settings
    /// [default with --run: RUN_DIR/best.safetensors].
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Pretrained CLIP weights: OpenAI's ViT-B-16.pt (TorchScript) or safetensors.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["checkpoint", "run"])]
    pub pretrained: Option<PathBuf>,
    /// The gallery to search: a folder of images (features cached inside it), or a feature file
    /// written by `ccma embed` [default with --run: the test split's images].
    #[arg(long, value_name = "DIR|FILE")]
    pub gallery: Option<PathBuf>,
    /// A run folder (its configs.yaml and checkpoint): its test split is evaluated at start and
    /// each query's result can be browsed, worst first.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// Address to listen on; anything but a loopback address lets other machines connect.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free one; the address is printed on stdout).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Threads answering requests at once (each waits on the model for a search).
const HANDLERS: usize = 8;

/// What is loaded once at start.
struct Loaded {
    model: Inference,
    opts: EncodeOptions,
    gallery: Gallery,
    gallery_source: String,
    run: Option<failures::TestRun>,
}

fn load(a: &ServeArgs) -> Result<Loaded> {
    if let Some(dir) = &a.run {
        let config = dir.join(crate::io::run_files::CONFIG);
        if !config.is_file() {
            bail!(UsageError(format!(
                "--run {}: no configs.yaml in it (expected a run folder that `ccma train` wrote)",
                dir.display()
            )));
        }
        let config = ConfigArgs {
            config: Some(config),
            ..Default::default()
        };
        let split = super::args::load_test_setup(
            &config,
            &a.device,
            a.checkpoint.as_deref(),
            crate::config::SplitName::Test,
        )?;
        let feats = split.embed()?;
        let run = failures::TestRun::new(&split, &feats)?;
        let (gallery, gallery_source) = match &a.gallery {
            Some(g) => (
                gallery::open(
                    g,
                    &split.model.model,
                    &split.model.path,
                    &split.model.fingerprint,
                    &split.opts,
                )?,
                g.display().to_string(),
            ),
            None => (
                Gallery {
                    files: split.dataset.test.image_paths.clone(),
                    features: feats.images.shallow_clone(),
                },
                format!("the {} test split", split.dataset.name),
            ),
        };
        return Ok(Loaded {
            model: split.model,
            opts: split.opts,
            gallery,
            gallery_source,
            run: Some(run),
        });
    }
    let Some(path) = &a.gallery else {
        bail!(UsageError(
            "give --gallery DIR|FILE to search (or --run RUN_DIR to browse a run's test split)"
                .into(),
        ));
    };
    if a.checkpoint.is_none() && a.pretrained.is_none() {
        bail!(UsageError(
            "give --checkpoint FILE or --pretrained FILE (or --run RUN_DIR)".into(),
        ));
    }
    let weights = WeightsArgs {
        checkpoint: a.checkpoint.clone(),
        pretrained: a.pretrained.clone(),
    };
    let (model, opts) = weights.load(None, None, a.device.resolve()?)?;
    let gallery = gallery::open(path, &model.model, &model.path, &model.fingerprint, &opts)?;
    Ok(Loaded {
        model,
        opts,
        gallery,
        gallery_source: path.display().to_string(),
        run: None,
    })
}

pub fn run(a: ServeArgs) -> Result<()> {
    let loaded = load(&a)?;
    let server = tiny_http::Server::http((a.host.as_str(), a.port)).map_err(|e| {
        UsageError(format!(
            "--host {} --port {}: cannot listen there ({e})",
            a.host, a.port
        ))
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .context("the server listens on no IP address")?;
    let info = serde_json::json!({
        "gallery": { "images": loaded.gallery.files.len(), "source": loaded.gallery_source },
        "weights": loaded.model.fingerprint,
        "run": loaded.run.as_ref().map(failures::TestRun::summary),
        "limits": { "max_query_chars": routes::MAX_QUERY_CHARS, "max_k": routes::MAX_K },
    });
    let index = CosineIndex::new(&loaded.gallery.features);
    drop(loaded.gallery.features);
    let (searcher, worker) = searcher::Searcher::start(loaded.model, loaded.opts, index);
    let state = Arc::new(routes::State {
        searcher,
        gallery: loaded.gallery.files,
        run: loaded.run,
        info,
    });

    // A signal, or a server that fails, ends the handlers' loop.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<Option<String>>(HANDLERS + 1);
    let signal = stop_tx.clone();
    crate::train::interrupt::listen(move |_| {
        let _ = signal.try_send(None);
    })?;
    let server = Arc::new(server);
    let stopping = Arc::new(AtomicBool::new(false));
    let handlers: Vec<std::thread::JoinHandle<()>> = (0..HANDLERS)
        .map(|_| {
            let (server, state, stopping, stop) = (
                server.clone(),
                state.clone(),
                stopping.clone(),
                stop_tx.clone(),
            );
            std::thread::spawn(move || loop {
                match server.recv() {
                    Ok(rq) => routes::answer(&state, rq),
                    Err(_) if stopping.load(Ordering::SeqCst) => return,
                    Err(e) => {
                        let _ = stop.try_send(Some(format!("the HTTP server failed: {e}")));
                        return;
                    }
                }
            })
        })
        .collect();

    if addr.ip().is_loopback() {
        tracing::info!(
            "bound to the loopback address {}: only this machine can connect (--host 0.0.0.0 lets others)",
            addr.ip()
        );
    } else {
        tracing::warn!(
            "bound to {}: other machines can connect, search the gallery and see its images (--host 127.0.0.1 keeps it to this one)",
            addr.ip()
        );
    }
    println!("listening on http://{addr}/");
    let failure = stop_rx.recv().ok().flatten();
    tracing::info!("stopping: finishing the requests in progress");
    stopping.store(true, Ordering::SeqCst);
    for _ in 0..HANDLERS {
        server.unblock();
    }
    for h in handlers {
        let _ = h.join();
    }
    drop(state);
    let _ = worker.join();
    match failure {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
