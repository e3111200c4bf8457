//! The one thread that owns the model and the gallery index: it takes the searches waiting on
//! its channel (up to [`MAX_BATCH`] at a time), embeds their sentences as one batch and ranks the
//! gallery for each, through the library call `ccma search` makes ([`best_rows`]).
use crate::factory::Inference;
use crate::retrieval::encode::EncodeOptions;
use crate::retrieval::topk::{best_rows, CosineIndex};
use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

/// Searches embedded together at most.
pub const MAX_BATCH: usize = 8;

/// Gallery rows with their cosine similarity, best first.
pub type Hits = Vec<(usize, f64)>;

struct Job {
    query: String,
    k: usize,
    reply: Sender<Result<Hits, String>>,
}

/// A handle to the search thread; it stops when the last handle is dropped.
pub struct Searcher {
    jobs: Sender<Job>,
}

impl Searcher {
    /// Starts the thread with `model` and the gallery's `index` (on the CPU).
    pub fn start(
        model: Inference,
        opts: EncodeOptions,
        index: CosineIndex,
    ) -> (Searcher, JoinHandle<()>) {
        let (jobs, rx) = crossbeam_channel::unbounded();
        let worker = std::thread::spawn(move || work(&model, &opts, &index, &rx));
        (Searcher { jobs }, worker)
    }

    /// The `k` best gallery rows for `query`; an error is the search thread's failure.
    pub fn search(&self, query: String, k: usize) -> Result<Hits, String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.jobs
            .send(Job { query, k, reply })
            .map_err(|_| "the search thread has stopped".to_string())?;
        answer
            .recv()
            .map_err(|_| "the search thread has stopped".to_string())?
    }
}

fn work(model: &Inference, opts: &EncodeOptions, index: &CosineIndex, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let queries: Vec<(String, usize)> = batch.iter().map(|j| (j.query.clone(), j.k)).collect();
        // libtorch reports its errors as panics; one is this batch's failure, not the server's.
        let ranked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            best_rows(&model.model, &model.path, opts, index, &queries)
        }));
        match ranked {
            Ok(Ok(hits)) => {
                for (job, hits) in batch.into_iter().zip(hits) {
                    let _ = job.reply.send(Ok(hits));
                }
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "the model failed on this batch (see the server's log)".to_string(),
                };
                tracing::error!("search of {} queries failed: {why}", batch.len());
                for job in batch {
                    let _ = job.reply.send(Err(why.clone()));
                }
            }
        }
    }
}
