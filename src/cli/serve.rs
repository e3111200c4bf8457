//! `ccma serve`: a gallery searched from a browser page or a JSON API, and with `--run`, a browser
//! of a run's test split query by query (worst first), all from one model loaded once.
//!
//! Each connection has a thread of the HTTP server ([`http`], which bounds what a client can make
//! it read, write or wait for) answering its requests ([`routes`]); a search goes over a channel
//! to the one thread that owns the model ([`searcher`]), which embeds the searches waiting at that
//! moment as one batch. Images are sent only as listed at start ([`images`]). Ctrl-C or SIGTERM
//! lets the answers in progress finish for a moment, then stops.
mod failures;
mod http;
mod images;
mod routes;
mod searcher;

use super::args::{ConfigArgs, DeviceArg, WeightsArgs};
use crate::factory::Inference;
use crate::io::fingerprint::{fnv1a, FNV_START};
use crate::retrieval::encode::EncodeOptions;
use crate::retrieval::gallery::{self, Gallery};
use crate::retrieval::topk::CosineIndex;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
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
    /// With a feature file as --gallery: the folder its images must lie inside; an image named
    /// outside it is never sent [default: the feature file's folder].
    #[arg(long, value_name = "DIR")]
    pub images_root: Option<PathBuf>,
    /// Address to listen on; anything but a loopback address lets other machines connect.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free one; the address is printed on stdout).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// What is loaded once at start.
struct Loaded {
    model: Inference,
    opts: EncodeOptions,
    gallery: Gallery,
    /// What `/api/info` calls the gallery (a folder's or file's name, not its path).
    gallery_source: String,
    /// The folder the gallery's images must stay inside.
    gallery_root: PathBuf,
    run: Option<failures::TestRun>,
    /// The folder the run's test images must stay inside.
    test_root: Option<PathBuf>,
}

/// What `/api/info` calls `path`: its last component.
fn short_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The folder the images of gallery `path` must stay inside: the gallery folder itself, or for a
/// feature file (which names its images itself) `images_root`, else the file's own folder.
fn gallery_root(path: &Path, images_root: Option<&Path>) -> PathBuf {
    match (path.is_dir(), images_root) {
        (true, _) => path.to_path_buf(),
        (false, Some(root)) => root.to_path_buf(),
        (false, None) => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    }
}

fn load(a: &ServeArgs) -> Result<Loaded> {
    if let Some(root) = &a.images_root {
        if a.gallery.as_deref().is_none_or(Path::is_dir) {
            bail!(UsageError(format!(
                "--images-root {}: acts only with a feature file as --gallery (a gallery folder's images stay inside it)",
                root.display()
            )));
        }
    }
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
        let imgs = split.dataset.dir.join("imgs");
        let (gallery, gallery_source, root) = match &a.gallery {
            Some(g) => (
                gallery::open(
                    g,
                    &split.model.model,
                    &split.model.path,
                    &split.model.fingerprint,
                    &split.opts,
                )?,
                short_name(g),
                gallery_root(g, a.images_root.as_deref()),
            ),
            None => (
                Gallery {
                    files: split.dataset.test.image_paths.clone(),
                    features: feats.images.shallow_clone(),
                },
                format!("the {} test split", split.dataset.name),
                imgs.clone(),
            ),
        };
        return Ok(Loaded {
            model: split.model,
            opts: split.opts,
            gallery,
            gallery_source,
            gallery_root: root,
            run: Some(run),
            test_root: Some(imgs),
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
        gallery_source: short_name(path),
        gallery_root: gallery_root(path, a.images_root.as_deref()),
        run: None,
        test_root: None,
    })
}

pub fn run(a: ServeArgs) -> Result<()> {
    let loaded = load(&a)?;
    let listener = std::net::TcpListener::bind((a.host.as_str(), a.port)).map_err(|e| {
        UsageError(format!(
            "--host {} --port {}: cannot listen there ({e})",
            a.host, a.port
        ))
    })?;
    let addr = listener
        .local_addr()
        .context("the server listens on no address")?;
    let info = serde_json::json!({
        "gallery": { "images": loaded.gallery.files.len(), "source": loaded.gallery_source },
        "weights": {
            "file": short_name(&loaded.model.path),
            "fingerprint": format!("{:016x}", fnv1a(loaded.model.fingerprint.bytes(), FNV_START)),
        },
        "run": loaded.run.as_ref().map(failures::TestRun::summary),
        "limits": { "max_query_chars": routes::MAX_QUERY_CHARS, "max_k": routes::MAX_K },
    });
    let index = CosineIndex::new(&loaded.gallery.features);
    drop(loaded.gallery.features);
    let files = loaded.gallery.files;
    let test_images = match &loaded.run {
        Some(run) => images::list(&run.images, loaded.test_root.as_deref()),
        None => Vec::new(),
    };
    let (searcher, worker) = searcher::Searcher::start(loaded.model, loaded.opts, index);
    let state = Arc::new(routes::State {
        searcher,
        names: images::relative_names(&files),
        gallery: images::list(&files, Some(&loaded.gallery_root)),
        test_images,
        run: loaded.run,
        info,
    });

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    crate::train::interrupt::listen(move |_| {
        let _ = stop_tx.try_send(());
    })?;
    let answer = {
        let state = state.clone();
        move |method: &str, target: &str| routes::answer(&state, method, target)
    };
    let server =
        http::Server::start(listener, Arc::new(answer)).context("cannot start the HTTP server")?;

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
    // The address on stdout is for whoever started the server; without a reader it is only logged.
    if let Err(e) = super::output::print(format_args!("listening on http://{addr}/\n")) {
        match e.downcast_ref::<super::output::StdoutClosed>() {
            Some(_) => tracing::info!("listening on http://{addr}/ (stdout is closed)"),
            None => return Err(e),
        }
    }
    let _ = stop_rx.recv();
    tracing::info!("stopping: finishing the answers in progress");
    // The search thread ends with the last handle on it; a connection thread that has not ended
    // may hold one, and then the search thread is left to the process's exit.
    if server.stop() == 0 {
        drop(state);
        let _ = worker.join();
    }
    tracing::info!("stopped");
    Ok(())
}
