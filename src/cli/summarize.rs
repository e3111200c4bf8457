//! `ccma summarize RUN...`: a table of runs' results, and the mean and standard deviation over
//! the runs that trained one config on the same data and differ only in `seed`.
use crate::config::Config;
use crate::retrieval::metrics::RetrievalMetrics;
use crate::train::record::Results;
use crate::UsageError;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};
use statrs::statistics::Statistics;
use std::path::{Path, PathBuf};

/// Tabulate training runs, with the mean and spread over seeds.
///
/// One row per run (the test metrics at its best epoch, from results.json) and, for runs of one
/// config on the same data (dataset, the SHA-256 of its annotation file, the test split's size)
/// that differ only in `seed`, each metric's mean ± standard deviation (n - 1 in the
/// denominator). Two runs of one group with the same seed (a copied run folder) are refused.
/// Markdown on stdout, or --json / --csv.
#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// Run folders (each with configs.yaml and results.json).
    #[arg(value_name = "RUN", required = true)]
    pub runs: Vec<PathBuf>,
    /// Print JSON instead of markdown.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of markdown.
    #[arg(long)]
    pub csv: bool,
}

/// Keys that say where a run's outputs go and how it is driven, not what is trained or tested
/// on: runs that differ in them (and in `seed`) are still grouped, and the keys are named.
const OUTPUT_KEYS: [&str; 8] = [
    "name",
    "output_dir",
    "run_dir",
    "num_workers",
    "log_period",
    "test_batch_size",
    "dist_backend",
    "dist_timeout",
];

/// The largest results.json read.
const MAX_RESULTS_BYTES: u64 = 1 << 20;

/// The metric names, in table order, with their values.
fn metrics(m: &RetrievalMetrics) -> [(&'static str, f64); 5] {
    [
        ("R1", m.r1),
        ("R5", m.r5),
        ("R10", m.r10),
        ("mAP", m.map),
        ("mINP", m.minp),
    ]
}

struct Run {
    dir: PathBuf,
    /// Every config key with its value.
    config: Map<String, Value>,
    results: Results,
}

impl Run {
    fn read(dir: &Path) -> Result<Run> {
        if !dir.is_dir() {
            bail!(UsageError(format!(
                "{}: not a run folder (expected a folder with configs.yaml and results.json)",
                dir.display()
            )));
        }
        let config = Config::from_file(&dir.join(crate::io::run_files::CONFIG))?;
        let path = dir.join("results.json");
        let text = crate::io::text::read_text(&path, "results file", MAX_RESULTS_BYTES)
            .with_context(|| {
                format!(
                    "run folder {} (has it evaluated an epoch yet?)",
                    dir.display()
                )
            })?;
        let results: Results = serde_json::from_str(&text).map_err(|e| {
            UsageError(format!(
                "{}: {e} (expected the results.json that ccma train writes)",
                path.display()
            ))
        })?;
        let config = match serde_json::to_value(&config)? {
            Value::Object(m) => m,
            _ => unreachable!("a config serialises to a mapping"),
        };
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            results,
        })
    }

    /// What the run trained and was tested on, equal for the runs of one group: the config
    /// without `seed` and the output keys, and the data by content when results.json records it
    /// (`data`; then the folder it was read from, `root_dir`, does not matter), else by where it
    /// was read from.
    fn setting(&self) -> Map<String, Value> {
        let mut m = self.config.clone();
        m.remove("seed");
        for k in OUTPUT_KEYS {
            m.remove(k);
        }
        if let Some(data) = &self.results.data {
            m.remove("root_dir");
            m.insert("data".into(), json!(data));
        }
        m
    }

    fn seed(&self) -> &Value {
        &self.config["seed"]
    }
}

/// Runs grouped by [`Run::setting`], in order of first appearance: indices into `runs`. Two runs
/// of one group with the same seed are refused: they are one run twice (a copied run folder),
/// not two seeds.
fn groups(runs: &[Run]) -> Result<Vec<Vec<usize>>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| runs[g[0]].setting() == r.setting())
        {
            Some(g) => {
                if let Some(&twin) = g.iter().find(|&&j| runs[j].seed() == r.seed()) {
                    bail!(UsageError(format!(
                        "runs {} and {} trained the same config on the same data with the same seed {} (a copied run folder?): a seed counts once, give one of them",
                        runs[twin].dir.display(),
                        r.dir.display(),
                        cell(r.seed())
                    )));
                }
                g.push(i);
            }
            None => groups.push(vec![i]),
        }
    }
    Ok(groups)
}

