//! Image decoding and the train/test image transforms of IRRA (torchvision semantics).
//!
//! Test: resize to (H, W) (PIL bilinear with antialiasing), to [0, 1], normalise with CLIP's
//! mean/std. Train with `img_aug`: resize, horizontal flip (p 0.5), zero-pad 10 px, random crop
//! back to (H, W), to [0, 1], normalise, random erasing (p 0.5, area 0.02-0.4, aspect 0.3-3.3,
//! erased values = CLIP's mean numbers, written after normalisation). Without `img_aug`: resize,
//! flip, normalise.
//!
//! Flip, pad and crop are index arithmetic inside the normalisation pass (one write per output
//! value); the resize (`resize.rs`) reproduces Pillow's `Image.resize(size, BILINEAR)` bit for
//! bit. Decoding is `decode.rs`.
mod decode;
mod resize;

pub use decode::{decode_rgb, load_rgb};
pub use resize::resize_bilinear;

use image::RgbImage;
use rand::Rng;
use resize::resize_into;
use std::cell::RefCell;
use std::sync::OnceLock;

/// CLIP's per-channel mean (RGB), also the value random erasing writes (the published digits;
/// they round to f32).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP's per-channel standard deviation (RGB).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];
/// Zero padding on each side before the random crop.
pub const PAD: usize = 10;
/// Probability of a horizontal flip.
pub const FLIP_PROB: f64 = 0.5;
/// Probability of random erasing.
pub const ERASE_PROB: f64 = 0.5;
/// Random erasing: range of the erased area as a fraction of the image.
pub const ERASE_SCALE: (f64, f64) = (0.02, 0.4);
/// Random erasing: range of the aspect ratio (height / width), sampled log-uniformly.
pub const ERASE_RATIO: (f64, f64) = (0.3, 3.3);

/// A rectangle of the output image set to the mean values by random erasing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Erase {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// The random choices of one training transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Mirror the resized image left-right.
    pub flip: bool,
    /// Output pixel (y, x) reads the (flipped) resized image at (y + dy, x + dx); outside it
    /// reads the zero padding. The crop of a 10-px zero-padded image gives dy, dx in -10..=10.
    pub shift: (i32, i32),
    pub erase: Option<Erase>,
}

impl Augment {
    /// No flip, no shift, no erasing (the test transform).
    pub const IDENTITY: Augment = Augment {
        flip: false,
        shift: (0, 0),
        erase: None,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Test,
    Flip,
    FullAugment,
}

/// An image transform producing normalised CHW f32 values of a fixed size.
#[derive(Clone, Debug)]
pub struct ImageTransform {
    height: usize,
    width: usize,
    kind: Kind,
}

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn normalise_lut() -> &'static [[f32; 256]; 3] {
    static LUT: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                // torchvision: ToTensor divides by 255 in f32, Normalize subtracts and divides in f32.
                *out = (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
        lut
    })
}

impl ImageTransform {
    /// The evaluation transform for `img_size` = (height, width).
    pub fn test(img_size: (usize, usize)) -> Self {
        ImageTransform {
            height: img_size.0,
            width: img_size.1,
            kind: Kind::Test,
        }
    }

    /// The training transform for `img_size` = (height, width), with or without `img_aug`.
    pub fn train(img_size: (usize, usize), img_aug: bool) -> Self {
        let kind = if img_aug {
            Kind::FullAugment
        } else {
            Kind::Flip
        };
        ImageTransform {
            height: img_size.0,
            width: img_size.1,
            kind,
        }
    }

    /// Output (height, width); `apply` writes `3 * height * width` values.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Draws the random choices: flip, then the crop offsets, then erasing (each only where this
    /// transform has it).
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Augment {
        if self.kind == Kind::Test {
            return Augment::IDENTITY;
        }
        let flip = rng.gen::<f64>() < FLIP_PROB;
        if self.kind == Kind::Flip {
            return Augment {
                flip,
                ..Augment::IDENTITY
            };
        }
        let pad = PAD as i32;
        let shift = (
            rng.gen_range(0..=2 * pad) - pad,
            rng.gen_range(0..=2 * pad) - pad,
        );
        let erase = if rng.gen::<f64>() < ERASE_PROB {
            sample_erase(self.height, self.width, rng)
        } else {
            None
        };
        Augment { flip, shift, erase }
    }

