//! IRRA's spellings of its flags, turned into `ccma`'s before parsing, so that the command lines of
//! IRRA's and CCMA's READMEs work as written with `python train.py` / `python test.py` replaced by
//! `ccma train` / `ccma test`. The source is IRRA's `utils/options.py` (CCMA's `train.py` reads the
//! same list) and its `test.py`.
use std::ffi::OsString;

/// What an IRRA flag becomes.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    /// `ccma`'s flag of the same meaning, with the same value.
    Flag(&'static str),
    /// A `store_true` switch: the config key of the same name set to `true`.
    Switch,
    /// One value: the config key of the same name (`--set key=VALUE`).
    Key,
    /// One or more values (`nargs='+'`, or IRRA's `tuple`): the key as a list.
    List,
    /// Refused, with what to do instead.
    Refused(&'static str),
}

use Spelling::{Flag, Key, List, Refused, Switch};

/// How `ccma` resumes, for IRRA's `--resume` switch and `--resume_ckpt_file`.
const RESUME: &str =
    "ccma resumes a run folder it wrote, from its last saved step: ccma train --resume RUN_DIR";

/// IRRA's `--resume` given as a switch (no folder after it).
const RESUME_SWITCH: &str = "--resume takes the run folder to continue (IRRA's switch with --resume_ckpt_file is not taken): ccma train --resume RUN_DIR";

/// Whether the argument after a flag, `next`, leaves the flag without a value.
fn bare_switch(next: Option<&&OsString>) -> bool {
    next.is_none_or(|v| v.to_string_lossy().starts_with("--"))
}

/// The flags of IRRA's `train.py`, in `utils/options.py`'s order, but `--resume`: IRRA's switch
/// to resume from `--resume_ckpt_file`, and `ccma`'s own flag `--resume RUN_DIR`.
const TRAIN: [(&str, Spelling); 47] = [
    ("local_rank", Refused("ccma takes each rank from torchrun's environment, or starts the ranks itself with --nproc-per-node N")),
    ("name", Flag("--name")),
    ("output_dir", Flag("--output-dir")),
    ("log_period", Key),
    ("eval_period", Key),
    ("val_dataset", Key),
    ("resume_ckpt_file", Refused(RESUME)),
    ("pretrain_choice", Key),
    ("temperature", Key),
    ("img_aug", Switch),
    ("cmt_depth", Key),
    ("masked_token_rate", Key),
    ("masked_token_unchanged_rate", Key),
    ("lr_factor", Key),
    ("MLM", Switch),
    ("loss_names", Flag("--loss-names")),
    ("mlm_loss_weight", Key),
    ("id_loss_weight", Key),
    ("img_size", List),
    ("stride_size", Key),
    ("text_length", Key),
    ("vocab_size", Key),
    ("optimizer", Key),
    ("lr", Key),
    ("bias_lr_factor", Key),
    ("momentum", Refused("it is SGD's momentum, and ccma's optimizers are Adam and AdamW (key `optimizer`)")),
    ("weight_decay", Key),
    ("weight_decay_bias", Key),
    ("alpha", Key),
    ("beta", Key),
    ("num_epoch", Flag("--num-epoch")),
    ("milestones", List),
    ("gamma", Key),
    ("warmup_factor", Key),
    ("warmup_epochs", Key),
    ("warmup_method", Key),
    ("lrscheduler", Key),
    ("target_lr", Key),
    ("power", Key),
    ("dataset_name", Flag("--dataset")),
    ("sampler", Key),
    ("num_instance", Key),
    ("root_dir", Flag("--root-dir")),
    ("batch_size", Flag("--batch-size")),
    ("test_batch_size", Key),
    ("num_workers", Key),
    ("test", Refused("ccma evaluates with its own command: ccma test --config RUN_DIR/configs.yaml")),
];

/// The flags of IRRA's `test.py`.
const TEST: [(&str, Spelling); 1] = [("config_file", Flag("--config"))];

/// The IRRA flags `command` (a subcommand's name) takes.
fn table(command: &str) -> &'static [(&'static str, Spelling)] {
    match command {
        "train" => &TRAIN,
        "test" => &TEST,
        _ => &[],
    }
}

