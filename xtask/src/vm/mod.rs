//! `cargo xtask vmtest`: runs tests that need guest-kernel features the development and CI
//! kernels lack (soft-dirty, kprobes, a real KVM, ...) inside QEMU/TCG boots of Debian 12's
//! 6.1 kernel, one boot per spec file, and reports one result per test. See docs/vmtest.md.
//!
//! Entry point: [`run`]. Flow: host tools ([`host`]) -> guest kernel ([`kernel`]) -> per
//! spec file: cargo builds of what runs inside ([`artifacts`]) -> for a nested-KVM boot, the
//! kvm modules, QEMU and the inner guest ([`nested`]) -> initramfs ([`initramfs`],
//! [`cpio`]) -> boot and read the serial console ([`qemu`], [`protocol`]) -> summary.
pub mod artifacts;
pub mod cpio;
pub mod guest_image;
mod hang;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod nested;
pub mod protocol;
pub mod qemu;
pub mod spec;

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `cargo xtask vmtest` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct VmTestOptions {
    /// Run only tests whose name contains this string.
    pub filter: Option<String>,
    /// Keep the work directory (initramfs, test dirs) for debugging.
    pub keep: bool,
    /// One test spec; default: every file of [`spec::DEFAULT_SPECS`], one boot each.
    pub spec: Option<PathBuf>,
    /// Limit for each boot, after which QEMU is killed; default: the spec's
    /// `boot.timeout_secs`, else [`spec::DEFAULT_BOOT_TIMEOUT_SECS`].
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub status: Status,
    pub secs: Option<f64>,
    pub reason: String,
    /// The test's stdout and stderr lines, as the guest printed them.
    pub output: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub present: bool,
    /// True when the kernel config builds it in, so absence is a harness failure.
    pub expected: bool,
    pub detail: String,
}

/// Wall-clock durations of the phases of one run.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub host_tools: Duration,
    pub kernel: Duration,
    pub kernel_downloaded: bool,
    pub cargo_build: Duration,
    pub initramfs: Duration,
    /// QEMU start to the guest's `/init` printing its first line.
    pub boot_to_init: Option<Duration>,
    /// QEMU start to the first test starting (after the feature probe).
    pub boot_to_first_test: Option<Duration>,
    pub qemu_total: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct VmReport {
    pub kernel_package: String,
    pub guest_release: Option<String>,
    pub features: Vec<Feature>,
    pub tests: Vec<TestResult>,
    /// Harness-level failures: no DONE line, an expected feature missing, ...
    pub problems: Vec<String>,
    pub timings: Timings,
}

impl VmReport {
    pub fn count(&self, s: Status) -> usize {
        self.tests.iter().filter(|t| t.status == s).count()
    }

    /// Every test passed or was legitimately skipped, and the harness saw no problem.
    pub fn success(&self) -> bool {
        self.problems.is_empty() && self.count(Status::Fail) == 0
    }
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// One boot's worth of tests: a spec file, its machine, and the tests `--filter` kept.
struct Plan {
    spec_path: PathBuf,
    boot: spec::BootSpec,
    tests: Vec<spec::TestSpec>,
}

impl Plan {
    /// `run` for `tests/vm/tests.json`, `run-kvm` for `tests/vm/kvm.json`: each boot keeps
    /// its own work directory and serial log.
    fn tag(&self) -> String {
        match self.spec_path.file_stem().and_then(|s| s.to_str()) {
            Some("tests") | None => String::new(),
            Some(stem) => format!("-{stem}"),
        }
    }
}

/// The outcome of a whole `cargo xtask vmtest`: one report per boot.
#[derive(Debug, Clone)]
pub struct VmRun {
    pub reports: Vec<VmReport>,
}

impl VmRun {
    /// 0 when every boot succeeded, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.reports.iter().all(VmReport::success) {
            0
        } else {
            1
        }
    }
}

