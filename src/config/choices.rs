//! The closed sets of values a config key can take, as enums written and read by name.
//!
//! An unknown name is refused when the config is loaded, with the valid names; nothing falls back
//! to a default.
use std::fmt;

/// Defines an enum whose variants are written as the given names (in configs and on the command
/// line), with `NAMES`, `Display`, `FromStr` and serde by name. An optional `retired: f` names a
/// function that says why a name an earlier release took is refused now (`None` for other names).
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? } $(retired: $retired:path)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every valid name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => {
                        $(if let Some(why) = $retired(s) {
                            return Err(why);
                        })?
                        Err(unknown(s, $name::NAMES))
                    }
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e| serde::de::Error::custom(format!("{INVALID}{e}")))
            }
        }
    };
}

/// Prefix of a deserialisation error that is a bad value of the right type (not a wrong type).
pub(crate) const INVALID: &str = "invalid value: ";

/// `"x" (expected one of a, b, c)`.
pub fn unknown(value: &str, names: &[&str]) -> String {
    format!("{value:?} (expected one of {})", names.join(", "))
}

choice! {
    /// The datasets `ccma` reads (METHOD.md section 1) and the generated TOY-PEDES; each one's
    /// record is [`DatasetName::record`].
    DatasetName {
        CuhkPedes = "CUHK-PEDES",
        IcfgPedes = "ICFG-PEDES",
        RstpReid = "RSTPReid",
        ToyPedes = "TOY-PEDES",
    }
    retired: retired_dataset
}

/// The name TOY-PEDES had in earlier releases. It is the name of PLIP's 4.7M-image person
/// pre-training set (Zuo et al.), so it is refused in a new config; a run folder's `configs.yaml`
/// that says it is read as TOY-PEDES (`earlier_runs`).
pub const SYNTH_PEDES: &str = "SYNTH-PEDES";

/// Why a dataset name is refused although an earlier release took it (`None` for other names).
fn retired_dataset(name: &str) -> Option<String> {
    (name == SYNTH_PEDES).then(|| {
        format!(
            "{name:?} is PLIP's 4.7M-image person pre-training set (Zuo et al.), which ccma does not read; the generated set that earlier releases called {name} is now called {} (expected one of {})",
            DatasetName::ToyPedes,
            DatasetName::NAMES.join(", ")
        )
    })
}

choice! {
    /// An evaluation split of a dataset: the one that chooses the best epoch (`val_dataset`, as
    /// IRRA's key), or the one `ccma test --split` scores.
    SplitName { Test = "test", Val = "val" }
}

choice! {
    /// Which embeddings retrieval compares (METHOD.md section 7): the global features (BGE), the
    /// token selection embeddings (TSE), or the mean of the two cosine similarities.
    Similarity { Bge = "bge", Tse = "tse", BgeTse = "bge+tse" }
}

impl Similarity {
    /// Whether it reads the TSE features.
    pub fn needs_tse(self) -> bool {
        match self {
            Similarity::Bge => false,
            Similarity::Tse | Similarity::BgeTse => true,
        }
    }

    /// The similarity `configured`, else the default of a model with (`bge+tse`) or without
    /// (`bge`) the TSE layers.
    pub fn or_default(configured: Option<Similarity>, has_tse: bool) -> Similarity {
        configured.unwrap_or(match has_tse {
            true => Similarity::BgeTse,
            false => Similarity::Bge,
        })
    }
}

choice! {
    /// Which statistics the TSE BatchNorm normalises with while training (METHOD.md section 7):
    /// the running ones, never updated, as the commit behind RDE's published numbers did
    /// (`running`), or the batch's, updating the running ones, as RDE's later commit (`batch`).
    TseBatchNorm { Running = "running", Batch = "batch" }
}

impl TseBatchNorm {
    /// The model's mode for it.
    pub fn mode(self) -> crate::model::BatchNormMode {
        match self {
            TseBatchNorm::Running => crate::model::BatchNormMode::Running,
            TseBatchNorm::Batch => crate::model::BatchNormMode::Batch,
        }
    }
}

