//! Pictures: sample grids, single images and loss curves as PNG, every file written atomically.
//!
//! Images are NCHW f32 in [−1, 1] (the model's range); a value v becomes the byte round((v + 1) · 127.5)
//! after clamping, so −1 → 0 and 1 → 255. The loss plot is drawn with plain pixel code and a built-in
//! 5×7 bitmap font (no plotting crate).

use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::files::write_atomic;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

/// Pixels between grid cells.
pub const GRID_GAP: usize = 2;
/// Grey level of the gaps between grid cells (and of empty cells), distinct from black and white.
pub const GRID_GAP_VALUE: u8 = 128;

/// Map a model value in [−1, 1] to a byte: clamp, then round((v + 1) · 127.5). NaN maps to 0.
pub fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Encode 8-bit pixels (1 = gray, 3 = RGB channels, interleaved) as PNG bytes.
fn encode_png(pixels: &[u8], width: usize, height: usize, channels: usize) -> Result<Vec<u8>> {
    let color = if channels == 1 {
        ExtendedColorType::L8
    } else {
        ExtendedColorType::Rgb8
    };
    let (w, h) = (u32::try_from(width)?, u32::try_from(height)?);
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(pixels, w, h, color)
        .context("cannot encode PNG")?;
    Ok(out)
}

/// Checks a batch of images against its shape [B, C, H, W] and returns the shape.
fn check_images(images: &[f32], shape: [usize; 4]) -> Result<[usize; 4]> {
    let [b, c, h, w] = shape;
    ensure!(
        c == 1 || c == 3,
        "images must have 1 (gray) or 3 (RGB) channels, not {c}"
    );
    ensure!(b > 0 && h > 0 && w > 0, "no pixels to draw: {b} images of {h}×{w}");
    let expected = b * c * h * w;
    ensure!(
        images.len() == expected,
        "expected {expected} values for {b} images of {c}×{h}×{w}, got {}",
        images.len()
    );
    Ok(shape)
}

/// Grids and plots are written as PNG (lossless: a JPEG would smear single pixels). Another
/// extension is refused up front, before minutes of sampling, rather than getting PNG bytes
/// under a name that says otherwise.
pub fn check_png_name(flag: &str, path: &Path) -> Result<()> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    ensure!(
        ext.as_deref() == Some("png"),
        "{flag} {}: images are written as PNG; give a name ending in .png",
        path.display()
    );
    Ok(())
}

/// Write images of `shape` [B, C, H, W] with values in [−1, 1] (clamped) as a grid PNG with `cols`
/// columns and a 2-pixel gap; C = 1 → grayscale, C = 3 → RGB. Written atomically (temp file in the
/// same dir, then rename).
///
/// Each image is enlarged `scale` times (nearest neighbour). With k = min(cols, B) columns and
/// r = ⌈B / k⌉ rows the PNG is (k·W·scale + (k−1)·2) × (r·H·scale + (r−1)·2); gaps only between cells.
pub fn save_grid(path: &Path, images: &[f32], shape: [usize; 4], cols: usize, scale: u32) -> Result<()> {
    let fail = || format!("cannot write image grid {}", path.display());
    let [b, c, h, w] = check_images(images, shape).with_context(fail)?;
    ensure!(
        cols > 0 && scale > 0,
        "{}: columns ({cols}) and scale ({scale}) must be at least 1",
        fail()
    );
    let s = scale as usize;
    let cols = cols.min(b);
    let rows = b.div_ceil(cols);
    let (cw, ch) = (w * s, h * s);
    let width = cols * cw + (cols - 1) * GRID_GAP;
    let height = rows * ch + (rows - 1) * GRID_GAP;
    let mut px = vec![GRID_GAP_VALUE; width * height * c];
    for i in 0..b {
        let img = &images[i * c * h * w..(i + 1) * c * h * w];
        let (x0, y0) = ((i % cols) * (cw + GRID_GAP), (i / cols) * (ch + GRID_GAP));
        for y in 0..ch {
            for x in 0..cw {
                let src = (y / s) * w + x / s;
                let dst = ((y0 + y) * width + x0 + x) * c;
                for k in 0..c {
                    px[dst + k] = to_byte(img[k * h * w + src]);
                }
            }
        }
    }
    let png = encode_png(&px, width, height, c).with_context(fail)?;
    write_atomic(path, &png)
}

