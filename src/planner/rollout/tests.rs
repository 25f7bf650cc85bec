use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn settings(steps: &[u8]) -> RolloutSettings {
    RolloutSettings {
        steps: steps.to_vec(),
        wait_for_converged: true,
        step_timeout: Some(Duration::from_secs(600)),
        max_failures: FailureBudget::Count(2),
        on_failure: OnFailure::Pause,
    }
}

fn things(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("lamp-{i:03}")).collect()
}

/// The things in rollout order.
fn ordered(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort_by_key(|t| order_key(t));
    v
}

fn child(revision: &str, converged: bool) -> Child {
    Child {
        revision: revision.into(),
        since: Some(t(0)),
        converged,
        stalled: None,
        conflicting: None,
    }
}

/// A fleet where every device carries `revision`, converged.
fn fleet(names: &[String], revision: &str) -> Vec<Member> {
    names
        .iter()
        .map(|thing| Member {
            thing: thing.clone(),
            child: Some(child(revision, true)),
        })
        .collect()
}

fn plan(
    members: &[Member],
    revision: &str,
    settings: &RolloutSettings,
    memory: &RolloutMemory,
    now: DateTime<Utc>,
) -> RolloutPlan {
    plan_rollout(&RolloutInput {
        members,
        revision,
        settings,
        memory,
        paused: false,
        now,
    })
}

/// Applies the plan's assignments as the controller would (the new children have not
/// converged yet, and got their revision at `now`).
fn apply(members: &mut [Member], plan: &RolloutPlan, now: DateTime<Utc>) {
    for (thing, revision) in &plan.assign {
        let member = members.iter_mut().find(|m| &m.thing == thing).unwrap();
        member.child = Some(Child {
            revision: revision.clone(),
            since: Some(now),
            converged: false,
            stalled: None,
            conflicting: None,
        });
    }
}

/// Devices converge (as simulated devices do) on whatever they carry.
fn converge_all(members: &mut [Member]) {
    for member in members {
        if let Some(child) = &mut member.child {
            child.converged = true;
        }
    }
}

fn assigned(plan: &RolloutPlan) -> BTreeSet<String> {
    plan.assign.iter().map(|(t, _)| t.clone()).collect()
}

#[test]
fn slice_sizes_round_up_and_never_exceed_the_fleet() {
    assert_eq!(slice_size(5, 100), 5);
    assert_eq!(slice_size(5, 10), 1);
    assert_eq!(slice_size(1, 10_000), 100);
    assert_eq!(slice_size(100, 7), 7);
    assert_eq!(slice_size(33, 10), 4);
    assert_eq!(slice_size(1, 0), 0);
}

#[test]
fn failure_budgets_count_or_take_a_rounded_down_share() {
    assert_eq!(FailureBudget::Count(3).allowed(10), 3);
    assert_eq!(FailureBudget::Percent(10).allowed(25), 2);
    assert_eq!(FailureBudget::Percent(0).allowed(25), 0);
    assert_eq!(FailureBudget::Percent(100).allowed(25), 25);
}

#[test]
fn steps_must_grow_be_percentages_and_end_at_100() {
    assert!(settings(&[5, 25, 100]).validate().is_ok());
    assert!(settings(&[]).validate().is_ok());
    let errors = settings(&[0, 25, 25, 90]).validate().unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("spec.rollout.steps[0] 0")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("spec.rollout.steps[2] 25")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("must be 100")),
        "{errors:?}"
    );
    let errors = settings(&[101]).validate().unwrap_err();
    assert!(errors[0].contains("from 1 to 100"), "{errors:?}");
}