/// Runs the VM test suite: one boot per spec file (`tests/vm/tests.json`, then
/// `tests/vm/kvm.json`, whose guest runs a nested KVM; or the one `--spec` names) that has a
/// test `--filter` selects. Prints progress, a summary table per boot and the closing line
/// `vmtest: N passed, N failed, N skipped` over all boots. `Err` only when the harness
/// itself could not get as far as booting; test failures are in the reports.
pub fn run(opts: VmTestOptions) -> Result<VmRun> {
    let t_all = Instant::now();
    let root = crate::root();
    let plans = select_tests(&root, &opts)?;
    let mut timings = Timings::default();

    let t = Instant::now();
    host::ensure_tools()?;
    timings.host_tools = t.elapsed();

    let vmdir = target_dir(&root).join("vmtest");
    let kernel = guest_kernel(&vmdir, &mut timings)?;
    let mut reports = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        println!(
            "vmtest: boot {} of {}: {} ({} tests{})",
            i + 1,
            plans.len(),
            plan.spec_path.display(),
            plan.tests.len(),
            if plan.boot.nested_kvm {
                ", nested KVM"
            } else {
                ""
            }
        );
        let t_boot = Instant::now();
        let mut tm = timings.clone();
        let mut report = run_boot(&root, &vmdir, &kernel, plan, &opts, &mut tm)?;
        report.timings.total = if i == 0 {
            t_all.elapsed()
        } else {
            t_boot.elapsed()
        };
        print_summary(&report, &vmdir.join(format!("serial{}.log", plan.tag())));
        println!(
            "vmtest: {}: {} passed, {} failed, {} skipped",
            plan.spec_path.display(),
            report.count(Status::Pass),
            report.count(Status::Fail) + report.problems.len(),
            report.count(Status::Skip)
        );
        reports.push(report);
    }
    let sum = |f: &dyn Fn(&VmReport) -> usize| reports.iter().map(f).sum::<usize>();
    println!(
        "vmtest: {} passed, {} failed, {} skipped",
        sum(&|r| r.count(Status::Pass)),
        sum(&|r| r.count(Status::Fail) + r.problems.len()),
        sum(&|r| r.count(Status::Skip))
    );
    Ok(VmRun { reports })
}

/// Builds what one spec's boot needs, boots it and judges the results.
fn run_boot(
    root: &Path,
    vmdir: &Path,
    kernel: &kernel::Kernel,
    plan: &Plan,
    opts: &VmTestOptions,
    timings: &mut Timings,
) -> Result<VmReport> {
    let expected = expected_features(kernel, plan.boot.nested_kvm);
    let timeout = opts.timeout.unwrap_or_else(|| {
        Duration::from_secs(
            plan.boot
                .timeout_secs
                .unwrap_or(spec::DEFAULT_BOOT_TIMEOUT_SECS),
        )
    });

    let (exes, nested_kvm) = build_inputs(root, vmdir, kernel, plan, timings)?;

    let work = vmdir.join(format!("run{}", plan.tag()));
    let initrd = build_initramfs(
        root,
        &plan.tests,
        &exes,
        nested_kvm.as_ref(),
        &work,
        timings,
    )?;

    // Boot once and run everything.
    let serial_log = vmdir.join(format!("serial{}.log", plan.tag()));
    let boot = qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd,
        cpu: plan.boot.cpu.as_deref(),
        memory_mib: plan.boot.memory_mib,
        timeout,
        serial_log: serial_log.clone(),
    };
    println!("vmtest: this boot may take {} s", timeout.as_secs());
    let rerun = write_rerun_script(&work, &boot)?;
    let mut console = Console::default();
    let outcome = qemu::boot(&boot, |line, at| console.on_line(line, at))?;
    timings.qemu_total = outcome.elapsed;
    timings.boot_to_init = console.boot_to_init;
    timings.boot_to_first_test = console.boot_to_first_test;

    let mut problems = harness_problems(&outcome, &console, kernel, timeout);
    let features = feature_report(&expected, &console, &mut problems);
    let tests = test_results(&plan.tests, &mut console, &expected);
    let report = VmReport {
        kernel_package: kernel.package.clone(),
        guest_release: console.guest_release,
        features,
        tests,
        problems,
        timings: timings.clone(),
    };
    finish(opts.keep, &work, &rerun);
    Ok(report)
}

