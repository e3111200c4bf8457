//! Pillow's bilinear resize, bit for bit.
use image::RgbImage;

/// Resizes to `height` x `width` exactly as Pillow 13's `Image.resize((width, height), BILINEAR)`
/// does for 8-bit RGB: a triangle filter whose support grows with the downscale factor,
/// fixed-point coefficients (22 fractional bits), two passes each rounded to u8 (their order as
/// in [`resize_into`]).
pub fn resize_bilinear(img: &RgbImage, height: usize, width: usize) -> RgbImage {
    let mut out = Vec::new();
    let mut tmp = Vec::new();
    resize_into(
        img.as_raw(),
        img.width() as usize,
        img.height() as usize,
        width,
        height,
        &mut tmp,
        &mut out,
    );
    RgbImage::from_raw(width as u32, height as u32, out)
        .unwrap_or_else(|| unreachable!("buffer size matches"))
}

/// Filter taps for one axis: for output index i, `count` input pixels from `start` with
/// fixed-point weights `weights[i * ksize ..][.. count]`.
struct Taps {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let count = xmax.max(0) as usize;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            let w = bilinear_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, &kx) in k.iter().enumerate().take(count) {
            let w = if ww != 0.0 { kx / ww } else { kx };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin as usize, count));
    }
    Taps {
        ksize,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved RGB `src` (`sw` x `sh`) into `out` (`dw` x `dh`) through `tmp`.
///
/// Pillow (13) runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width does, the horizontal pass first otherwise (then only over the source rows
/// the vertical pass reads). Each pass rounds to u8, so the order matters to the last bit.
pub(super) fn resize_into(
    src: &[u8],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    tmp: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    let vertical_first = dh < sh && (sh - dh) as i64 > 2 * (sw as i64 - dw as i64);
    match (sw != dw, sh != dh) {
        (false, false) => {
            out.clear();
            out.extend_from_slice(&src[..sw * sh * 3]);
        }
        (true, false) => horizontal_pass(src, sw, 0..sh, &taps(sw, dw), dw, out),
        (false, true) => vertical_pass(src, sw, 0, &taps(sh, dh), out),
        (true, true) if vertical_first => {
            vertical_pass(src, sw, 0, &taps(sh, dh), tmp);
            horizontal_pass(tmp, sw, 0..dh, &taps(sw, dw), dw, out);
        }
        (true, true) => {
            let vert = taps(sh, dh);
            let first = vert.bounds.first().map_or(0, |b| b.0);
            let last = vert.bounds.last().map_or(0, |b| b.0 + b.1);
            horizontal_pass(src, sw, first..last, &taps(sw, dw), dw, tmp);
            vertical_pass(tmp, dw, first, &vert, out);
        }
    }
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal resampling of source rows `rows` (width `sw`) to width `dw`, into `out`.
fn horizontal_pass(
    src: &[u8],
    sw: usize,
    rows: std::ops::Range<usize>,
    t: &Taps,
    dw: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(rows.len() * dw * 3, 0);
    for (y, out_row) in rows.zip(out.chunks_exact_mut(dw * 3)) {
        let in_row = &src[y * sw * 3..(y + 1) * sw * 3];
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (start, count) = t.bounds[xx];
            let k = &t.weights[xx * t.ksize..xx * t.ksize + count];
            let (mut r, mut g, mut b) = (ROUNDING, ROUNDING, ROUNDING);
            for (p, &kx) in in_row[start * 3..(start + count) * 3]
                .chunks_exact(3)
                .zip(k)
            {
                r += p[0] as i32 * kx;
                g += p[1] as i32 * kx;
                b += p[2] as i32 * kx;
            }
            px[0] = clip8(r);
            px[1] = clip8(g);
            px[2] = clip8(b);
        }
    }
}

/// Vertical resampling of `src` (width `w`, its row 0 being source row `row_offset`) to as many
/// rows as `t` has outputs, into `out`.
fn vertical_pass(src: &[u8], w: usize, row_offset: usize, t: &Taps, out: &mut Vec<u8>) {
    let stride = w * 3;
    out.clear();
    out.resize(t.bounds.len() * stride, 0);
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, count) = t.bounds[yy];
        let k = &t.weights[yy * t.ksize..yy * t.ksize + count];
        acc.fill(ROUNDING);
        for (y, &ky) in (start - row_offset..).zip(k) {
            for (a, &v) in acc.iter_mut().zip(&src[y * stride..(y + 1) * stride]) {
                *a += v as i32 * ky;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}
