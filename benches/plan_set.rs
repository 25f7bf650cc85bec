//! What one pass of a ThingShadowSet costs in the pure planner, at fleet sizes.
//!
//! ```text
//! cargo bench --bench plan_set [-- --things 1000,10000] [--passes 20]
//! ```
//!
//! The set controller plans a set again whenever its children change (at most once a
//! second), so at 10,000 things a rollout makes hundreds of passes over every member.
//! This prints the median and the slowest time of `planner::fleet::plan_set` (the
//! validation of the spec included) in four states of a set of N things listed in
//! `spec.selector.things`:
//!
//! - `new`: no child yet (the pass creates all of them);
//! - `converging`: every child carries the revision, half of them converged;
//! - `complete`: every child converged, the status says Complete;
//! - `rollout`: a new template at step 2 of [1, 10, 100], 10 % carry it.
//!
//! No network, no cluster: the figures are the planner's alone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use shadowsync::api::validate::ShadowLimits;
use shadowsync::api::{ThingShadowSetSpec, ThingShadowSetStatus};
use shadowsync::planner::fleet::naming::revision;
use shadowsync::planner::fleet::{plan_set, ChildFacts, Membership, SetInput, SetPlan};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    sizes: Vec<usize>,
    passes: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        sizes: vec![1_000, 10_000],
        passes: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--things" => {
                args.sizes = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| format!("--things: {e} (a comma-separated list of sizes)"))?;
                if args.sizes.iter().any(|n| *n == 0 || *n > 10_000) {
                    return Err("--things: each size must be from 1 to 10000 \
                                (spec.selector.things holds at most 10,000 names)"
                        .into());
                }
            }
            "--passes" => {
                args.passes = value()?.parse()?;
                if args.passes == 0 {
                    return Err("--passes must be at least 1".into());
                }
            }
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo bench --bench plan_set -- \
                     [--things 1000,10000] [--passes 20]"
                )
                .into())
            }
        }
    }
    Ok(args)
}

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0)
        .single()
        .expect("a valid time")
}

fn spec(n: usize, power: &str, steps: &[u8]) -> Result<ThingShadowSetSpec> {
    let things: Vec<String> = (0..n).map(thing).collect();
    Ok(serde_json::from_value(json!({
        "selector": {"things": things},
        "template": {
            "desired": {"power": power, "brightness": 80, "schedule": {"on": "07:00", "off": "23:00"}},
            "refreshInterval": "5m",
        },
        "rollout": {"steps": steps, "stepTimeout": "10m"},
    }))?)
}

fn thing(i: usize) -> String {
    format!("bench-fleet-{i:05}")
}

/// The children of `n` things, `carrying` of them with `rev` (the others with `old`),
/// the first `converged` of them converged.
fn children(
    n: usize,
    rev: &str,
    old: &str,
    carrying: usize,
    converged: usize,
) -> HashMap<String, ChildFacts> {
    (0..n)
        .map(|i| {
            let thing = thing(i);
            let facts = ChildFacts {
                name: format!("fleet-{thing}-0123abcd"),
                uid: format!("00000000-0000-0000-0000-{i:012}"),
                thing: thing.clone(),
                revision: Some(if i < carrying { rev } else { old }.to_string()),
                since: Some(t(0)),
                converged: i < converged,
                stalled: None,
                duplicate: None,
                deleting: false,
            };
            (thing, facts)
        })
        .collect()
}

struct Scenario {
    name: &'static str,
    spec: ThingShadowSetSpec,
    prior: ThingShadowSetStatus,
    children: HashMap<String, ChildFacts>,
}

fn scenarios(n: usize) -> Result<Vec<Scenario>> {
    let limits = ShadowLimits::default();
    let first = spec(n, "on", &[100])?;
    let rev = revision(&first.template);
    let things: Vec<String> = (0..n).map(thing).collect();
    let plan = |spec: &ThingShadowSetSpec,
                prior: &ThingShadowSetStatus,
                children: &HashMap<String, ChildFacts>| {
        plan_once(spec, prior, &things, children, &limits)
    };

    let new = Scenario {
        name: "new",
        spec: first.clone(),
        prior: ThingShadowSetStatus::default(),
        children: HashMap::new(),
    };
    let started = plan(&first, &new.prior, &new.children).status;
    let converging = Scenario {
        name: "converging",
        spec: first.clone(),
        prior: started.clone(),
        children: children(n, &rev, &rev, n, n / 2),
    };
    let all = children(n, &rev, &rev, n, n);
    let complete_status = plan(&first, &started, &all).status;
    if complete_status.phase.as_deref() != Some("Complete") {
        return Err(format!("the set did not complete: {:?}", complete_status.phase).into());
    }
    let complete = Scenario {
        name: "complete",
        spec: first.clone(),
        prior: complete_status.clone(),
        children: all,
    };
    let second = spec(n, "off", &[1, 10, 100])?;
    let new_rev = revision(&second.template);
    let mut prior = plan(&second, &complete_status, &complete.children).status;
    // Walk the first step through: its carriers converged.
    let canary = children(n, &new_rev, &rev, n.div_ceil(100), n);
    prior = plan(&second, &prior, &canary).status;
    let rollout = Scenario {
        name: "rollout",
        spec: second,
        prior,
        children: children(n, &new_rev, &rev, n / 10, n / 2),
    };
    Ok(vec![new, converging, complete, rollout])
}

fn plan_once(
    spec: &ThingShadowSetSpec,
    prior: &ThingShadowSetStatus,
    things: &[String],
    children: &HashMap<String, ChildFacts>,
    limits: &ShadowLimits,
) -> SetPlan {
    plan_set(&SetInput {
        name: "fleet",
        generation: Some(1),
        spec,
        prior,
        membership: Membership {
            things: Some(things),
            read_time: Some(t(0)),
            error: None,
        },
        children,
        foreign: &BTreeMap::new(),
        paused: false,
        now: t(60),
        limits,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let limits = ShadowLimits::default();
    println!(
        "plan_set: one pass of a ThingShadowSet ({} passes each)",
        args.passes
    );
    println!(
        "{:>7} {:<11} {:>9} {:>9} {:>8}",
        "things", "state", "median", "slowest", "changes"
    );
    for &n in &args.sizes {
        let things: Vec<String> = (0..n).map(thing).collect();
        for scenario in scenarios(n)? {
            let mut times: Vec<Duration> = Vec::with_capacity(args.passes);
            let mut changes = 0;
            for _ in 0..args.passes {
                let start = Instant::now();
                let plan = plan_once(
                    &scenario.spec,
                    &scenario.prior,
                    &things,
                    &scenario.children,
                    &limits,
                );
                times.push(start.elapsed());
                changes = std::hint::black_box(plan).changes.len();
            }
            times.sort();
            println!(
                "{:>7} {:<11} {:>7.2}ms {:>7.2}ms {:>8}",
                n,
                scenario.name,
                ms(times[times.len() / 2]),
                ms(times[times.len() - 1]),
                changes
            );
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
