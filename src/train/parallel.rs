//! The ranks of a data-parallel run as the trainer sees them. Each rank holds a slice of the
//! global batch and knows, from its loader, every rank's pids and counts; per step it gathers
//! everyone's features (so the batch-spanning losses
//! see the whole batch, with gradients to its own rows) and averages the gradients with one
//! all-reduce of a flat buffer that also carries the loss values and the stop flag: the
//! gradients live in that buffer, allocated once ([`super::grad_buffer`]). One process is
//! the world of one: every operation is then the identity and nothing is communicated.
use super::grad_buffer::GradBuffer;
use crate::config::{Config, DistBackend};
use crate::data::batch::TrainBatch;
use crate::device::read_to_host;
use crate::dist::group::RankLost;
use crate::dist::{Backend, Group, Launch};
use crate::loss::{BatchFeatures, Embeddings, LocalShare};
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::time::Duration;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// This process among the ranks of its run.
pub struct Ranks {
    group: Option<Group>,
    /// Rows every rank pads its slice to when gathering: ceil(batch_size / world).
    cap: i64,
    device: Device,
    /// The gradients and the step's values, all-reduced together (other ranks only).
    grads: RefCell<Option<GradBuffer>>,
}

/// Where a step's samples are across the ranks.
pub struct BatchLayout {
    /// [B] i64, every rank's pids in rank order.
    pub pids: Tensor,
    /// Samples per rank.
    pub sizes: Vec<i64>,
    /// Samples in the global batch.
    pub samples: usize,
    /// [ΣB] f32 the clean division's weights of every rank's samples in rank order (on the
    /// device), where the run divides its pairs.
    pub weights: Option<Tensor>,
    /// The same weights on the host, for the per-sample terms' shares.
    host_weights: Option<Vec<f32>>,
    /// This rank's samples' weights [n] and its masked tokens' (each its sample's) [m], on the
    /// device, where the run divides its pairs: uploaded once a step, narrowed per chunk.
    own_weights: Option<[Tensor; 2]>,
    /// Masked caption tokens of every rank's samples, a count per sample in rank order.
    masked: Vec<i64>,
    /// This rank's samples, as a range of the whole batch's.
    own: std::ops::Range<usize>,
}

impl BatchLayout {
    /// Where the step's samples are for rank `rank`, from what the loader knows on the host (no
    /// exchange, no read from the device): every rank's sample count, masked-token counts, pids
    /// and division weights, the weights uploaded to `device`.
    pub fn of(batch: &TrainBatch, rank: usize, device: Device) -> BatchLayout {
        let s = &batch.slices;
        let samples: i64 = s.sizes.iter().sum();
        let own = s.range(rank);
        let on_device = |v: &[f32]| Tensor::from_slice(v).to_device(device);
        let own_weights = batch.weights.as_ref().map(|w| {
            let tokens: Vec<f32> = own
                .clone()
                .flat_map(|i| std::iter::repeat_n(w[i], s.all_masked[i] as usize))
                .collect();
            [on_device(&w[own.clone()]), on_device(&tokens)]
        });
        BatchLayout {
            pids: s.all_pids.as_ref().unwrap_or(&batch.pids).shallow_clone(),
            sizes: s.sizes.clone(),
            samples: samples as usize,
            weights: batch.weights.as_deref().map(on_device),
            host_weights: batch.weights.clone(),
            own_weights,
            masked: s.all_masked.clone(),
            own,
        }
    }