/// The cargo builds of what runs inside, and for a nested-KVM boot its modules, QEMU and
/// inner guest.
fn build_inputs(
    root: &Path,
    vmdir: &Path,
    kernel: &kernel::Kernel,
    plan: &Plan,
    timings: &mut Timings,
) -> Result<(BTreeMap<String, PathBuf>, Option<nested::NestedKvm>)> {
    let nested = plan.boot.nested_kvm;
    let t = Instant::now();
    let mut bins = guest_bins(&plan.tests)?;
    if nested && !bins.iter().any(|b| b.bin == "migtrace") {
        // The inner guest runs `migtrace writer`.
        bins.insert(spec::CargoBin {
            package: "migtrace".into(),
            bin: "migtrace".into(),
            profile: "release".into(),
        });
    }
    let exes = artifacts::build(root, &bins)?;
    timings.cargo_build = t.elapsed();
    if !nested {
        return Ok((exes, None));
    }
    let t = Instant::now();
    let n = nested::prepare(kernel, vmdir, &exes["migtrace"])?;
    println!(
        "vmtest: nested KVM: {} kvm modules, inner guest {} in {:.2} s",
        n.modules.len(),
        n.l2.initrd.display(),
        t.elapsed().as_secs_f64()
    );
    Ok((exes, Some(n)))
}

/// The tests of each spec that `--filter` selects, one plan per spec with any; an error
/// naming all tests when none is selected anywhere.
fn select_tests(root: &Path, opts: &VmTestOptions) -> Result<Vec<Plan>> {
    let paths: Vec<PathBuf> = match &opts.spec {
        Some(p) => vec![p.clone()],
        None => spec::DEFAULT_SPECS.iter().map(|f| root.join(f)).collect(),
    };
    let mut plans = Vec::new();
    let mut all = Vec::new();
    for spec_path in paths {
        let spec = spec::load(&spec_path)?;
        all.extend(spec.tests.iter().map(|t| t.name.clone()));
        let tests: Vec<spec::TestSpec> = spec
            .tests
            .iter()
            .filter(|t| {
                opts.filter
                    .as_ref()
                    .is_none_or(|f| t.name.contains(f.as_str()))
            })
            .cloned()
            .collect();
        if !tests.is_empty() {
            plans.push(Plan {
                spec_path,
                boot: spec.boot,
                tests,
            });
        }
    }
    if plans.is_empty() {
        bail!(
            "no VM test matches --filter {:?}; the tests are: {}",
            opts.filter.as_deref().unwrap_or(""),
            all.join(", ")
        );
    }
    // One name, one test: --filter and the result tables go by name across boots.
    let mut seen = BTreeSet::new();
    for n in &all {
        if !seen.insert(n) {
            bail!("VM test name {n:?} appears in two spec files");
        }
    }
    Ok(plans)
}

/// Finds (downloading if needed) the guest kernel under `vmdir/kernel` and says which.
fn guest_kernel(vmdir: &Path, timings: &mut Timings) -> Result<kernel::Kernel> {
    let t = Instant::now();
    let kernel = kernel::ensure(&vmdir.join("kernel"))?;
    timings.kernel = t.elapsed();
    timings.kernel_downloaded = kernel.downloaded;
    println!(
        "vmtest: guest kernel {} ({}) in {:.2} s: {}",
        kernel.package,
        if kernel.downloaded {
            "downloaded"
        } else {
            "cached"
        },
        timings.kernel.as_secs_f64(),
        kernel.vmlinuz.display()
    );
    Ok(kernel)
}

/// What the kernel config says of each guest feature: feature -> (all its options built
/// in, `OPTION=value` words). Printed as it goes.
type Expected = BTreeMap<String, (bool, String)>;