/// The keys whose values differ among `runs` (in config order).
fn differing<'a>(runs: impl Iterator<Item = &'a Run> + Clone) -> Vec<String> {
    let first = runs.clone().next().expect("a group has a run");
    first
        .config
        .keys()
        .filter(|k| {
            runs.clone()
                .any(|r| r.config.get(*k) != first.config.get(*k))
        })
        .cloned()
        .collect()
}

/// One group's summary: its runs, seeds, mean and standard deviation (None for a single run) per
/// metric, the output keys its runs differ in, and the keys it differs in from group 1.
struct Group {
    number: usize,
    members: Vec<usize>,
    mean: Vec<(&'static str, f64)>,
    std: Option<Vec<(&'static str, f64)>>,
    output_keys: Vec<String>,
    from_first: Vec<(String, Value, Value)>,
}

fn summarize(runs: &[Run]) -> Result<Vec<Group>> {
    let gs = groups(runs)?;
    Ok(gs
        .iter()
        .enumerate()
        .map(|(g, members)| {
            let per_metric = |k: usize| {
                members
                    .iter()
                    .map(move |&i| metrics(&runs[i].results.t2i)[k].1)
            };
            let names = metrics(&runs[members[0]].results.t2i).map(|(n, _)| n);
            let mean = (0..5).map(|k| (names[k], per_metric(k).mean())).collect();
            let std = (members.len() > 1).then(|| {
                (0..5)
                    .map(|k| (names[k], per_metric(k).std_dev()))
                    .collect()
            });
            let mut output_keys = differing(members.iter().map(|&i| &runs[i]));
            output_keys.retain(|k| k != "seed");
            let (first, this) = (runs[gs[0][0]].setting(), runs[members[0]].setting());
            let only_this = this.keys().filter(|k| !first.contains_key(*k));
            let from_first = first
                .keys()
                .chain(only_this)
                .filter_map(|k| {
                    let (v, w) = (first.get(k), this.get(k));
                    (v != w).then(|| {
                        let or_null = |x: Option<&Value>| x.cloned().unwrap_or(Value::Null);
                        (k.clone(), or_null(v), or_null(w))
                    })
                })
                .collect();
            Group {
                number: g + 1,
                members: members.clone(),
                mean,
                std,
                output_keys,
                from_first,
            }
        })
        .collect())
}

/// `value` as written in a table cell: JSON, strings without quotes.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The lines that name the keys grouped runs differ in, and what separates the groups.
fn notes(runs: &[Run], groups: &[Group]) -> Vec<String> {
    let mut lines = Vec::new();
    for g in groups {
        if g.members.len() > 1 && !g.output_keys.is_empty() {
            lines.push(format!(
                "group {}: its runs also differ in {} (where outputs go and how the run is driven, or where the same data was read from: not what is trained or tested on)",
                g.number,
                g.output_keys.join(", ")
            ));
        }
        if !g.from_first.is_empty() {
            let keys: Vec<String> = g
                .from_first
                .iter()
                .map(|(k, a, b)| format!("{k} ({} vs {})", cell(a), cell(b)))
                .collect();
            lines.push(format!(
                "group {} differs from group 1 ({}) in {}",
                g.number,
                runs[groups[0].members[0]].dir.display(),
                keys.join(", ")
            ));
        }
    }
    lines
}

fn group_of(groups: &[Group], run: usize) -> usize {
    groups
        .iter()
        .find(|g| g.members.contains(&run))
        .map_or(0, |g| g.number)
}

fn markdown(runs: &[Run], groups: &[Group]) -> String {
    let mut s = String::from(
        "| run | group | seed | chosen on | best epoch | R1 | R5 | R10 | mAP | mINP |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        let m: Vec<String> = metrics(&r.results.t2i)
            .iter()
            .map(|(_, v)| format!("{v:.2}"))
            .collect();
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.dir.display(),
            group_of(groups, i),
            cell(r.seed()),
            r.results.chosen_on,
            r.results.best_epoch,
            m.join(" | ")
        );
    }
    let seeded: Vec<&Group> = groups.iter().filter(|g| g.std.is_some()).collect();
    if !seeded.is_empty() {
        s += "\nmean ± standard deviation (n - 1) over the runs of a group (one config on the same data, other seeds):\n\n\
              | group | runs | seeds | R1 | R5 | R10 | mAP | mINP |\n|---|---|---|---|---|---|---|---|\n";
        for g in seeded {
            let std = g.std.as_ref().expect("filtered");
            let m: Vec<String> = g
                .mean
                .iter()
                .zip(std)
                .map(|((_, mean), (_, sd))| format!("{mean:.2} ± {sd:.2}"))
                .collect();
            let seeds: Vec<String> = g.members.iter().map(|&i| cell(runs[i].seed())).collect();
            s += &format!(
                "| {} | {} | {} | {} |\n",
                g.number,
                g.members.len(),
                seeds.join(", "),
                m.join(" | ")
            );
        }
    }
    let notes = notes(runs, groups);
    if !notes.is_empty() {
        s += "\n";
        for n in notes {
            s += &format!("{n}\n");
        }
    }
    s
}

fn to_json(runs: &[Run], groups: &[Group]) -> Value {
    let named = |m: &[(&str, f64)]| {
        Value::Object(m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
    };
    let runs_json: Vec<Value> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "run": r.dir, "group": group_of(groups, i), "seed": r.seed(),
                "chosen_on": r.results.chosen_on, "best_epoch": r.results.best_epoch,
                "t2i": r.results.t2i,
            })
        })
        .collect();
    let groups_json: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "group": g.number,
                "runs": g.members.iter().map(|&i| &runs[i].dir).collect::<Vec<_>>(),
                "seeds": g.members.iter().map(|&i| runs[i].seed()).collect::<Vec<_>>(),
                "mean": named(&g.mean),
                "std": g.std.as_deref().map(named),
                "also_differ_in": g.output_keys,
                "differs_from_group_1": g.from_first.iter()
                    .map(|(k, a, b)| (k.clone(), json!([a, b]))).collect::<Map<_, _>>(),
            })
        })
        .collect();
    json!({ "runs": runs_json, "groups": groups_json, "notes": notes(runs, groups) })
}

