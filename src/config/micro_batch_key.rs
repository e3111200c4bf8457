//! The `micro_batch` key's value: in how many passes a training step computes its batch. The
//! trainer resolves it to a chunk size (`train/chunk_size.rs`); the step in chunks is
//! `train/step.rs`.
use super::choices::INVALID;

/// Samples per pass of a training step (`micro_batch`): a number N (chunks of N, the last one
/// smaller when N does not divide the batch) or `auto` (the largest chunk that fits the card's
/// free memory, CUDA only). Unset (`None` in the config) is the whole batch in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicroBatch {
    Size(usize),
    Auto,
}

impl std::str::FromStr for MicroBatch {
    type Err = String;
    fn from_str(s: &str) -> Result<MicroBatch, String> {
        match s {
            "auto" => Ok(MicroBatch::Auto),
            _ => s
                .parse()
                .map(MicroBatch::Size)
                .map_err(|_| format!("{s:?} (expected a number of samples or auto)")),
        }
    }
}

impl std::fmt::Display for MicroBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MicroBatch::Size(n) => write!(f, "{n}"),
            MicroBatch::Auto => f.write_str("auto"),
        }
    }
}

impl serde::Serialize for MicroBatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MicroBatch::Size(n) => s.serialize_u64(*n as u64),
            MicroBatch::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MicroBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MicroBatch, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(u64),
            Text(String),
        }
        let parsed = match Given::deserialize(d)? {
            Given::Number(n) => usize::try_from(n)
                .map(MicroBatch::Size)
                .map_err(|_| format!("{n} (expected a number of samples or auto)")),
            Given::Text(s) => s.parse(),
        };
        parsed.map_err(|e| serde::de::Error::custom(format!("{INVALID}{e}")))
    }
}
