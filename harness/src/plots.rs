//! Plots with plotters, in one place: the bundled font (no system font library), and each plot drawn once as
//! PNG and once as SVG.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the bundled font could not be read; plots will have no text");
        }
    });
}

/// A plot drawn: its title and the PNG's path (the SVG is beside it).
pub struct Drawn {
    pub title: String,
    pub png: PathBuf,
}

pub fn color(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// Draws `f` once into a PNG and once into an SVG named `name` in `dir`.
pub fn both(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    title: &str,
    f: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<()> + Copy,
    g: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<Drawn> {
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        f(&root).with_context(|| format!("cannot draw {}", png.display()))?;
        root.present().map_err(|e| anyhow!("cannot write {}: {e:?}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        g(&root).with_context(|| format!("cannot draw {}", svg.display()))?;
        root.present().map_err(|e| anyhow!("cannot write {}: {e:?}", svg.display()))?;
    }
    Ok(Drawn { title: title.to_string(), png })
}

macro_rules! plot {
    ($dir:expr, $name:expr, $size:expr, $title:expr, |$root:ident| $body:expr) => {
        $crate::plots::both($dir, $name, $size, $title, |$root: &DrawingArea<BitMapBackend, Shift>| $body, |$root: &DrawingArea<SVGBackend, Shift>| $body)
    };
}
pub(crate) use plot;

pub fn e<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Every plot's legend: a light box at `position`, text at `size`.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    size: u32,
) -> Result<()> {
    chart.configure_series_labels().position(position).background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", size)).draw().map_err(e)
}
