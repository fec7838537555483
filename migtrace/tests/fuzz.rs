//! Fuzzing of what `migtrace predict` reads from users: the unit parser (every flag) and the
//! profile reader, with generated hostile input (random bytes and unicode, huge and tiny
//! numbers, NaN/inf spellings, exponents, BOMs, deep nesting, huge arrays, wrong types).
//!
//! Every property holds for any input: no panic; an error is one short line without
//! control characters; an accepted value is finite and within its documented bound
//! (`docs/reliability.md`); what is printed parses back to (about) the same value; a "no
//! unit" hint suggests only spellings that are then accepted; an accepted profile passes
//! the bounds again, round-trips through its text, and predicts without panicking.
//!
//! The ordinary tests run a few hundred cases each (`PROPTEST_CASES` changes that; failures
//! are kept in `proptest-regressions/fuzz.txt` and replayed first). The `#[ignore]`d
//! `fuzz_for_a_time_budget` runs fresh cases until `MIGTRACE_FUZZ_SECS` (default 60) have
//! passed; `cargo xtask test` runs it. A failure it finds becomes a named regression test
//! at the end of this file.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{json, Value};

use migtrace::commands::predict::{prepare, PredictOpts};
use migtrace::model::grid;
use migtrace::output::predict as predict_out;
use migtrace::profile::{limits, Profile};
use migtrace::units::{self, Range, UnitError};

/// Where failing cases are kept and replayed first (relative to the package directory, the
/// working directory of `cargo test`).
const REGRESSIONS: &str = "proptest-regressions/fuzz.txt";

// ---- the unit parser ----

type Parse = fn(&str) -> Result<f64, UnitError>;
type Show = fn(f64) -> String;

/// Each bounded parser, its range, and how the output prints its values.
fn parsers() -> Vec<(&'static str, Parse, Range, Show)> {
    vec![
        ("link", units::parse_link, units::LINK, units::fmt_link),
        ("mem", units::parse_mem, units::MEM, units::fmt_bytes),
        ("rate", units::parse_byte_rate, units::RATE, |v| {
            format!("{}/s", units::fmt_bytes(v))
        }),
        (
            "dirty-limit",
            |s| units::parse_byte_rate_in(s, &units::DIRTY_LIMIT),
            units::DIRTY_LIMIT,
            |v| format!("{}/s", units::fmt_bytes(v)),
        ),
        (
            "downtime",
            |s| units::parse_secs_in(s, &units::DOWNTIME),
            units::DOWNTIME,
            units::fmt_secs,
        ),
        (
            "deadline",
            |s| units::parse_secs_in(s, &units::DEADLINE),
            units::DEADLINE,
            units::fmt_secs,
        ),
    ]
}

/// The spellings a message suggests ("write e.g. 10g or 10m (...)").
fn suggestions(msg: &str) -> Vec<String> {
    let Some(i) = msg
        .find("write e.g. ")
        .map(|i| i + 11)
        .or_else(|| msg.find(": write ").map(|i| i + 8))
    else {
        return Vec::new();
    };
    let rest = &msg[i..];
    let end = rest.find(" (").unwrap_or(rest.len());
    rest[..end].split(" or ").map(str::to_string).collect()
}

/// One line, short, no control characters.
fn one_line(what: &str, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.is_empty(), "{what}: empty message");
    prop_assert!(
        !msg.chars().any(char::is_control),
        "{what}: control character in {msg:?}"
    );
    prop_assert!(msg.len() < 600, "{what}: {} bytes: {msg:?}", msg.len());
    Ok(())
}

/// How far printing may move a value: 2 decimals of the unit, whole ms, whole s, 0.1 h;
/// plus the float error of a value on the rounding edge (32.055 is stored as 32.05499...,
/// prints "32.05" and reads back 0.005 + 3e-15 away: a fuzz find).
fn tolerance(name: &str, v: f64) -> f64 {
    print_tolerance(name, v) + 1e-9 * v.abs().max(1.0)
}