/// Each image of a batch of `shape` [B, C, H, W] as its own PNG in `dir` (created), named
/// 00000.png ...
pub fn save_each(dir: &Path, images: &[f32], shape: [usize; 4]) -> Result<()> {
    let [b, c, h, w] =
        check_images(images, shape).with_context(|| format!("cannot write images to {}", dir.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    let mut px = vec![0u8; h * w * c];
    for i in 0..b {
        let img = &images[i * c * h * w..(i + 1) * c * h * w];
        for p in 0..h * w {
            for k in 0..c {
                px[p * c + k] = to_byte(img[k * h * w + p]);
            }
        }
        write_atomic(&dir.join(format!("{i:05}.png")), &encode_png(&px, w, h, c)?)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Loss curve
// ---------------------------------------------------------------------------------------------------------

/// How the loss axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YScale {
    Linear,
    /// Logarithmic; falls back to linear if some loss is ≤ 0.
    Log,
    /// Logarithmic when every loss is > 0 and the largest is at least 10 times the smallest.
    Auto,
}

/// Options of [`save_loss_curve_with`]; [`save_loss_curve`] uses the defaults.
#[derive(Clone, Copy, Debug)]
pub struct PlotOptions {
    pub width: u32,
    pub height: u32,
    pub y_scale: YScale,
    /// Points in the centred moving average (the dark curve); 0 picks about 1/25 of the points.
    pub smooth: usize,
    /// The y axis' name (upper case: the built-in font has no lower-case letters).
    pub y_label: &'static str,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 800,
            height: 480,
            y_scale: YScale::Auto,
            smooth: 0,
            y_label: "LOSS",
        }
    }
}

/// A line plot of a loss curve (x = step, y = loss, log-scale y optional) as PNG, drawn with plain pixel code
/// (no plotting crate): axes, a few tick marks and labels drawn with a tiny built-in 5×7 bitmap font for
/// digits and a few letters, the raw curve light and a moving average darker. Written atomically.
/// The picture is `PlotOptions::default()` sized (800 × 480) with an automatic y scale.
pub fn save_loss_curve(path: &Path, steps: &[usize], losses: &[f64], title: &str) -> Result<()> {
    save_loss_curve_with(path, steps, losses, title, &PlotOptions::default())
}

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [228, 228, 228];
const RAW: [u8; 3] = [160, 190, 235];
const SMOOTH: [u8; 3] = [20, 50, 150];

/// [`save_loss_curve`] with explicit size, y scale and smoothing. Non-finite losses are left out (with no
/// points left the axes are drawn empty); a log axis falls back to linear when some loss is ≤ 0.
pub fn save_loss_curve_with(path: &Path, steps: &[usize], losses: &[f64], title: &str, o: &PlotOptions) -> Result<()> {
    let fail = || format!("cannot write loss curve {}", path.display());
    ensure!(
        steps.len() == losses.len(),
        "{}: {} steps but {} losses",
        fail(),
        steps.len(),
        losses.len()
    );
    ensure!(
        o.width >= 160 && o.height >= 120,
        "{}: a plot needs at least 160×120 pixels, not {}×{}",
        fail(),
        o.width,
        o.height
    );
    let finite: Vec<(f64, f64)> = steps
        .iter()
        .zip(losses)
        .filter(|(_, l)| l.is_finite())
        .map(|(&s, &l)| (s as f64, l))
        .collect();
    let all_positive = finite.iter().all(|p| p.1 > 0.0);
    let log = all_positive
        && !finite.is_empty()
        && match o.y_scale {
            YScale::Linear => false,
            YScale::Log => true,
            YScale::Auto => {
                let (lo, hi) = min_max(finite.iter().map(|p| p.1)).unwrap_or((1.0, 1.0));
                hi >= 10.0 * lo
            }
        };
    // Points in plot coordinates: y is log10(loss) on a log axis.
    let pts: Vec<(f64, f64)> = finite
        .iter()
        .map(|&(x, y)| (x, if log { y.log10() } else { y }))
        .collect();
    let smooth = moving_average(
        &pts,
        if o.smooth == 0 {
            (pts.len() / 25).max(1)
        } else {
            o.smooth
        },
    );

    let (x_lo, x_hi) = padded(min_max(pts.iter().map(|p| p.0)).unwrap_or((0.0, 1.0)), 0.0, 1.0);
    let (y_lo, y_hi) = padded(min_max(pts.iter().map(|p| p.1)).unwrap_or((0.0, 1.0)), 0.05, 0.5);
    let x_ticks = linear_ticks(x_lo, x_hi, 1.0);
    let y_ticks: Vec<(f64, String)> = if log {
        log_ticks(y_lo, y_hi)
    } else {
        linear_ticks(y_lo, y_hi, 0.0)
    };

    let mut cv = Canvas::new(o.width as usize, o.height as usize);
    let label_w = y_ticks.iter().map(|t| text_width(&t.1, 1)).max().unwrap_or(0);
    let (left, right, top, bottom) = (label_w + 14, o.width as usize - 16, 34, o.height as usize - 34);
    let map_x = |x: f64| left as f64 + (x - x_lo) / (x_hi - x_lo) * (right - left) as f64;
    let map_y = |y: f64| bottom as f64 - (y - y_lo) / (y_hi - y_lo) * (bottom - top) as f64;

    for (v, label) in &x_ticks {
        let x = map_x(*v).round() as usize;
        cv.vline(x, top, bottom, GRID);
        cv.vline(x, bottom, bottom + 4, BLACK);
        cv.text(x.saturating_sub(text_width(label, 1) / 2), bottom + 7, label, 1, BLACK);
    }
    for (v, label) in &y_ticks {
        let y = map_y(*v).round() as usize;
        cv.hline(left, right, y, GRID);
        cv.hline(left - 4, left, y, BLACK);
        cv.text(left - 7 - text_width(label, 1), y.saturating_sub(3), label, 1, BLACK);
    }
    for (curve, color) in [(&pts, RAW), (&smooth, SMOOTH)] {
        for pair in curve.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            cv.line(map_x(a.0), map_y(a.1), map_x(b.0), map_y(b.1), color);
        }
        if let [p] = curve.as_slice() {
            let (x, y) = (map_x(p.0), map_y(p.1));
            for d in [-1.0, 0.0, 1.0] {
                cv.line(x - 1.0, y + d, x + 1.0, y + d, color);
            }
        }
    }
    cv.vline(left, top, bottom, BLACK);
    cv.hline(left, right, bottom, BLACK);
    cv.text(
        (left + right) / 2 - text_width("STEP", 1) / 2,
        bottom + 19,
        "STEP",
        1,
        BLACK,
    );
    cv.text(
        left - 7 - label_w,
        top - 11,
        &if log {
            format!("{} (LOG)", o.y_label)
        } else {
            o.y_label.to_string()
        },
        1,
        BLACK,
    );
    cv.text(
        (o.width as usize).saturating_sub(text_width(title, 2)) / 2,
        8,
        title,
        2,
        BLACK,
    );

    let png = encode_png(&cv.px, cv.w, cv.h, 3).with_context(fail)?;
    write_atomic(path, &png)
}