choice! {
    /// How an epoch orders the training samples.
    SamplerKind { Random = "random", Identity = "identity" }
}

choice! {
    /// The decay after warm-up (IRRA's `lrscheduler`).
    Scheduler { Cosine = "cosine", Step = "step", Exp = "exp", Poly = "poly", Linear = "linear" }
}

choice! {
    /// How the warm-up factor moves towards 1.
    WarmupMethod { Linear = "linear", Constant = "constant" }
}

choice! {
    /// Adam (L2 decay added to the gradient) or AdamW (decoupled decay).
    OptimizerKind { Adam = "Adam", AdamW = "AdamW" }
}

choice! {
    /// Which caption the global text features see when `MLM` masks captions: the masked one, as
    /// IRRA's and CCMA's published runs did (their masking wrote into the caption in place), or
    /// the clean one. Evaluation always uses clean captions.
    GlobalCaption { Masked = "masked", Clean = "clean" }
}

choice! {
    /// Whether the training pairs are divided before every epoch (RDE's consensus clean
    /// division, METHOD.md section 7): `none`, or `ccd` (needs the TSE layers).
    NoiseFilter { None = "none", Ccd = "ccd" }
}

choice! {
    /// The c10d backend of a data-parallel run (`auto`: NCCL on CUDA, Gloo on the CPU).
    DistBackend { Auto = "auto", Gloo = "gloo", Nccl = "nccl" }
}

choice! {
    /// The precision of float32 matmuls on CUDA, as `torch.set_float32_matmul_precision`:
    /// `highest` fp32, `high` TF32 (what PyTorch 1.7-1.11, IRRA's, did by default on Ampere),
    /// `medium` TF32 as well (libtorch's bf16 passes of `medium` are oneDNN's, on the CPU, whose
    /// float32 matmuls stay IEEE fp32 whatever the setting).
    MatmulPrecision { Highest = "highest", High = "high", Medium = "medium" }
}

choice! {
    /// One loss term of `loss_names`.
    LossTerm { Itc = "itc", Sdm = "sdm", Cmpm = "cmpm", Id = "id", Mlm = "mlm", Imal = "imal", Tal = "tal" }
}

impl LossTerm {
    /// CCMA's published set, in the order its code sums the terms: what `imal` in `loss_names`
    /// stands for. A new term joins it only by being written here.
    pub const CCMA: &'static [LossTerm] = &[
        LossTerm::Itc,
        LossTerm::Sdm,
        LossTerm::Cmpm,
        LossTerm::Id,
        LossTerm::Mlm,
        LossTerm::Imal,
    ];
}

/// `loss_names`: loss terms joined by `+`, as written (`imal` stands for the CCMA set
/// [`LossTerm::CCMA`]), and at most one [`RunTag`]. Names are case-insensitive; order of first
/// appearance is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct LossNames {
    text: String,
    terms: Vec<LossTerm>,
    tag: Option<RunTag>,
}

impl LossNames {
    /// The terms, `imal` expanded, each once, in order of first appearance.
    pub fn terms(&self) -> &[LossTerm] {
        &self.terms
    }

    /// The run tag, where the names carry one.
    pub fn tag(&self) -> Option<&RunTag> {
        self.tag.as_ref()
    }
}

/// The settings RDE's `run_rde.sh` appends to its term in `--loss_names` to name the run's folder
/// (`TAL+sr0.3_tau0.015_margin0.1_n0.0`), as written. RDE's model reads only the term; `ccma`
/// checks the tag against the settings it names.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTag {
    pub text: String,
    pub select_ratio: f64,
    pub tau: f64,
    pub margin: f64,
    pub noisy_rate: f64,
}