/// Module features (`kvm`) count as there only in a nested boot, whose harness loads the
/// modules: `y` or `m` will do there.
fn expected_features(kernel: &kernel::Kernel, nested: bool) -> Expected {
    let mut expected = BTreeMap::new();
    for (feature, options) in spec::FEATURES {
        let mut values: Vec<String> = options
            .iter()
            .map(|o| format!("{o}={}", kernel.config_value(o)))
            .collect();
        let builtin = if spec::MODULE_FEATURES.contains(feature) {
            values.push(if nested {
                "(modules loaded by this boot)".into()
            } else {
                "(modules loaded only by a nested_kvm boot)".into()
            });
            nested
                && options
                    .iter()
                    .all(|o| matches!(kernel.config_value(o), "y" | "m"))
        } else {
            options.iter().all(|o| kernel.config_value(o) == "y")
        };
        println!(
            "vmtest: kernel config for {feature:<12} {}",
            values.join(" ")
        );
        expected.insert(feature.to_string(), (builtin, values.join(" ")));
    }
    expected
}

/// What runs inside: vm-probe always, plus every test's bins. Two bins with one name would
/// overwrite each other in `/usr/local/bin`, so that is an error.
fn guest_bins(tests: &[spec::TestSpec]) -> Result<BTreeSet<spec::CargoBin>> {
    let mut bins: BTreeSet<spec::CargoBin> = tests.iter().flat_map(|t| t.bins.clone()).collect();
    bins.insert(spec::CargoBin {
        package: "xtask".into(),
        bin: "vm-probe".into(),
        profile: "dev".into(),
    });
    let mut by_name: BTreeMap<&str, &spec::CargoBin> = BTreeMap::new();
    for b in &bins {
        if let Some(other) = by_name.insert(b.bin.as_str(), b) {
            bail!(
                "two VM test binaries would both be /usr/local/bin/{}: {other:?} and {b:?}",
                b.bin
            );
        }
    }
    Ok(bins)
}

/// Empties `work` and writes `work/initramfs.cpio`; returns its path.
fn build_initramfs(
    root: &Path,
    tests: &[spec::TestSpec],
    exes: &BTreeMap<String, PathBuf>,
    nested: Option<&nested::NestedKvm>,
    work: &Path,
    timings: &mut Timings,
) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let initrd = work.join("initramfs.cpio");
    let t = Instant::now();
    let built = initramfs::build(root, tests, exes, nested, &initrd)?;
    timings.initramfs = t.elapsed();
    println!(
        "vmtest: initramfs {} ({} entries, {:.1} MiB) in {:.2} s",
        initrd.display(),
        built.files,
        built.bytes as f64 / (1 << 20) as f64,
        timings.initramfs.as_secs_f64()
    );
    Ok(initrd)
}