#[test]
fn a_canary_step_updates_its_slice_only_and_waits_for_convergence() {
    let names = things(20);
    let order = ordered(&names);
    let mut members = fleet(&names, "r1");
    let s = settings(&[10, 50, 100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        revision: Some("r1".into()),
        ..RolloutMemory::default()
    };

    let p = plan(&members, "r2", &s, &memory, t(10));
    assert_eq!(p.phase, Phase::Progressing);
    assert_eq!(p.memory.step, 0);
    assert_eq!(p.memory.revision.as_deref(), Some("r2"));
    let first: BTreeSet<String> = order[..2].iter().cloned().collect();
    assert_eq!(assigned(&p), first, "the first 10% in rollout order");
    apply(&mut members, &p, t(10));

    // Not converged yet: the gate holds, nothing more is assigned.
    let p = plan(&members, "r2", &s, &p.memory, t(20));
    assert!(p.assign.is_empty(), "{:?}", p.assign);
    assert_eq!(p.memory.step, 0);
    assert_eq!((p.counts.updated, p.counts.converged), (2, 0));
    assert_eq!(p.recheck_after, Some(Duration::from_secs(590)));

    converge_all(&mut members);
    let p = plan(&members, "r2", &s, &p.memory, t(30));
    assert_eq!(p.memory.step, 1);
    assert_eq!(p.assign.len(), 8, "50% of 20, less the 2 already updated");
    assert!(p.assign.iter().all(|(_, r)| r == "r2"));
    apply(&mut members, &p, t(30));
    converge_all(&mut members);
    let p = plan(&members, "r2", &s, &p.memory, t(40));
    assert_eq!(p.memory.step, 2);
    assert_eq!(p.assign.len(), 10);
    apply(&mut members, &p, t(40));
    converge_all(&mut members);
    let p = plan(&members, "r2", &s, &p.memory, t(50));
    assert_eq!(p.phase, Phase::Complete);
    assert_eq!(p.memory.complete_revision.as_deref(), Some("r2"));
    assert!(p.assign.is_empty());
    assert_eq!(
        p.counts,
        RolloutCounts {
            targeted: 20,
            updated: 20,
            converged: 20,
            failed: 0,
            conflicting: 0
        }
    );
}

#[test]
fn without_waiting_for_convergence_a_step_passes_once_its_devices_carry_the_revision() {
    let names = things(10);
    let mut members = fleet(&names, "r1");
    let mut s = settings(&[20, 100]);
    s.wait_for_converged = false;
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let p = plan(&members, "r2", &s, &memory, t(0));
    assert_eq!(p.assign.len(), 2);
    apply(&mut members, &p, t(0));
    let p = plan(&members, "r2", &s, &p.memory, t(1));
    assert_eq!((p.memory.step, p.assign.len()), (1, 8));
    apply(&mut members, &p, t(1));
    let p = plan(&members, "r2", &s, &p.memory, t(2));
    assert_eq!(p.phase, Phase::Complete);
}

#[test]
fn a_silent_device_fails_at_the_step_timeout_and_does_not_block() {
    let names = things(10);
    let order = ordered(&names);
    let mut members = fleet(&names, "r1");
    let s = settings(&[20, 100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let p = plan(&members, "r2", &s, &memory, t(0));
    apply(&mut members, &p, t(0));
    // One of the two canaries converges, the other stays silent.
    members
        .iter_mut()
        .find(|m| m.thing == order[0])
        .unwrap()
        .child
        .as_mut()
        .unwrap()
        .converged = true;
    let p = plan(&members, "r2", &s, &p.memory, t(599));
    assert!(p.assign.is_empty());
    assert_eq!(p.recheck_after, Some(Duration::from_secs(1)));
    let p = plan(&members, "r2", &s, &p.memory, t(600));
    assert_eq!(p.counts.failed, 1);
    assert_eq!(p.failed[0].thing, order[1]);
    assert!(
        p.failed[0].reason.contains("not converged 600s"),
        "{:?}",
        p.failed
    );
    assert_eq!(p.memory.step, 1, "one failure is within the budget of 2");
    assert_eq!(p.assign.len(), 8);
}

#[test]
fn a_stalled_device_fails_at_once() {
    let names = things(10);
    let order = ordered(&names);
    let mut members = fleet(&names, "r1");
    let s = settings(&[20, 100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let p = plan(&members, "r2", &s, &memory, t(0));
    apply(&mut members, &p, t(0));
    for thing in &order[..2] {
        let child = members
            .iter_mut()
            .find(|m| &m.thing == thing)
            .unwrap()
            .child
            .as_mut()
            .unwrap();
        child.stalled = Some("InvalidSpec: spec.desired too deep".into());
    }
    let p = plan(&members, "r2", &s, &p.memory, t(1));
    assert_eq!(p.counts.failed, 2);
    assert_eq!(
        p.phase,
        Phase::Progressing,
        "2 failures are within the budget"
    );
}

#[test]
fn beyond_the_budget_pause_stops_and_rollback_restores_the_previous_revision() {
    let names = things(10);
    let order = ordered(&names);
    for on_failure in [OnFailure::Pause, OnFailure::Rollback] {
        let mut members = fleet(&names, "r1");
        let mut s = settings(&[30, 100]);
        s.max_failures = FailureBudget::Count(1);
        s.on_failure = on_failure;
        let memory = RolloutMemory {
            complete_revision: Some("r1".into()),
            ..RolloutMemory::default()
        };
        let p = plan(&members, "r2", &s, &memory, t(0));
        assert_eq!(p.assign.len(), 3);
        apply(&mut members, &p, t(0));
        for thing in &order[..2] {
            members
                .iter_mut()
                .find(|m| &m.thing == thing)
                .unwrap()
                .child
                .as_mut()
                .unwrap()
                .stalled = Some("Conflict".into());
        }
        let p = plan(&members, "r2", &s, &p.memory, t(1));
        assert_eq!(p.phase, Phase::Aborted, "{on_failure:?}");
        assert!(p.memory.aborted);
        match on_failure {
            OnFailure::Pause => assert!(p.assign.is_empty(), "{:?}", p.assign),
            OnFailure::Rollback => {
                let back: BTreeSet<String> = order[..3].iter().cloned().collect();
                assert_eq!(assigned(&p), back);
                assert!(p.assign.iter().all(|(_, r)| r == "r1"), "{:?}", p.assign);
            }
        }
        apply(&mut members, &p, t(1));
        converge_all(&mut members);
        // Aborted stays aborted: nothing more happens until the template changes.
        let again = plan(&members, "r2", &s, &p.memory, t(2));
        assert_eq!(again.phase, Phase::Aborted);
        assert!(again.assign.is_empty(), "{:?}", again.assign);
        // A new template starts over from the first step.
        let fixed = plan(&members, "r3", &s, &again.memory, t(3));
        assert_eq!(fixed.phase, Phase::Progressing);
        assert!(!fixed.memory.aborted);
        assert_eq!(fixed.memory.step, 0);
        assert_eq!(fixed.assign.len(), 3);
    }
}

#[test]
fn a_template_change_mid_rollout_starts_over_from_the_first_step() {
    let names = things(10);
    let mut members = fleet(&names, "r1");
    let s = settings(&[10, 50, 100]);
    let mut memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    for now in 0..3 {
        let p = plan(&members, "r2", &s, &memory, t(now));
        apply(&mut members, &p, t(now));
        converge_all(&mut members);
        memory = p.memory;
    }
    assert_eq!(memory.step, 2);
    let p = plan(&members, "r3", &s, &memory, t(10));
    assert_eq!(p.memory.step, 0);
    assert_eq!(p.memory.revision.as_deref(), Some("r3"));
    assert_eq!(p.assign.len(), 1, "the first 10% again");
    assert_eq!(p.memory.complete_revision.as_deref(), Some("r1"));
}

#[test]
fn new_members_get_the_last_complete_revision_until_their_turn() {
    let names = things(10);
    let order = ordered(&names);
    let mut members = fleet(&names, "r1");
    let s = settings(&[10, 100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    // The last device in the order has no child yet: it joined the selection.
    members
        .iter_mut()
        .find(|m| m.thing == order[9])
        .unwrap()
        .child = None;
    let p = plan(&members, "r2", &s, &memory, t(0));
    assert!(p.assign.contains(&(order[0].clone(), "r2".into())));
    assert!(p.assign.contains(&(order[9].clone(), "r1".into())));
    assert_eq!(p.assign.len(), 2);
}

#[test]
fn once_complete_new_members_get_the_current_revision() {
    let names = things(5);
    let mut members = fleet(&names, "r2");
    members.push(Member {
        thing: "newcomer".into(),
        child: None,
    });
    let memory = RolloutMemory {
        revision: Some("r2".into()),
        complete_revision: Some("r2".into()),
        step: 0,
        aborted: false,
        step_started: None,
    };
    let p = plan(&members, "r2", &settings(&[10, 100]), &memory, t(0));
    assert_eq!(p.assign, vec![("newcomer".to_string(), "r2".to_string())]);
}

#[test]
fn the_first_rollout_writes_nothing_outside_the_slices_reached() {
    let names = things(10);
    let mut members: Vec<Member> = names
        .iter()
        .map(|thing| Member {
            thing: thing.clone(),
            child: None,
        })
        .collect();
    let s = settings(&[20, 100]);
    let p = plan(&members, "r1", &s, &RolloutMemory::default(), t(0));
    assert_eq!(p.assign.len(), 2, "only the canaries get a ThingShadow");
    apply(&mut members, &p, t(0));
    converge_all(&mut members);
    let p = plan(&members, "r1", &s, &p.memory, t(1));
    assert_eq!(p.assign.len(), 8);
}

#[test]
fn conflicting_devices_are_counted_skipped_and_never_block() {
    let names = things(10);
    let order = ordered(&names);
    let mut members = fleet(&names, "r1");
    let first = members.iter_mut().find(|m| m.thing == order[0]).unwrap();
    first.child.as_mut().unwrap().conflicting =
        Some("the classic shadow is already managed by ThingShadow home/lamp".into());
    let s = settings(&[10, 100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let p = plan(&members, "r2", &s, &memory, t(0));
    assert_eq!(p.counts.conflicting, 1);
    assert_eq!(p.conflicting[0].thing, order[0]);
    // The first slice holds only the conflicting device: the gate passes at once.
    assert_eq!(p.memory.step, 1);
    assert_eq!(p.assign.len(), 9);
    assert!(!assigned(&p).contains(&order[0]));
}

#[test]
fn a_paused_rollout_plans_nothing_and_resumes_where_it_stood() {
    let names = things(10);
    let members = fleet(&names, "r1");
    let s = settings(&[10, 100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let paused = plan_rollout(&RolloutInput {
        members: &members,
        revision: "r2",
        settings: &s,
        memory: &memory,
        paused: true,
        now: t(0),
    });
    assert_eq!(paused.phase, Phase::Paused);
    assert!(paused.assign.is_empty());
    let resumed = plan(&members, "r2", &s, &paused.memory, t(1));
    assert_eq!(resumed.assign.len(), 1);
}

#[test]
fn a_device_without_a_start_time_times_out_from_the_start_of_the_step() {
    let names = things(4);
    let mut members = fleet(&names, "r1");
    let s = settings(&[100]);
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let p = plan(&members, "r2", &s, &memory, t(0));
    assert_eq!(p.memory.step_started, Some(t(0)));
    apply(&mut members, &p, t(0));
    for member in &mut members {
        member.child.as_mut().unwrap().since = None;
    }
    let p = plan(&members, "r2", &s, &p.memory, t(599));
    assert_eq!(p.counts.failed, 0);
    let p = plan(&members, "r2", &s, &p.memory, t(600));
    assert_eq!(p.counts.failed, 4);
}

#[test]
fn the_status_lists_are_bounded() {
    let names = things(100);
    let members: Vec<Member> = names
        .iter()
        .map(|thing| Member {
            thing: thing.clone(),
            child: Some(Child {
                stalled: Some("InvalidSpec".into()),
                ..child("r2", false)
            }),
        })
        .collect();
    let p = plan(
        &members,
        "r2",
        &settings(&[]),
        &RolloutMemory::default(),
        t(0),
    );
    assert_eq!(p.counts.failed, 100);
    assert_eq!(p.failed.len(), MAX_LISTED);
}

// ---------------------------------------------------------------- properties

#[derive(Clone, Debug)]
struct Scenario {
    members: Vec<Member>,
    settings: RolloutSettings,
    memory: RolloutMemory,
    now: i64,
}

fn arb_child() -> impl Strategy<Value = Option<Child>> {
    prop_oneof![
        Just(None),
        (
            prop::sample::select(vec!["r1", "r2", "r3"]),
            0i64..2000,
            any::<bool>(),
            prop::option::weighted(0.1, Just("Stalled".to_string())),
            prop::option::weighted(0.05, Just("DuplicateTarget".to_string())),
        )
            .prop_map(
                |(revision, since, converged, stalled, conflicting)| Some(Child {
                    revision: revision.into(),
                    since: Some(t(since)),
                    converged,
                    stalled,
                    conflicting,
                })
            ),
    ]
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    let steps = prop::sample::select(vec![
        vec![],
        vec![100],
        vec![5, 25, 100],
        vec![1, 10, 100],
        vec![50, 100],
        vec![33, 66, 100],
    ]);
    (
        prop::collection::vec(arb_child(), 0..60),
        steps,
        any::<bool>(),
        prop::option::of(1u64..1500),
        prop_oneof![
            (0u32..5).prop_map(FailureBudget::Count),
            (0u8..=100).prop_map(FailureBudget::Percent)
        ],
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["r1", "r2", "r3"])),
        0usize..4,
        any::<bool>(),
        0i64..3000,
    )
        .prop_map(
            |(children, steps, wait, timeout, budget, rollback, complete, step, aborted, now)| {
                let members = children
                    .into_iter()
                    .enumerate()
                    .map(|(i, child)| Member {
                        thing: format!("thing-{i}"),
                        child,
                    })
                    .collect();
                Scenario {
                    members,
                    settings: RolloutSettings {
                        steps,
                        wait_for_converged: wait,
                        step_timeout: timeout.map(Duration::from_secs),
                        max_failures: budget,
                        on_failure: if rollback {
                            OnFailure::Rollback
                        } else {
                            OnFailure::Pause
                        },
                    },
                    memory: RolloutMemory {
                        revision: Some("r2".into()),
                        complete_revision: complete.map(str::to_string),
                        step,
                        aborted,
                        step_started: None,
                    },
                    now,
                }
            },
        )
}

fn run(s: &Scenario, revision: &str) -> RolloutPlan {
    plan(&s.members, revision, &s.settings, &s.memory, t(s.now))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The new revision is only ever assigned inside the current step's slice.
    #[test]
    fn never_more_updated_than_the_step_allows(s in arb_scenario()) {
        let p = run(&s, "r2");
        let order = ordered(&s.members.iter().map(|m| m.thing.clone()).collect::<Vec<_>>());
        let steps = s.settings.effective_steps();
        let size = slice_size(steps[p.memory.step], order.len());
        let slice: BTreeSet<&String> = order[..size].iter().collect();
        for (thing, revision) in &p.assign {
            if revision == "r2" {
                prop_assert!(slice.contains(thing), "{thing} is outside the slice of step {}", p.memory.step);
            }
        }
        // Each device at most once, and never a device that carries its revision already.
        prop_assert_eq!(assigned(&p).len(), p.assign.len());
        for (thing, revision) in &p.assign {
            let member = s.members.iter().find(|m| &m.thing == thing).unwrap();
            prop_assert!(member.child.as_ref().is_none_or(|c| &c.revision != revision));
        }
    }

    /// The plan does not depend on the order in which the selection is listed.
    #[test]
    fn the_order_of_devices_is_stable(s in arb_scenario(), seed in any::<u64>()) {
        let mut shuffled = s.clone();
        let len = shuffled.members.len();
        if len > 1 {
            let mut state = seed;
            for i in (1..len).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.members.swap(i, (state >> 33) as usize % (i + 1));
            }
        }
        prop_assert_eq!(run(&s, "r2"), run(&shuffled, "r2"));
    }

    /// Rollback sends exactly the devices that carry the new revision back to the last
    /// complete one, and touches nothing else.
    #[test]
    fn rollback_restores_exactly_the_previous_template(mut s in arb_scenario()) {
        s.settings.on_failure = OnFailure::Rollback;
        s.memory.aborted = true;
        s.memory.complete_revision = Some("r1".into());
        let p = run(&s, "r2");
        prop_assert_eq!(p.phase, Phase::Aborted);
        let expected: BTreeSet<String> = s.members.iter()
            .filter(|m| m.child.as_ref().is_some_and(|c| c.revision == "r2" && c.conflicting.is_none()))
            .map(|m| m.thing.clone())
            .collect();
        prop_assert_eq!(assigned(&p), expected);
        prop_assert!(p.assign.iter().all(|(_, r)| r == "r1"));
    }

    /// With a step timeout, a device that never converges fails once the timeout passed
    /// and the rollout moves on (or stops on the budget): it never waits forever.
    #[test]
    fn a_failed_device_never_blocks_forever(mut s in arb_scenario()) {
        s.settings.wait_for_converged = true;
        s.settings.step_timeout = Some(Duration::from_secs(60));
        s.memory.aborted = false;
        s.memory.complete_revision = Some("r1".into());
        let mut members = s.members.clone();
        let mut memory = s.memory.clone();
        let steps = s.settings.effective_steps();
        // After every device got its revision (times are up to 2,000 s).
        let mut now = 2_000;
        // Devices never converge; each pass is a timeout later than the last.
        for _ in 0..(steps.len() + 2) {
            let p = plan(&members, "r2", &s.settings, &memory, t(now));
            if p.phase != Phase::Progressing {
                return Ok(());
            }
            apply(&mut members, &p, t(now));
            memory = p.memory;
            now += 61;
        }
        let p = plan(&members, "r2", &s.settings, &memory, t(now));
        prop_assert!(p.phase != Phase::Progressing, "still progressing at step {}: {:?}", p.memory.step, p.counts);
    }

    /// A new template always starts from the first step, whatever the old one reached.
    #[test]
    fn a_template_change_starts_over(s in arb_scenario()) {
        let p = run(&s, "r9");
        let carried_r9 = s.members.iter().any(|m| m.child.as_ref().is_some_and(|c| c.revision == "r9"));
        prop_assert!(!carried_r9);
        prop_assert!(!p.memory.aborted || p.counts.failed > s.settings.max_failures.allowed(s.members.len()));
        prop_assert_eq!(p.memory.revision.as_deref(), Some("r9"));
        // Nobody carries r9 yet, so no gate beyond the first can have passed, unless the
        // first slice holds only conflicting devices (or nobody).
        let order = ordered(&s.members.iter().map(|m| m.thing.clone()).collect::<Vec<_>>());
        let first = slice_size(s.settings.effective_steps()[0], order.len());
        let all_conflicting = order[..first].iter().all(|thing| {
            s.members.iter().find(|m| &m.thing == thing).and_then(|m| m.child.as_ref()).is_some_and(|c| c.conflicting.is_some())
        });
        if !all_conflicting {
            prop_assert_eq!(p.memory.step, 0);
        }
    }

    /// Counts add up and lists stay bounded.
    #[test]
    fn counts_are_consistent(s in arb_scenario()) {
        let p = run(&s, "r2");
        prop_assert_eq!(p.counts.targeted, s.members.len());
        prop_assert!(p.counts.converged <= p.counts.updated);
        prop_assert!(p.counts.failed <= p.counts.updated);
        prop_assert!(p.counts.updated + p.counts.conflicting <= p.counts.targeted);
        prop_assert!(p.failed.len() <= MAX_LISTED && p.conflicting.len() <= MAX_LISTED);
        prop_assert!(p.memory.step < s.settings.effective_steps().len());
    }
}

#[test]
fn things_that_join_before_the_canary_never_push_the_step_over_its_size() {
    // Ten devices on r1; r2 at step [10%] goes to one of them.
    let names = things(10);
    let mut members = fleet(&names, "r1");
    let memory = RolloutMemory {
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let steps = settings(&[10, 100]);
    let first = plan(&members, "r2", &steps, &memory, t(0));
    assert_eq!(first.assign.len(), 1, "{:?}", first.assign);
    apply(&mut members, &first, t(0));
    // Ten more join; some sort before the canary. The step now allows 2 of 20: one
    // more device, not a whole new prefix.
    members.extend((10..20).map(|i| Member {
        thing: format!("lamp-{i:03}"),
        child: None,
    }));
    let second = plan(&members, "r2", &steps, &first.memory, t(1));
    let new: Vec<_> = second.assign.iter().filter(|(_, r)| r == "r2").collect();
    assert_eq!(new.len(), 1, "{:?}", second.assign);
    apply(&mut members, &second, t(1));
    let carriers = members
        .iter()
        .filter(|m| m.child.as_ref().is_some_and(|c| c.revision == "r2"))
        .count();
    assert_eq!(carriers, slice_size(10, 20));
}

#[test]
fn a_failure_after_the_rollout_completed_does_not_abort_it() {
    let names = things(5);
    let members = fleet(&names, "r1");
    let memory = RolloutMemory {
        revision: Some("r1".into()),
        complete_revision: Some("r1".into()),
        ..RolloutMemory::default()
    };
    let mut with_silent = members.clone();
    with_silent.push(Member {
        thing: "late-joiner".into(),
        child: Some(Child {
            revision: "r1".into(),
            since: Some(t(0)),
            converged: false,
            stalled: None,
            conflicting: None,
        }),
    });
    let steps = settings(&[]);
    let strict = RolloutSettings {
        max_failures: FailureBudget::Count(0),
        ..steps
    };
    let result = plan(&with_silent, "r1", &strict, &memory, t(3600));
    assert_eq!(result.counts.failed, 1);
    assert_eq!(result.phase, Phase::Complete);
    assert!(!result.memory.aborted);
}