    /// Transforms `img` with freshly drawn random choices into `out` (CHW, f32, len 3*H*W).
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R, out: &mut [f32]) {
        let aug = self.sample(rng);
        self.apply_with(img, &aug, out);
    }

    /// Transforms `img` with the given choices into `out` (`[3, H, W]` f32, row-major).
    ///
    /// # Panics
    /// If `out.len() != 3 * H * W` (a caller bug, not a data error).
    pub fn apply_with(&self, img: &RgbImage, aug: &Augment, out: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        assert_eq!(
            out.len(),
            3 * h * w,
            "output buffer must hold 3 x {h} x {w} values"
        );
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (tmp, resized) = &mut *scratch;
            let (iw, ih) = (img.width() as usize, img.height() as usize);
            let pixels: &[u8] = if (ih, iw) == (h, w) {
                img.as_raw()
            } else {
                resize_into(img.as_raw(), iw, ih, w, h, tmp, resized);
                resized
            };
            write_normalised(pixels, h, w, aug, out);
        });
        if let Some(e) = aug.erase {
            for (c, plane) in out.chunks_exact_mut(h * w).enumerate() {
                for row in plane.chunks_exact_mut(w).skip(e.top).take(e.height) {
                    row[e.left..e.left + e.width].fill(CLIP_MEAN[c]);
                }
            }
        }
    }
}

/// Normalised CHW output from interleaved RGB `pixels` (h x w) with flip and shift applied.
fn write_normalised(pixels: &[u8], h: usize, w: usize, aug: &Augment, out: &mut [f32]) {
    let lut = normalise_lut();
    let (dy, dx) = (aug.shift.0 as isize, aug.shift.1 as isize);
    // Output columns x with 0 <= x + dx < w read the image; the rest read the padding.
    let x0 = (-dx).clamp(0, w as isize) as usize;
    let x1 = (w as isize - dx).clamp(0, w as isize) as usize;
    for (c, plane) in out.chunks_exact_mut(h * w).enumerate() {
        let table = &lut[c];
        let pad = table[0];
        for (y, out_row) in plane.chunks_exact_mut(w).enumerate() {
            let sy = y as isize + dy;
            if sy < 0 || sy >= h as isize {
                out_row.fill(pad);
                continue;
            }
            let row = &pixels[sy as usize * w * 3..(sy as usize + 1) * w * 3];
            out_row[..x0].fill(pad);
            out_row[x1..].fill(pad);
            let sx0 = (x0 as isize + dx) as usize;
            let sx1 = (x1 as isize + dx) as usize;
            let dst = &mut out_row[x0..x1];
            if aug.flip {
                // Flipped column s reads source column w - 1 - s; s runs sx0..sx1.
                let src = &row[(w - sx1) * 3..(w - sx0) * 3];
                for (o, p) in dst.iter_mut().zip(src.chunks_exact(3).rev()) {
                    *o = table[p[c] as usize];
                }
            } else {
                let src = &row[sx0 * 3..sx1 * 3];
                for (o, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *o = table[p[c] as usize];
                }
            }
        }
    }
}

