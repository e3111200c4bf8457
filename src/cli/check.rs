//! `ccma check` (its cheap part, which `train`, `test` and `serve --run` run before building a
//! model, is [`super::preflight`]).
use super::args::ConfigArgs;
use super::output::print;
use crate::data::annotations::Annotations;
use crate::data::audit::{self, Audit, Fault, REPORT_HEADER, SPLITS};
use crate::data::DATASET_KEYS;
use crate::io::escape::{escape_controls, shown};
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
        true => print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&audit.to_json())?
        ))?,
        false => print(report_text(&audit, &report))?,
    }
    let blockers = audit.blockers();
    let set = format!("{name} in {}", shown(&ann.dir));
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
        false => print(format_args!("{verdict}\n"))?,
    }
    Ok(())
}

/// Refuses a report path that holds something an earlier `ccma check` did not write.
fn check_replaceable(report: &Path) -> Result<()> {
    let Ok(meta) = report.symlink_metadata() else {
        return Ok(());
    };
    let mut head = Vec::new();
    // Opened without blocking: a FIFO put there is refused, never waited on.
    let ours = meta.is_file()
        && crate::io::regular_file::open_regular(report).is_ok_and(|(f, _)| {
            f.take(REPORT_HEADER.len() as u64)
                .read_to_end(&mut head)
                .is_ok()
        })
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
/// what the counts say about the release; the text from the files (paths, details) with its
/// control characters escaped.
fn report_text(audit: &Audit, report: &Path) -> String {
    use prettytable::{Cell, Row};
    use std::fmt::Write;
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
    let mut out = format!("{} ({})\n{t}", audit.name, shown(&audit.file));
    for f in Fault::ALL {
        let found: Vec<&audit::Finding> = audit.findings.iter().filter(|x| x.fault == f).collect();
        if found.is_empty() {
            continue;
        }
        let shown: Vec<String> = found
            .iter()
            .take(3)
            .map(|x| match x.entry {
                Some(e) => format!("entry {e} {:?}: {}", x.path, escape_controls(&x.detail)),
                None => escape_controls(&x.detail).into_owned(),
            })
            .collect();
        let more = match found.len() {
            n if n > 3 => format!(", and {} more", n - 3),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} ({}): {}{more}",
            f.label(audit.text_length),
            found.len(),
            shown.join("; ")
        );
    }
    for (folder, n) in &audit.absent_folders {
        let _ = writeln!(out, "imgs/ has no folder {}/, which {n} missing images are under: the image archive unpacked is incomplete or of another release", escape_controls(folder));
    }
    match &audit.published {
        Some((_, d)) if d.is_empty() => {
            let _ = writeln!(
                out,
                "the counts match {}'s published size (docs/METHOD.md section 1)",
                audit.name
            );
        }
        _ => {}
    }
    for note in audit.notes() {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(fix) = &audit.faulty_release {
        let _ = writeln!(out, "{}: {fix}", audit.name);
    }
    let _ = writeln!(out, "every problem is listed in {}", report.display());
    out
}
