//! One line of a run's `metrics.jsonl`: an epoch's mean loss terms, learning rate and test metrics.
use crate::report::curves::{Curves, Series};
use crate::retrieval::metrics::RetrievalMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `{"epoch": 3, "lr": 1e-3, "loss": {"sdm": 1.2, ...}, "t2i": {"R1": 10.5, ...}}`; `t2i` only
/// on epochs that were evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    /// Mean of each loss term over the epoch's steps, by name.
    pub loss: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t2i: Option<RetrievalMetrics>,
}

/// The series `curves.png` draws from the records: loss terms, learning rate and t2i R@1 per
/// epoch.
pub fn curves(records: &[EpochRecord]) -> Curves {
    let mut losses: Vec<Series> = Vec::new();
    let mut lr = ("lr".to_string(), Vec::new());
    let mut r1 = ("t2i R@1".to_string(), Vec::new());
    for rec in records {
        let epoch = rec.epoch as f64;
        for (term, &v) in &rec.loss {
            match losses.iter_mut().find(|(n, _)| n == term) {
                Some((_, pts)) => pts.push((epoch, v)),
                None => losses.push((term.clone(), vec![(epoch, v)])),
            }
        }
        lr.1.push((epoch, rec.lr));
        if let Some(m) = &rec.t2i {
            r1.1.push((epoch, m.r1));
        }
    }
    Curves { losses, lr, r1 }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.r1.1, vec![(1.0, 10.0), (3.0, 30.0)]);
    }
}
