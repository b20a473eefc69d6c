//! Shared fixtures for the criterion benchmarks: generated resources, graphs
//! and manifest snapshots, built deterministically (no RNG dependency); and
//! [`Timings`], which lets a benchmark print its ratio to a floor measured in
//! the same run ([`print_ratio`]).

use std::time::{Duration, Instant};

use gitops_core::{DesiredState, Observed, Resource, ResourceId, Revision, Snapshot};
use serde_json::json;

/// A tiny deterministic generator (64-bit LCG), good enough for shaping fixtures.
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value below `bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// A fixed revision for fixtures.
pub fn revision() -> Revision {
    Revision::new("main", "0123456789abcdef0123456789abcdef01234567")
}

/// The spec of fixture resource `i`: four fields, one a nested map.
pub fn spec(i: usize) -> serde_json::Value {
    json!({
        "image": "registry.example/app:v1",
        "replicas": 2,
        "port": 8000 + (i % 1000),
        "env": { "LOG_LEVEL": "info", "REGION": "eu-west-1" },
    })
}

/// `n` resources in `waves` layers; each resource beyond the first layer
/// depends on up to 3 resources of the previous layer.
pub fn resources(n: usize, waves: usize) -> Vec<Resource> {
    let per_wave = n.div_ceil(waves);
    let id = |i: usize| {
        ResourceId::namespaced("ConfigMap", "prod", format!("app-{i:06}")).expect("valid id")
    };
    let mut rng = Lcg::new(42);
    (0..n)
        .map(|i| {
            let layer = i / per_wave;
            let mut r = Resource::new(id(i), spec(i));
            if layer > 0 {
                let start = (layer - 1) * per_wave;
                for _ in 0..3 {
                    let dep = start + rng.below(per_wave as u64) as usize;
                    if !r.depends_on.contains(&id(dep)) {
                        r.depends_on.push(id(dep));
                    }
                }
            }
            r
        })
        .collect()
}

/// A validated desired state of [`resources`].
pub fn desired(n: usize, waves: usize) -> DesiredState {
    DesiredState::new(revision(), resources(n, waves)).expect("fixture is a DAG")
}

/// Observations equal to the desired state, except every `1/changed_every`-th
/// resource, whose replica count differs (`changed_every = 0`: none differ).
pub fn observed(desired: &DesiredState, changed_every: usize) -> Vec<Option<Observed>> {
    desired
        .resources()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if changed_every > 0 && i % changed_every == 0 {
                let mut spec = r.spec.to_value();
                spec["replicas"] = json!(3);
                Some(Observed::new(spec))
            } else {
                // A target's observation is its own copy, not the desired
                // spec's shared text.
                Some(Observed::new(r.spec.to_value()))
            }
        })
        .collect()
}

/// `edges` random edges over `nodes` nodes, each from a lower to a higher index.
pub fn dag_edges(nodes: usize, edges: usize) -> Vec<(usize, usize)> {
    let mut rng = Lcg::new(7);
    (0..edges)
        .map(|_| {
            let a = rng.below(nodes as u64 - 1) as usize;
            let b = a + 1 + rng.below((nodes - a - 1) as u64) as usize;
            (a, b)
        })
        .collect()
}

/// A snapshot of `files` YAML files holding `docs_per_file` small documents each,
/// chained by `dependsOn` inside each file.
pub fn manifest_snapshot(files: usize, docs_per_file: usize) -> Snapshot {
    let mut snap = Snapshot::new(revision());
    for f in 0..files {
        let mut text = String::new();
        for d in 0..docs_per_file {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{f}-{d}\n  namespace: prod\n  labels: {{ app: web }}\n"
            ));
            if d > 0 {
                text.push_str(&format!("  dependsOn: [ConfigMap/prod/cm-{f}-{}]\n", d - 1));
            }
            text.push_str("spec:\n  data:\n    key: value\n    port: \"8080\"\n");
        }
        snap.insert(format!("apps/app-{f:04}.yaml"), text.into_bytes(), false)
            .expect("valid path");
    }
    snap
}

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A renderer that returns prebuilt resources, so engine benchmarks measure
/// the engine (validation, graph, observe, plan, apply) and not YAML parsing.
#[derive(Debug, Clone)]
pub struct FixtureRender {
    resources: Vec<Resource>,
}

impl FixtureRender {
    /// `n` resources in `waves` layers (see [`resources`]).
    pub fn new(n: usize, waves: usize) -> Self {
        Self {
            resources: resources(n, waves),
        }
    }
}

impl gitops_core::Render for FixtureRender {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, gitops_core::RenderError> {
        DesiredState::new(snapshot.revision().clone(), self.resources.clone())
    }
}

/// CPU time (user + system) this process has used, from `/proc/self/stat`.
pub fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks; USER_HZ is 100 on every mainstream configuration.
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}

/// Fails (never skips) when a program a benchmark needs is missing.
pub fn require_tool(tool: &str, args: &[&str]) {
    let ok = std::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "this benchmark needs `{tool}` on PATH");
}

/// Runs `git` in `dir` with an isolated configuration and a fixed identity,
/// feeding `stdin`; panics with git's stderr when it fails.
pub fn git_in(dir: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git is installed");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(data) = stdin {
            input.write_all(data).expect("write to git");
        }
    }
    let out = child.wait_with_output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`git_in`] without input.
pub fn git(dir: &std::path::Path, args: &[&str]) {
    git_in(dir, args, None);
}

/// Per-iteration times of one benchmark, recorded from inside its criterion
/// routine (`iter_custom`), so that its ratio to a floor measured in the same
/// run can be printed: criterion itself does not compute ratios.
///
/// Each sample also records the CPU time of the whole process (all its
/// threads, not its child processes): for a floor that runs in process, the
/// CPU ratio ([`print_cpu_ratio`]) moves far less with the machine's load
/// than the wall-clock one.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    per_iteration: Vec<Duration>,
    cpu_per_iteration: Vec<Duration>,
}

impl Timings {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one criterion sample of `iters` iterations that took `total`,
    /// and returns `total` (what an `iter_custom` routine returns).
    pub fn record(&mut self, total: Duration, iters: u64) -> Duration {
        if let Some(each) = per_iteration(total, iters) {
            self.per_iteration.push(each);
        }
        total
    }

    /// Runs `routine` `iters` times, records the sample and returns its total.
    /// Also records the process's CPU time per iteration.
    pub fn time<O>(&mut self, iters: u64, mut routine: impl FnMut() -> O) -> Duration {
        let cpu_started = process_cpu_time();
        let started = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(routine());
        }
        let total = started.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_started);
        if let Some(each) = per_iteration(cpu, iters) {
            self.cpu_per_iteration.push(each);
        }
        self.record(total, iters)
    }

    /// The median time of one iteration over the recorded samples (criterion's
    /// warm-up samples included: the median is robust to them).
    pub fn median(&self) -> Option<Duration> {
        median(&self.per_iteration)
    }

    /// The median CPU time of one iteration (samples taken with [`time`](Self::time)).
    pub fn cpu_median(&self) -> Option<Duration> {
        median(&self.cpu_per_iteration)
    }

    /// How many samples were recorded.
    pub fn len(&self) -> usize {
        self.per_iteration.len()
    }

    /// Whether nothing was recorded (the benchmark was filtered out).
    pub fn is_empty(&self) -> bool {
        self.per_iteration.is_empty()
    }
}

/// Runs `floor` and `subject` alternately, `rounds` times each after one
/// untimed warm-up of each, recording every run into its [`Timings`]: both
/// sides see the same load, which criterion's one-group-after-the-other
/// sampling cannot promise on a busy machine.
pub fn interleaved<A, B>(
    rounds: usize,
    (floor_timings, mut floor): (&mut Timings, impl FnMut() -> A),
    (subject_timings, mut subject): (&mut Timings, impl FnMut() -> B),
) {
    std::hint::black_box((floor(), subject()));
    for _ in 0..rounds {
        floor_timings.time(1, &mut floor);
        subject_timings.time(1, &mut subject);
    }
}

fn per_iteration(total: Duration, iters: u64) -> Option<Duration> {
    let iters = u32::try_from(iters).ok().filter(|&n| n > 0)?;
    total.checked_div(iters)
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// CPU time used so far by this process, all threads (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The line a benchmark prints for its ratio to its floor, e.g.
/// `ratio render/parse-only: 1.21x (121.0 ms vs 100.0 ms, medians of 22 and 22 samples)`;
/// says so when either side was not run (filtered out by a criterion argument).
pub fn ratio_line(name: &str, subject: &Timings, floor: &Timings) -> String {
    format_ratio(
        name,
        subject.median(),
        floor.median(),
        (subject.len(), floor.len()),
    )
}

/// [`ratio_line`] over CPU time: `ratio render/parse-only (CPU): ...`.
pub fn cpu_ratio_line(name: &str, subject: &Timings, floor: &Timings) -> String {
    format_ratio(
        &format!("{name} (CPU)"),
        subject.cpu_median(),
        floor.cpu_median(),
        (
            subject.cpu_per_iteration.len(),
            floor.cpu_per_iteration.len(),
        ),
    )
}

fn format_ratio(
    name: &str,
    subject: Option<Duration>,
    floor: Option<Duration>,
    samples: (usize, usize),
) -> String {
    match (subject, floor) {
        (Some(s), Some(f)) if !f.is_zero() => format!(
            "ratio {name}: {:.2}x ({} vs {}, medians of {} and {} samples)",
            s.as_secs_f64() / f.as_secs_f64(),
            human(s),
            human(f),
            samples.0,
            samples.1
        ),
        _ => format!("ratio {name}: not measured (a side was filtered out)"),
    }
}

/// Prints [`ratio_line`] with the load average, so the numbers can be judged.
pub fn print_ratio(name: &str, subject: &Timings, floor: &Timings) {
    println!("{} [load {}]", ratio_line(name, subject, floor), load());
}

/// Prints [`ratio_line`] and [`cpu_ratio_line`], for a floor that runs in
/// this process (child processes' CPU time is not counted).
pub fn print_cpu_ratio(name: &str, subject: &Timings, floor: &Timings) {
    print_ratio(name, subject, floor);
    println!("{} [load {}]", cpu_ratio_line(name, subject, floor), load());
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A duration in the unit people read it in: µs, ms or s.
fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_the_ratio_of_the_medians_per_iteration() {
        let mut subject = Timings::new();
        subject.record(Duration::from_millis(240), 2); // 120 ms each
        subject.record(Duration::from_millis(130), 1);
        subject.record(Duration::from_millis(900), 1); // an outlier
        let mut floor = Timings::new();
        floor.record(Duration::from_millis(400), 4); // 100 ms each
        assert_eq!(subject.median(), Some(Duration::from_millis(130)));
        assert_eq!(
            ratio_line("render/parse-only", &subject, &floor),
            "ratio render/parse-only: 1.30x (130.0 ms vs 100.0 ms, medians of 3 and 1 samples)"
        );
    }

    #[test]
    fn interleaved_runs_alternate_and_record_every_round() {
        let order = std::cell::RefCell::new(Vec::new());
        let (mut floor, mut subject) = (Timings::new(), Timings::new());
        interleaved(
            3,
            (&mut floor, || order.borrow_mut().push('f')),
            (&mut subject, || order.borrow_mut().push('s')),
        );
        assert_eq!(order.into_inner(), "fsfsfsfs".chars().collect::<Vec<_>>());
        assert_eq!((floor.len(), subject.len()), (3, 3));
    }

    #[test]
    fn a_side_that_did_not_run_gives_no_ratio() {
        let mut floor = Timings::new();
        floor.time(3, || 1 + 1);
        assert_eq!(floor.len(), 1);
        assert!(floor.cpu_median().is_some());
        assert_eq!(
            cpu_ratio_line("x/y", &floor, &Timings::new()),
            "ratio x/y (CPU): not measured (a side was filtered out)"
        );
        assert!(Timings::new().is_empty());
        assert_eq!(
            ratio_line("x/y", &Timings::new(), &floor),
            "ratio x/y: not measured (a side was filtered out)"
        );
        assert_eq!(human(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(human(Duration::from_millis(2500)), "2.50 s");
    }
}
