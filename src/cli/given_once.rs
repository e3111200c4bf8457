//! Every config key given once on a command line. A key set twice (a flag twice, a flag and
//! `--set`, `--set` twice, IRRA's spelling and `ccma`'s flag or `--set`) is refused before
//! parsing, naming both, rather than the last one silently winning.
use super::flags::{Form, SETTINGS};
use std::ffi::OsString;

/// The config key that `arg` (with `next`, the argument after it) sets on `command`'s line, and
/// how it was written; `None` when it sets none.
fn sets(command: &str, arg: &str, next: Option<&str>) -> Option<(String, String)> {
    let flag = arg.strip_prefix("--")?;
    let (name, inline) = match flag.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (flag, None),
    };
    let value = inline.or(next.filter(|v| !v.starts_with("--")));
    if name == "set" {
        let pair = value?;
        let key = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
        return Some((key.to_string(), format!("--set {pair}")));
    }
    let shown = |takes_value: bool| match value.filter(|_| takes_value) {
        Some(v) => format!("--{name} {v}"),
        None => format!("--{name}"),
    };
    SETTINGS.iter().find_map(|s| {
        if s.flag.is_some_and(|f| f.long == name) {
            return Some((s.key.to_string(), shown(true)));
        }
        // IRRA's spellings are taken by `ccma train` only.
        let form = s.irra.filter(|_| command == "train" && s.key == name)?;
        let takes_value = match form {
            Form::Value | Form::List => true,
            Form::Switch => false,
        };
        Some((s.key.to_string(), shown(takes_value)))
    })
}

/// Refuses a command line (the program name first) that sets a config key twice, naming both.
pub fn check(args: &[OsString]) -> Result<(), String> {
    let Some(at) = super::irra_flags::subcommand_at(args) else {
        return Ok(());
    };
    let command = args[at].to_str().unwrap_or_default();
    let text: Vec<String> = args[at + 1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    let mut given: Vec<(String, String)> = Vec::new();
    for (i, arg) in text.iter().enumerate() {
        let Some((key, shown)) = sets(command, arg, text.get(i + 1).map(String::as_str)) else {
            continue;
        };
        if let Some((_, first)) = given.iter().find(|(k, _)| *k == key) {
            return Err(format!(
                "`{key}` is given twice, by {first} and by {shown}: give it once"
            ));
        }
        given.push((key, shown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_line(line: &str) -> Result<(), String> {
        check(&line.split(' ').map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_both() {
        assert_eq!(
            check_line("ccma train --lr 1e-4 --set lr=2e-4").unwrap_err(),
            "`lr` is given twice, by --lr 1e-4 and by --set lr=2e-4: give it once"
        );
        assert_eq!(
            check_line("ccma train --num-epoch=3 --num-epoch 4").unwrap_err(),
            "`num_epoch` is given twice, by --num-epoch 3 and by --num-epoch 4: give it once"
        );
        assert_eq!(
            check_line("ccma test --set=img_size=[1,2] --set img_size=[3,4]").unwrap_err(),
            "`img_size` is given twice, by --set img_size=[1,2] and by --set img_size=[3,4]: give it once"
        );
        assert!(check_line("ccma train --MLM --set MLM=false")
            .unwrap_err()
            .contains("by --MLM and by --set MLM=false"));
        assert!(check_line("ccma train --batch_size 8 --batch-size 16")
            .unwrap_err()
            .contains("`batch_size` is given twice"));
    }

    #[test]
    fn once_each_and_what_is_not_a_key_pass() {
        check_line("ccma train --lr 1e-4 --set lr_factor=2 --num-epoch 3 --name lr").unwrap();
        // IRRA's spellings are `train`'s only; what follows `--` is not read.
        check_line("ccma stats --lr 1 --set lr=2").unwrap();
        check_line("ccma train --set lr=1 -- --set lr=2").unwrap();
        check_line("ccma").unwrap();
    }
}
