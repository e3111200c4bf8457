//! TOY-PEDES: a generated text-to-person benchmark in CUHK-PEDES's format, so the demo and the
//! tests run without downloads. Everything in it is drawn from its own seed, `synth_seed`. Each identity is a drawn pedestrian with fixed attributes (sex,
//! skin, hair colour and length, hat, upper garment type and colour, lower garment type and colour,
//! shoes, bag type and colour); each image varies position, scale, background, lighting, facing
//! and occlusion; each image gets two captions written from varied templates that mention
//! different subsets of the attributes, as human annotators do.
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const COLOURS: [(&str, [u8; 3]); 12] = [
    ("red", [200, 30, 35]),
    ("blue", [35, 70, 200]),
    ("green", [40, 150, 50]),
    ("yellow", [235, 210, 40]),
    ("black", [25, 25, 28]),
    ("white", [240, 240, 240]),
    ("grey", [128, 128, 132]),
    ("pink", [240, 140, 180]),
    ("purple", [120, 50, 160]),
    ("orange", [240, 130, 30]),
    ("brown", [110, 70, 40]),
    ("light blue", [140, 190, 240]),
];
const HAIR: [(&str, [u8; 3]); 5] = [
    ("black", [20, 18, 18]),
    ("brown", [90, 55, 30]),
    ("blonde", [225, 190, 110]),
    ("grey", [160, 160, 160]),
    ("red", [160, 60, 30]),
];
const SKIN: [[u8; 3]; 3] = [[240, 205, 180], [200, 150, 110], [120, 85, 60]];
const UPPER: [&str; 5] = ["t-shirt", "shirt", "jacket", "coat", "sweater"];
const LOWER: [&str; 3] = ["trousers", "shorts", "skirt"];
const BAGS: [&str; 4] = ["none", "backpack", "handbag", "shoulder bag"];

/// The fixed appearance of one person.
#[derive(Debug, Clone)]
struct Person {
    woman: bool,
    skin: usize,
    hair: usize,
    long_hair: bool,
    hat: Option<usize>,
    upper: usize,
    upper_colour: usize,
    lower: usize,
    lower_colour: usize,
    shoes: usize,
    bag: usize,
    bag_colour: usize,
}

impl Person {
    fn random(rng: &mut impl Rng) -> Person {
        let woman = rng.gen_bool(0.5);
        let lower = if woman {
            [0, 1, 2, 2][rng.gen_range(0..4)]
        } else {
            [0, 0, 1][rng.gen_range(0..3)]
        };
        Person {
            woman,
            skin: rng.gen_range(0..SKIN.len()),
            hair: rng.gen_range(0..HAIR.len()),
            long_hair: rng.gen_bool(if woman { 0.75 } else { 0.1 }),
            hat: rng.gen_bool(0.2).then(|| rng.gen_range(0..COLOURS.len())),
            upper: rng.gen_range(0..UPPER.len()),
            upper_colour: rng.gen_range(0..COLOURS.len()),
            lower,
            lower_colour: rng.gen_range(0..COLOURS.len()),
            shoes: [4, 5, 10, 0, 1][rng.gen_range(0..5)],
            bag: [0, 0, 1, 2, 3][rng.gen_range(0..5)],
            bag_colour: [4, 10, 1, 0, 5, 6][rng.gen_range(0..6)],
        }
    }
}