fn to_csv(runs: &[Run], groups: &[Group]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "row",
        "group",
        "run",
        "seed",
        "chosen_on",
        "best_epoch",
        "R1",
        "R5",
        "R10",
        "mAP",
        "mINP",
    ])?;
    for (i, r) in runs.iter().enumerate() {
        let mut row = vec![
            "run".to_string(),
            group_of(groups, i).to_string(),
            r.dir.display().to_string(),
            cell(r.seed()),
            r.results.chosen_on.to_string(),
            r.results.best_epoch.to_string(),
        ];
        row.extend(metrics(&r.results.t2i).iter().map(|(_, v)| v.to_string()));
        w.write_record(&row)?;
    }
    for g in groups {
        let Some(std) = &g.std else { continue };
        for (kind, values) in [("mean", &g.mean), ("std", std)] {
            let mut row = vec![kind.to_string(), g.number.to_string()];
            row.extend(["", "", "", ""].map(String::from));
            row.extend(values.iter().map(|(_, v)| v.to_string()));
            w.write_record(&row)?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

pub fn run(a: SummarizeArgs) -> Result<()> {
    let mut seen = Vec::new();
    for dir in &a.runs {
        let real = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if seen.contains(&real) {
            bail!(UsageError(format!(
                "run folder {} is given twice (each run counts once)",
                dir.display()
            )));
        }
        seen.push(real);
    }
    let runs: Vec<Run> = a.runs.iter().map(|d| Run::read(d)).collect::<Result<_>>()?;
    let groups = summarize(&runs)?;
    let text = if a.json {
        format!("{}\n", to_json(&runs, &groups))
    } else if a.csv {
        to_csv(&runs, &groups)?
    } else {
        markdown(&runs, &groups)
    };
    super::output::print(text)
}
