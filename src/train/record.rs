//! One line of a run's `metrics.jsonl` (an epoch's mean loss terms, learning rate and t2i
//! metrics on the test split, and on the validation split when it chooses the best epoch), and
//! the run's `results.json`.
use crate::config::SplitName;
use crate::report::curves::{Curves, Series};
use crate::retrieval::metrics::RetrievalMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `{"epoch": 3, "lr": 1e-3, "loss": {"sdm": 1.2, ...}, "t2i": {"R1": 10.5, ...}, "val_t2i":
/// {...}}`: `t2i` (test split) only on epochs that were evaluated, `val_t2i` only where the
/// validation split was evaluated too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    /// Mean of each loss term over the epoch's steps, by name.
    pub loss: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t2i: Option<RetrievalMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_t2i: Option<RetrievalMetrics>,
    /// The clean division before the epoch (`noise_filter: ccd`): truly clean among the pairs
    /// divided clean, absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccd_precision: Option<f64>,
    /// Divided clean among the truly clean pairs, absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccd_recall: Option<f64>,
    /// Pairs divided clean over all pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccd_clean_fraction: Option<f64>,
}

impl EpochRecord {
    /// The clean division's figures by their `metrics.jsonl` names, where the epoch has them.
    pub fn division(&self) -> Vec<(&'static str, f64)> {
        [
            ("ccd_precision", self.ccd_precision),
            ("ccd_recall", self.ccd_recall),
            ("ccd_clean_fraction", self.ccd_clean_fraction),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// The t2i metrics of `split` at this epoch, when it was evaluated there.
    pub fn on(&self, split: SplitName) -> Option<&RetrievalMetrics> {
        match split {
            SplitName::Test => self.t2i.as_ref(),
            SplitName::Val => self.val_t2i.as_ref(),
        }
    }
}

/// The first of `records` with the highest t2i R@1 on `split` (the rule that keeps the best
/// checkpoint: a later epoch replaces it only with a strictly higher R@1).
pub fn best_on(records: &[EpochRecord], split: SplitName) -> Option<&EpochRecord> {
    let mut best: Option<(&EpochRecord, f64)> = None;
    for r in records {
        if let Some(m) = r.on(split) {
            if best.is_none_or(|(_, r1)| m.r1 > r1) {
                best = Some((r, m.r1));
            }
        }
    }
    best.map(|(r, _)| r)
}

/// `results.json`: the best epoch, the split that chose it (`val_dataset`), and the test t2i
/// metrics at that epoch; when the validation split chose it, also its val metrics there and the
/// epoch of the best test R@1, labelled as chosen on test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub best_epoch: usize,
    /// Absent from the `results.json` of earlier versions, which always chose on test.
    #[serde(default = "chosen_on_test")]
    pub chosen_on: SplitName,
    /// Test-split metrics at `best_epoch`.
    pub t2i: RetrievalMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_t2i: Option<RetrievalMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_test_epoch: Option<ChosenEpoch>,
    /// What the run trained and was tested on; absent from the `results.json` of earlier
    /// versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRecord>,
}

/// What a run trained and was tested on, by content rather than place: the dataset, the SHA-256
/// of its annotation file, and the size of its test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    pub dataset: String,
    pub annotations_sha256: String,
    pub test_images: usize,
    pub test_queries: usize,
}

impl DataRecord {
    /// The record of `dataset`, its annotation file read again (in pieces) to be hashed.
    pub fn of(dataset: &crate::data::annotations::Dataset) -> anyhow::Result<DataRecord> {
        use anyhow::Context;
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        let mut file = std::fs::File::open(&dataset.annotation)
            .with_context(|| format!("cannot read {}", dataset.annotation.display()))?;
        std::io::copy(&mut file, &mut hash)
            .with_context(|| format!("cannot read {}", dataset.annotation.display()))?;
        Ok(DataRecord {
            dataset: dataset.name.name().to_string(),
            annotations_sha256: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            test_images: dataset.test.image_paths.len(),
            test_queries: dataset.test.captions.len(),
        })
    }
}