fn blend(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    [0, 1, 2].map(|i| {
        (a[i] as f32 * (1.0 - t) + b[i] as f32 * t)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// Fills the pixels of `img` inside a shape given in figure coordinates (u across, v down, both
/// 0..1 over the figure box) with `colour`, scaled by `light`.
struct Painter<'a> {
    img: &'a mut RgbImage,
    x0: f32,
    y0: f32,
    w: f32,
    h: f32,
    light: f32,
    mirror: bool,
}

impl Painter<'_> {
    fn fill(&mut self, colour: [u8; 3], inside: impl Fn(f32, f32) -> bool) {
        let (iw, ih) = self.img.dimensions();
        let c = colour.map(|v| (v as f32 * self.light).clamp(0.0, 255.0) as u8);
        let (xa, xb) = (
            self.x0.max(0.0) as u32,
            ((self.x0 + self.w).ceil() as u32).min(iw),
        );
        let (ya, yb) = (
            self.y0.max(0.0) as u32,
            ((self.y0 + self.h).ceil() as u32).min(ih),
        );
        for y in ya..yb {
            for x in xa..xb {
                let mut u = (x as f32 + 0.5 - self.x0) / self.w;
                let v = (y as f32 + 0.5 - self.y0) / self.h;
                if self.mirror {
                    u = 1.0 - u;
                }
                if inside(u, v) {
                    self.img.put_pixel(x, y, Rgb(c));
                }
            }
        }
    }

    fn rect(&mut self, colour: [u8; 3], u0: f32, v0: f32, u1: f32, v1: f32) {
        self.fill(colour, |u, v| u >= u0 && u < u1 && v >= v0 && v < v1);
    }

    fn ellipse(&mut self, colour: [u8; 3], cu: f32, cv: f32, ru: f32, rv: f32) {
        self.fill(colour, |u, v| {
            ((u - cu) / ru).powi(2) + ((v - cv) / rv).powi(2) <= 1.0
        });
    }

    /// A trapezoid from width `wa` at `v0` to `wb` at `v1`, centred at u = 0.5.
    fn trapezoid(&mut self, colour: [u8; 3], v0: f32, v1: f32, wa: f32, wb: f32) {
        self.fill(colour, |u, v| {
            v >= v0 && v < v1 && (u - 0.5).abs() <= (wa + (wb - wa) * (v - v0) / (v1 - v0)) / 2.0
        });
    }
}

/// Draws one image of `p`.
fn draw(p: &Person, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = (rng.gen_range(60..84u32), rng.gen_range(160..220u32));
    let top = [
        rng.gen_range(60..200u8),
        rng.gen_range(60..200),
        rng.gen_range(60..200),
    ];
    let bottom = blend(
        top,
        [
            rng.gen_range(40..160u8),
            rng.gen_range(40..160),
            rng.gen_range(40..160),
        ],
        0.7,
    );
    let mut img = RgbImage::from_fn(w, h, |_, y| Rgb(blend(top, bottom, y as f32 / h as f32)));
    let scale = rng.gen_range(0.78..0.95f32);
    let (fh, fw) = (h as f32 * scale, h as f32 * scale * 0.38);
    let x0 = (w as f32 - fw) / 2.0 + rng.gen_range(-0.12..0.12) * w as f32;
    let y0 = (h as f32 - fh) * rng.gen_range(0.2..0.8);
    let mut pt = Painter {
        img: &mut img,
        x0,
        y0,
        w: fw,
        h: fh,
        light: rng.gen_range(0.75..1.2),
        mirror: rng.gen_bool(0.5),
    };
    let skin = SKIN[p.skin];
    let (upper, lower) = (COLOURS[p.upper_colour].1, COLOURS[p.lower_colour].1);
    let hair = HAIR[p.hair].1;
    // Back layer: a backpack seen behind the torso, long hair behind the shoulders.
    if p.bag == 1 {
        pt.rect(COLOURS[p.bag_colour].1, 0.03, 0.2, 0.97, 0.47);
    }
    if p.long_hair {
        pt.rect(hair, 0.3, 0.08, 0.7, 0.3);
    }
    // Legs and lower garment.
    let leg_end = 0.93;
    pt.rect(skin, 0.33, 0.5, 0.48, leg_end);
    pt.rect(skin, 0.52, 0.5, 0.67, leg_end);
    match LOWER[p.lower] {
        "trousers" => {
            pt.rect(lower, 0.32, 0.5, 0.49, leg_end);
            pt.rect(lower, 0.51, 0.5, 0.68, leg_end);
            pt.rect(lower, 0.32, 0.5, 0.68, 0.56);
        }
        "shorts" => pt.rect(lower, 0.31, 0.5, 0.69, 0.66),
        _ => pt.trapezoid(lower, 0.5, 0.72, 0.4, 0.62),
    }
    pt.rect(COLOURS[p.shoes].1, 0.3, leg_end, 0.49, 0.98);
    pt.rect(COLOURS[p.shoes].1, 0.51, leg_end, 0.7, 0.98);
    // Torso and arms.
    let torso_end = if UPPER[p.upper] == "coat" { 0.66 } else { 0.52 };
    pt.trapezoid(upper, 0.18, torso_end, 0.46, 0.42);
    let sleeve_end = if UPPER[p.upper] == "t-shirt" {
        0.3
    } else {
        0.5
    };
    for (a, b) in [(0.12, 0.27), (0.73, 0.88)] {
        pt.rect(skin, a, 0.2, b, 0.53);
        pt.rect(upper, a, 0.19, b, sleeve_end);
    }
    if UPPER[p.upper] == "jacket" || UPPER[p.upper] == "coat" {
        pt.rect(blend(upper, [0, 0, 0], 0.45), 0.485, 0.2, 0.515, torso_end); // zip / buttons
    }
    if UPPER[p.upper] == "shirt" {
        pt.trapezoid(blend(upper, [255, 255, 255], 0.5), 0.18, 0.24, 0.16, 0.04);
        // collar
    }
    // Head, hair, hat.
    pt.ellipse(skin, 0.5, 0.1, 0.13, 0.07);
    pt.ellipse(hair, 0.5, 0.06, 0.14, 0.045);
    if let Some(hc) = p.hat {
        pt.rect(COLOURS[hc].1, 0.34, 0.015, 0.66, 0.06);
        pt.rect(COLOURS[hc].1, 0.5, 0.045, 0.78, 0.065);
    }
    // Front bags (and the backpack's straps).
    let bag = COLOURS[p.bag_colour].1;
    match BAGS[p.bag] {
        "backpack" => {
            pt.rect(bag, 0.34, 0.19, 0.39, 0.4);
            pt.rect(bag, 0.61, 0.19, 0.66, 0.4);
        }
        "handbag" => pt.rect(bag, 0.76, 0.5, 0.98, 0.62),
        "shoulder bag" => {
            pt.fill(bag, |u, v| {
                v > 0.18 && v < 0.46 && ((u - 0.3) - (v - 0.18) * 1.6).abs() < 0.035
            });
            pt.rect(bag, 0.66, 0.42, 0.92, 0.55);
        }
        _ => {}
    }
    // Occlusion by a passer-by or an object.
    if rng.gen_bool(0.2) {
        let c = [
            rng.gen_range(0..255u8),
            rng.gen_range(0..255),
            rng.gen_range(0..255),
        ];
        let (ow, oh) = (
            rng.gen_range(0.2..0.45) * w as f32,
            rng.gen_range(0.15..0.35) * h as f32,
        );
        let ox = if rng.gen_bool(0.5) {
            0.0
        } else {
            w as f32 - ow
        };
        let oy = h as f32 - oh;
        for y in oy as u32..h {
            for x in ox as u32..((ox + ow) as u32).min(w) {
                img.put_pixel(x, y, Rgb(c));
            }
        }
    }
    // Sensor noise.
    for px in img.pixels_mut() {
        let n = rng.gen_range(-6i16..=6);
        px.0 = px.0.map(|v| (v as i16 + n).clamp(0, 255) as u8);
    }
    img
}

/// A caption that mentions a random subset of the attributes, in one of several styles.
fn caption(p: &Person, rng: &mut impl Rng) -> String {
    let (noun, pron) = if p.woman {
        (
            ["woman", "lady", "girl", "female"][rng.gen_range(0..4)],
            "She",
        )
    } else {
        (
            ["man", "guy", "male", "gentleman"][rng.gen_range(0..4)],
            "He",
        )
    };
    let colour = |i: usize| COLOURS[i].0;
    let hair = format!(
        "{} {} hair",
        if p.long_hair { "long" } else { "short" },
        HAIR[p.hair].0
    );
    let upper = match rng.gen_range(0..3) {
        0 => format!("a {} {}", colour(p.upper_colour), UPPER[p.upper]),
        1 => format!("a {} that is {}", UPPER[p.upper], colour(p.upper_colour)),
        _ => format!("a {} colored {}", colour(p.upper_colour), UPPER[p.upper]),
    };
    let lower_name = match LOWER[p.lower] {
        "trousers" => ["trousers", "pants", "long pants"][rng.gen_range(0..3)],
        "shorts" => "shorts",
        _ => "skirt",
    };
    let article = if lower_name == "skirt" { "a " } else { "" };
    let lower = format!("{article}{} {lower_name}", colour(p.lower_colour));
    let shoes = format!("{} shoes", colour(p.shoes));
    let bag = (p.bag > 0).then(|| format!("a {} {}", colour(p.bag_colour), BAGS[p.bag]));
    let hat = p.hat.map(|c| format!("a {} cap", colour(c)));
    // Mention the garments almost always, the rest at random, as annotators do.
    let mut worn = vec![upper];
    if rng.gen_bool(0.85) {
        worn.push(lower);
    }
    if rng.gen_bool(0.5) {
        worn.push(shoes);
    }
    if let Some(h) = hat.filter(|_| rng.gen_bool(0.7)) {
        worn.push(h);
    }
    let list = match worn.len() {
        1 => worn[0].clone(),
        n => format!("{} and {}", worn[..n - 1].join(", "), worn[n - 1]),
    };
    let with_hair = rng.gen_bool(0.6);
    let mut s = match rng.gen_range(0..4) {
        0 if with_hair => format!("A {noun} with {hair} is wearing {list}."),
        0 => format!("A {noun} is wearing {list}."),
        1 if with_hair => format!("The {noun} has {hair}. {pron} wears {list}."),
        1 => format!("The {noun} wears {list}."),
        2 => format!(
            "This {noun} is dressed in {list}{}.",
            if with_hair {
                format!(" and has {hair}")
            } else {
                String::new()
            }
        ),
        _ => format!(
            "{} {noun} walking, wearing {list}.",
            if with_hair {
                format!("A {hair}")
            } else {
                "A".into()
            }
        ),
    };
    if let Some(b) = bag.filter(|_| rng.gen_bool(0.8)) {
        let verb = ["is carrying", "carries", "has"][rng.gen_range(0..3)];
        s.push_str(&format!(" {pron} {verb} {b}."));
    }
    s
}

/// Writes the set drawn from `synth_seed` to `dir`: `imgs/synth/*.jpg` and, last,
/// `reid_raw.json` in CUHK-PEDES's format (ids from 1; splits by identity: `ids.0` train, `ids.1`
/// val, `ids.2` test).
pub fn generate(dir: &Path, ids: (usize, usize, usize), synth_seed: u64) -> Result<()> {
    let imgs = dir.join("imgs").join("synth");
    std::fs::create_dir_all(&imgs).with_context(|| format!("cannot create {}", imgs.display()))?;
    let total = ids.0 + ids.1 + ids.2;
    let pb = ProgressBar::new(total as u64).with_message(NAME);
    let entries: Vec<Vec<serde_json::Value>> = (0..total)
        .into_par_iter()
        .map(|k| {
            let mut rng = ChaCha8Rng::seed_from_u64(synth_seed);
            rng.set_stream(k as u64 + 1);
            let person = Person::random(&mut rng);
            let split = if k < ids.0 { "train" } else if k < ids.0 + ids.1 { "val" } else { "test" };
            let n_images = *[2usize, 2, 3, 3, 4].choose(&mut rng).expect("non-empty");
            let mut out = Vec::with_capacity(n_images);
            for j in 0..n_images {
                let img = draw(&person, &mut rng);
                let rel = format!("synth/{:05}_{j}.jpg", k + 1);
                let path = imgs.join(format!("{:05}_{j}.jpg", k + 1));
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode_image(&img)
                    .context("encoding JPEG")?;
                std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
                let captions = [caption(&person, &mut rng), caption(&person, &mut rng)];
                out.push(serde_json::json!({ "split": split, "id": k + 1, "file_path": rel, "captions": captions }));
            }
            pb.inc(1);
            Ok(out)
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    let all: Vec<serde_json::Value> = entries.into_iter().flatten().collect();
    crate::io::write_atomic(
        &dir.join(PARAMS_FILE),
        params_json(ids, synth_seed).to_string().as_bytes(),
    )?;
    crate::io::write_atomic(
        &dir.join("reid_raw.json"),
        serde_json::to_string(&all)?.as_bytes(),
    )
}

/// Records what a generated set was made with; a folder without it was not written by ccma.
const PARAMS_FILE: &str = "synth_params.json";

fn params_json(ids: (usize, usize, usize), synth_seed: u64) -> serde_json::Value {
    serde_json::json!({ "generator": 1, "ids": [ids.0, ids.1, ids.2], "synth_seed": synth_seed })
}

/// The set's name, and its folder's with the config's defaults.
const NAME: &str = "TOY-PEDES";

/// The folder of the set generated with `ids` and `synth_seed`: `<root_dir>/TOY-PEDES` for the
/// config's defaults (1000 / 100 / 200 identities, synth_seed 1), else
/// `<root_dir>/TOY-PEDES-<train>-<val>-<test>-s<synth_seed>`, so generations never share a folder.
pub fn folder(root_dir: &Path, ids: (usize, usize, usize), synth_seed: u64) -> PathBuf {
    let defaults = crate::config::DataSection::default();
    let name = if (ids, synth_seed) == (defaults.synth_ids, defaults.synth_seed) {
        NAME.to_string()
    } else {
        format!("{NAME}-{}-{}-{}-s{synth_seed}", ids.0, ids.1, ids.2)
    };
    root_dir.join(name)
}

/// The folder of the set made with `ids` and `synth_seed` ([`folder`]), generated first when it
/// does not exist. The set is written into a temporary sibling folder (`.<name>.partial-*`) and renamed into
/// place once complete. An existing folder is used only when its record shows it is that
/// generation; otherwise it is refused and left untouched: nothing is ever deleted or overwritten.
pub fn ensure(root_dir: &Path, ids: (usize, usize, usize), synth_seed: u64) -> Result<PathBuf> {
    let dir = folder(root_dir, ids, synth_seed);
    if dir.symlink_metadata().is_ok() {
        check_record(&dir, ids, synth_seed)?;
        return Ok(dir);
    }
    tracing::info!(
        "generating {NAME} ({} / {} / {} identities, synth_seed {synth_seed}) in {}",
        ids.0,
        ids.1,
        ids.2,
        dir.display()
    );
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(root_dir)
        .with_context(|| format!("cannot create {}", root_dir.display()))?;
    let name = dir.file_name().expect("a folder name").to_string_lossy();
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(root_dir)
        .with_context(|| format!("cannot create a folder in {}", root_dir.display()))?;
    generate(partial.path(), ids, synth_seed)?;
    match std::fs::rename(partial.path(), &dir) {
        Ok(()) => {
            let _moved = partial.keep();
        }
        // Another process placed a folder there meanwhile: `partial` is dropped with its files.
        Err(_) if dir.symlink_metadata().is_ok() => check_record(&dir, ids, synth_seed)?,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    partial.path().display(),
                    dir.display()
                )
            })
        }
    }
    tracing::info!("{NAME} generated in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(dir)
}

