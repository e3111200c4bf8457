//! Every flag that sets a run-config key, one record each (as ripgrep keeps its flags in one
//! place): the key, `ccma`'s flag for it (its commands, its help, whether `train --resume` takes
//! it) and IRRA's spelling of it. Clap's arguments for `ccma`'s flags, the refusal of a flag and
//! `--set` on one key, the resume rule and the rewrite of IRRA's spellings
//! ([`super::irra_flags`]) all follow from [`SETTINGS`]: adding a flag is one entry there.
//!
//! A flag's value reaches the config as `--set KEY=VALUE` would: the config's own types read it,
//! and a value of the wrong type is refused by clap, naming the flag.
use crate::config::Config;
use clap::{Arg, ArgMatches, Command};
use std::marker::PhantomData;

/// One way to set a config key by a named flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The config key it sets.
    pub key: &'static str,
    /// `ccma`'s flag for the key, if it has one.
    pub flag: Option<Flag>,
    /// How IRRA's `train.py` (and those built on its options, CCMA's) takes the key: as
    /// `--<key>`, in this form (`ccma train` takes that spelling too); `None`: it does not.
    pub irra: Option<Form>,
}

/// `ccma`'s flag for a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flag {
    /// The long name, without `--`.
    pub long: &'static str,
    /// The commands that take it.
    pub scope: Scope,
    /// How its value is read.
    pub value: Value,
    pub value_name: &'static str,
    /// What it sets, for `--help` (the key is added).
    pub help: &'static str,
    /// Whether `ccma train --resume RUN_DIR` takes it (a resumed run otherwise keeps its config).
    pub on_resume: bool,
}

/// The commands a flag belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// Every command that reads a dataset by config (`ConfigArgs`).
    Dataset,
    /// Every command that runs a model (`DeviceArg`).
    Device,
    /// `ccma train`.
    Train,
}

/// How a flag's value is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// As YAML, the way `--set` reads it: a number, or a name (`auto`).
    Yaml,
    /// As text, whatever it looks like: a path, a name (`--name 2024` stays the text "2024").
    Text,
}

/// The form of IRRA's spelling of a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Form {
    /// `--key VALUE` (or `--key=VALUE`).
    Value,
    /// A `store_true` switch: `--key` sets the key to `true`.
    Switch,
    /// One or more values (`nargs='+'`, or IRRA's `tuple`): the key as a list.
    List,
}

/// A key IRRA's `train.py` sets with a flag that `ccma` has no flag of its own for (`--lr 1e-5`
/// is `--set lr=1e-5`).
const fn irra(key: &'static str, form: Form) -> Setting {
    Setting {
        key,
        flag: None,
        irra: Some(form),
    }
}

