//! Pictures as SVG (plotters, SVG backend only): the dirty rate over time against the
//! link, the dirty-set growth curve, the link x downtime grid from `predict`, and a pass
//! timeline. These functions draw data they are given; reading and detecting the input is
//! `commands::plot`. Values that are not finite are dropped before drawing, so no `NaN`
//! reaches the SVG.
use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Size of every picture, pixels.
const SIZE: (u32, u32) = (900, 540);

/// The colours of successive series.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart: title, axis names, series; `hline` is a named horizontal line (a link's
/// goodput against a dirty rate).
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: Vec<Series>,
    pub hline: Option<(String, f64)>,
}

/// Keeps finite points only.
fn finite(p: &[(f64, f64)]) -> Vec<(f64, f64)> {
    p.iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// The axis ranges that hold every point and the line, with a margin above.
fn bounds(c: &LineChart) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let pts: Vec<(f64, f64)> = c.series.iter().flat_map(|s| finite(&s.points)).collect();
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if let Some((_, h)) = c.hline.as_ref().filter(|(_, h)| h.is_finite()) {
        y1 = y1.max(*h);
    }
    if pts.is_empty() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    (x0..x1, 0.0..y1)
}

/// Draws a line chart into an SVG document.
pub fn line_chart(c: &LineChart) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (xr, yr) = bounds(c);
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(xr.clone(), yr)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(c.x_desc)
            .y_desc(c.y_desc)
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        for (i, s) in c.series.iter().enumerate() {
            let col = COLOURS[i % COLOURS.len()];
            let pts = finite(&s.points);
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))
                .map_err(err)?;
        }
        if let Some((name, h)) = c.hline.as_ref().filter(|(_, h)| h.is_finite()) {
            let line = vec![(xr.start, *h), (xr.end, *h)];
            chart
                .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One pass of a timeline: start, duration (seconds), bytes sent.
pub struct PassBar {
    pub index: u32,
    pub start_s: f64,
    pub duration_s: f64,
    pub bytes: f64,
}

/// A pass timeline: one bar per pass, its width the pass's duration, its height the
/// bytes it sent.
pub fn pass_timeline(title: &str, passes: &[PassBar]) -> Result<String> {
    let ok: Vec<&PassBar> = passes
        .iter()
        .filter(|p| p.start_s.is_finite() && p.duration_s.is_finite() && p.bytes.is_finite())
        .collect();
    let end = ok
        .iter()
        .map(|p| p.start_s + p.duration_s)
        .fold(0.0, f64::max);
    let top = ok.iter().map(|p| p.bytes).fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..end.max(1e-3) * 1.05, 0.0..top.max(1.0) * 1.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time, s")
            .y_desc("bytes sent in the pass")
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(ok.iter().map(|p| {
                let col = COLOURS[p.index as usize % COLOURS.len()];
                Rectangle::new(
                    [(p.start_s, 0.0), (p.start_s + p.duration_s, p.bytes)],
                    col.mix(0.7).filled(),
                )
            }))
            .map_err(err)?
            .label("pass (width: duration, height: bytes)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], COLOURS[1].filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A number with a binary suffix for axis labels (12.5 Gi, 300 Mi).
fn short(v: f64) -> String {
    let a = v.abs();
    let (d, s) = if a >= 1073741824.0 {
        (1073741824.0, "Gi")
    } else if a >= 1048576.0 {
        (1048576.0, "Mi")
    } else if a >= 1024.0 {
        (1024.0, "Ki")
    } else {
        (1.0, "")
    };
    let n = format!("{:.2}", v / d);
    let n = n.trim_end_matches('0').trim_end_matches('.');
    format!("{n}{s}")
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_has_no_nan() {
        let svg = line_chart(&LineChart {
            title: "t",
            x_desc: "x",
            y_desc: "y",
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
            }],
            hline: Some(("link".into(), 2.0)),
        })
        .unwrap();
        assert!(svg.starts_with("<svg") && !svg.contains("NaN"), "{svg}");
    }
}
