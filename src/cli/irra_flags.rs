//! IRRA's spellings of its flags, turned into `ccma`'s before parsing, so that the command lines of
//! IRRA's and CCMA's READMEs work as written with `python train.py` / `python test.py` replaced by
//! `ccma train` / `ccma test`. The source is IRRA's `utils/options.py` (CCMA's `train.py` reads the
//! same list) and its `test.py`; the spellings that set config keys are records of
//! [`SETTINGS`], this file holds the rewrite and the flags that set none.
use super::flags::{Form, Setting, SETTINGS};
use std::ffi::OsString;

/// What an IRRA flag is on `ccma`'s command line.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    /// IRRA's spelling of a config key ([`SETTINGS`]): `ccma`'s flag for the key with the value,
    /// or, where `ccma` has none, `--set KEY=VALUE`.
    Key(&'static Setting, Form),
    /// Another name of a `ccma` flag that sets no key (`--config_file` for `--config`).
    Alias(&'static str),
    /// Refused, with what to do instead.
    Refused(&'static str),
}

/// How `ccma` resumes, for IRRA's `--resume` switch and `--resume_ckpt_file`.
const RESUME: &str =
    "ccma resumes a run folder it wrote, from its last saved step: ccma train --resume RUN_DIR";

/// IRRA's `--resume` given as a switch (no folder after it).
const RESUME_SWITCH: &str = "--resume takes the run folder to continue (IRRA's switch with --resume_ckpt_file is not taken): ccma train --resume RUN_DIR";

/// Whether the argument after a flag, `next`, leaves the flag without a value.
fn bare_switch(next: Option<&&OsString>) -> bool {
    next.is_none_or(|v| v.to_string_lossy().starts_with("--"))
}

/// The flags of IRRA's `train.py` that `ccma train` refuses, with what to do instead (the others
/// set config keys: [`SETTINGS`]), but `--resume`: IRRA's switch to resume from
/// `--resume_ckpt_file`, and `ccma`'s own flag `--resume RUN_DIR`.
const REFUSED: [(&str, &str); 4] = [
    ("local_rank", "ccma takes each rank from torchrun's environment, or starts the ranks itself with --nproc-per-node N"),
    ("resume_ckpt_file", RESUME),
    ("momentum", "it is SGD's momentum, and ccma's optimizers are Adam and AdamW (key `optimizer`)"),
    ("test", "ccma evaluates with its own command: ccma test --config RUN_DIR/configs.yaml"),
];

/// The flags of IRRA's `test.py`, each another name of a flag of `ccma test`.
const TEST: [(&str, &str); 1] = [("config_file", "config")];

/// What IRRA's `--flag` is on `command`'s line (a subcommand's name); `None`: not IRRA's.
fn spelling(command: &str, flag: &str) -> Option<Spelling> {
    match command {
        "train" => SETTINGS
            .iter()
            .find_map(|s| Some(Spelling::Key(s, s.irra.filter(|_| s.key == flag)?)))
            .or_else(|| {
                let (_, instead) = REFUSED.iter().find(|(name, _)| *name == flag)?;
                Some(Spelling::Refused(instead))
            }),
        "test" => {
            let (_, to) = TEST.iter().find(|(name, _)| *name == flag)?;
            Some(Spelling::Alias(to))
        }
        _ => None,
    }
}

/// `args` (the whole command line, program name first) with the IRRA flags of its subcommand in
/// `ccma`'s spelling; `Err` names a refused flag, or one without its value.
pub fn rewrite(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(at) = subcommand_at(&args) else {
        return Ok(args);
    };
    let command = args[at].to_str().unwrap_or_default();
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
        let Some(spelling) = spelling(command, flag) else {
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
                    .ok_or_else(|| format!("--{flag} (IRRA's flag) expects a value")),
            }
        };
        match spelling {
            Spelling::Alias(to) => {
                let v = value()?;
                out.extend([format!("--{to}").into(), v]);
            }
            Spelling::Refused(instead) => {
                return Err(format!("--{flag} (IRRA's flag) is not taken: {instead}"))
            }
            Spelling::Key(setting, form) => {
                let v: OsString = match form {
                    Form::Value => value()?,
                    Form::Switch if inline.is_some() => {
                        return Err(format!(
                            "--{flag} (IRRA's switch) takes no value: --{flag} sets `{flag}: true`"
                        ))
                    }
                    Form::Switch => "true".into(),
                    Form::List => {
                        let mut items = vec![value()?.to_string_lossy().into_owned()];
                        while let Some(v) = rest.next_if(|v| !v.to_string_lossy().starts_with("--"))
                        {
                            items.push(v.to_string_lossy().into_owned());
                        }
                        format!("[{}]", items.join(",")).into()
                    }
                };
                match setting.flag {
                    Some(f) => out.extend([format!("--{}", f.long).into(), v]),
                    None => {
                        let set = format!("{}={}", setting.key, v.to_string_lossy());
                        out.extend(["--set".into(), set.into()]);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Where the subcommand's name is: the first argument that is not the program, a global flag
/// (`--log LEVEL`) or its value.
pub(super) fn subcommand_at(args: &[OsString]) -> Option<usize> {
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

    /// RDE's `run_rde.sh` line, `python train.py` replaced.
    #[test]
    fn rdes_command_takes_rdes_flags() {
        assert_eq!(
            run("ccma train --noisy_rate 0.2 --noisy_file n/CUHK-PEDES_0.2.npy --name RDE --img_aug --txt_aug --batch_size 64 --select_ratio 0.3 --tau 0.015 --root_dir d --output_dir run_logs --margin 0.1 --dataset_name CUHK-PEDES --loss_names TAL+sr0.3_tau0.015_margin0.1_n0.2 --num_epoch 60").unwrap().join(" "),
            "ccma train --set noisy_rate=0.2 --set noisy_file=n/CUHK-PEDES_0.2.npy --name RDE --set img_aug=true --set txt_aug=true --batch-size 64 --set select_ratio=0.3 --set tau=0.015 --root-dir d --output-dir run_logs --set margin=0.1 --dataset CUHK-PEDES --loss-names TAL+sr0.3_tau0.015_margin0.1_n0.2 --num-epoch 60"
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
    fn aliases_are_flags_of_their_command_and_refused_flags_set_no_key() {
        let cli = <super::super::Cli as clap::CommandFactory>::command();
        let test = cli.find_subcommand("test").unwrap();
        for (name, to) in TEST {
            assert!(
                test.get_arguments().any(|a| a.get_long() == Some(to)),
                "{name} -> --{to}"
            );
        }
        let keys = crate::config::valid_keys();
        for (name, _) in REFUSED {
            assert!(!keys.contains(&name.to_string()), "{name}");
        }
    }
}