/// torchvision's `RandomErasing.get_params` for an `h` x `w` image: up to 10 tries of an area
/// fraction uniform in [0.02, 0.4) and a log-uniform aspect ratio in [0.3, 3.3), sides rounded
/// half-to-even, kept if strictly smaller than the image; `None` if all tries fail.
pub fn sample_erase<R: Rng>(h: usize, w: usize, rng: &mut R) -> Option<Erase> {
    let area = (h * w) as f64;
    let (log_lo, log_hi) = (ERASE_RATIO.0.ln(), ERASE_RATIO.1.ln());
    for _ in 0..10 {
        let erase_area = area * rng.gen_range(ERASE_SCALE.0..ERASE_SCALE.1);
        let aspect = rng.gen_range(log_lo..log_hi).exp();
        let eh = (erase_area * aspect).sqrt().round_ties_even() as usize;
        let ew = (erase_area / aspect).sqrt().round_ties_even() as usize;
        if eh < h && ew < w {
            let top = rng.gen_range(0..=h - eh);
            let left = rng.gen_range(0..=w - ew);
            return Some(Erase {
                top,
                left,
                height: eh,
                width: ew,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A 3-wide, 2-high image whose red channel is 10 * (index + 1) and green/blue constant.
    fn tiny() -> RgbImage {
        RgbImage::from_fn(3, 2, |x, y| Rgb([10 * (y * 3 + x + 1) as u8, 0, 255]))
    }

    fn norm(c: usize, v: u8) -> f32 {
        (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
    }

    #[test]
    fn normalisation_constants() {
        let lut = normalise_lut();
        // Hand-computed: (0 - 0.48145466) / 0.26862954 and (1 - 0.40821073) / 0.27577711.
        assert!((lut[0][0] - (-1.792_263)).abs() < 1e-5);
        assert!((lut[2][255] - 2.145_897).abs() < 1e-5);
        assert_eq!(lut[1][128], norm(1, 128));
    }

    #[test]
    fn identity_flip_and_shift_are_exact() {
        let t = ImageTransform::test((2, 3));
        let mut out = vec![0f32; 18];
        t.apply_with(&tiny(), &Augment::IDENTITY, &mut out);
        let red: Vec<f32> = [10, 20, 30, 40, 50, 60]
            .iter()
            .map(|&v| norm(0, v))
            .collect();
        assert_eq!(&out[..6], &red[..]);
        assert!(out[6..12].iter().all(|&v| v == norm(1, 0)));
        assert!(out[12..].iter().all(|&v| v == norm(2, 255)));

        let flip = Augment {
            flip: true,
            ..Augment::IDENTITY
        };
        t.apply_with(&tiny(), &flip, &mut out);
        let red: Vec<f32> = [30, 20, 10, 60, 50, 40]
            .iter()
            .map(|&v| norm(0, v))
            .collect();
        assert_eq!(&out[..6], &red[..]);

        // Crop at padded (10 + 1, 10 - 1): output (y, x) reads resized (y + 1, x - 1).
        let shift = Augment {
            flip: false,
            shift: (1, -1),
            erase: None,
        };
        t.apply_with(&tiny(), &shift, &mut out);
        let p = norm(0, 0);
        assert_eq!(&out[..6], &[p, norm(0, 40), norm(0, 50), p, p, p]);
        // Green channel of the padding is the normalised zero too; blue of the image is 255.
        assert_eq!(
            &out[12..18],
            &[
                norm(2, 0),
                norm(2, 255),
                norm(2, 255),
                norm(2, 0),
                norm(2, 0),
                norm(2, 0)
            ]
        );

        // Flip happens before padding and cropping.
        let both = Augment {
            flip: true,
            shift: (0, 2),
            erase: None,
        };
        t.apply_with(&tiny(), &both, &mut out);
        assert_eq!(&out[..6], &[norm(0, 10), p, p, norm(0, 40), p, p]);
    }

    #[test]
    fn erasing_writes_the_mean_after_normalising() {
        let t = ImageTransform::train((2, 3), true);
        let mut out = vec![0f32; 18];
        let aug = Augment {
            flip: false,
            shift: (0, 0),
            erase: Some(Erase {
                top: 1,
                left: 1,
                height: 1,
                width: 2,
            }),
        };
        t.apply_with(&tiny(), &aug, &mut out);
        assert_eq!(
            &out[..6],
            &[
                norm(0, 10),
                norm(0, 20),
                norm(0, 30),
                norm(0, 40),
                CLIP_MEAN[0],
                CLIP_MEAN[0]
            ]
        );
        assert_eq!(
            &out[6..12],
            &[
                norm(1, 0),
                norm(1, 0),
                norm(1, 0),
                norm(1, 0),
                CLIP_MEAN[1],
                CLIP_MEAN[1]
            ]
        );
    }

    #[test]
    fn resize_is_identity_at_same_size_and_averages_on_downscale() {
        let img = tiny();
        assert_eq!(resize_bilinear(&img, 2, 3), img);
        // 3 -> 1 column: centre 1.5, support 3, weights over x = 0, 1, 2 of 1 - |x + 0.5 - 1.5| / 3
        // = 2/3, 1, 2/3, normalised by their sum 7/3: (10*2 + 20*3 + 30*2) / 7 = 20.
        let one = resize_bilinear(&img, 2, 1);
        assert_eq!(one.get_pixel(0, 0)[0], 20);
        assert_eq!(one.get_pixel(0, 1)[0], 50);
        // Constant images stay constant under any resize.
        let flat = RgbImage::from_pixel(37, 91, Rgb([7, 130, 250]));
        assert!(resize_bilinear(&flat, 384, 128)
            .pixels()
            .all(|p| p.0 == [7, 130, 250]));
        assert!(resize_bilinear(&flat, 5, 3)
            .pixels()
            .all(|p| p.0 == [7, 130, 250]));
    }

    #[test]
    fn sampling_statistics() {
        // Flip and erase each with p = 0.5: counts within 4 sigma over n draws.
        let n = 20_000;
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let t = ImageTransform::train((384, 128), true);
        let (mut flips, mut erases) = (0, 0);
        let mut shifts = [[0usize; 21]; 2];
        let (mut area_sum, mut area_n) = (0.0, 0);
        for _ in 0..n {
            let a = t.sample(&mut rng);
            flips += a.flip as usize;
            shifts[0][(a.shift.0 + 10) as usize] += 1;
            shifts[1][(a.shift.1 + 10) as usize] += 1;
            if let Some(e) = a.erase {
                erases += 1;
                let frac = (e.height * e.width) as f64 / (384.0 * 128.0);
                // Sides are rounded to whole pixels: allow that rounding around the ranges.
                let (h, w) = (e.height as f64, e.width as f64);
                assert!(
                    frac >= 0.02 * (1.0 - 1.0 / h) * (1.0 - 1.0 / w)
                        && frac <= 0.4 * (1.0 + 1.0 / h) * (1.0 + 1.0 / w),
                    "area {frac}"
                );
                let aspect = h / w;
                assert!(
                    aspect >= 0.3 * (1.0 - 1.0 / h) / (1.0 + 1.0 / w)
                        && aspect <= 3.3 * (1.0 + 1.0 / h) / (1.0 - 1.0 / w),
                    "aspect {aspect}"
                );
                assert!(e.top + e.height <= 384 && e.left + e.width <= 128);
                area_sum += frac;
                area_n += 1;
            }
        }
        let four_sigma = 4.0 * (n as f64 * 0.25).sqrt();
        assert!(
            (flips as f64 - n as f64 * 0.5).abs() <= four_sigma,
            "flips {flips}"
        );
        // Erasing is attempted with p 0.5; an attempt can fail (10 rejected draws) only with
        // negligible probability at 384x128 (the widest draws exceed 128 px about 1 time in 9).
        assert!(
            (erases as f64 - n as f64 * 0.5).abs() <= four_sigma,
            "erases {erases}"
        );
        // Crop offsets uniform over 21 values: each count within 4 sigma of n / 21.
        let (p, mean) = (1.0 / 21.0, n as f64 / 21.0);
        let tol = 4.0 * (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            shifts
                .iter()
                .flatten()
                .all(|&c| (c as f64 - mean).abs() <= tol),
            "{shifts:?}"
        );
        // The mean erased fraction lies inside the range, below its midpoint 0.21 since the
        // too-wide draws that get rejected are the large ones.
        let mean_frac = area_sum / area_n as f64;
        assert!(
            (0.12..0.21).contains(&mean_frac),
            "mean erased fraction {mean_frac}"
        );

        // Without img_aug: flips only; the test transform never changes anything.
        let plain = ImageTransform::train((384, 128), false).sample(&mut rng);
        assert_eq!((plain.shift, plain.erase), ((0, 0), None));
        assert_eq!(
            ImageTransform::test((384, 128)).sample(&mut rng),
            Augment::IDENTITY
        );
    }

    #[test]
    fn deterministic_with_a_seeded_rng() {
        let img = RgbImage::from_fn(50, 120, |x, y| {
            Rgb([(x * 5) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
        });
        let t = ImageTransform::train((64, 32), true);
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut out = vec![0f32; 3 * 64 * 32];
            let mut all = Vec::new();
            for _ in 0..5 {
                t.apply(&img, &mut rng, &mut out);
                all.extend_from_slice(&out);
            }
            all
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