fn print_tolerance(name: &str, v: f64) -> f64 {
    match name {
        "downtime" | "deadline" if v < 1.0 => 0.0005,
        "downtime" | "deadline" if v < 120.0 => 0.005,
        "downtime" | "deadline" if v < 7200.0 => 0.5,
        "downtime" | "deadline" => 180.0,
        _ => (v * 0.006).max(0.5),
    }
}

fn check_unit_input(s: &str) -> Result<(), TestCaseError> {
    for (name, parse, range, fmt) in parsers() {
        match parse(s) {
            Ok(v) => {
                prop_assert!(v.is_finite() && range.contains(v), "{name} {s:?} -> {v}");
                let shown = fmt(v);
                let back = parse(&shown);
                prop_assert!(
                    back.is_ok(),
                    "{name}: {s:?} -> {v} printed {shown:?}: {back:?}"
                );
                let back = back.unwrap_or_default();
                prop_assert!(
                    (back - v).abs() <= tolerance(name, v),
                    "{name}: {v} printed {shown:?} reads {back}"
                );
            }
            Err(e) => {
                let msg = e.to_string();
                one_line(name, &msg)?;
                for hint in suggestions(&msg) {
                    prop_assert!(
                        parse(&hint).is_ok(),
                        "{name} {s:?}: hint {hint:?} rejected: {msg}"
                    );
                }
            }
        }
    }
    if let Err(e) = units::parse_duration(s) {
        one_line("duration", &e.to_string())?;
    }
    Ok(())
}

/// Inputs that look like what people type, with hostile twists, and arbitrary text.
fn unit_inputs() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        "[0-9]{1,5}",
        "[0-9]{0,4}\\.[0-9]{0,4}",
        "[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,4}",
        "[0-9]{20,400}",
        "0\\.0{10,400}[1-9]",
        prop::sample::select(vec![
            "nan", "NaN", "inf", "-inf", "+inf", "infinity", "-0", "0", "0.0", "00", "١٠", "1_000",
            "0x10", "1e", ".e1", "1.", ".5", "1..2", "--1", "1,5", "½", "1e+", "1E-",
        ])
        .prop_map(str::to_string),
    ];
    let unit = prop_oneof![
        prop::sample::select(vec![
            "", "g", "G", "m", "k", "t", "T", "p", "P", "e", "gbit", "Gbit/s", "Gb/s", "gbps",
            "GbE", "GB/s", "GiB/s", "GiBps", "MiB", "GiB", "GB", "B", "b", "Gb", "PiB", "EiB",
            "KiB", "s", "ms", "us", "ns", "µs", "min", "h", "d", "m30s", "%", "B/s", "MB/s", "/s",
            "ps", "sec", "days", "iB", "g/s", "Pbit",
        ])
        .prop_map(str::to_string),
        "[a-zA-Zµ/ ]{0,6}",
    ];
    let around = || prop::sample::select(vec!["", " ", "\t", "\u{feff}", "-", "+", "\n"]);
    let typed = (around(), num, around(), unit, around())
        .prop_map(|(a, n, b, u, c)| format!("{a}{n}{b}{u}{c}"));
    prop_oneof![
        6 => typed,
        1 => any::<String>(),
        1 => "\\PC{0,12}",
        1 => prop::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

// ---- every flag, through the real argument checks ----

type Set = fn(&mut PredictOpts, String);

/// Each flag, how to set it, and the other flags it needs.
fn flags() -> Vec<(&'static str, Set)> {
    vec![
        ("--link", |o, v| o.link = vec![v]),
        ("--mem", |o, v| o.mem = Some(v)),
        ("--wws", |o, v| o.wws = Some(v)),
        ("--dirty-rate", |o, v| o.dirty_rate = Some(v)),
        ("--downtime", |o, v| o.downtime = vec![v]),
        ("--deadline", |o, v| o.deadline = Some(v)),
        ("--efficiency", |o, v| o.efficiency = Some(v)),
        ("--busy", |o, v| o.busy = Some(v)),
        ("--zero-share", |o, v| o.zero_share = Some(v)),
        ("--vcpus", |o, v| o.vcpus = Some(v)),
        ("--max-passes", |o, v| o.max_passes = Some(v)),
        ("--throttle-pct", |o, v| {
            o.throttle = migtrace::commands::predict::ThrottleArg::Sdps;
            o.throttle_pct = Some(v)
        }),
        ("--dirty-limit", |o, v| {
            o.throttle = migtrace::commands::predict::ThrottleArg::DirtyLimit;
            o.dirty_limit = Some(v)
        }),
    ]
}

/// A valid base: 64 PiB of memory so that any accepted `--wws` fits under it.
fn base_opts() -> PredictOpts {
    let mut o = PredictOpts::for_profile(PathBuf::new(), "10g");
    o.profile = None;
    o.mem = Some("64PiB".into());
    o.dirty_rate = Some("1GB/s".into());
    o
}

fn check_flag(flag: usize, value: &str) -> Result<(), TestCaseError> {
    let (name, set) = flags()[flag % flags().len()];
    let mut o = base_opts();
    set(&mut o, value.to_string());
    let Err(e) = prepare(&o) else {
        return Ok(());
    };
    let msg = e.to_string();
    one_line(name, &msg)?;
    prop_assert!(
        migtrace::error::exit_code(&e) == 2,
        "{name} {value:?}: exit 1: {msg}"
    );
    for hint in suggestions(&msg) {
        let mut o = base_opts();
        set(&mut o, hint.clone());
        let r = prepare(&o);
        prop_assert!(
            r.is_ok(),
            "{name} {value:?}: hint {hint:?} is rejected: {:?}",
            r.err()
        );
    }
    Ok(())
}

// ---- the profile reader ----

fn valid_profile() -> Value {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles/busy-vm.json"),
    )
    .expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// JSON pointers to every value in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| pointers(x, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(1),
            json!(3000),
            json!(4096),
            json!(1u64 << 30),
            json!(1u64 << 40),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e308),
            json!(-1e308),
            json!(5e-324),
            json!(0.5),
            json!(1.03),
            json!("NaN"),
            json!("inf"),
            json!("\u{1b}[2J\nFAKE\r"),
            json!("\u{202e}gnp"),
            json!(""),
        ]),
        any::<f64>().prop_filter_map("finite", |f| f.is_finite().then(|| json!(f))),
        any::<u64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid profile with up to three of its values replaced, scaled or removed, then maybe