/// The records: `ccma`'s flags first, in `--help`'s order, then IRRA's spellings of the keys
/// `ccma` has no flag for, in the order of IRRA's `utils/options.py` (which CCMA's `train.py`
/// reads too; the flags of it that `ccma` refuses are in [`super::irra_flags`]).
pub const SETTINGS: [Setting; 53] = [
    Setting {
        key: "dataset_name",
        flag: Some(Flag {
            long: "dataset",
            scope: Scope::Dataset,
            value: Value::Text,
            value_name: "NAME",
            help: "Dataset: CUHK-PEDES, ICFG-PEDES, RSTPReid or TOY-PEDES",
            on_resume: false,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "root_dir",
        flag: Some(Flag {
            long: "root-dir",
            scope: Scope::Dataset,
            value: Value::Text,
            value_name: "DIR",
            help: "Folder that holds `<dataset>/`",
            on_resume: false,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "device",
        flag: Some(Flag {
            long: "device",
            scope: Scope::Device,
            value: Value::Text,
            value_name: "DEVICE",
            help: "auto (CUDA when present), cpu, cuda or cuda:N",
            on_resume: false,
        }),
        irra: None,
    },
    Setting {
        key: "batch_size",
        flag: Some(Flag {
            long: "batch-size",
            scope: Scope::Train,
            value: Value::Yaml,
            value_name: "N",
            help: "Training batch size",
            on_resume: false,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "name",
        flag: Some(Flag {
            long: "name",
            scope: Scope::Train,
            value: Value::Text,
            value_name: "NAME",
            help: "Experiment name, the suffix of the run folder",
            on_resume: false,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "output_dir",
        flag: Some(Flag {
            long: "output-dir",
            scope: Scope::Train,
            value: Value::Text,
            value_name: "DIR",
            help: "Runs go to <output-dir>/<dataset>/<timestamp>_<name>/",
            on_resume: false,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "run_dir",
        flag: Some(Flag {
            long: "run-dir",
            scope: Scope::Train,
            value: Value::Text,
            value_name: "DIR",
            help: "Use this run folder instead of a generated one",
            on_resume: false,
        }),
        irra: None,
    },
    Setting {
        key: "pretrained",
        flag: Some(Flag {
            long: "pretrained",
            scope: Scope::Train,
            value: Value::Text,
            value_name: "FILE",
            help: "Weights to start from: OpenAI's ViT-B-16.pt, a Hugging Face CLIP folder (or its model.safetensors), an IRRA or CCMA best.pth, or a ccma checkpoint",
            on_resume: false,
        }),
        irra: None,
    },
    Setting {
        key: "loss_names",
        flag: Some(Flag {
            long: "loss-names",
            scope: Scope::Train,
            value: Value::Text,
            value_name: "NAMES",
            help: "Loss terms joined by `+` (sdm, itc, cmpm, id, mlm, imal, tal); `imal` = the CCMA set; at most one RDE run tag (sr0.3_tau0.015_margin0.1_n0.0)",
            on_resume: false,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "num_epoch",
        flag: Some(Flag {
            long: "num-epoch",
            scope: Scope::Train,
            value: Value::Yaml,
            value_name: "N",
            help: "Epochs",
            on_resume: true,
        }),
        irra: Some(Form::Value),
    },
    Setting {
        key: "micro_batch",
        flag: Some(Flag {
            long: "micro-batch",
            scope: Scope::Train,
            value: Value::Yaml,
            value_name: "N|auto",
            help: "Samples per pass of a step: N (chunks of N, the gradient still the whole batch's) or auto (the largest chunk that fits a CUDA card's free memory)",
            on_resume: true,
        }),
        irra: None,
    },
    irra("log_period", Form::Value),
    irra("eval_period", Form::Value),
    irra("val_dataset", Form::Value),
    irra("pretrain_choice", Form::Value),
    irra("temperature", Form::Value),
    irra("img_aug", Form::Switch),
    irra("cmt_depth", Form::Value),
    irra("masked_token_rate", Form::Value),
    irra("masked_token_unchanged_rate", Form::Value),
    irra("lr_factor", Form::Value),
    irra("MLM", Form::Switch),
    irra("mlm_loss_weight", Form::Value),
    irra("id_loss_weight", Form::Value),
    irra("img_size", Form::List),
    irra("stride_size", Form::Value),
    irra("text_length", Form::Value),
    irra("vocab_size", Form::Value),
    irra("optimizer", Form::Value),
    irra("lr", Form::Value),
    irra("bias_lr_factor", Form::Value),
    irra("weight_decay", Form::Value),
    irra("weight_decay_bias", Form::Value),
    irra("alpha", Form::Value),
    irra("beta", Form::Value),
    irra("milestones", Form::List),
    irra("gamma", Form::Value),
    irra("warmup_factor", Form::Value),
    irra("warmup_epochs", Form::Value),
    irra("warmup_method", Form::Value),
    irra("lrscheduler", Form::Value),
    irra("target_lr", Form::Value),
    irra("power", Form::Value),
    irra("sampler", Form::Value),
    irra("num_instance", Form::Value),
    irra("test_batch_size", Form::Value),
    irra("num_workers", Form::Value),
    // RDE's (its `utils/options.py`).
    irra("select_ratio", Form::Value),
    irra("tau", Form::Value),
    irra("margin", Form::Value),
    irra("noisy_rate", Form::Value),
    irra("noisy_file", Form::Value),
    irra("txt_aug", Form::Switch),
];

/// The records with a `ccma` flag of `scope`, with the flag.
fn flags_of(scope: Scope) -> impl Iterator<Item = (&'static Setting, Flag)> {
    SETTINGS
        .iter()
        .filter_map(move |s| s.flag.filter(|f| f.scope == scope).map(|f| (s, f)))
}

/// The flags `ccma train --resume` takes, as a list in a sentence: `--num-epoch and
/// --micro-batch`.
pub fn resume_flags() -> String {
    let names: Vec<String> = SETTINGS
        .iter()
        .filter_map(|s| s.flag.filter(|f| f.on_resume))
        .map(|f| format!("--{}", f.long))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

impl Setting {
    /// `value` as the YAML text of this key's value ([`Value`]), once the config's types take it.
    fn yaml(&self, value: &str, read: Value) -> Result<String, String> {
        let text = match read {
            Value::Yaml => value.to_string(),
            Value::Text => serde_yaml::to_string(value)
                .map_err(|e| e.to_string())?
                .trim_end()
                .to_string(),
        };
        Config::default()
            .with_overrides(&[(self.key.to_string(), text.clone())])
            .map_err(|e| format!("{e:#}"))?;
        Ok(text)
    }
}

/// A flag of [`SETTINGS`] as given on the command line.
#[derive(Debug, Clone)]
pub struct Given {
    /// The config key it sets.
    pub key: &'static str,
    pub flag: Flag,
    /// The value as YAML text for the key (what `--set KEY=` would be given).
    pub yaml: String,
}

impl Given {
    /// As one `--set` pair: (key, YAML value).
    pub fn pair(&self) -> (String, String) {
        (self.key.to_string(), self.yaml.clone())
    }
}

/// A [`Scope`] as a type, for [`Flags`].
pub trait InScope {
    const SCOPE: Scope;
}

/// [`Scope::Dataset`].
#[derive(Debug, Clone, Default)]
pub struct DatasetScope;
/// [`Scope::Device`].
#[derive(Debug, Clone, Default)]
pub struct DeviceScope;
/// [`Scope::Train`].
#[derive(Debug, Clone, Default)]
pub struct TrainScope;

impl InScope for DatasetScope {
    const SCOPE: Scope = Scope::Dataset;
}
impl InScope for DeviceScope {
    const SCOPE: Scope = Scope::Device;
}
impl InScope for TrainScope {
    const SCOPE: Scope = Scope::Train;
}

/// The `ccma` flags of scope `S` (a clap group to `#[command(flatten)]`), as given.
#[derive(Debug, Clone)]
pub struct Flags<S> {
    pub given: Vec<Given>,
    scope: PhantomData<S>,
}

impl<S> Default for Flags<S> {
    fn default() -> Self {
        Flags {
            given: Vec::new(),
            scope: PhantomData,
        }
    }
}

impl<S> Flags<S> {
    /// Whether the flag of `key` was given.
    pub fn has(&self, key: &str) -> bool {
        self.given.iter().any(|g| g.key == key)
    }

    /// The values given, as `--set` pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.given.iter().map(Given::pair).collect()
    }
}

impl<S: InScope> clap::Args for Flags<S> {
    fn augment_args(cmd: Command) -> Command {
        flags_of(S::SCOPE).fold(cmd, |cmd, (setting, flag)| {
            cmd.arg(
                Arg::new(setting.key)
                    .long(flag.long)
                    .value_name(flag.value_name)
                    .help(format!("{} (key `{}`)", flag.help, setting.key))
                    .value_parser(move |v: &str| setting.yaml(v, flag.value)),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<S: InScope> clap::FromArgMatches for Flags<S> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = flags_of(S::SCOPE)
            .filter_map(|(setting, flag)| {
                let yaml = matches.get_one::<String>(setting.key)?.clone();
                Some(Given {
                    key: setting.key,
                    flag,
                    yaml,
                })
            })
            .collect();
        Ok(Flags {
            given,
            scope: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_key_is_a_config_key_once_and_every_flag_has_one_name() {
        let keys = crate::config::valid_keys();
        let mut seen: Vec<&str> = Vec::new();
        for s in &SETTINGS {
            assert!(keys.contains(&s.key.to_string()), "{}", s.key);
            assert!(!seen.contains(&s.key), "{} twice", s.key);
            seen.push(s.key);
            assert!(
                s.flag.is_some() || s.irra.is_some(),
                "{} is set by no flag",
                s.key
            );
        }
        let mut longs: Vec<&str> = SETTINGS.iter().filter_map(|s| Some(s.flag?.long)).collect();
        let n = longs.len();
        longs.sort();
        longs.dedup();
        assert_eq!(longs.len(), n, "a long name used twice: {longs:?}");
    }

    /// Each flag is listed by exactly the commands of its scope.
    #[test]
    fn each_command_takes_the_flags_of_its_scopes() {
        let cli = super::super::Cli::command();
        let scopes: [(&str, &[Scope]); 5] = [
            ("train", &[Scope::Dataset, Scope::Device, Scope::Train]),
            ("test", &[Scope::Dataset, Scope::Device]),
            ("stats", &[Scope::Dataset]),
            ("search", &[Scope::Device]),
            ("rank", &[]),
        ];
        for (command, in_scope) in scopes {
            let sub = cli.find_subcommand(command).unwrap();
            for (setting, flag) in SETTINGS.iter().filter_map(|s| Some((s, s.flag?))) {
                let from_table = format!("(key `{}`)", setting.key);
                let listed = sub.get_arguments().any(|a| {
                    a.get_long() == Some(flag.long)
                        && a.get_help()
                            .is_some_and(|h| h.to_string().contains(&from_table))
                });
                assert_eq!(
                    listed,
                    in_scope.contains(&flag.scope),
                    "{command} --{}",
                    flag.long
                );
            }
        }
    }

    fn parse(args: &[&str]) -> Result<super::super::Cli, clap::Error> {
        let mut line = vec!["ccma"];
        line.extend(args);
        <super::super::Cli as clap::Parser>::try_parse_from(line)
    }

    /// A value reaches the config as `--set` would give it, text flags as text.
    #[test]
    fn values_are_read_as_the_key_takes_them() {
        let setting = |key: &str| SETTINGS.iter().find(|s| s.key == key).unwrap();
        let put = |key: &str, v: &str| {
            let s = setting(key);
            let yaml = s.yaml(v, s.flag.unwrap().value).unwrap();
            Config::default()
                .with_overrides(&[(key.to_string(), yaml)])
                .unwrap()
        };
        assert_eq!(put("name", "2024").run.name, "2024");
        assert_eq!(put("name", "yes: no").run.name, "yes: no");
        assert_eq!(
            put("run_dir", "runs/a #1").run.run_dir,
            Some("runs/a #1".into())
        );
        assert_eq!(put("batch_size", "12").data.batch_size, 12);
        assert_eq!(
            put("micro_batch", "auto").run.micro_batch,
            Some(crate::config::MicroBatch::Auto)
        );
        assert_eq!(
            put("device", "cuda:1").run.device,
            crate::device::DeviceSpec::Cuda(1)
        );
        let e = parse(&["train", "--batch-size", "many"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("`batch_size`"), "{e}");
        let e = parse(&["search", "--device", "gpu", "--gallery", "g", "q"]).unwrap_err();
        assert!(
            e.to_string().contains("expected auto, cpu, cuda or cuda:N"),
            "{e}"
        );
    }

    #[test]
    fn the_resume_rule_names_the_flags_that_may_change_a_resumed_run() {
        assert_eq!(resume_flags(), "--num-epoch and --micro-batch");
    }
}