fn min_max(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    v.fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// Widen a range by `frac` of its length on each side; an empty range becomes ±`empty` around its value.
fn padded((lo, hi): (f64, f64), frac: f64, empty: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        (lo - empty, hi + empty)
    }
}

/// Centred moving average over `window` points; near the ends the window shrinks symmetrically (so the first
/// and last points are their own average and a falling curve does not hook at the start).
fn moving_average(pts: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let n = pts.len();
    let mut prefix = vec![0.0; n + 1];
    for (i, p) in pts.iter().enumerate() {
        prefix[i + 1] = prefix[i] + p.1;
    }
    (0..n)
        .map(|i| {
            let half = (window / 2).min(i).min(n - 1 - i);
            let (a, b) = (i - half, i + half + 1);
            (pts[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

/// Round `x` to a "nice" 1, 2 or 5 × 10^k.
fn nice_step(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    let m = x / p;
    p * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// About five ticks at multiples of a nice step (at least `min_step`) inside [lo, hi], labelled with just
/// enough decimals.
fn linear_ticks(lo: f64, hi: f64, min_step: f64) -> Vec<(f64, String)> {
    let step = nice_step((hi - lo) / 5.0).max(min_step);
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let thousands = step >= 1000.0 && step % 1000.0 == 0.0;
    (first..=last)
        .map(|k| k as f64 * step)
        .map(|v| {
            (
                v,
                if thousands && v != 0.0 {
                    format!("{}K", v / 1000.0)
                } else {
                    format_number(v, decimals)
                },
            )
        })
        .collect()
}

/// Ticks on a log10 axis spanning [lo, hi] (in log10 units): decades, plus 2× and 5× when fewer than three
/// decades are visible, plus every integer multiple when the range is narrower still. Positions are log10.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let decades = (lo.floor() as i32)..=(hi.ceil() as i32);
    for mantissas in [
        &[1.0][..],
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ] {
        let ticks: Vec<(f64, String)> = decades
            .clone()
            .flat_map(|e| mantissas.iter().map(move |m| (m * 10f64.powi(e), e)))
            .filter(|(v, _)| (lo..=hi).contains(&v.log10()))
            .map(|(v, e)| (v.log10(), format_number(v, (-e).max(0) as usize)))
            .collect();
        if ticks.len() >= 3 {
            return ticks;
        }
    }
    linear_ticks(10f64.powf(lo), 10f64.powf(hi), 0.0)
        .into_iter()
        .map(|(v, s)| (v.max(f64::MIN_POSITIVE).log10(), s))
        .collect()
}

/// A tick label: fixed-point with `decimals`, or `1E-6`-style for very small or very large magnitudes.
/// (Linear axes whose tick step is whole thousands write `20K` instead; see `linear_ticks`.)
fn format_number(v: f64, decimals: usize) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e7).contains(&a) {
        format!("{v:e}").to_uppercase()
    } else {
        format!("{v:.decimals$}")
    }
}

/// An RGB pixel buffer with clipped drawing primitives.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Canvas {
            w,
            h,
            px: WHITE.repeat(w * h),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn hline(&mut self, x0: usize, x1: usize, y: usize, c: [u8; 3]) {
        for x in x0..=x1 {
            self.set(x as i64, y as i64, c);
        }
    }

    fn vline(&mut self, x: usize, y0: usize, y1: usize, c: [u8; 3]) {
        for y in y0..=y1 {
            self.set(x as i64, y as i64, c);
        }
    }

    /// Bresenham line between rounded end points.
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
        let (mut x, mut y) = (x0.round() as i64, y0.round() as i64);
        let (x1, y1) = (x1.round() as i64, y1.round() as i64);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draw `s` with its top-left corner at (x, y), each font pixel a `scale × scale` block.
    fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            let gx = x + i * GLYPH_ADVANCE * scale;
            for (r, row) in rows.iter().enumerate() {
                for (col, bit) in row.bytes().enumerate() {
                    if bit == b'#' {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set((gx + col * scale + dx) as i64, (y + r * scale + dy) as i64, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Horizontal distance between characters: 5 pixels of glyph and 1 of space.
const GLYPH_ADVANCE: usize = 6;

fn text_width(s: &str, scale: usize) -> usize {
    (s.chars().count() * GLYPH_ADVANCE).saturating_sub(1) * scale
}

/// The 5×7 font: digits, capital letters (lower case is drawn as upper case) and some punctuation; `#` is
/// ink. A space is blank; any other character is drawn as `?`.
fn glyph(ch: char) -> Option<&'static [&'static str; 7]> {
    if ch == ' ' {
        return None;
    }
    let ch = ch.to_ascii_uppercase();
    FONT.iter()
        .find(|(c, _)| *c == ch)
        .or_else(|| FONT.iter().find(|(c, _)| *c == '?'))
        .map(|(_, g)| g)
}

#[rustfmt::skip]
const FONT: [(char, [&str; 7]); 48] = [
    ('0', [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."]),
    ('1', ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('2', [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"]),
    ('3', ["####.", "....#", "....#", ".###.", "....#", "....#", "####."]),
    ('4', ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."]),
    ('5', ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."]),
    ('6', ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."]),
    ('7', ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."]),
    ('8', [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."]),
    ('9', [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."]),
    ('A', [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]),
    ('B', ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."]),
    ('C', [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."]),
    ('D', ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."]),
    ('E', ["#####", "#....", "#....", "####.", "#....", "#....", "#####"]),
    ('F', ["#####", "#....", "#....", "####.", "#....", "#....", "#...."]),
    ('G', [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"]),
    ('H', ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]),
    ('I', [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('J', ["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."]),
    ('K', ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"]),
    ('L', ["#....", "#....", "#....", "#....", "#....", "#....", "#####"]),
    ('M', ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"]),
    ('N', ["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"]),
    ('O', [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('P', ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."]),
    ('Q', [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"]),
    ('R', ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"]),
    ('S', [".####", "#....", "#....", ".###.", "....#", "....#", "####."]),
    ('T', ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."]),
    ('U', ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('V', ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."]),
    ('W', ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."]),
    ('X', ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"]),
    ('Y', ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."]),
    ('Z', ["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"]),
    ('.', [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."]),
    (',', [".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."]),
    ('-', [".....", ".....", ".....", ".###.", ".....", ".....", "....."]),
    ('+', [".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."]),
    (':', [".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."]),
    ('=', [".....", ".....", "#####", ".....", "#####", ".....", "....."]),
    ('(', ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."]),
    (')', [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."]),
    ('/', ["....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."]),
    ('_', [".....", ".....", ".....", ".....", ".....", ".....", "#####"]),
    ('%', ["##..#", "##..#", "...#.", "..#..", ".#...", "#..##", "#..##"]),
    ('?', [".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."]),
];

/// Read back a grid written by [`save_grid`] (any number of columns, any scale from 1 to 16) or a
/// single image of `side × side` pixels: returns (pixels, images, channels), each image as 8-bit
/// planes (C, side, side), C = 1 for a grey PNG and 3 otherwise. The empty cells that end a
/// partly filled last row are skipped.
pub fn read_grid(path: &Path, side: usize) -> Result<(Vec<u8>, usize, usize)> {
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let c = if img.color().has_color() { 3 } else { 1 };
    let (width, height) = (img.width() as usize, img.height() as usize);
    let px = if c == 1 {
        img.into_luma8().into_raw()
    } else {
        img.into_rgb8().into_raw()
    };
    let at = |x: usize, y: usize, k: usize| px[(y * width + x) * c + k];
    let gap = GRID_GAP;
    for s in 1..=16 {
        let cell = side * s;
        if cell == 0 || !(width + gap).is_multiple_of(cell + gap) || !(height + gap).is_multiple_of(cell + gap) {
            continue;
        }
        let (cols, rows) = ((width + gap) / (cell + gap), (height + gap) / (cell + gap));
        // A grid of this scale has nearest-neighbour blocks in its cells and grey gaps between.
        let in_gap = |x: usize, y: usize| x % (cell + gap) >= cell || y % (cell + gap) >= cell;
        let consistent = (0..height).all(|y| {
            (0..width).all(|x| {
                (0..c).all(|k| {
                    if in_gap(x, y) {
                        at(x, y, k) == GRID_GAP_VALUE
                    } else {
                        let (x0, y0) = (x - x % (cell + gap) % s, y - y % (cell + gap) % s);
                        at(x, y, k) == at(x0, y0, k)
                    }
                })
            })
        });
        if !consistent {
            continue;
        }
        let mut out = Vec::with_capacity(cols * rows * c * side * side);
        let mut n = 0;
        for r in 0..rows {
            for col in 0..cols {
                let (x0, y0) = (col * (cell + gap), r * (cell + gap));
                let mut planes = vec![0u8; c * side * side];
                for y in 0..side {
                    for x in 0..side {
                        for k in 0..c {
                            planes[k * side * side + y * side + x] = at(x0 + x * s, y0 + y * s, k);
                        }
                    }
                }
                let empty = r == rows - 1 && planes.iter().all(|&v| v == GRID_GAP_VALUE);
                if !empty {
                    out.extend_from_slice(&planes);
                    n += 1;
                }
            }
        }
        return Ok((out, n, c));
    }
    anyhow::bail!(
        "{}: a {width}×{height} picture is neither one {side}×{side} image nor a grid of them as \
         `ddpm-gpu sample` writes (cells of {side}·s pixels, s = 1..16, 2-pixel grey gaps)",
        path.display()
    )
}