/// An epoch and its test t2i metrics, with the split that chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChosenEpoch {
    pub epoch: usize,
    pub chosen_on: SplitName,
    pub t2i: RetrievalMetrics,
}

fn chosen_on_test() -> SplitName {
    SplitName::Test
}

impl Results {
    /// The results of a run whose best epoch `best_epoch` was chosen on `chosen_on`, from its
    /// epoch records; `None` when no record of `best_epoch` with test metrics is among them.
    pub fn from_records(
        records: &[EpochRecord],
        best_epoch: usize,
        chosen_on: SplitName,
    ) -> Option<Results> {
        let best = records.iter().rev().find(|r| r.epoch == best_epoch)?;
        let best_test_epoch = match chosen_on {
            SplitName::Test => None,
            SplitName::Val => best_on(records, SplitName::Test).map(|r| ChosenEpoch {
                epoch: r.epoch,
                chosen_on: SplitName::Test,
                t2i: r.t2i.clone().expect("best_on found test metrics"),
            }),
        };
        Some(Results {
            best_epoch,
            chosen_on,
            t2i: best.t2i.clone()?,
            val_t2i: best
                .on(chosen_on)
                .filter(|_| chosen_on == SplitName::Val)
                .cloned(),
            best_test_epoch,
            data: None,
        })
    }
}