/// a BOM, whitespace, or a cut.
fn mutated_profile() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0..4u8,
        hostile_value(),
        prop::sample::select(vec![-1.0, 0.0, 1e-300, 0.5, 0.97, 1.03, 2.0, 1e6, 1e300]),
    );
    (
        prop::collection::vec(edit, 1..4),
        prop::sample::select(vec!["", "\u{feff}", " \n", "\u{feff}\u{feff}"]),
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
    )
        .prop_map(|(edits, prefix, cut)| {
            let mut v = valid_profile();
            for (at, how, value, factor) in edits {
                let mut all = Vec::new();
                pointers(&v, String::new(), &mut all);
                let ptr = at.get(&all).clone();
                apply(&mut v, &ptr, how, value, factor);
            }
            let text = format!("{prefix}{v}");
            match cut {
                Some(i) => text
                    .chars()
                    .take(i.index(text.chars().count() + 1))
                    .collect(),
                None => text,
            }
        })
}

fn apply(v: &mut Value, ptr: &str, how: u8, value: Value, factor: f64) {
    if ptr.is_empty() {
        return;
    }
    let (parent, key) = ptr.rsplit_once('/').unwrap_or(("", ptr));
    match (how, v.pointer_mut(ptr)) {
        (0, Some(x)) => *x = value,
        (1, Some(x)) if x.is_number() => *x = json!(x.as_f64().unwrap_or(1.0) * factor),
        (2, _) => {
            if let Some(Value::Object(m)) = v.pointer_mut(parent) {
                m.remove(key);
            }
        }
        (_, Some(x)) => *x = json!(x.as_f64().map_or(value, |f| json!(f * factor))),
        _ => {}
    }
}

