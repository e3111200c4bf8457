//! `ccma check` (its cheap part, which `train`, `test` and `serve --run` run before building a
//! model, is [`super::preflight`]).
use super::args::ConfigArgs;
use crate::data::annotations::Annotations;
use crate::data::audit::{self, Audit, Fault, REPORT_HEADER, SPLITS};
use crate::data::DATASET_KEYS;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Check a dataset before training.
///
/// Its annotations and every image they name (each one decoded), the captions against the
/// tokenizer, the ids, and the counts against the published sizes. Exits 0 when the set is usable
/// as it is, 1 when it is not.
#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Write the full list of problems here [default: ccma-check-<dataset>.tsv in the current
    /// folder]; an existing file is replaced only when an earlier check wrote it.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print the counts as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CheckArgs) -> Result<()> {
    let keys = [&DATASET_KEYS[..], &["text_length"]].concat();
    a.config.check_sets_act("check", &keys)?;
    let cfg = a.config.resolve(None, &[])?;
    let name = cfg.data.dataset_name;
    let report = a
        .report
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("ccma-check-{}.tsv", name.name())));
    check_replaceable(&report)?;
    let ann = Annotations::read(name, &crate::data::dataset_dir(&cfg)?)?;
    let audit = audit::run(&ann, cfg.data.text_length as usize);
    crate::io::write_atomic(&report, audit.listing().as_bytes())
        .with_context(|| format!("cannot write the report {}", report.display()))?;
    match a.json {
        true => println!("{}", serde_json::to_string_pretty(&audit.to_json())?),
        false => print_report(&audit, &report),
    }
    let blockers = audit.blockers();
    let set = format!("{name} in {}", ann.dir.display());
    if !blockers.is_empty() {
        anyhow::bail!(
            "not usable: {set} cannot be trained or tested as it is: {}; every problem is listed in {}",
            blockers.join(", "),
            report.display()
        );
    }
    let verdict = format!(
        "usable: {set} can be trained and tested as it is{}",
        match audit.notes().len() {
            0 => String::new(),
            n => format!(" ({n} notes; details in {})", report.display()),
        }
    );
    // With --json, stdout holds the JSON alone.
    match a.json {
        true => eprintln!("{verdict}"),
        false => println!("{verdict}"),
    }
    Ok(())
}

/// Refuses a report path that holds something an earlier `ccma check` did not write.
fn check_replaceable(report: &Path) -> Result<()> {
    let Ok(meta) = report.symlink_metadata() else {
        return Ok(());
    };
    let mut head = Vec::new();
    let ours = meta.is_file()
        && std::fs::File::open(report)
            .and_then(|f| f.take(REPORT_HEADER.len() as u64).read_to_end(&mut head))
            .is_ok()
        && head == REPORT_HEADER.as_bytes();
    if !ours {
        bail!(UsageError(format!(
            "--report {}: the file exists and was not written by `ccma check`; give another --report FILE",
            report.display()
        )));
    }
    Ok(())
}

/// The counts as a table (a column per split), the first few problems of each kind by name, and
/// what the counts say about the release.
fn print_report(audit: &Audit, report: &Path) {
    use prettytable::{Cell, Row};
    let mut t = prettytable::Table::new();
    let mut titles = vec![Cell::new("")];
    titles.extend(SPLITS.iter().map(|s| Cell::new(s)));
    t.set_titles(Row::new(titles));
    let mut row = |label: String, values: [String; 3]| {
        let mut cells = vec![Cell::new(&label)];
        cells.extend(values.iter().map(|v| Cell::new(v)));
        t.add_row(Row::new(cells));
    };
    let s = &audit.splits;
    row("identities".into(), s.clone().map(|c| c.ids.to_string()));
    row("images".into(), s.clone().map(|c| c.images.to_string()));
    row("captions".into(), s.clone().map(|c| c.captions.to_string()));
    for f in Fault::ALL {
        let values = s.clone().map(|c| c.count(f).to_string());
        let values = match f {
            Fault::TrainId => [values[0].clone(), "-".into(), "-".into()],
            _ => values,
        };
        row(f.label(audit.text_length), values);
    }
    let spread = |v: Option<audit::Spread>| match v {
        Some(v) => format!("{} / {} / {}", v.min, v.median, v.max),
        None => "-".into(),
    };
    row(
        "image height min / median / max".into(),
        s.clone().map(|c| spread(c.height)),
    );
    row(
        "image width min / median / max".into(),
        s.clone().map(|c| spread(c.width)),
    );
    println!("{} ({})", audit.name, audit.file.display());
    t.printstd();
    for f in Fault::ALL {
        let found: Vec<&audit::Finding> = audit.findings.iter().filter(|x| x.fault == f).collect();
        if found.is_empty() {
            continue;
        }
        let shown: Vec<String> = found
            .iter()
            .take(3)
            .map(|x| match x.entry {
                Some(e) => format!("entry {e} {:?}: {}", x.path, x.detail),
                None => x.detail.clone(),
            })
            .collect();
        let more = match found.len() {
            n if n > 3 => format!(", and {} more", n - 3),
            _ => String::new(),
        };
        println!(
            "{} ({}): {}{more}",
            f.label(audit.text_length),
            found.len(),
            shown.join("; ")
        );
    }
    for (folder, n) in &audit.absent_folders {
        println!("imgs/ has no folder {folder}/, which {n} missing images are under: the image archive unpacked is incomplete or of another release");
    }
    match &audit.published {
        Some((_, d)) if d.is_empty() => println!(
            "the counts match {}'s published size (docs/METHOD.md section 1)",
            audit.name
        ),
        _ => {}
    }
    for note in audit.notes() {
        println!("note: {note}");
    }
    if let Some(fix) = &audit.faulty_release {
        println!("{}: {fix}", audit.name);
    }
    println!("every problem is listed in {}", report.display());
}
