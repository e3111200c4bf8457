//! `curves.png`: loss terms, learning rate and t2i R@1 per epoch, drawn from `metrics.jsonl`.
use super::canvas::{Canvas, BLACK, GREY, MEDIUM, PALETTE, SMALL};
use anyhow::{Context, Result};
use std::path::Path;

/// One named series of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// The three panels' series from `metrics.jsonl` records (`epoch`, `lr`, `loss.{term}`, `t2i.R1`).
pub fn series_from_records(
    records: &[serde_json::Value],
) -> (Vec<Series>, Vec<Series>, Vec<Series>) {
    let mut losses: Vec<Series> = Vec::new();
    let mut lr = ("lr".to_string(), Vec::new());
    let mut r1 = ("t2i R@1".to_string(), Vec::new());
    for rec in records {
        let Some(epoch) = rec["epoch"].as_f64() else {
            continue;
        };
        if let Some(obj) = rec["loss"].as_object() {
            for (term, v) in obj {
                let Some(v) = v.as_f64() else { continue };
                match losses.iter_mut().find(|(n, _)| n == term) {
                    Some((_, pts)) => pts.push((epoch, v)),
                    None => losses.push((term.clone(), vec![(epoch, v)])),
                }
            }
        }
        if let Some(v) = rec["lr"].as_f64() {
            lr.1.push((epoch, v));
        }
        if let Some(v) = rec["t2i"]["R1"].as_f64() {
            r1.1.push((epoch, v));
        }
    }
    (losses, vec![lr], vec![r1])
}

/// Draws the curves of `records` and writes them to `path` atomically.
pub fn write(path: &Path, records: &[serde_json::Value]) -> Result<()> {
    let (losses, lr, r1) = series_from_records(records);
    let (pw, ph) = (420u32, 330u32);
    let mut c = Canvas::new(pw * 3, ph);
    panel(&mut c, 0, pw, ph, "loss terms (log scale)", &losses, true);
    panel(&mut c, pw as i32, pw, ph, "learning rate", &lr, false);
    panel(
        &mut c,
        2 * pw as i32,
        pw,
        ph,
        "test t2i R@1 (%)",
        &r1,
        false,
    );
    let mut bytes = Vec::new();
    c.0.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("encoding curves")?;
    crate::util::write_atomic(path, &bytes)
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(0.01..10_000.0).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One plot in the box starting at x0: title, axes with 5 ticks each way, lines, legend.
fn panel(c: &mut Canvas, x0: i32, w: u32, h: u32, title: &str, series: &[Series], log_y: bool) {
    let (left, right, top, bottom) = (x0 + 62, x0 + w as i32 - 14, 34, h as i32 - 36);
    c.text(title, x0 + 62, 10, &MEDIUM, BLACK);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(|&(_, y)| y.is_finite() && (!log_y || y > 0.0))
        .collect();
    c.line((left, bottom), (right, bottom), BLACK, 1);
    c.line((left, top), (left, bottom), BLACK, 1);
    if pts.is_empty() {
        c.text("no data yet", left + 20, (top + bottom) / 2, &MEDIUM, BLACK);
        return;
    }
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let (mut x_min, mut x_max) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y_min, mut y_max) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(ty(p.1)), b.max(ty(p.1)))
    });
    if x_max <= x_min {
        x_min -= 1.0;
        x_max += 1.0;
    }
    if y_max <= y_min {
        let pad = if y_min == 0.0 { 1.0 } else { y_min.abs() * 0.1 };
        y_min -= pad;
        y_max += pad;
    }
    let px = |x: f64| left + ((x - x_min) / (x_max - x_min) * (right - left) as f64).round() as i32;
    let py = |y: f64| {
        bottom - ((ty(y) - y_min) / (y_max - y_min) * (bottom - top) as f64).round() as i32
    };
    // Epoch ticks are whole numbers, about five of them.
    let step = ((x_max - x_min) / 4.0).ceil().max(1.0);
    let mut xv = x_min.ceil();
    while xv <= x_max {
        let gx = px(xv);
        c.line((gx, bottom), (gx, bottom + 4), BLACK, 1);
        c.text(&format!("{xv:.0}"), gx - 3, bottom + 7, &SMALL, BLACK);
        xv += step;
    }
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let yv = y_min + f * (y_max - y_min);
        let gy = bottom - (f * (bottom - top) as f64).round() as i32;
        c.line((left + 1, gy), (right, gy), GREY, 1);
        let label = fmt_tick(if log_y { 10f64.powf(yv) } else { yv });
        c.text(
            &label,
            left - 6 - 6 * label.len() as i32,
            gy - 5,
            &SMALL,
            BLACK,
        );
    }
    c.text("epoch", (left + right) / 2 - 15, bottom + 20, &SMALL, BLACK);
    for (k, (name, p)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let p: Vec<(i32, i32)> = p
            .iter()
            .filter(|&&(_, y)| y.is_finite() && (!log_y || y > 0.0))
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        for seg in p.windows(2) {
            c.line(seg[0], seg[1], color, 2);
        }
        for &q in &p {
            c.frame(q.0 - 2, q.1 - 2, 5, 5, color, 1);
        }
        let ly = top + 4 + 14 * k as i32;
        c.line((right - 90, ly + 5), (right - 74, ly + 5), color, 3);
        c.text(name, right - 70, ly, &SMALL, BLACK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_follow_the_records() {
        let recs: Vec<serde_json::Value> = (1..=3)
            .map(|e| serde_json::json!({"epoch": e, "lr": 0.1 * e as f64, "loss": {"sdm": 3.0 / e as f64, "id": 1.0}, "t2i": {"R1": 10.0 * e as f64}}))
            .collect();
        let (losses, lr, r1) = series_from_records(&recs);
        assert_eq!(losses.len(), 2);
        let sdm = &losses.iter().find(|(n, _)| n == "sdm").unwrap().1;
        assert_eq!(sdm, &vec![(1.0, 3.0), (2.0, 1.5), (3.0, 1.0)]);
        assert_eq!(lr[0].1[2], (3.0, 0.30000000000000004));
        assert_eq!(r1[0].1, vec![(1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("curves.png");
        write(&p, &recs).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1260, 330));
        assert!(
            img.pixels().any(|px| px.0 == [31, 119, 180]),
            "the first series is drawn"
        );
        if let Ok(keep) = std::env::var("CCMA_KEEP_PICTURES") {
            std::fs::copy(&p, std::path::Path::new(&keep).join("curves.png")).unwrap();
        }
    }
}
