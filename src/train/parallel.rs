//! The ranks of a data-parallel run as the trainer sees them. Each rank holds a slice of the
//! global batch and knows, from its loader, every rank's pids and counts; per step it gathers
//! everyone's features (so the batch-spanning losses
//! see the whole batch, with gradients to its own rows) and averages the gradients with one
//! all-reduce of a flat buffer that also carries the loss values and the stop flag. One process is
//! the world of one: every operation is then the identity and nothing is communicated.
use crate::config::{Config, DistBackend};
use crate::data::batch::TrainBatch;
use crate::device::read_to_host;
use crate::dist::group::RankLost;
use crate::dist::{Backend, Group, Launch};
use crate::loss::{BatchFeatures, Embeddings, LocalShare};
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// This process among the ranks of its run.
pub struct Ranks {
    group: Option<Group>,
    /// Rows every rank pads its slice to when gathering: ceil(batch_size / world).
    cap: i64,
    device: Device,
}

/// Where a step's samples are across the ranks.
pub struct BatchLayout {
    /// [B] i64, every rank's pids in rank order.
    pub pids: Tensor,
    /// Samples per rank.
    pub sizes: Vec<i64>,
    /// This rank's share of the per-sample means.
    pub share: LocalShare,
    /// Samples in the global batch.
    pub samples: usize,
    /// [ΣB] f32 the clean division's weights of every rank's samples in rank order, where the
    /// run divides its pairs.
    pub weights: Option<Tensor>,
}

impl Ranks {
    /// A one-process run.
    pub fn single(device: Device) -> Ranks {
        Ranks {
            group: None,
            cap: 0,
            device,
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

    /// Where the step's samples are, from what the loader knows on the host (no exchange, no
    /// read from the device): every rank's sample count, masked-token count and pids.
    pub fn layout(&self, batch: &TrainBatch) -> BatchLayout {
        let s = &batch.slices;
        let samples: i64 = s.sizes.iter().sum();
        let share = match self.group {
            None => LocalShare::WHOLE,
            Some(_) => {
                let masked_all: i64 = s.masked.iter().sum();
                LocalShare {
                    samples: batch.len() as f64 / samples as f64,
                    masked: s.masked[self.rank()] as f64 / masked_all.max(1) as f64,
                }
            }
        };
        BatchLayout {
            pids: s.all_pids.as_ref().unwrap_or(&batch.pids).shallow_clone(),
            sizes: s.sizes.clone(),
            share,
            samples: samples as usize,
            weights: batch.weights.as_ref().map(Tensor::shallow_clone),
        }
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
    /// device), with one all-reduce of a flat buffer; returns the summed values ([K] f32, on the
    /// device). Every rank has the same graph, so the same parameters have gradients everywhere.
    pub fn average_gradients(&self, vars: &[Tensor], values: &Tensor) -> Result<Tensor, RankLost> {
        let Some(g) = &self.group else {
            return Ok(values.shallow_clone());
        };
        tch::no_grad(|| {
            let mut grads: Vec<Tensor> = vars
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            let mut pieces: Vec<Tensor> = grads
                .iter()
                .map(|t| t.to_kind(Kind::Float).flatten(0, -1))
                .collect();
            pieces.push(values.to_kind(Kind::Float));
            let mut flat = Tensor::cat(&pieces, 0);
            g.all_reduce_sum(&mut flat)?;
            let world = g.world() as f64;
            let mut offset = 0;
            for grad in &mut grads {
                let n = grad.numel() as i64;
                let mean = flat.narrow(0, offset, n).view_as(grad) / world;
                grad.copy_(&mean);
                offset += n;
            }
            Ok(flat.narrow(0, offset, values.numel() as i64))
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