    /// This rank's samples `start..start + len` (of its slice) as a part of the batch for the
    /// per-sample terms: their division weights (and their masked tokens'), and their share of
    /// the batch's weighted count of samples and of masked tokens (a fraction of sums of 0s and
    /// 1s, computed on the host).
    pub fn share(&self, start: i64, len: i64) -> LocalShare {
        let from = self.own.start + start as usize;
        let part = from..from + len as usize;
        let w = |i: usize| self.host_weights.as_ref().map_or(1.0, |w| f64::from(w[i]));
        let tokens = |i: usize| w(i) * self.masked[i] as f64;
        let fraction = |range: std::ops::Range<usize>, of: &dyn Fn(usize) -> f64| {
            let whole: f64 = (0..self.masked.len()).map(of).sum();
            match whole > 0.0 {
                true => range.map(of).sum::<f64>() / whole,
                false => 0.0,
            }
        };
        let before: i64 = self.masked[self.own.start..from].iter().sum();
        let count: i64 = self.masked[part.clone()].iter().sum();
        LocalShare {
            sample_weights: self
                .own_weights
                .as_ref()
                .map(|[s, _]| s.narrow(0, start, len)),
            token_weights: self
                .own_weights
                .as_ref()
                .map(|[_, t]| t.narrow(0, before, count)),
            samples: fraction(part.clone(), &w),
            masked: fraction(part, &tokens),
        }
    }
}

impl Ranks {
    /// A one-process run.
    pub fn single(device: Device) -> Ranks {
        Ranks {
            group: None,
            cap: 0,
            device,
            grads: RefCell::new(None),
        }
    }

    /// Joins the run `launch` describes: this rank's device (`cuda:LOCAL_RANK` for CUDA), the
    /// backend `dist_backend` names (`auto`: NCCL on CUDA, Gloo on the CPU) and `dist_timeout`.
    pub fn connect(launch: &Launch, cfg: &Config) -> Result<Ranks> {
        let device = cfg.run.device.resolve_for_rank(launch.local_rank)?;
        let backend = choose_backend(cfg, device)?;
        let timeout = Duration::from_secs(cfg.run.dist_timeout);
        let group = Group::connect(launch, backend, timeout)?;
        tracing::info!(
            "rank {} of {} on {device:?}, {backend:?} process group via {}:{}",
            launch.rank,
            launch.world_size,
            launch.master_addr,
            launch.master_port
        );
        Ok(Ranks::new(group, cfg.data.batch_size, device))
    }

    /// Rank `group.rank()` of a run whose global batches hold up to `batch_size` samples.
    pub fn new(group: Group, batch_size: usize, device: Device) -> Ranks {
        let cap = batch_size.div_ceil(group.world()) as i64;
        Ranks {
            group: Some(group),
            cap,
            device,
            grads: RefCell::new(None),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn world(&self) -> usize {
        self.group.as_ref().map_or(1, Group::world)
    }

    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, Group::rank)
    }

    /// Whether this process writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// The process group, when there are other ranks.
    pub fn group(&self) -> Option<&Group> {
        self.group.as_ref()
    }

    /// Where the step's samples are ([`BatchLayout::of`] this rank).
    pub fn layout(&self, batch: &TrainBatch) -> BatchLayout {
        BatchLayout::of(batch, self.rank(), self.device)
    }

    /// The features of the whole batch: every rank's embeddings, gathered, with this rank's rows
    /// replaced by its `own` (differentiable) ones.
    pub fn batch_features(
        &self,
        own: Embeddings,
        layout: &BatchLayout,
    ) -> Result<BatchFeatures, RankLost> {
        let pids = layout.pids.shallow_clone();
        let weights = layout.weights.as_ref().map(Tensor::shallow_clone);
        let Some(g) = &self.group else {
            return Ok(BatchFeatures {
                embeddings: own,
                pids,
                weights,
            });
        };
        let parts: Vec<&Tensor> = own.0.iter().flat_map(|(_, pair)| pair).collect();
        let widths: Vec<i64> = parts.iter().map(|t| t.size()[1]).collect();
        let local = Tensor::cat(
            &parts
                .iter()
                .map(|t| t.to_kind(Kind::Float))
                .collect::<Vec<_>>(),
            1,
        ); // [n, Σ D]
        let n = local.size()[0];
        let padded = local.detach().constant_pad_nd([0, 0, 0, self.cap - n]);
        let all = g.all_gather(&padded)?; // [world * cap, Σ D]
        let rows: Vec<Tensor> = layout
            .sizes
            .iter()
            .enumerate()
            .map(|(r, &size)| match r == g.rank() {
                true => local.shallow_clone(),
                false => all.narrow(0, r as i64 * self.cap, size),
            })
            .collect();
        let whole = Tensor::cat(&rows, 0);
        let mut cols = whole.split_with_sizes(&widths, 1).into_iter();
        let mut next = || cols.next().expect("a column per embedding");
        let pairs = own.0.iter().map(|(kind, _)| (*kind, [next(), next()]));
        Ok(BatchFeatures {
            embeddings: Embeddings(pairs.collect()),
            pids,
            weights,
        })
    }

