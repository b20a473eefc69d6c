//! Peak memory for 100,000 resources: desired state, observations and a plan,
//! and beside it the floor: the same specs as bare `serde_json::Value`s.
//! Run with `cargo bench --bench memory`; each measurement runs in a fresh
//! child process so one does not hide in the other's high-water mark.

use gitops_benches::{desired, observed, peak_rss_bytes, spec};
use gitops_core::Observed;
use gitops_core::model::Inventory;
use gitops_core::plan::Planner;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn specs_only(n: usize) {
    let before = peak_rss_bytes().unwrap_or(0);
    let specs: Vec<serde_json::Value> = (0..n).map(spec).collect();
    let after = peak_rss_bytes().unwrap_or(0);
    println!(
        "floor: {n} specs as serde_json::Value alone: {:.1} MB ({} bytes each)",
        mb(after - before),
        (after - before) / specs.len().max(1) as u64
    );
}

fn full(n: usize) {
    let before = peak_rss_bytes().unwrap_or(0);
    let desired = desired(n, 10);
    let with_desired = peak_rss_bytes().unwrap_or(0);
    let observed = observed(&desired, 100);
    let with_observed = peak_rss_bytes().unwrap_or(0);
    let plan = Planner::new()
        .plan(&desired, &observed, &Inventory::new())
        .expect("plans");
    let after = peak_rss_bytes().unwrap_or(0);
    println!(
        "gitops: {n} resources: desired state {:.1} MB; + observations {:.1} MB; + plan {:.1} MB; peak RSS {:.1} MB ({} updates planned)",
        mb(with_desired - before),
        mb(with_observed - with_desired),
        mb(after - with_observed),
        mb(after),
        plan.summary.update
    );
}

/// What an engine observing in chunks holds: the desired state, one chunk of
/// observations at a time, and the plan.
fn streamed(n: usize) {
    let before = peak_rss_bytes().unwrap_or(0);
    let desired = desired(n, 10);
    let with_desired = peak_rss_bytes().unwrap_or(0);
    let planner = Planner::new();
    let mut builder = planner.builder(&desired);
    for (chunk, resources) in desired.resources().chunks(1_000).enumerate() {
        let observed: Vec<Option<Observed>> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if i % 100 == 0 {
                    let mut spec = r.spec.to_value();
                    spec["replicas"] = serde_json::json!(3);
                    Some(Observed::new(spec))
                } else {
                    // A target's observation is its own copy, not a shared one.
                    Some(Observed::new(gitops_core::Spec::from(r.spec.to_value())))
                }
            })
            .collect();
        for (i, o) in observed.iter().enumerate() {
            builder.observe(chunk * 1_000 + i, o.as_ref());
        }
    }
    let plan = builder.finish(&Inventory::new()).expect("all observed");
    let after = peak_rss_bytes().unwrap_or(0);
    println!(
        "gitops, observations streamed in chunks of 1,000: desired state {:.1} MB; + plan {:.1} MB; peak RSS {:.1} MB ({} updates planned)",
        mb(with_desired - before),
        mb(after - with_desired),
        mb(after),
        plan.summary.update
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; under `cargo test` only a small smoke run.
    let n = if args.iter().any(|a| a == "--bench") {
        100_000
    } else {
        1_000
    };
    match args
        .iter()
        .position(|a| a == "--stage")
        .and_then(|i| args.get(i + 1))
    {
        Some(stage) if stage == "specs" => specs_only(n),
        Some(stage) if stage == "streamed" => streamed(n),
        Some(_) => full(n),
        None => {
            let exe = std::env::current_exe().expect("own executable path");
            for stage in ["specs", "full", "streamed"] {
                let mut cmd = std::process::Command::new(&exe);
                cmd.args(["--stage", stage]);
                if n == 100_000 {
                    cmd.arg("--bench");
                }
                let status = cmd.status().expect("re-run self");
                assert!(status.success(), "stage {stage} failed");
            }
        }
    }
}