/// The series `curves.png` draws from the records: loss terms, learning rate and t2i R@1 per
/// epoch on the test split, and on the validation split where it was evaluated; the clean
/// division's figures where the records have them.
pub fn curves(records: &[EpochRecord]) -> Curves {
    let mut losses: Vec<Series> = Vec::new();
    let mut lr = ("lr".to_string(), Vec::new());
    let mut r1: Vec<Series> = vec![("test".to_string(), Vec::new())];
    let mut division: Vec<Series> = Vec::new();
    let add = |series: &mut Vec<Series>, name: &str, point: (f64, f64)| match series
        .iter_mut()
        .find(|(n, _)| n == name)
    {
        Some((_, pts)) => pts.push(point),
        None => series.push((name.to_string(), vec![point])),
    };
    for rec in records {
        let epoch = rec.epoch as f64;
        for (term, &v) in &rec.loss {
            add(&mut losses, term, (epoch, v));
        }
        for (name, v) in rec.division() {
            add(&mut division, name.trim_start_matches("ccd_"), (epoch, v));
        }
        lr.1.push((epoch, rec.lr));
        if let Some(m) = &rec.t2i {
            r1[0].1.push((epoch, m.r1));
        }
        if let Some(m) = &rec.val_t2i {
            match r1.get_mut(1) {
                Some((_, pts)) => pts.push((epoch, m.r1)),
                None => r1.push(("val".to_string(), vec![(epoch, m.r1)])),
            }
        }
    }
    Curves {
        losses,
        lr,
        r1,
        division,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, test_r1: f64, val_r1: Option<f64>) -> EpochRecord {
        let m = |r1: f64| RetrievalMetrics {
            r1,
            r5: r1 + 1.0,
            r10: r1 + 2.0,
            map: r1 / 2.0,
            minp: r1 / 4.0,
            num_queries: 0,
            excluded: 0,
        };
        EpochRecord {
            epoch,
            lr: 0.1,
            loss: BTreeMap::new(),
            t2i: Some(m(test_r1)),
            val_t2i: val_r1.map(m),
            ccd_precision: None,
            ccd_recall: None,
            ccd_clean_fraction: None,
        }
    }

    #[test]
    fn results_give_the_chosen_epochs_test_metrics_and_the_best_test_epoch() {
        // Val peaks at epoch 2 (the first of two equal peaks), test at epoch 3.
        let recs = vec![
            record(1, 10.0, Some(20.0)),
            record(2, 12.0, Some(30.0)),
            record(3, 15.0, Some(30.0)),
        ];
        assert_eq!(best_on(&recs, SplitName::Val).unwrap().epoch, 2);
        assert_eq!(best_on(&recs, SplitName::Test).unwrap().epoch, 3);
        let r = Results::from_records(&recs, 2, SplitName::Val).unwrap();
        assert_eq!((r.best_epoch, r.chosen_on), (2, SplitName::Val));
        assert_eq!(r.t2i.r1, 12.0);
        assert_eq!(r.val_t2i.as_ref().unwrap().r1, 30.0);
        let t = r.best_test_epoch.as_ref().unwrap();
        assert_eq!((t.epoch, t.chosen_on, t.t2i.r1), (3, SplitName::Test, 15.0));
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""chosen_on":"val""#)
                && text.contains(r#""best_test_epoch":{"epoch":3,"chosen_on":"test""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Results>(&text).unwrap(), r);
        // Chosen on test: no val metrics, no separate best test epoch.
        let r = Results::from_records(&recs, 3, SplitName::Test).unwrap();
        assert!(r.val_t2i.is_none() && r.best_test_epoch.is_none());
        // An earlier version's results.json chose on test.
        let old: Results = serde_json::from_str(
            r#"{"best_epoch":4,"t2i":{"R1":1.0,"R5":2.0,"R10":3.0,"mAP":4.0,"mINP":5.0}}"#,
        )
        .unwrap();
        assert_eq!(old.chosen_on, SplitName::Test);
        assert!(Results::from_records(&recs, 7, SplitName::Val).is_none());
    }

    #[test]
    fn records_read_back_and_give_the_series() {
        let lines: Vec<String> = (1..=3)
            .map(|e| {
                let t2i = if e == 2 {
                    String::new()
                } else {
                    format!(
                        r#","t2i":{{"R1":{},"R5":0.0,"R10":0.0,"mAP":0.0,"mINP":0.0}}"#,
                        10.0 * e as f64
                    )
                };
                format!(
                    r#"{{"epoch":{e},"lr":{},"loss":{{"sdm":{},"id":1.0}}{t2i}}}"#,
                    0.1 * e as f64,
                    3.0 / e as f64
                )
            })
            .collect();
        let recs: Vec<EpochRecord> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let written = serde_json::to_string(&recs[0]).unwrap();
        assert_eq!(
            serde_json::from_str::<EpochRecord>(&written).unwrap(),
            recs[0]
        );
        assert!(
            written.contains(r#""loss":{"id":1.0,"sdm":3.0},"t2i":{"R1":10.0,"#),
            "{written}"
        );
        assert!(!serde_json::to_string(&recs[1]).unwrap().contains("t2i"));
        let c = curves(&recs);
        assert_eq!(c.losses.len(), 2);
        let sdm = &c.losses.iter().find(|(n, _)| n == "sdm").unwrap().1;
        assert_eq!(sdm, &vec![(1.0, 3.0), (2.0, 1.5), (3.0, 1.0)]);
        assert_eq!(c.lr.1[2], (3.0, 0.30000000000000004));
        assert_eq!(
            c.r1,
            vec![("test".to_string(), vec![(1.0, 10.0), (3.0, 30.0)])]
        );
        assert!(c.division.is_empty());
        let divided: EpochRecord = serde_json::from_str(
            r#"{"epoch":1,"lr":0.1,"loss":{},"ccd_precision":0.9,"ccd_recall":0.8,"ccd_clean_fraction":0.5}"#,
        )
        .unwrap();
        assert_eq!(
            divided.division(),
            [
                ("ccd_precision", 0.9),
                ("ccd_recall", 0.8),
                ("ccd_clean_fraction", 0.5)
            ]
        );
        let c = curves(&[divided]);
        let names: Vec<&str> = c.division.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["precision", "recall", "clean_fraction"]);
    }
}