    /// Averages the gradients of `vars` over the ranks and sums `values` ([K] f32, on the
    /// device), with one all-reduce of the flat buffer the gradients live in; returns the summed
    /// values ([K] f32, on the device). Every rank has the same graph, so the same parameters have
    /// gradients everywhere.
    pub fn average_gradients(&self, vars: &[Tensor], values: &Tensor) -> Result<Tensor, RankLost> {
        let Some(g) = &self.group else {
            return Ok(values.shallow_clone());
        };
        tch::no_grad(|| {
            let mut slot = self.grads.borrow_mut();
            let k = values.numel() as i64;
            let current = slot.take();
            let buf = slot.insert(GradBuffer::for_step(current, vars, k));
            buf.values().copy_(values);
            g.all_reduce_sum(buf.flat_mut())?;
            let _ = buf.gradients().g_div_scalar_(g.world() as f64);
            Ok(buf.values().copy())
        })
    }

    /// Gives every rank rank 0's variables (so all start from the same weights).
    pub fn sync_variables(&self, vs: &VarStore) -> Result<(), RankLost> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        tch::no_grad(|| {
            for (_, mut var) in sorted_variables(vs) {
                let mut buf = var.contiguous();
                g.broadcast(&mut buf, 0)?;
                var.copy_(&buf);
            }
            Ok(())
        })
    }

    /// Rank 0's `values`, on every rank.
    pub fn from_main(&self, values: &[f64]) -> Result<Vec<f64>, RankLost> {
        let Some(g) = &self.group else {
            return Ok(values.to_vec());
        };
        let mut t = Tensor::from_slice(values).to_device(self.device);
        g.broadcast(&mut t, 0)?;
        Ok(Vec::<f64>::try_from(&read_to_host(&t)).expect("f64 values"))
    }

    /// Every rank's parameter digest ([`digest`]), in rank order.
    pub fn digests(&self, vs: &VarStore) -> Result<Vec<u64>, RankLost> {
        let own = digest(vs);
        let Some(g) = &self.group else {
            return Ok(vec![own]);
        };
        let all = g.all_gather(&Tensor::from_slice(&[own as i64]).to_device(self.device))?;
        let all = Vec::<i64>::try_from(&read_to_host(&all)).expect("i64 digests");
        Ok(all.into_iter().map(|d| d as u64).collect())
    }
}

/// The c10d backend for `cfg`'s `dist_backend` on `device` (`auto`: NCCL on CUDA, Gloo on the
/// CPU); NCCL on the CPU is refused.
pub fn choose_backend(cfg: &Config, device: Device) -> Result<Backend> {
    Ok(match (cfg.run.dist_backend, device) {
        (DistBackend::Gloo, _) => Backend::Gloo,
        (DistBackend::Nccl, Device::Cpu) => {
            return Err(crate::UsageError(format!(
                "dist_backend nccl carries CUDA tensors, but the ranks run on the CPU (device {}); use dist_backend: gloo or auto",
                cfg.run.device
            ))
            .into())
        }
        (DistBackend::Nccl, _) => Backend::Nccl,
        (DistBackend::Auto, Device::Cpu) => Backend::Gloo,
        (DistBackend::Auto, _) => Backend::Nccl,
    })
}

fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The first 64 bits of SHA-256 over every variable's name and raw bytes (native order), sorted
/// by name: equal digests mean bit-identical weights. `tests/reference/digest_ref.py` computes the
/// same from a checkpoint.
pub fn digest(vs: &VarStore) -> u64 {
    let mut h = Sha256::new();
    for (name, t) in sorted_variables(vs) {
        let t = t.to_device(Device::Cpu).contiguous();
        let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, t.numel());
        h.update(name.as_bytes());
        h.update(&bytes);
    }
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("32-byte hash"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::batch::RankSlices;
    use crate::dist::on_loopback_ranks;
    use rand::SeedableRng;

    /// Rank `rank`'s layout of a batch of 4 samples over ranks of `sizes`, with masked tokens
    /// [1, 2, 0, 3] and the division's `weights`.
    fn layout_with(weights: Option<Vec<f32>>, sizes: [i64; 2], rank: usize) -> BatchLayout {
        let mut batch = TrainBatch::random(sizes[rank], (32, 16), 16, 4, Device::Cpu);
        batch.weights = weights;
        batch.slices = RankSlices {
            sizes: sizes.to_vec(),
            all_masked: vec![1, 2, 0, 3],
            all_pids: Some(Tensor::from_slice(&[0i64, 1, 2, 3])),
            all_indices: vec![0, 1, 2, 3],
        };
        BatchLayout::of(&batch, rank, Device::Cpu)
    }

    /// The weights [1, 0, 1, 1] over 2 ranks of 2 samples.
    fn weighted_layout(rank: usize) -> BatchLayout {
        layout_with(Some(vec![1., 0., 1., 1.]), [2, 2], rank)
    }

    fn values(t: &Option<Tensor>) -> Vec<f32> {
        Vec::<f32>::try_from(t.as_ref().unwrap()).unwrap()
    }

    /// By hand: 3 clean samples and 1 + 0 + 3 = 4 clean masked tokens in the batch. Rank 1 holds
    /// 2 of the samples and 3 of the tokens; rank 0's second sample (weight 0, 2 tokens) none.
    #[test]
    fn a_parts_share_counts_the_pairs_of_weight_one() {
        let s = weighted_layout(1).share(0, 2);
        assert_eq!((s.samples, s.masked), (2.0 / 3.0, 0.75));
        assert_eq!(values(&s.sample_weights), [1., 1.]);
        assert_eq!(values(&s.token_weights), [1., 1., 1.]);
        let s = weighted_layout(0).share(1, 1);
        assert_eq!((s.samples, s.masked), (0.0, 0.0));
        assert_eq!(values(&s.sample_weights), [0.]);
        assert_eq!(values(&s.token_weights), [0., 0.]);
        let s = weighted_layout(0).share(0, 2);
        assert_eq!((s.samples, s.masked), (1.0 / 3.0, 0.25));
        assert_eq!(values(&s.token_weights), [1., 0., 0.]);
        // Uneven slices, 3 and 1: rank 0's last two samples hold 1 clean sample and no clean
        // token; rank 1's one sample 1 clean sample and 3 clean tokens.
        let uneven = |rank| layout_with(Some(vec![1., 0., 1., 1.]), [3, 1], rank);
        let s = uneven(0).share(1, 2);
        assert_eq!((s.samples, s.masked), (1.0 / 3.0, 0.0));
        assert_eq!(values(&s.sample_weights), [0., 1.]);
        assert_eq!(values(&s.token_weights), [0., 0.]);
        let s = uneven(1).share(0, 1);
        assert_eq!((s.samples, s.masked), (1.0 / 3.0, 0.75));
        assert_eq!(values(&s.token_weights), [1., 1., 1.]);
    }

    /// Without weights the shares are plain fractions of the batch, and a batch whose pairs all
    /// have weight 0 gives every part a share of 0.
    #[test]
    fn without_weights_a_share_is_a_fraction_and_without_clean_pairs_it_is_zero() {
        let s = layout_with(None, [2, 2], 1).share(1, 1);
        assert_eq!((s.samples, s.masked), (0.25, 0.5));
        assert!(s.sample_weights.is_none() && s.token_weights.is_none());
        let s = layout_with(Some(vec![0.; 4]), [2, 2], 1).share(0, 2);
        assert_eq!((s.samples, s.masked), (0.0, 0.0));
        assert_eq!(values(&s.token_weights), [0., 0., 0.]);
    }

    /// Rank `rank`'s gradients at `step`: [2, 3] and [4] f32, drawn from its own generator.
    fn rank_grads(rank: u64, step: u64) -> Vec<Tensor> {
        let g = |n: &[i64], seed: u64| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let v: Vec<f32> = (0..n.iter().product::<i64>())
                .map(|_| rand::Rng::gen_range(&mut rng, -1.0f32..1.0) / 3.0)
                .collect();
            Tensor::from_slice(&v).view(n)
        };
        vec![
            g(&[2, 3], rank * 100 + step),
            g(&[4], rank * 100 + step + 50),
        ]
    }

    /// The gradients leave a backward of `Σ var · grad`, added to what they hold.
    fn backward(vars: &[Tensor], grads: &[Tensor]) {
        let total = vars
            .iter()
            .zip(grads)
            .map(|(v, g)| (v * g).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        total.backward();
    }

    /// Two ranks (threads, Gloo on the loopback) over three steps: the averaged gradients are
    /// `(g0 + g1) / 2` to the last bit (what the earlier concatenation, all-reduce and copy back
    /// gave), the values are summed, and the buffer is allocated on the first step only.
    #[test]
    fn two_ranks_average_the_gradients_in_their_buffer_to_the_last_bit() {
        let timeout = Duration::from_secs(60);
        let got = on_loopback_ranks(vec![0u64, 1], "grad-buffer-test", timeout, |group, rank| {
            let ranks = Ranks::new(group, 4, Device::Cpu);
            let opts = (Kind::Float, Device::Cpu);
            let vars = [Tensor::zeros([2, 3], opts), Tensor::zeros([4], opts)]
                .map(|t| t.set_requires_grad(true));
            let mut out = Vec::new();
            let mut buffers = Vec::new();
            for step in 0..3 {
                for v in &vars {
                    let g = v.grad();
                    if g.defined() {
                        let _ = g.detach().zero_();
                    }
                }
                backward(&vars, &rank_grads(rank, step));
                let values = Tensor::from_slice(&[rank as f32 + 1.0, 0.5]);
                let summed = ranks.average_gradients(&vars, &values).unwrap();
                assert_eq!(Vec::<f32>::try_from(&summed).unwrap(), [3.0, 1.0]);
                out.push(vars.iter().map(|v| v.grad().copy()).collect::<Vec<_>>());
                let held = ranks.grads.borrow();
                buffers.push(held.as_ref().unwrap().gradients().data_ptr());
            }
            assert!(buffers.iter().all(|&b| b == buffers[0]), "one buffer");
            out
        });
        for step in 0..3 {
            let (g0, g1) = (rank_grads(0, step), rank_grads(1, step));
            for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
                let want = (a + b) / 2.0;
                for (rank, steps) in got.iter().enumerate() {
                    let have = &steps[step as usize][i];
                    let bits = |t: &Tensor| -> Vec<u32> {
                        Vec::<f32>::try_from(&t.reshape([-1]))
                            .unwrap()
                            .iter()
                            .map(|x| x.to_bits())
                            .collect()
                    };
                    assert_eq!(bits(have), bits(&want), "rank {rank}, step {step}, var {i}");
                }
            }
        }
    }
}