/// Refuses `dir` unless its record says it holds the set made with `ids` and `synth_seed`.
fn check_record(dir: &Path, ids: (usize, usize, usize), synth_seed: u64) -> Result<()> {
    let record = std::fs::read_to_string(dir.join(PARAMS_FILE)).ok();
    let found = record.and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok());
    if found.as_ref() == Some(&params_json(ids, synth_seed)) {
        return Ok(());
    }
    let holds = match &found {
        Some(f) => format!(
            "holds a {NAME} generated with synth_ids {} and synth_seed {} ({PARAMS_FILE})",
            f["ids"], f["synth_seed"]
        ),
        None => format!(
            "has no readable {PARAMS_FILE}, so it is not a set ccma generated (it holds {})",
            contents(dir)
        ),
    };
    Err(crate::UsageError(format!(
        "{} {holds}, not the set of synth_ids [{}, {}, {}] and synth_seed {synth_seed} asked for; it is left untouched: move it away or choose another root_dir",
        dir.display(),
        ids.0,
        ids.1,
        ids.2
    ))
    .into())
}

/// A few names of what `dir` holds, for messages.
fn contents(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "something that is not a readable folder".into();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    match names.len() {
        0 => "nothing".into(),
        n if n <= 4 => names.join(", "),
        n => format!("{} and {} more", names[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_split_by_identity() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        generate(a.path(), (6, 2, 3), 7).unwrap();
        generate(b.path(), (6, 2, 3), 7).unwrap();
        generate(c.path(), (6, 2, 3), 8).unwrap();
        let read = |d: &Path| std::fs::read(d.join("reid_raw.json")).unwrap();
        assert_eq!(read(a.path()), read(b.path()));
        assert_ne!(read(a.path()), read(c.path()));
        let img = |d: &Path| std::fs::read(d.join("imgs/synth/00003_1.jpg")).unwrap();
        assert_eq!(img(a.path()), img(b.path()));
        let root = tempfile::tempdir().unwrap();
        let load = |d: &Path| {
            crate::data::annotations::load(crate::config::DatasetName::ToyPedes, d).unwrap()
        };
        let dir = ensure(root.path(), (6, 2, 3), 7).unwrap();
        assert_eq!(dir, root.path().join("TOY-PEDES-6-2-3-s7"));
        let ds = load(&dir);
        assert_eq!(
            (ds.num_classes, ds.val.num_ids(), ds.test.num_ids()),
            (6, 2, 3)
        );
        let other = ensure(root.path(), (5, 2, 3), 7).unwrap();
        assert_eq!(
            load(&other).num_classes,
            5,
            "other parameters: another folder"
        );
        assert_eq!(load(&dir).num_classes, 6, "the first set is kept");
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            2,
            "no partial folder is left"
        );
        assert_eq!(ds.test.captions.len(), 2 * ds.test.image_paths.len());
        assert!(ds
            .train
            .iter()
            .all(|s| s.caption.contains("wear") || s.caption.contains("dressed")));
    }

    #[test]
    fn synth_seed_draws_the_set_that_earlier_releases_drew_from_the_same_seed() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), (4, 1, 2), 1).unwrap();
        let sha = |rel: &str| {
            let digest = sha2::Sha256::digest(std::fs::read(dir.path().join(rel)).unwrap());
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        // What the release before `synth_seed` generated with synth_ids [4, 1, 2] and seed 1.
        assert_eq!(
            sha("reid_raw.json"),
            "cc8bed9d2b73baed12ec409723be9fdccfff521459d71c199074619331b0eba6"
        );
        assert_eq!(
            sha("imgs/synth/00007_0.jpg"),
            "cb17eeb5e49a9890c32e4c826876af6b6d9b924f19ee22ac9e8d1a51ea22179f"
        );
    }

    #[test]
    fn default_parameters_keep_the_plain_folder_name() {
        let root = Path::new("data");
        assert_eq!(folder(root, (1000, 100, 200), 1), root.join("TOY-PEDES"));
        assert_eq!(
            folder(root, (1000, 100, 200), 2),
            root.join("TOY-PEDES-1000-100-200-s2")
        );
    }
}