/// Bounds an accepted profile must meet, checked here independently of `validate`.
fn meets_bounds(p: &Profile) -> Result<(), TestCaseError> {
    let t = &p.target;
    prop_assert!(t.page_size.is_power_of_two() && (4096..=1 << 30).contains(&t.page_size));
    prop_assert!(t.writable_bytes >= t.page_size && t.writable_bytes <= limits::MEM_MAX);
    let finite = [
        p.duration_s,
        p.interval_s,
        p.dirty.bytes_per_sec,
        p.dirty.pages_per_sec,
        p.dirty.peak_bytes_per_sec,
    ];
    prop_assert!(finite
        .iter()
        .all(|x| x.is_finite() && *x >= 0.0 && *x <= limits::RATE_MAX.max(limits::SECONDS_MAX)));
    let pages = (t.writable_bytes / t.page_size) as f64;
    for w in p.growth.windows(2) {
        prop_assert!(w[1].window_s > w[0].window_s);
        prop_assert!(w[1].unique_pages >= w[0].unique_pages * (1.0 - limits::ESTIMATE_SLACK));
    }
    for g in &p.growth {
        prop_assert!(g.window_s > 0.0 && g.unique_pages >= 0.0);
        prop_assert!(g.unique_pages <= pages * (1.0 + limits::ESTIMATE_SLACK));
    }
    for s in p
        .threads
        .iter()
        .map(|t| t.share)
        .chain(p.busy_share)
        .chain(p.zero_page_share)
    {
        prop_assert!((0.0..=1.0).contains(&s));
    }
    Ok(())
}

fn check_profile_text(text: &str) -> Result<(), TestCaseError> {
    let p = match Profile::parse(text, "fuzz.json") {
        Err(e) => return one_line("profile", &e.to_string()),
        Ok(p) => p,
    };
    meets_bounds(&p)?;
    let again = Profile::parse(&p.to_text(), "again");
    prop_assert!(
        again.is_ok(),
        "accepted, then refused once written: {:?}",
        again.err()
    );
    let again = serde_json::to_value(again.expect("checked")).expect("JSON");
    let p_value = serde_json::to_value(&p).expect("JSON");
    prop_assert!(close(&again, &p_value), "{again} != {p_value}");
    predicts(&p)
}

/// Equal JSON, numbers to within a few ulps: serde_json (without `float_roundtrip`) reads
/// some floats, such as 2.097152e-295, one ulp off.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// An accepted profile predicts (one link, one downtime) without a panic, and its text
/// report carries no control character.
fn predicts(p: &Profile) -> Result<(), TestCaseError> {
    let path = std::env::temp_dir().join(format!(
        "migtrace-fuzz-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, p.to_text()).expect("write");
    let r = prepare(&PredictOpts::for_profile(path.clone(), "10g"));
    let _ = std::fs::remove_file(&path);
    let prep = r.map_err(|e| TestCaseError::fail(format!("accepted profile refused: {e}")))?;
    let cells = grid(&prep.workload, &prep.input);
    let text = predict_out::text(&prep.workload, &prep.input, &prep.report, &cells);
    prop_assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    Ok(())
}

fn raw_profile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (
            1..20_000usize,
            prop::sample::select(vec!["[", "{\"a\":", "[{\"format\":"])
        )
            .prop_map(|(n, open)| open.repeat(n)),
        hostile_value().prop_map(|v| v.to_string()),
        hostile_value().prop_map(|v| {
            let mut p = valid_profile();
            p["growth"] = Value::Array(vec![v; 5000]);
            p.to_string()
        }),
    ]
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..Config::default()
    })]

    #[test]
    fn unit_parser_never_panics_and_bounds_what_it_accepts(s in unit_inputs()) {
        check_unit_input(&s)?;
    }

    #[test]
    fn every_flag_errs_in_one_line_and_its_hints_are_accepted(flag in 0..13usize, s in unit_inputs()) {
        check_flag(flag, &s)?;
    }

    #[test]
    fn mutated_profiles_are_refused_in_one_line_or_are_within_bounds(text in mutated_profile()) {
        check_profile_text(&text)?;
    }

    #[test]
    fn raw_text_is_never_a_panic(text in raw_profile_text()) {
        check_profile_text(&text)?;
    }
}

