//! `migtrace plot FILE -o out.svg`: draws what migtrace wrote, detecting which it is:
//! - a `watch --json` log (JSON lines): the dirty rate over time, against `--link`'s
//!   goodput when given (`--kind growth`: the growth curve of its summary);
//! - a watch profile (`--profile-out`): the dirty-set growth curve;
//! - `predict --json`: the link x downtime grid (total time per link, one line per
//!   downtime target; `--kind passes`: the modelled passes of the first cell);
//! - a passes report (`{"passes": [{"index", "start_s", "duration_s", "bytes"}]}`): the
//!   pass timeline.
//!
//! Asking for a picture the input does not hold is an [`Error::Usage`].
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::{
    error::Error,
    output::plot::{line_chart, pass_timeline, passes_compared, LineChart, PassBar, Series},
    units::parse_link,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlotKind {
    /// Dirty rate over time (a watch --json log).
    Rate,
    /// Dirty-set growth: unique pages against the window (a profile or a watch log).
    Growth,
    /// Total migration time per link and downtime target (predict --json).
    Grid,
    /// Pass timeline (a passes report, or predict's modelled passes).
    Passes,
}

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// A watch --json log, a profile, predict --json output or a passes report.
    pub file: PathBuf,
    /// Where to write the SVG.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Which picture; default: the one the input is for.
    #[arg(long, value_enum)]
    pub kind: Option<PlotKind>,
    /// A link to draw the rate against, e.g. 10g (bits per second; drawn in bytes/s).
    #[arg(long, value_parser = parse_link)]
    pub link: Option<f64>,
}

/// What the input file is.
enum Input {
    WatchLog(Vec<Value>),
    Profile(Value),
    Predict(Value),
    Passes(Value),
}

/// The largest input `plot` reads: a day of 1 s `watch --json` lines is about 90 MB.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// The largest magnitude of a number `plot` draws: 1e18 (an exabyte, or 3e10 years in
/// seconds). Beyond it nothing migtrace wrote can be, and an axis from -1e308 to 1e308 has
/// no finite length: the tick search spun forever on it.
pub const MAX_ABS_VALUE: f64 = 1e18;

pub fn run(a: PlotArgs) -> Result<()> {
    let input = read_input(&a.file)?;
    let svg = render(&input, a.kind, a.link)?;
    crate::files::replace(&a.output, svg.as_bytes())
        .with_context(|| format!("writing {}", a.output.display()))
}

/// Reads and recognises the input: a regular file of at most [`MAX_INPUT_BYTES`], every
/// number in it within [`MAX_ABS_VALUE`].
fn read_input(path: &std::path::Path) -> Result<Input> {
    use crate::files::{read_capped, ReadError};
    let name = crate::units::clean(&path.display().to_string()).into_owned();
    let bytes = read_capped(path, MAX_INPUT_BYTES).map_err(|e| {
        Error::Input(match e {
            ReadError::Io(e) => format!("{name}: {e}"),
            ReadError::NotAFile(kind) => format!("{name} is {kind}, not a regular file"),
            ReadError::TooLarge => format!(
                "{name} is larger than {} MiB, the most plot reads",
                MAX_INPUT_BYTES >> 20
            ),
        })
    })?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::Input(format!("{name}: not UTF-8 text")))?;
    let input = detect(&text).map_err(|m| Error::Input(format!("{name}: {m}")))?;
    let values: Vec<&Value> = match &input {
        Input::WatchLog(l) => l.iter().collect(),
        Input::Profile(v) | Input::Predict(v) | Input::Passes(v) => vec![v],
    };
    if let Some(x) = values.into_iter().find_map(out_of_range) {
        return Err(Error::Input(format!(
            "{name}: holds the number {x:e}, beyond ±{MAX_ABS_VALUE:e}: not something migtrace wrote"
        ))
        .into());
    }
    Ok(input)
}

/// The first number in `v` whose magnitude is beyond [`MAX_ABS_VALUE`].
fn out_of_range(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|x| x.abs() > MAX_ABS_VALUE),
        Value::Array(a) => a.iter().find_map(out_of_range),
        Value::Object(o) => o.values().find_map(out_of_range),
        _ => None,
    }
}

/// Why a text is none of the inputs `plot` draws.
#[derive(Debug, thiserror::Error)]
enum NotAnInput {
    #[error("not a migtrace profile, predict --json output, passes report or watch --json log")]
    UnknownJson,
    #[error("not JSON or JSON lines: {0}")]
    NotJson(serde_json::Error),
    #[error("JSON lines without an interval record: not a watch --json log")]
    NoInterval,
}