/// Writes `work/qemu.sh`, which boots the same guest by hand (kept with `--keep`).
fn write_rerun_script(work: &Path, boot: &qemu::Boot) -> Result<PathBuf> {
    let rerun = work.join("qemu.sh");
    std::fs::write(&rerun, qemu::script(boot))
        .with_context(|| format!("writing {}", rerun.display()))?;
    std::fs::set_permissions(&rerun, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(rerun)
}

/// What the guest said on its console, gathered line by line during the boot.
#[derive(Default)]
struct Console {
    /// Feature name -> (present, detail).
    features: BTreeMap<String, (bool, String)>,
    results: BTreeMap<String, TestResult>,
    /// Each test's output lines (and kernel messages printed while it ran).
    outputs: BTreeMap<String, Vec<String>>,
    guest_release: Option<String>,
    /// The test that began last.
    current: Option<String>,
    /// The guest printed its DONE line.
    done: bool,
    boot_to_init: Option<Duration>,
    boot_to_first_test: Option<Duration>,
}

impl Console {
    /// Echoes and takes in one console line; true once the guest said it is done.
    fn on_line(&mut self, line: &str, at: Duration) -> bool {
        println!("vm| {line}");
        match protocol::parse(line) {
            Some(msg) => self.on_message(&msg, at),
            None => {
                self.on_output(line);
                false
            }
        }
    }

    /// A non-protocol line: the current test's output, or a kernel message during it.
    fn on_output(&mut self, line: &str) {
        let Some(name) = &self.current else {
            return;
        };
        let kept = if let Some(out) = line
            .strip_prefix(name.as_str())
            .and_then(|l| l.strip_prefix("| "))
        {
            out.to_string()
        } else if line.starts_with('[') {
            // Kernel messages (oops, panic, BPF warnings) during the test.
            format!("(kernel) {line}")
        } else {
            return;
        };
        self.outputs.entry(name.clone()).or_default().push(kept);
    }

    fn on_message(&mut self, msg: &protocol::Message, at: Duration) -> bool {
        match msg.kind.as_str() {
            "BOOTED" => {
                self.boot_to_init.get_or_insert(at);
                self.guest_release = Some(msg.get("kernel").to_string());
            }
            "FEATURE" => {
                self.features.insert(
                    msg.get("name").to_string(),
                    (msg.get("status") == "yes", msg.get("detail").to_string()),
                );
            }
            "BEGIN" => {
                self.boot_to_first_test.get_or_insert(at);
                self.current = Some(msg.get("name").to_string());
            }
            "RESULT" => {
                let status = match msg.get("status") {
                    "pass" => Status::Pass,
                    "skip" => Status::Skip,
                    _ => Status::Fail,
                };
                let name = msg.get("name").to_string();
                self.results.entry(name.clone()).or_insert(TestResult {
                    name,
                    status,
                    secs: msg.get("secs").parse().ok(),
                    reason: msg.get("reason").to_string(),
                    output: Vec::new(),
                });
            }
            "DONE" => {
                self.done = true;
                return true;
            }
            _ => {}
        }
        false
    }
}

/// Harness-level failures of a boot: a timeout, no DONE line, the wrong kernel.
fn harness_problems(
    outcome: &qemu::Outcome,
    console: &Console,
    kernel: &kernel::Kernel,
    timeout: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    if outcome.timed_out {
        problems.push(format!(
            "the guest did not finish within {} s: QEMU was killed",
            timeout.as_secs()
        ));
    } else if !console.done {
        problems.push(format!(
            "the guest never printed MIGTRACE-VM-DONE (panic or crash?): QEMU exited with {}",
            outcome
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown status".into())
        ));
    }
    if let Some(r) = console.guest_release.as_deref() {
        if r != kernel.release {
            problems.push(format!(
                "the guest runs kernel {r}, not the {} that was booted",
                kernel.release
            ));
        }
    }
    problems
}

/// One row per feature; a feature the config builds in but the guest lacks is a problem.
fn feature_report(
    expected: &Expected,
    console: &Console,
    problems: &mut Vec<String>,
) -> Vec<Feature> {
    let mut report = Vec::new();
    for (name, (builtin, config)) in expected {
        let (present, detail) = console
            .features
            .get(name)
            .cloned()
            .unwrap_or((false, "the guest reported nothing for it".into()));
        if *builtin && !present && console.done {
            problems.push(format!(
                "guest feature {name} is missing although the kernel config has {config}: {detail}"
            ));
        }
        report.push(Feature {
            name: name.clone(),
            present,
            expected: *builtin,
            detail,
        });
    }
    report
}

/// One result per selected test, in spec order; a test the guest said nothing of fails
/// with the reason why, and a skip names the kernel config of what it lacked.
fn test_results(
    tests: &[spec::TestSpec],
    console: &mut Console,
    expected: &Expected,
) -> Vec<TestResult> {
    let mut out = Vec::new();
    for t in tests {
        let mut r = console
            .results
            .remove(&t.name)
            .unwrap_or_else(|| missing_result(t, console));
        r.output = console.outputs.remove(&t.name).unwrap_or_default();
        if r.status == Status::Skip {
            let cfg: Vec<String> = t
                .requires
                .iter()
                .filter(|f| !console.features.get(*f).is_some_and(|(p, _)| *p))
                .map(|f| {
                    format!(
                        "{f}: {}",
                        expected.get(f).map(|e| e.1.as_str()).unwrap_or("")
                    )
                })
                .collect();
            if !cfg.is_empty() {
                r.reason = format!("{} [kernel config: {}]", r.reason, cfg.join("; "));
            }
        }
        out.push(r);
    }
    out
}

/// The failed result of a test that printed no RESULT line.
fn missing_result(t: &spec::TestSpec, console: &Console) -> TestResult {
    TestResult {
        name: t.name.clone(),
        status: Status::Fail,
        secs: None,
        reason: if console.current.as_deref() == Some(t.name.as_str()) {
            "started but never finished: the guest died or the overall timeout passed \
             during this test"
                .into()
        } else if console.done {
            "no result line from the guest".into()
        } else {
            "not run: the guest stopped before this test".into()
        },
        output: Vec::new(),
    }
}

/// Keeps or removes the work directory.
fn finish(keep: bool, work: &Path, rerun: &Path) {
    if keep {
        println!(
            "vmtest: kept the work directory {} (boot it again by hand with {})",
            work.display(),
            rerun.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(work);
    }
}

/// Prints the feature table, the test table, the harness failures, the output of the failed
/// tests and the phase timings.
fn print_summary(r: &VmReport, serial_log: &Path) {
    println!();
    println!(
        "=== vmtest summary: guest {} ({}) ===",
        r.guest_release.as_deref().unwrap_or("did not boot"),
        r.kernel_package
    );
    print_features(&r.features);
    print_tests(&r.tests);
    for p in &r.problems {
        println!("  HARNESS FAILURE: {p}");
    }
    print_failed_output(&r.tests);
    print_timings(&r.timings);
    println!("serial log: {}", serial_log.display());
}

fn print_features(features: &[Feature]) {
    println!("features:");
    for f in features {
        println!(
            "  {:<12} {:<4} {:<20} {}",
            f.name,
            if f.present { "yes" } else { "no" },
            match (f.expected, spec::MODULE_FEATURES.contains(&f.name.as_str())) {
                (true, true) => "(modules: loaded)",
                (false, true) => "(modules: not here)",
                (true, false) => "(config: built in)",
                (false, false) => "(config: not built in)",
            },
            f.detail
        );
    }
}

fn print_tests(tests: &[TestResult]) {
    let width = tests.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    println!("tests:");
    println!(
        "  {:<width$}  {:<6} {:>8}  reason",
        "name", "status", "time"
    );
    for t in tests {
        println!(
            "  {:<width$}  {:<6} {:>8}  {}",
            t.name,
            t.status.as_str(),
            t.secs
                .map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "-".into()),
            t.reason
        );
    }
}

/// The last lines of each failed test's output.
fn print_failed_output(tests: &[TestResult]) {
    const TAIL: usize = 40;
    for t in tests
        .iter()
        .filter(|t| t.status == Status::Fail && !t.output.is_empty())
    {
        let skip = t.output.len().saturating_sub(TAIL);
        println!(
            "--- output of failed test {} ({} lines{}) ---",
            t.name,
            t.output.len(),
            if skip > 0 {
                format!(", last {TAIL} shown")
            } else {
                String::new()
            }
        );
        for l in &t.output[skip..] {
            println!("  {l}");
        }
    }
}

fn print_timings(tm: &Timings) {
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "timings: host tools {}, kernel {} ({}), cargo build {}, initramfs {}, \
         QEMU start to /init {}, to first test {}, QEMU total {}, whole run {}",
        secs(Some(tm.host_tools)),
        secs(Some(tm.kernel)),
        if tm.kernel_downloaded { "cold" } else { "warm" },
        secs(Some(tm.cargo_build)),
        secs(Some(tm.initramfs)),
        secs(tm.boot_to_init),
        secs(tm.boot_to_first_test),
        secs(Some(tm.qemu_total)),
        secs(Some(tm.total)),
    );
}
