//! Pictures as SVG (plotters, SVG backend only): the dirty rate over time against the
//! link, the dirty-set growth curve, the link x downtime grid from `predict`, and a pass
//! timeline. These functions draw data they are given; reading and detecting the input is
//! `commands::plot`. Values that are not finite are dropped before drawing, so no `NaN`
//! reaches the SVG.
use anyhow::{anyhow, Result};
use plotters::{coord::types::RangedCoordf64, prelude::*};

/// A chart with f64 axes on an SVG picture.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

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

/// The drawing area of one SVG picture.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draws a line chart into an SVG document.
pub fn line_chart(c: &LineChart) -> Result<String> {
    svg(SIZE, |root| draw_lines(root, c))
}

/// An SVG document of `size`, drawn by `draw` on a white background.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// A chart with its caption, axes and axis names on `area`.
fn frame<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    (xr, yr): (std::ops::Range<f64>, std::ops::Range<f64>),
    (x_desc, y_desc): (&str, &str),
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(xr, yr)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The legend box of a chart's named series.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// A legend mark: a short line in `col`.
fn line_mark(col: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col)
}

/// The lines of `c`, their points, its horizontal line and the legend, on `area`.
fn draw_lines(area: &Area, c: &LineChart) -> Result<()> {
    let (xr, yr) = bounds(c);
    let mut chart = frame(area, c.title, (xr.clone(), yr), (c.x_desc, c.y_desc))?;
    for (i, s) in c.series.iter().enumerate() {
        let col = COLOURS[i % COLOURS.len()];
        let pts = finite(&s.points);
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(line_mark(col));
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
            .legend(line_mark(BLACK));
    }
    legend(&mut chart)
}

/// One pass of a timeline: start, duration (seconds), bytes sent.
#[derive(Clone, Debug)]
pub struct PassBar {
    pub index: u32,
    pub start_s: f64,
    pub duration_s: f64,
    pub bytes: f64,
}

impl PassBar {
    fn is_finite(&self) -> bool {
        self.start_s.is_finite() && self.duration_s.is_finite() && self.bytes.is_finite()
    }
}

/// A pass timeline: one bar per pass, its width the pass's duration, its height the
/// bytes it sent.
pub fn pass_timeline(title: &str, passes: &[PassBar]) -> Result<String> {
    svg(SIZE, |root| draw_timeline(root, title, passes, &[]))
}

/// The passes of a migration beside the model's: the timeline (predicted passes as
/// outlines over the real ones), then bytes and duration per pass, one line each.
pub fn passes_compared(title: &str, actual: &[PassBar], predicted: &[PassBar]) -> Result<String> {
    svg((SIZE.0, SIZE.1 * 2), |root| {
        let (top, bottom) = root.split_vertically(SIZE.1);
        let (left, right) = bottom.split_horizontally(SIZE.0 / 2);
        draw_timeline(&top, title, actual, predicted)?;
        let per_pass = |f: fn(&PassBar) -> f64, bars: &[PassBar]| -> Vec<(f64, f64)> {
            bars.iter().map(|p| (p.index as f64, f(p))).collect()
        };
        for (area, title, what, f) in [
            (
                &left,
                "Bytes sent per pass",
                "bytes sent",
                (|p: &PassBar| p.bytes) as fn(&PassBar) -> f64,
            ),
            (&right, "Duration per pass", "duration, s", |p: &PassBar| {
                p.duration_s
            }),
        ] {
            let c = LineChart {
                title,
                x_desc: "pass",
                y_desc: what,
                series: vec![
                    Series {
                        name: "actual".into(),
                        points: per_pass(f, actual),
                    },
                    Series {
                        name: "predicted".into(),
                        points: per_pass(f, predicted),
                    },
                ],
                hline: None,
            };
            draw_lines(area, &c)?;
        }
        Ok(())
    })
}

/// The timeline of `passes` (filled bars) and of `predicted` (outlines) on `area`.
fn draw_timeline(
    area: &Area,
    title: &str,
    passes: &[PassBar],
    predicted: &[PassBar],
) -> Result<()> {
    let ok: Vec<&PassBar> = passes.iter().filter(|p| p.is_finite()).collect();
    let pred: Vec<&PassBar> = predicted.iter().filter(|p| p.is_finite()).collect();
    let all = || ok.iter().chain(pred.iter());
    let end = all().map(|p| p.start_s + p.duration_s).fold(0.0, f64::max);
    let top = all().map(|p| p.bytes).fold(0.0, f64::max);
    let ranges = (0.0..end.max(1e-3) * 1.05, 0.0..top.max(1.0) * 1.1);
    let mut chart = frame(area, title, ranges, ("time, s", "bytes sent in the pass"))?;
    let bar = |p: &PassBar| [(p.start_s, 0.0), (p.start_s + p.duration_s, p.bytes)];
    chart
        .draw_series(ok.iter().map(|p| {
            let col = COLOURS[p.index as usize % COLOURS.len()];
            Rectangle::new(bar(p), col.mix(0.7).filled())
        }))
        .map_err(err)?
        .label("pass (width: duration, height: bytes)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], COLOURS[1].filled()));
    if !pred.is_empty() {
        chart
            .draw_series(
                pred.iter()
                    .map(|p| Rectangle::new(bar(p), BLACK.stroke_width(2))),
            )
            .map_err(err)?
            .label("predicted pass (outline)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.stroke_width(2)));
    }
    legend(&mut chart)
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

    #[test]
    fn compared_passes_draw_both_series_without_nan() {
        let bar = |index, start_s, duration_s, bytes| PassBar {
            index,
            start_s,
            duration_s,
            bytes,
        };
        let actual = [bar(1, 0.0, 2.0, 3e9), bar(2, 2.0, 0.5, f64::NAN)];
        let predicted = [bar(1, 0.0, 1.8, 2.8e9), bar(2, 1.8, 0.6, 5e8)];
        let svg = passes_compared("t", &actual, &predicted).unwrap();
        assert!(!svg.contains("NaN"));
        for w in [
            "actual",
            "predicted",
            "Bytes sent per pass",
            "Duration per pass",
        ] {
            assert!(svg.contains(w), "{w}");
        }
    }
}