/// Tells the inputs apart by their `format` field, their `passes`, or JSON lines.
fn detect(text: &str) -> Result<Input, NotAnInput> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return match v["format"].as_str() {
            Some("migtrace-profile") => Ok(Input::Profile(v)),
            Some("migtrace-predict") => Ok(Input::Predict(v)),
            _ if v["passes"].is_array() => Ok(Input::Passes(v)),
            _ if v["type"].is_string() => Ok(Input::WatchLog(vec![v])),
            _ => Err(NotAnInput::UnknownJson),
        };
    }
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(NotAnInput::NotJson)?;
    if lines.iter().any(|l| l["type"] == "interval") {
        Ok(Input::WatchLog(lines))
    } else {
        Err(NotAnInput::NoInterval)
    }
}

fn render(input: &Input, kind: Option<PlotKind>, link: Option<f64>) -> Result<String> {
    let unavailable = |k: PlotKind, what: &str| -> anyhow::Error {
        Error::Usage(format!("--kind {k:?}: not available from {what}").to_lowercase()).into()
    };
    match (input, kind) {
        (Input::WatchLog(l), None | Some(PlotKind::Rate)) => rate(l, link),
        (Input::WatchLog(l), Some(PlotKind::Growth)) => {
            let s = l
                .iter()
                .find(|v| v["type"] == "summary")
                .ok_or_else(|| Error::Input("the log has no summary, so no growth curve".into()))?;
            growth(s)
        }
        (Input::Profile(p), None | Some(PlotKind::Growth)) => growth(p),
        (Input::Predict(p), None | Some(PlotKind::Grid)) => grid(p),
        (Input::Predict(p), Some(PlotKind::Passes)) => {
            let cell = &p["results"][0];
            passes(
                "Modelled pre-copy passes (predict, first cell)",
                &cell["passes"],
            )
        }
        (Input::Passes(p), None | Some(PlotKind::Passes)) => passes_report(p),
        (Input::WatchLog(_), Some(k)) => Err(unavailable(k, "a watch log")),
        (Input::Profile(_), Some(k)) => Err(unavailable(k, "a profile")),
        (Input::Predict(_), Some(k)) => Err(unavailable(k, "predict output")),
        (Input::Passes(_), Some(k)) => Err(unavailable(k, "a passes report")),
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The dirty rate of each interval, against the link's goodput when given.
fn rate(lines: &[Value], link_bits: Option<f64>) -> Result<String> {
    let mut ours = Vec::new();
    let mut qemu = Vec::new();
    for l in lines {
        match l["type"].as_str() {
            Some("interval") if l["partial"] != true => {
                ours.push((num(&l["t_s"]), num(&l["dirty_bytes_per_sec"])))
            }
            Some("qemu_dirty_rate") => qemu.push((num(&l["t_s"]), num(&l["bytes_per_sec"]))),
            _ => {}
        }
    }
    let mut series = vec![Series {
        name: "dirty rate (migtrace), bytes/s".into(),
        points: ours,
    }];
    if !qemu.is_empty() {
        series.push(Series {
            name: "QEMU calc-dirty-rate, bytes/s".into(),
            points: qemu,
        });
    }
    line_chart(&LineChart {
        title: "Dirty rate over time",
        x_desc: "time, s",
        y_desc: "bytes/s",
        series,
        hline: link_bits.map(|b| (format!("link {:.1} Gbit/s, bytes/s", b / 1e9), b / 8.0)),
    })
}

/// Unique pages dirtied against the window length.
fn growth(v: &Value) -> Result<String> {
    let points: Vec<(f64, f64)> = v["growth"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|p| (num(&p["window_s"]), num(&p["unique_pages"])))
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        return Err(Error::Input("no growth curve in the input".into()).into());
    }
    line_chart(&LineChart {
        title: "Dirty-set growth",
        x_desc: "window, s",
        y_desc: "unique pages dirtied",
        series: vec![Series {
            name: "unique pages".into(),
            points,
        }],
        hline: None,
    })
}

/// Total time per link, one line per downtime target; cells that do not complete are
/// left out (the line stops), and said so in the series name.
fn grid(p: &Value) -> Result<String> {
    let cells = p["results"].as_array().cloned().unwrap_or_default();
    let mut downtimes: Vec<f64> = cells.iter().map(|c| num(&c["downtime_limit_s"])).collect();
    downtimes.sort_by(f64::total_cmp);
    downtimes.dedup();
    let series = downtimes
        .iter()
        .map(|&dt| {
            let mine: Vec<&Value> = cells
                .iter()
                .filter(|c| num(&c["downtime_limit_s"]) == dt)
                .collect();
            let done: Vec<(f64, f64)> = mine
                .iter()
                .filter(|c| matches!(c["ending"].as_str(), Some("converged" | "forced-stop")))
                .map(|c| (num(&c["link_bits_per_sec"]) / 1e9, num(&c["total_time_s"])))
                .collect();
            let missing = mine.len() - done.len();
            let mut name = format!("downtime {} ms: total time, s", (dt * 1000.0).round());
            if missing > 0 {
                name += &format!(" ({missing} links do not complete)");
            }
            Series { name, points: done }
        })
        .collect();
    line_chart(&LineChart {
        title: "Predicted total migration time by link",
        x_desc: "link, Gbit/s",
        y_desc: "total time, s",
        series,
        hline: None,
    })
}

/// The pass timeline; a pass without `start_s` starts when the one before ended.
fn passes(title: &str, v: &Value) -> Result<String> {
    pass_timeline(title, &bars(v)?)
}

/// The passes of `v` as bars; a pass without `start_s` starts when the one before ended.
fn bars(v: &Value) -> Result<Vec<PassBar>> {
    let list = v
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::Input("no passes in the input".into()))?;
    let mut t = 0.0;
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let start = p["start_s"].as_f64().unwrap_or(t);
            let d = num(&p["duration_s"]);
            t = start + d;
            PassBar {
                index: p["index"].as_u64().unwrap_or(i as u64 + 1) as u32,
                start_s: start,
                duration_s: d,
                bytes: num(&p["bytes"]),
            }
        })
        .collect())
}