/// `args` (the whole command line, program name first) with the IRRA flags of its subcommand in
/// `ccma`'s spelling; `Err` names a refused flag, or one without its value.
pub fn rewrite(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(at) = subcommand_at(&args) else {
        return Ok(args);
    };
    let command = args[at].to_str().unwrap_or_default();
    let flags = table(command);
    let mut out: Vec<OsString> = args[..=at].to_vec();
    let mut rest = args[at + 1..].iter().peekable();
    while let Some(arg) = rest.next() {
        let text = arg.to_str().unwrap_or_default();
        if text == "--" {
            out.push(arg.clone());
            out.extend(rest.cloned());
            break;
        }
        let (flag, inline) = match text.strip_prefix("--").map(|f| f.split_once('=')) {
            Some(Some((f, v))) => (f, Some(v)),
            Some(None) => (&text[2..], None),
            None => ("", None),
        };
        if command == "train" && flag == "resume" && inline.is_none() && bare_switch(rest.peek()) {
            return Err(RESUME_SWITCH.to_string());
        }
        let Some(&(name, spelling)) = flags.iter().find(|(n, _)| *n == flag) else {
            out.push(arg.clone());
            continue;
        };
        // A path stays as given (it may not be UTF-8); a config value is YAML text.
        let mut value = || -> Result<OsString, String> {
            match inline {
                Some(v) => Ok(v.into()),
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} (IRRA's flag) expects a value")),
            }
        };
        match spelling {
            Flag(to) => {
                let v = value()?;
                out.extend([to.into(), v]);
            }
            Switch if inline.is_some() => {
                return Err(format!(
                    "--{name} (IRRA's switch) takes no value: --{name} sets `{name}: true`"
                ))
            }
            Switch => out.extend(["--set".into(), format!("{name}=true").into()]),
            Key => {
                let v = value()?;
                let set = format!("{name}={}", v.to_string_lossy());
                out.extend(["--set".into(), set.into()]);
            }
            List => {
                let mut items = vec![value()?.to_string_lossy().into_owned()];
                while let Some(v) = rest.next_if(|v| !v.to_string_lossy().starts_with("--")) {
                    items.push(v.to_string_lossy().into_owned());
                }
                let list = format!("{name}=[{}]", items.join(","));
                out.extend(["--set".into(), list.into()]);
            }
            Refused(instead) => {
                return Err(format!("--{name} (IRRA's flag) is not taken: {instead}"))
            }
        }
    }
    Ok(out)
}

/// Where the subcommand's name is: the first argument that is not the program, a global flag
/// (`--log LEVEL`) or its value.
fn subcommand_at(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while let Some(a) = args.get(i) {
        match a.to_str() {
            Some("--log") => i += 2,
            Some(s) if s.starts_with('-') => i += 1,
            _ => return Some(i),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Vec<String>, String> {
        let args = line.split(' ').map(OsString::from).collect();
        rewrite(args).map(|a| a.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn ccmas_readme_commands_take_ccmas_flags() {
        assert_eq!(
            run("ccma train --name ccma --img_aug --batch_size 64 --MLM --loss_names imal --dataset_name CUHK-PEDES --root_dir d --num_epoch 60").unwrap().join(" "),
            "ccma train --name ccma --set img_aug=true --batch-size 64 --set MLM=true --loss-names imal --dataset CUHK-PEDES --root-dir d --num-epoch 60"
        );
        assert_eq!(
            run("ccma --log warn test --config_file=r/configs.yaml")
                .unwrap()
                .join(" "),
            "ccma --log warn test --config r/configs.yaml"
        );
    }

    #[test]
    fn values_lists_and_what_is_left_alone() {
        assert_eq!(
            run("ccma train --lr 1e-4 --milestones 20 50 --img_size=384 128 --batch-size 8")
                .unwrap()
                .join(" "),
            "ccma train --set lr=1e-4 --set milestones=[20,50] --set img_size=[384,128] --batch-size 8"
        );
        // Another command's flags, ccma's own spellings and what follows `--` stay as they are.
        assert_eq!(
            run("ccma stats --batch_size 3").unwrap().join(" "),
            "ccma stats --batch_size 3"
        );
        assert_eq!(
            run("ccma train -- --lr 1").unwrap().join(" "),
            "ccma train -- --lr 1"
        );
        assert_eq!(run("ccma").unwrap().join(" "), "ccma");
    }

    #[test]
    fn refused_flags_and_missing_values_say_what_to_do() {
        assert!(run("ccma train --momentum 0.9")
            .unwrap_err()
            .contains("Adam and AdamW"));
        assert!(run("ccma train --resume_ckpt_file x.pth")
            .unwrap_err()
            .contains("--resume RUN_DIR"));
        assert!(run("ccma train --local_rank 0")
            .unwrap_err()
            .contains("--nproc-per-node"));
        assert!(run("ccma train --test").unwrap_err().contains("ccma test"));
        assert_eq!(
            run("ccma train --lr").unwrap_err(),
            "--lr (IRRA's flag) expects a value"
        );
        assert!(run("ccma train --MLM=1")
            .unwrap_err()
            .contains("takes no value"));
    }

    #[test]
    fn every_key_is_a_config_key_and_every_flag_one_of_the_command() {
        let keys = crate::config::valid_keys();
        let cli = <super::super::Cli as clap::CommandFactory>::command();
        for (command, flags) in [("train", &TRAIN[..]), ("test", &TEST[..])] {
            let sub = cli.find_subcommand(command).unwrap();
            for (name, spelling) in flags {
                match spelling {
                    Switch | Key | List => assert!(keys.contains(&name.to_string()), "{name}"),
                    Flag(to) => assert!(
                        sub.get_arguments()
                            .any(|a| a.get_long() == to.strip_prefix("--")),
                        "{command} {to}"
                    ),
                    Refused(_) => {}
                }
            }
        }
    }
}
