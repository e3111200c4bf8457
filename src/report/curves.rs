//! `curves.png`: loss terms, learning rate and t2i R@1 per epoch (on each evaluated split), and
//! the clean division's precision, recall and clean fraction where a run divides its pairs.
use super::canvas::{Canvas, BLACK, GREY, MEDIUM, PALETTE, SMALL};
use anyhow::{Context, Result};
use std::path::Path;

/// One named series of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// The panels: loss terms (log scale), learning rate, t2i R@1 (one series per evaluated split),
/// and, when it has series, the clean division (precision, recall, clean fraction), each against
/// the epoch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curves {
    pub losses: Vec<Series>,
    pub lr: Series,
    pub r1: Vec<Series>,
    /// Empty for a run that does not divide its pairs: no fourth panel.
    pub division: Vec<Series>,
}

/// Draws `curves` and writes them to `path` atomically.
pub fn write(path: &Path, curves: &Curves) -> Result<()> {
    let (pw, ph) = (420u32, 330u32);
    let panels = if curves.division.is_empty() { 3 } else { 4 };
    let mut c = Canvas::new(pw * panels, ph);
    panel(
        &mut c,
        0,
        pw,
        ph,
        "loss terms (log scale)",
        &curves.losses,
        true,
    );
    panel(
        &mut c,
        pw as i32,
        pw,
        ph,
        "learning rate",
        std::slice::from_ref(&curves.lr),
        false,
    );
    panel(
        &mut c,
        2 * pw as i32,
        pw,
        ph,
        "t2i R@1 (%)",
        &curves.r1,
        false,
    );
    if !curves.division.is_empty() {
        panel(
            &mut c,
            3 * pw as i32,
            pw,
            ph,
            "clean division",
            &curves.division,
            false,
        );
    }
    let mut bytes = Vec::new();
    c.0.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("encoding curves")?;
    crate::io::write_atomic(path, &bytes)
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
    fn curves_are_drawn() {
        let curves = Curves {
            losses: vec![("sdm".into(), vec![(1.0, 3.0), (2.0, 1.5), (3.0, 1.0)])],
            lr: ("lr".into(), vec![(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]),
            r1: vec![
                ("test".into(), vec![(1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]),
                ("val".into(), vec![(1.0, 15.0), (2.0, 25.0), (3.0, 28.0)]),
            ],
            division: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("curves.png");
        write(&p, &curves).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1260, 330));
        assert!(
            img.pixels().any(|px| px.0 == [31, 119, 180]),
            "the first series is drawn"
        );
        if let Ok(keep) = std::env::var("CCMA_KEEP_PICTURES") {
            std::fs::copy(&p, std::path::Path::new(&keep).join("curves.png")).unwrap();
        }
        let divided = Curves {
            division: vec![("precision".into(), vec![(1.0, 0.7), (2.0, 0.9)])],
            ..curves
        };
        write(&p, &divided).unwrap();
        assert_eq!(
            image::open(&p).unwrap().to_rgb8().dimensions(),
            (1680, 330),
            "a fourth panel"
        );
    }
}
