//! An RGB image that `embedded-graphics` can draw text, lines and boxes on.
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use image::{Rgb, RgbImage};

pub use embedded_graphics::mono_font::ascii::{
    FONT_10X20 as LARGE, FONT_6X10 as SMALL, FONT_7X13 as MEDIUM,
};

pub const WHITE: Rgb888 = Rgb888::new(255, 255, 255);
pub const BLACK: Rgb888 = Rgb888::new(20, 20, 20);
pub const GREY: Rgb888 = Rgb888::new(200, 200, 200);
pub const GREEN: Rgb888 = Rgb888::new(20, 160, 60);
pub const RED: Rgb888 = Rgb888::new(210, 40, 40);
/// Distinct line colours for plots.
pub const PALETTE: [Rgb888; 8] = [
    Rgb888::new(31, 119, 180),
    Rgb888::new(255, 127, 14),
    Rgb888::new(44, 160, 44),
    Rgb888::new(214, 39, 40),
    Rgb888::new(148, 103, 189),
    Rgb888::new(140, 86, 75),
    Rgb888::new(227, 119, 194),
    Rgb888::new(127, 127, 127),
];

/// A white canvas of `width x height` pixels.
pub struct Canvas(pub RgbImage);

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas(RgbImage::from_pixel(width, height, Rgb([255, 255, 255])))
    }

    /// Text with its top-left corner at (x, y).
    pub fn text(&mut self, s: &str, x: i32, y: i32, font: &MonoFont<'_>, color: Rgb888) {
        let style = MonoTextStyle::new(font, color);
        let _ = Text::with_baseline(s, Point::new(x, y), style, Baseline::Top).draw(self);
    }

    pub fn line(&mut self, from: (i32, i32), to: (i32, i32), color: Rgb888, width: u32) {
        let _ = Line::new(Point::new(from.0, from.1), Point::new(to.0, to.1))
            .into_styled(PrimitiveStyle::with_stroke(color, width))
            .draw(self);
    }

    /// A rectangle outline `width` pixels thick, drawn inside (x, y, w, h).
    pub fn frame(&mut self, x: i32, y: i32, w: u32, h: u32, color: Rgb888, width: u32) {
        let _ = Rectangle::new(Point::new(x, y), Size::new(w, h))
            .into_styled(PrimitiveStyle::with_stroke(color, width))
            .draw(self);
    }

    /// Copies `img` with its top-left corner at (x, y), clipped to the canvas.
    pub fn paste(&mut self, img: &RgbImage, x: i64, y: i64) {
        image::imageops::replace(&mut self.0, img, x, y);
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        let (w, h) = self.0.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.0
                    .put_pixel(p.x as u32, p.y as u32, Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}

/// Shortens `s` to at most `max` characters, marking the cut with "..".
pub fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let keep: String = s.chars().take(max.saturating_sub(2)).collect();
        format!("{keep}..")
    }
}

/// Splits `s` into lines of at most `width` characters at spaces.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in s.split_whitespace() {
        let cur = lines.last_mut().expect("never empty");
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}