/// Runs each property on fresh random cases, round after round, for `MIGTRACE_FUZZ_SECS`
/// (default 60) seconds. `cargo xtask test` runs it.
#[test]
#[ignore = "a timed fuzz pass: cargo test --release --test fuzz -- --ignored"]
fn fuzz_for_a_time_budget() {
    let secs: u64 = std::env::var("MIGTRACE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let end = Instant::now() + Duration::from_secs(secs);
    let config = Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    };
    // A runner counts its successes for good: a fresh one (fresh random seed) per run.
    let runner = || TestRunner::new(config.clone());
    let (mut rounds, mut cases) = (0u64, 0u64);
    while Instant::now() < end {
        let found = |e: &dyn std::fmt::Display| {
            panic!("fuzz found a failure (add it as a named regression test): {e}")
        };
        let flag = (0..13usize, unit_inputs()).prop_map(|(f, s)| format!("{f} {s}"));
        let results = [
            runner().run(&unit_inputs(), |s| check_unit_input(&s)),
            runner().run(&flag, |fs| {
                let (f, s) = fs.split_once(' ').unwrap_or(("0", ""));
                check_flag(f.parse().unwrap_or(0), s)
            }),
            runner().run(&mutated_profile(), |t| check_profile_text(&t)),
            runner().run(&raw_profile_text(), |t| check_profile_text(&t)),
        ];
        for r in results {
            if let Err(e) = r {
                found(&e);
            }
        }
        rounds += 1;
        cases += 4 * 64;
    }
    eprintln!("fuzz: {cases} cases in {rounds} rounds, {secs} s, no failure");
}

// ---- regressions: what the fuzzing found, by name ----

/// A bare number of 200 digits got a 600-byte hint repeating it twice.
#[test]
fn regression_a_long_bare_number_gets_a_short_hint() {
    let long = format!("0.{}1", "0".repeat(200));
    for r in [
        units::parse_byte_rate(&long),
        units::parse_byte_rate(&format!("{long}MiB")),
        units::parse_link(&long),
        units::parse_mem(&long),
        units::parse_mem(&format!("{long}Gb")),
        units::parse_secs_in(&long, &units::DOWNTIME),
        units::parse_duration(&long).map(|d| d.as_secs_f64()),
    ] {
        let e = r.unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }
}

/// `0e0` is a zero: the dirty limit said "needs bytes per second" and suggested nothing
/// that fits; a zero needs no unit and is judged by the range.
#[test]
fn regression_a_zero_with_an_exponent_is_a_bare_zero() {
    assert_eq!(units::parse_byte_rate("0e0"), Ok(0.0));
    let e = units::parse_byte_rate_in("0E0", &units::DIRTY_LIMIT).unwrap_err();
    assert!(matches!(e, UnitError::OutOfRange(_)), "{e:?}");
    let e = units::parse_secs_in("0e5", &units::DOWNTIME).unwrap_err();
    assert!(matches!(e, UnitError::NotPositive(_)), "{e:?}");
}

/// `1..2` is not a number: the downtime hint suggested `1..2s`, which it then rejected.
#[test]
fn regression_two_dots_get_no_unit_hint() {
    for r in [
        units::parse_secs_in("1..2", &units::DOWNTIME),
        units::parse_duration("1..2").map(|d| d.as_secs_f64()),
    ] {
        let e = r.unwrap_err();
        assert!(matches!(e, UnitError::Invalid(_)), "{e:?}");
        assert!(suggestions(&e.to_string()).is_empty(), "{e}");
    }
}

/// A tiny rate (2.097152e-295 pages/s) read back one ulp off: the profile still round-trips
/// within float precision and is accepted again.
#[test]
fn regression_a_tiny_rate_round_trips_within_an_ulp() {
    let mut v = valid_profile();
    v["dirty"]["pages_per_sec"] = json!(2.097152e-295);
    check_profile_text(&v.to_string()).unwrap();
}

/// Fuzz find: a downtime on a rounding edge (32.055 s, stored as 32.05499...) prints as
/// "32.05 s" and reads back just over half a hundredth away; printing stays within its
/// precision plus the float error.
#[test]
fn regression_a_rounding_edge_downtime_reads_back_within_print_precision() {
    check_unit_input("32.055s").unwrap();
}