/// A passes report: with a back-test (`passes --profile`), the predicted passes beside the
/// real ones; else the timeline.
fn passes_report(p: &Value) -> Result<String> {
    let actual = bars(&p["passes"])?;
    let pairs = p["backtest"]["pairs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The model's passes follow each other from where the real first pass started.
    let mut t = actual.first().map_or(0.0, |b| b.start_s);
    let predicted: Vec<PassBar> = pairs
        .iter()
        .filter_map(|x| {
            let d = x["predicted_duration_s"].as_f64()?;
            let b = PassBar {
                index: x["index"].as_u64()? as u32,
                start_s: t,
                duration_s: d,
                bytes: x["predicted_bytes"].as_f64()?,
            };
            t += d;
            Some(b)
        })
        .collect();
    if predicted.is_empty() {
        return pass_timeline("Pre-copy passes", &actual);
    }
    passes_compared(
        "Pre-copy passes: real (bars) and predicted (outlines)",
        &actual,
        &predicted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_told_apart() {
        assert!(matches!(
            detect(r#"{"format":"migtrace-profile","growth":[]}"#),
            Ok(Input::Profile(_))
        ));
        assert!(matches!(
            detect(r#"{"format":"migtrace-predict","results":[]}"#),
            Ok(Input::Predict(_))
        ));
        assert!(matches!(
            detect(r#"{"passes":[{"duration_s":1}]}"#),
            Ok(Input::Passes(_))
        ));
        let log = "{\"type\":\"start\"}\n{\"type\":\"interval\",\"t_s\":1}\n";
        assert!(matches!(detect(log), Ok(Input::WatchLog(l)) if l.len() == 2));
        assert!(detect("{\"type\":\"start\"}\n{\"x\":1}\n").is_err());
        assert!(detect("not json").is_err());
    }

    #[test]
    fn a_kind_the_input_lacks_is_a_usage_error() {
        let p = detect(r#"{"format":"migtrace-profile","growth":[]}"#).unwrap();
        let e = render(&p, Some(PlotKind::Passes), None).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
    }

    /// A real `passes --json` report with its back-test (the model's prediction for the
    /// migration): the predicted passes are drawn beside the real ones.
    #[test]
    fn a_backtested_passes_report_draws_the_prediction_beside() {
        let r = crate::output::passes::tests::report();
        let text = serde_json::to_string(&crate::output::passes::json(&r)).unwrap();
        let input = detect(&text).unwrap();
        let svg = render(&input, None, None).unwrap();
        assert!(!svg.contains("NaN"));
        for w in [
            "predicted pass",
            "Bytes sent per pass",
            "Duration per pass",
            "actual",
        ] {
            assert!(svg.contains(w), "{w} missing");
        }
    }

    /// Issue 17's inputs: `plot` spun forever on t_s = ±1e308, took 1.5 GB of /dev/zero,
    /// and blocked on a FIFO. Each is now one Input error (exit 2).
    #[test]
    fn hostile_inputs_are_refused() {
        let d = std::env::temp_dir().join(format!("migtrace-plot-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let huge = d.join("huge.jsonl");
        std::fs::write(
            &huge,
            "{\"type\":\"interval\",\"t_s\":-1e308,\"dirty_bytes_per_sec\":1}\n{\"type\":\"interval\",\"t_s\":1e308,\"dirty_bytes_per_sec\":1}\n",
        )
        .unwrap();
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (p, want) in [
            (huge.as_path(), "beyond"),
            (std::path::Path::new("/dev/zero"), "a character device"),
            (fifo.as_path(), "a FIFO"),
        ] {
            let e = read_input(p).err().expect("refused");
            assert_eq!(crate::error::exit_code(&e), 2, "{e}");
            assert!(e.to_string().contains(want), "{}: {e}", p.display());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
