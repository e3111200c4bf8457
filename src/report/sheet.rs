//! Contact sheets: a query as the title, then the top-ranked gallery images in rank order with
//! rank, score and file name; true matches framed green and misses red when they are known.
use super::canvas::{ellipsize, wrap, Canvas, BLACK, GREEN, LARGE, MEDIUM, RED, SMALL};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One ranked gallery image.
#[derive(Debug, Clone)]
pub struct SheetItem {
    pub path: PathBuf,
    pub score: f64,
    /// Whether it is a true match, when the ground truth is known.
    pub matched: Option<bool>,
}

const THUMB_W: u32 = 100;
const THUMB_H: u32 = 250;
const PER_ROW: usize = 5;
const CELL_W: u32 = THUMB_W + 30;
const CELL_H: u32 = THUMB_H + 62;

/// Draws the sheet for `query` and `items` (in rank order) and writes it as PNG to `path`.
/// `note` is an optional second title line (e.g. the number of true matches).
pub fn write(path: &Path, query: &str, note: Option<&str>, items: &[SheetItem]) -> Result<()> {
    let title = wrap(query, 60);
    let header = 16 + 22 * title.len() as u32 + if note.is_some() { 20 } else { 0 } + 8;
    let rows = items.len().div_ceil(PER_ROW).max(1) as u32;
    let width = CELL_W * PER_ROW.min(items.len().max(1)) as u32 + 20;
    let mut c = Canvas::new(width.max(640), header + rows * CELL_H + 10);
    for (i, line) in title.iter().enumerate() {
        c.text(line, 12, 10 + 22 * i as i32, &LARGE, BLACK);
    }
    if let Some(note) = note {
        c.text(note, 12, 12 + 22 * title.len() as i32, &MEDIUM, BLACK);
    }
    for (rank, item) in items.iter().enumerate() {
        let x = 10 + (rank % PER_ROW) as i32 * CELL_W as i32;
        let y = header as i32 + (rank / PER_ROW) as i32 * CELL_H as i32;
        let bytes = crate::io::read_regular_file(&item.path, "image", crate::io::MAX_IMAGE_BYTES)?;
        let img = image::load_from_memory(&bytes)
            .with_context(|| format!("cannot read gallery image {}", item.path.display()))?
            .to_rgb8();
        // Fit inside the thumbnail box, keeping the aspect ratio.
        let s = (THUMB_W as f64 / img.width() as f64).min(THUMB_H as f64 / img.height() as f64);
        let (tw, th) = (
            ((img.width() as f64 * s) as u32).max(1),
            ((img.height() as f64 * s) as u32).max(1),
        );
        let thumb = image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle);
        let (tx, ty) = (
            x + 5 + (THUMB_W - tw) as i32 / 2,
            y + 5 + (THUMB_H - th) as i32 / 2,
        );
        c.paste(&thumb, tx as i64, ty as i64);
        if let Some(m) = item.matched {
            c.frame(
                tx - 4,
                ty - 4,
                tw + 8,
                th + 8,
                if m { GREEN } else { RED },
                4,
            );
        }
        let label_y = y + THUMB_H as i32 + 12;
        c.text(
            &format!("#{} {:.3}", rank + 1, item.score),
            x + 2,
            label_y,
            &MEDIUM,
            BLACK,
        );
        let name = item
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        c.text(
            &ellipsize(&name, (CELL_W / 6) as usize - 1),
            x + 2,
            label_y + 17,
            &SMALL,
            BLACK,
        );
    }
    let mut bytes = Vec::new();
    c.0.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("encoding contact sheet")?;
    crate::io::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_has_frames_in_rank_order() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<SheetItem> = (0..7)
            .map(|i| {
                let p = dir.path().join(format!("p{i}.png"));
                image::RgbImage::from_pixel(60, 160, image::Rgb([40 * i as u8, 90, 200]))
                    .save(&p)
                    .unwrap();
                SheetItem {
                    path: p,
                    score: 0.9 - 0.1 * i as f64,
                    matched: Some(i == 1),
                }
            })
            .collect();
        let out = dir.path().join("sheet.png");
        write(&out, "a man in a blue shirt", Some("1 true match"), &items).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(img.width(), 10 + 5 * CELL_W + 10);
        if let Ok(keep) = std::env::var("CCMA_KEEP_PICTURES") {
            std::fs::copy(&out, std::path::Path::new(&keep).join("sheet.png")).unwrap();
        }
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        let (g, r) = (count([20, 160, 60]), count([210, 40, 40]));
        assert!(g > 0 && r > 5 * g, "one green frame, six red ones: {g} {r}");
        let missing = SheetItem {
            path: dir.path().join("none.png"),
            score: 0.0,
            matched: None,
        };
        let err = format!("{:#}", write(&out, "q", None, &[missing]).unwrap_err());
        assert!(err.contains("none.png"), "{err}");
    }
}