impl RunTag {
    /// `name` (lowercase) as a run tag: four `_`-joined parts `sr<x>`, `tau<x>`, `margin<x>`,
    /// `n<x>` with finite numbers; `None` for anything else.
    fn parse(name: &str) -> Option<RunTag> {
        let parts: Vec<&str> = name.split('_').collect();
        let [sr, tau, margin, n] = parts[..] else {
            return None;
        };
        let number = |part: &str, prefix: &str| -> Option<f64> {
            let v: f64 = part.strip_prefix(prefix)?.parse().ok()?;
            v.is_finite().then_some(v)
        };
        Some(RunTag {
            text: name.to_string(),
            select_ratio: number(sr, "sr")?,
            tau: number(tau, "tau")?,
            margin: number(margin, "margin")?,
            noisy_rate: number(n, "n")?,
        })
    }
}

impl std::str::FromStr for LossNames {
    type Err = String;
    fn from_str(text: &str) -> Result<LossNames, String> {
        let mut terms = Vec::new();
        let mut tag: Option<RunTag> = None;
        for name in text.split('+').map(|s| s.trim().to_lowercase()) {
            if let Some(t) = RunTag::parse(&name) {
                if let Some(first) = tag.replace(t) {
                    return Err(format!(
                        "{text:?} has two run tags, {:?} and {name:?} (expected at most one, as RDE's run_rde.sh writes)",
                        first.text
                    ));
                }
                continue;
            }
            let term: LossTerm = name.parse().map_err(|_| {
                format!(
                    "unknown loss {name:?} in {text:?} (expected `+`-separated names from {}, and at most one run tag such as RDE's sr0.3_tau0.015_margin0.1_n0.0)",
                    LossTerm::NAMES.join(", ")
                )
            })?;
            let expanded: &[LossTerm] = if term == LossTerm::Imal {
                LossTerm::CCMA
            } else {
                std::slice::from_ref(&term)
            };
            for t in expanded {
                if !terms.contains(t) {
                    terms.push(*t);
                }
            }
        }
        if terms.is_empty() {
            return Err(format!(
                "{text:?} names no loss term (expected `+`-separated names from {})",
                LossTerm::NAMES.join(", ")
            ));
        }
        Ok(LossNames {
            text: text.to_string(),
            terms,
            tag,
        })
    }
}

impl fmt::Display for LossNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for LossNames {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for LossNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LossNames, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{INVALID}{e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for d in DatasetName::ALL {
            assert_eq!(d.name().parse::<DatasetName>().unwrap(), *d);
        }
        assert_eq!(
            "Market".parse::<DatasetName>().unwrap_err(),
            "\"Market\" (expected one of CUHK-PEDES, ICFG-PEDES, RSTPReid, TOY-PEDES)"
        );
        let e = "SYNTH-PEDES".parse::<DatasetName>().unwrap_err();
        assert!(
            e.starts_with("\"SYNTH-PEDES\" is PLIP's 4.7M-image person pre-training set")
                && e.contains("is now called TOY-PEDES"),
            "{e}"
        );
        assert!("pk"
            .parse::<SamplerKind>()
            .unwrap_err()
            .contains("random, identity"));
    }

    #[test]
    fn imal_expands_to_the_ccma_set() {
        use LossTerm::*;
        assert_eq!(LossTerm::CCMA, &[Itc, Sdm, Cmpm, Id, Mlm, Imal]);
        let l: LossNames = "imal".parse().unwrap();
        assert_eq!(l.terms(), LossTerm::CCMA);
        let l: LossNames = "mlm+IMAL".parse().unwrap();
        assert_eq!(l.terms(), &[Mlm, Itc, Sdm, Cmpm, Id, Imal]);
        let l: LossNames = "sdm+ID+sdm".parse().unwrap();
        assert_eq!(l.terms(), &[Sdm, Id]);
        assert_eq!(l.to_string(), "sdm+ID+sdm");
        assert!("sdm+foo"
            .parse::<LossNames>()
            .unwrap_err()
            .contains("unknown loss \"foo\""));
    }
}
