//! Fleet mode of the convergence benchmark (`--set N`): one `ThingShadowSet` of N things
//! against N standalone `ThingShadow`s, on the same real control plane, data plane and
//! release operator as the standalone mode, with simulated devices, so that "converged"
//! means what a rollout waits for: `Converged=True` on every shadow.
//!
//! 1. **Standalone** (`standalone_seconds`): N ThingShadows (things `bench-solo-NNNNN`,
//!    created 32 at a time), each with the set's template spec; from the first create to
//!    every one Ready and Converged (seen through a watch). Then they are deleted
//!    (`deletionPolicy: Retain`: no data-plane call) and the operator is stopped; its peak
//!    RSS is kept.
//! 2. **Set, all at once** (`set_seconds`): a new operator; one ThingShadowSet selecting N
//!    other things (`selector.things`, `bench-fleet-NNNNN`), no steps, `waitForConverged`;
//!    from the create to `phase: Complete` with `converged == N` (seen through a watch of
//!    the set). `overhead = set_seconds / standalone_seconds - 1`.
//! 3. **Rollout in steps** (`rollout_seconds`, `step_seconds`): the template changes and
//!    `spec.rollout.steps` becomes `--steps` (default 1, 10, 100) in one patch; from the
//!    patch to `Complete` again, and each step from the watch's first sight of its
//!    `status.step` to the next one's (the first step from the patch, the last to
//!    `Complete`).
//!
//! Every count comes from outside the operator, as in the standalone mode: data-plane
//! calls from `/_shadowsync/stats`, the operator's requests from the audit log by verb,
//! resource and subresource (Events apart), device reports from
//! `/_shadowsync/simulation`, memory and CPU from `/proc`.
//!
//! A ThingShadow notices that its device reported only when it reads the shadow again,
//! at its refresh slot: after a write, the next read comes 0.9 to 1.9 refresh intervals
//! later. Both sides use the same `refreshInterval` (`--refresh-seconds`, by default
//! what keeps the mean refresh reads at a quarter of the operator's data-plane rate), so
//! the comparison is fair, but that wait is most of every figure here.

use super::*;

use kube::api::{DeleteParams, ListParams};

/// Resource name of the sets (audit log).
pub const SET_PLURAL: &str = "thingshadowsets";
/// Rollout steps of the template change, cumulative percentages.
pub const DEFAULT_STEPS: [u8; 3] = [1, 10, 100];
/// How long a simulated device takes to report.
pub const DEFAULT_REPORT_DELAY_MS: u64 = 500;
/// `spec.selector.things` holds at most this many names (the CRD's `maxItems`).
const MAX_THINGS: usize = 10_000;
/// The operator's default `--max-rps`.
const DEFAULT_MAX_RPS: f64 = 100.0;
const SET_NAME: &str = "fleet";
const SOLO_PREFIX: &str = "bench-solo-";
const FLEET_PREFIX: &str = "bench-fleet-";
/// Label of the standalone ThingShadows (what the deletion selects).
const PHASE_LABEL: &str = "bench.shadowsync.dev/phase";
/// The peak RSS target, at 10,000 children.
const RSS_TARGET_MIB: f64 = 64.0;
const OVERHEAD_TARGET: f64 = 0.10;
const STATUS_WRITES_TARGET: f64 = 1.0;

/// Reads `--steps`: comma-separated cumulative percentages, growing, the last 100 (the
/// rules of `spec.rollout.steps`).
pub fn parse_steps(text: &str) -> Result<Vec<u8>> {
    let mut steps: Vec<u8> = Vec::new();
    for (i, part) in text.split(',').enumerate() {
        let step: u8 = part
            .trim()
            .parse()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| {
                format!(
                    "--steps {text:?}: step {} ({part:?}) must be a percentage from 1 to 100",
                    i + 1
                )
            })?;
        if let Some(before) = steps.last().filter(|b| **b >= step) {
            return Err(format!(
                "--steps {text:?}: steps are cumulative and must grow ({step} after {before})"
            )
            .into());
        }
        steps.push(step);
    }
    if steps.last() != Some(&100) {
        return Err(format!("--steps {text:?}: the last step must be 100").into());
    }
    Ok(steps)
}

/// `--set N`: from 1 to the most names `spec.selector.things` holds.
pub fn check_size(n: usize) -> Result<()> {
    if n == 0 || n > MAX_THINGS {
        return Err(format!(
            "--set {n}: must be from 1 to {MAX_THINGS} (spec.selector.things holds at most \
             {MAX_THINGS} names)"
        )
        .into());
    }
    Ok(())
}

/// The operator's data-plane rate: `--max-rps` or its default.
fn max_rps(args: &Args) -> f64 {
    args.max_rps
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_MAX_RPS)
}

/// The shadows' refreshInterval by default: the mean refresh reads (N per interval) at a
/// quarter of the data-plane rate, at least 10 s.
fn default_refresh_seconds(n: usize, rate: f64) -> u64 {
    ((4.0 * n as f64 / rate).ceil() as u64).max(10)
}

/// The rollout's `stepTimeout`: long enough that no device fails for the benchmark's own
/// pace (the data-plane queue of a whole step, then up to two refresh intervals).
fn step_timeout_seconds(n: usize, refresh: u64, rate: f64) -> u64 {
    (4 * refresh + (6.0 * n as f64 / rate).ceil() as u64).max(600)
}

/// What the run is expected to take, in seconds, by phase.
struct Estimate {
    standalone: f64,
    deletion: f64,
    set: f64,
    rollout: f64,
}

impl Estimate {
    /// Two calls per thing (a read and a write) at three quarters of the rate (refresh
    /// reads take the rest), then the wait for the last refresh read (up to 1.9 refresh
    /// intervals after a write); per step of the rollout, that wait again.
    fn new(n: usize, refresh: u64, rate: f64, steps: usize) -> Estimate {
        let writes = 2.0 * n as f64 / (0.75 * rate);
        let wait = 1.9 * refresh as f64 + 2.0;
        Estimate {
            standalone: writes + wait,
            deletion: 5.0 + n as f64 / 100.0,
            set: writes + wait,
            rollout: writes + steps as f64 * wait,
        }
    }

    fn total(&self) -> f64 {
        // Control plane, operator starts, settling.
        60.0 + self.standalone + self.deletion + self.set + self.rollout
    }
}

/// Fills in what depends on the size: the refresh interval and the overall timeout.
pub fn fill_defaults(args: &mut Args, timeout_given: bool) -> Result<()> {
    let n = args.set.ok_or("fleet mode without --set")?;
    let rate = max_rps(args);
    if args.refresh_seconds == 0 {
        args.refresh_seconds = default_refresh_seconds(n, rate);
    }
    if !timeout_given {
        let expected = Estimate::new(n, args.refresh_seconds, rate, args.steps.len()).total();
        args.timeout = Duration::from_secs((3.0 * expected).max(3600.0) as u64);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What the watches see

/// Which ThingShadows a watch event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// The standalone ones (phase 1).
    Solo,
    /// Children of a set (label `iot.shadowsync.dev/set`).
    Child,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct ShadowSeen {
    group: Group,
    generation: i64,
    /// Ready and Converged, both for the current generation.
    converged: bool,
}

impl ShadowSeen {
    fn of(obj: &DynamicObject) -> ShadowSeen {
        let labels = obj.metadata.labels.as_ref();
        let group = if labels.is_some_and(|l| l.contains_key(shadowsync::api::SET_LABEL)) {
            Group::Child
        } else if labels.is_some_and(|l| l.get(PHASE_LABEL).is_some_and(|v| v == "standalone")) {
            Group::Solo
        } else {
            Group::Other
        };
        let generation = obj.metadata.generation.unwrap_or(0);
        let status = &obj.data["status"];
        let holds = |type_: &str| {
            status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == type_ && c["status"] == "True")
                .and_then(|c| {
                    c["observedGeneration"]
                        .as_i64()
                        .or_else(|| status["observedGeneration"].as_i64())
                })
                == Some(generation)
        };
        ShadowSeen {
            group,
            generation,
            converged: status["observedGeneration"].as_i64() == Some(generation)
                && holds("Ready")
                && holds("Converged"),
        }
    }
}

/// The ThingShadows of the benchmark's namespace, as a watch delivers them (deletions and
/// relists included).
#[derive(Default)]
struct Shadows {
    state: Mutex<ShadowState>,
}

#[derive(Default)]
struct ShadowState {
    objects: HashMap<String, ShadowSeen>,
    /// A relist under way.
    relist: Option<HashMap<String, ShadowSeen>>,
}

/// Objects of one group; of those, at a generation at least the one asked; and of
/// those, Converged.
#[derive(Clone, Copy, Debug, Default)]
struct GroupCount {
    present: usize,
    current: usize,
    converged: usize,
}

impl Shadows {
    fn state(&self) -> std::sync::MutexGuard<'_, ShadowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(&self, event: watcher::Event<DynamicObject>) {
        let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
        let mut state = self.state();
        match event {
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let seen = ShadowSeen::of(&o);
                state
                    .relist
                    .get_or_insert_with(HashMap::new)
                    .insert(name(&o), seen);
            }
            watcher::Event::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                state.objects = listed;
            }
            watcher::Event::Apply(o) => {
                let seen = ShadowSeen::of(&o);
                state.objects.insert(name(&o), seen);
            }
            watcher::Event::Delete(o) => {
                state.objects.remove(&name(&o));
            }
        }
    }

    fn count(&self, group: Group, generation: i64) -> GroupCount {
        let state = self.state();
        let mut count = GroupCount::default();
        for seen in state.objects.values().filter(|s| s.group == group) {
            count.present += 1;
            if seen.generation >= generation {
                count.current += 1;
                if seen.converged {
                    count.converged += 1;
                }
            }
        }
        count
    }
}

/// A set's status as the watch last delivered it.
#[derive(Clone, Debug, Default, PartialEq)]
struct SetSeen {
    generation: i64,
    observed: i64,
    phase: String,
    step: String,
    revision: String,
    complete_revision: String,
    targeted: u64,
    updated: u64,
    converged: u64,
    failed: u64,
    failed_things: Value,
    stalled: Option<String>,
}

impl SetSeen {
    fn of(obj: &DynamicObject) -> SetSeen {
        let status = &obj.data["status"];
        let text = |key: &str| status[key].as_str().unwrap_or_default().to_string();
        let count = |key: &str| status[key].as_u64().unwrap_or(0);
        let stalled = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Stalled" && c["status"] == "True")
            .map(|c| format!("{}: {}", c["reason"], c["message"]));
        SetSeen {
            generation: obj.metadata.generation.unwrap_or(0),
            observed: status["observedGeneration"].as_i64().unwrap_or(0),
            phase: text("phase"),
            step: text("step"),
            revision: text("revision"),
            complete_revision: text("completeRevision"),
            targeted: count("targeted"),
            updated: count("updated"),
            converged: count("converged"),
            failed: count("failed"),
            failed_things: status["failedThings"].clone(),
            stalled,
        }
    }

    fn current(&self) -> bool {
        self.generation > 0 && self.observed == self.generation
    }

    /// Complete for its current generation, with every one of `n` things converged on
    /// the revision it rolls out.
    fn complete(&self, n: usize) -> bool {
        self.current()
            && self.phase == "Complete"
            && self.converged as usize == n
            && self.updated as usize == n
            && !self.revision.is_empty()
            && self.revision == self.complete_revision
    }

    fn describe(&self) -> String {
        format!(
            "generation {} (status for {}), phase {:?}, step {:?}, revision {:?}: targeted {}, \
             updated {}, converged {}, failed {}",
            self.generation,
            self.observed,
            self.phase,
            self.step,
            self.revision,
            self.targeted,
            self.updated,
            self.converged,
            self.failed
        )
    }
}

/// The benchmark's set, as a watch delivers it: the latest status and every change of
/// its generation, phase, step or revision, with when the watch saw it.
#[derive(Default)]
struct SetWatch {
    state: Mutex<SetState>,
}

#[derive(Default)]
struct SetState {
    latest: Option<SetSeen>,
    transitions: Vec<(Instant, SetSeen)>,
}

impl SetWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, SetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self, obj: &DynamicObject) {
        if obj.metadata.name.as_deref() != Some(SET_NAME) {
            return;
        }
        let seen = SetSeen::of(obj);
        let mut state = self.state();
        let moved = state.latest.as_ref().is_none_or(|last| {
            (last.observed, &last.phase, &last.step, &last.revision)
                != (seen.observed, &seen.phase, &seen.step, &seen.revision)
        });
        if moved {
            state.transitions.push((Instant::now(), seen.clone()));
        }
        state.latest = Some(seen);
    }

    fn latest(&self) -> Option<SetSeen> {
        self.state().latest.clone()
    }

    fn transitions_since(&self, since: Instant) -> Vec<(Instant, SetSeen)> {
        self.state()
            .transitions
            .iter()
            .filter(|(at, _)| *at >= since)
            .cloned()
            .collect()
    }
}

fn watch_shadows(client: kube::Client, shadows: Arc<Shadows>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client,
            NAMESPACE,
            &api_resource("ThingShadow", SHADOW_PLURAL),
        );
        let stream = watcher(api, watcher::Config::default().page_size(500));
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => shadows.event(event),
                Err(err) => eprintln!("watch of the ThingShadows: {err}"),
            }
        }
    })
}

fn watch_sets(client: kube::Client, sets: Arc<SetWatch>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client,
            NAMESPACE,
            &api_resource("ThingShadowSet", SET_PLURAL),
        );
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => sets.seen(&o),
                Ok(_) => {}
                Err(err) => eprintln!("watch of the ThingShadowSets: {err}"),
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// The resources

fn solo(i: usize) -> String {
    format!("{SOLO_PREFIX}{i:05}")
}

fn fleet_thing(i: usize) -> String {
    format!("{FLEET_PREFIX}{i:05}")
}

/// The template's desired state: the same for every device.
fn fleet_desired(round: u32) -> Value {
    json!({"power": "on", "level": 3, "round": round, "config": {"mode": "eco", "interval": 30}})
}

/// The spec every shadow gets, standalone or child, but for `thingName`. `Retain`, so
/// that deleting the standalone ones costs no data-plane call.
fn template(refresh: u64) -> Value {
    json!({
        "desired": fleet_desired(1),
        "refreshInterval": format!("{refresh}s"),
        "deletionPolicy": "Retain",
    })
}

fn solo_manifest(i: usize, refresh: u64) -> Value {
    let mut spec = template(refresh);
    spec["thingName"] = json!(solo(i));
    json!({
        "apiVersion": shadowsync::api::API_VERSION,
        "kind": "ThingShadow",
        "metadata": {
            "name": solo(i),
            "namespace": NAMESPACE,
            "labels": {PHASE_LABEL: "standalone"},
        },
        "spec": spec,
    })
}

fn set_manifest(n: usize, refresh: u64, step_timeout: u64) -> Value {
    json!({
        "apiVersion": shadowsync::api::API_VERSION,
        "kind": "ThingShadowSet",
        "metadata": {"name": SET_NAME, "namespace": NAMESPACE},
        "spec": {
            "selector": {"things": (0..n).map(fleet_thing).collect::<Vec<_>>()},
            "template": template(refresh),
            "rollout": {
                "waitForConverged": true,
                "stepTimeout": format!("{step_timeout}s"),
                "maxFailures": 0,
                "onFailure": "Pause",
            },
        },
    })
}

fn shadows_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &api_resource("ThingShadow", SHADOW_PLURAL),
    )
}

fn sets_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &api_resource("ThingShadowSet", SET_PLURAL),
    )
}

fn bench_post() -> PostParams {
    PostParams {
        field_manager: Some("shadowsync-bench".into()),
        ..Default::default()
    }
}

async fn create_solo(client: &kube::Client, n: usize, refresh: u64) -> Result<Duration> {
    let started = Instant::now();
    let api = shadows_api(client);
    let pp = bench_post();
    futures::stream::iter(0..n)
        .map(|i| {
            let (api, pp) = (&api, &pp);
            async move {
                let obj: DynamicObject = serde_json::from_value(solo_manifest(i, refresh))?;
                api.create(pp, &obj).await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------
// Waiting

/// Polls the ThingShadow watch until `n` of `group` are Converged at `generation` or
/// later.
async fn wait_converged(
    shadows: &Shadows,
    group: Group,
    n: usize,
    generation: i64,
    deadline: Duration,
    what: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let count = shadows.count(group, generation);
        if count.converged >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "{what}: only {}/{n} Converged ({} present) after {deadline:?}",
                count.converged, count.present
            )
            .into());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {what}: {}/{n} Converged ({} present) after {:.0}s",
                count.converged,
                count.present,
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the children of one rollout step did, as the ThingShadow watch saw it: when the
/// first of them got the new spec (the children at the new generation exceed the
/// previous step's slice), when all of them had it, and when all of them were
/// Converged. Times from the start of the phase.
#[derive(Clone, Copy, Debug, Default)]
struct StepDevices {
    first_updated: Option<Duration>,
    all_updated: Option<Duration>,
    all_converged: Option<Duration>,
}

impl StepDevices {
    fn json(&self) -> Value {
        let secs = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        json!({
            "first_updated_seconds": secs(self.first_updated),
            "all_updated_seconds": secs(self.all_updated),
            "all_converged_seconds": secs(self.all_converged),
        })
    }

    fn describe(&self) -> String {
        let at =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.2}s", d.as_secs_f64()));
        format!(
            "first updated at {}, all updated at {}, all Converged at {}",
            at(self.first_updated),
            at(self.all_updated),
            at(self.all_converged)
        )
    }
}

/// Polls the set watch until `done`; stops at an aborted or stalled rollout. Meanwhile
/// notes, for each cumulative slice of children (`slices`, the last one all of them),
/// the [`StepDevices`] of the children at `child_generation` or later. Times are from
/// `started`.
#[allow(clippy::too_many_arguments)]
async fn wait_set(
    sets: &SetWatch,
    shadows: &Shadows,
    slices: &[usize],
    child_generation: i64,
    started: Instant,
    deadline: Duration,
    what: &str,
    done: impl Fn(&SetSeen) -> bool,
) -> Result<(Duration, Vec<StepDevices>)> {
    let mut last_report = Instant::now();
    let mut milestones = vec![StepDevices::default(); slices.len()];
    loop {
        let children = shadows.count(Group::Child, child_generation);
        for (k, step) in milestones.iter_mut().enumerate() {
            let before = if k == 0 { 0 } else { slices[k - 1] };
            let now = || Some(started.elapsed());
            if step.first_updated.is_none() && children.current > before {
                step.first_updated = now();
            }
            if step.all_updated.is_none() && children.current >= slices[k] {
                step.all_updated = now();
            }
            if step.all_converged.is_none() && children.converged >= slices[k] {
                step.all_converged = now();
            }
        }
        let latest = sets.latest();
        if let Some(set) = &latest {
            if done(set) {
                return Ok((started.elapsed(), milestones));
            }
            if set.current() && set.phase == "Aborted" {
                return Err(format!(
                    "{what}: the rollout was aborted ({}); failedThings: {}",
                    set.describe(),
                    set.failed_things
                )
                .into());
            }
            if let Some(stalled) = set.stalled.as_ref().filter(|_| set.current()) {
                return Err(format!("{what}: the set is Stalled: {stalled}").into());
            }
        }
        let describe = || {
            format!(
                "{}; children {} present, {} with the new spec, {} of those Converged",
                latest
                    .as_ref()
                    .map_or("no status yet".to_string(), SetSeen::describe),
                children.present,
                children.current,
                children.converged
            )
        };
        if started.elapsed() > deadline {
            return Err(format!("{what}: not done after {deadline:?}: {}", describe()).into());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {what}, {:.0}s: {}",
                started.elapsed().as_secs_f64(),
                describe()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_operator_ready(metrics: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !operator_ready(metrics, 0, 0) {
        if Instant::now() > deadline {
            return Err(
                format!("the operator did not become ready (log: {})", log.display()).into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The data plane's devices

/// Makes the things matching `devices` report their desired state after `delay_ms`.
fn simulate(dataplane: &str, devices: &str, delay_ms: u64) -> Result<()> {
    let body = json!({
        "devices": devices,
        "reportDelayMs": delay_ms,
        "silentFraction": 0.0,
        "wrongFraction": 0.0,
    });
    let (code, answer) = http_with_body(
        "PUT",
        dataplane,
        "/_shadowsync/simulation",
        &body.to_string(),
    )?;
    if code != 200 {
        return Err(format!("PUT /_shadowsync/simulation: {code} {answer}").into());
    }
    Ok(())
}

/// Device reports written so far (`stats.reported` of `/_shadowsync/simulation`).
fn devices_reported(dataplane: &str) -> Result<u64> {
    let v = http_json("GET", dataplane, "/_shadowsync/simulation")?;
    Ok(v["stats"]["reported"].as_u64().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// Counting

/// CPU seconds of the operator, kube-apiserver and etcd.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    operator: f64,
    apiserver: f64,
    etcd: f64,
}

impl Cpu {
    fn now(operator: u32, kube: &Kube) -> Cpu {
        Cpu {
            operator: cpu_seconds(operator).unwrap_or(0.0),
            apiserver: cpu_seconds(kube.apiserver_pid).unwrap_or(0.0),
            etcd: cpu_seconds(kube.etcd_pid).unwrap_or(0.0),
        }
    }

    fn since(&self, operator: u32, kube: &Kube) -> Cpu {
        let now = Cpu::now(operator, kube);
        Cpu {
            operator: now.operator - self.operator,
            apiserver: now.apiserver - self.apiserver,
            etcd: now.etcd - self.etcd,
        }
    }
}

/// What one phase took and cost.
struct Phase {
    seconds: f64,
    calls: Calls,
    api: ApiCounts,
    cpu: Cpu,
    reported: u64,
}

/// The operator's writes by `verb resource[/subresource]`.
fn operator_writes(api: &ApiCounts) -> BTreeMap<String, u64> {
    let mut writes = BTreeMap::new();
    for ((who, verb, resource, sub), n) in &api.by {
        if *who != Who::Operator || !is_write(verb) {
            continue;
        }
        let target = if sub.is_empty() {
            resource.clone()
        } else {
            format!("{resource}/{sub}")
        };
        *writes.entry(format!("{verb} {target}")).or_default() += n;
    }
    writes
}

fn set_status_writes(api: &ApiCounts) -> u64 {
    api.sum(|who, verb, resource, sub| {
        who == Who::Operator && is_write(verb) && resource == SET_PLURAL && sub == "status"
    })
}

/// The most set status writes the apiserver received within any one second, and the
/// shortest gap between two, in milliseconds.
fn status_write_burst(api: &ApiCounts) -> (usize, Option<f64>) {
    let mut times = api.set_status_received_micros.clone();
    times.sort_unstable();
    let mut most = 0;
    let mut first = 0;
    for last in 0..times.len() {
        while times[last] - times[first] >= 1_000_000 {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    let gap = times
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .min_by(f64::total_cmp);
    (most, gap)
}

impl Phase {
    fn per_thing(&self, count: u64, n: usize) -> f64 {
        count as f64 / n as f64
    }

    fn print(&self, name: &str, n: usize) {
        println!("  {name}: {:.2}s", self.seconds);
        println!(
            "  data-plane calls {} ({}): {:.3} per thing, UpdateThingShadow {:.3} per thing; \
             device reports {}",
            self.calls.total(),
            self.calls.describe(),
            self.per_thing(self.calls.total(), n),
            self.per_thing(self.calls.get("UpdateThingShadow"), n),
            self.reported,
        );
        let writes: Vec<String> = operator_writes(&self.api)
            .iter()
            .map(|(what, count)| format!("{what} {count} ({:.3}/thing)", *count as f64 / n as f64))
            .collect();
        println!(
            "  operator writes to the apiserver: {}",
            if writes.is_empty() {
                "none".to_string()
            } else {
                writes.join(", ")
            }
        );
        println!(
            "  = {:.3} writes per thing, Events apart ({:.3} Events per thing); all its \
             requests: {}; answers >= 400: {}",
            self.per_thing(self.api.writes_but_events(), n),
            self.per_thing(self.api.event_writes(), n),
            self.api.describe_operator(),
            self.api.describe_errors(),
        );
        println!(
            "  CPU during {name}: operator {:.1}s, kube-apiserver {:.1}s, etcd {:.1}s",
            self.cpu.operator, self.cpu.apiserver, self.cpu.etcd
        );
    }
}

/// How long each step of a rollout took, from the watch's transitions: step k from the
/// first sight of step k (the first step: from `started`) to the first sight of step k+1
/// (the last step: to `Complete`). `None` for a step the watch never saw.
fn step_times(
    transitions: &[(Instant, SetSeen)],
    generation: i64,
    steps: usize,
    started: Instant,
    completed: Instant,
) -> Vec<Option<f64>> {
    let mut first_seen: Vec<Option<Instant>> = vec![None; steps];
    for (at, seen) in transitions {
        if seen.observed != generation {
            continue;
        }
        // "k/steps (p%)"
        let index = seen
            .step
            .split('/')
            .next()
            .and_then(|k| k.parse::<usize>().ok())
            .and_then(|k| k.checked_sub(1));
        if let Some(slot) = index.and_then(|k| first_seen.get_mut(k)) {
            slot.get_or_insert(*at);
        }
    }
    first_seen[0] = Some(started);
    (0..steps)
        .map(|k| {
            let begin = first_seen[k]?;
            let end = if k + 1 < steps {
                first_seen[k + 1]?
            } else {
                completed
            };
            Some(end.saturating_duration_since(begin).as_secs_f64())
        })
        .collect()
}

/// Things that carry the new revision once step k is done: `ceil(p_k × n / 100)`.
fn slice_sizes(steps: &[u8], n: usize) -> Vec<usize> {
    steps
        .iter()
        .map(|p| (n * *p as usize).div_ceil(100))
        .collect()
}

// ---------------------------------------------------------------------------------------

pub async fn run(args: Args, n: usize) -> Result<()> {
    let total_started = Instant::now();
    let root = project_root();
    let (shadowsync_bin, explicit) = shadowsync_bin()?;
    if explicit {
        warn_if_stale(&shadowsync_bin, &[root.join("src")]);
    }
    let dir = tempfile::Builder::new()
        .prefix("shadowsync-bench-")
        .tempdir()?;
    let keep_logs = std::env::var_os("BENCH_KEEP_LOGS").is_some();
    let logs = if keep_logs {
        dir.keep()
    } else {
        dir.path().to_path_buf()
    };
    let rate = max_rps(&args);
    let refresh = args.refresh_seconds;
    let step_timeout = step_timeout_seconds(n, refresh, rate);
    let estimate = Estimate::new(n, refresh, rate, args.steps.len());
    println!(
        "converge --set: {n} things, one ThingShadowSet against {n} standalone ThingShadows; \
         refreshInterval {refresh}s, devices report after {} ms, rollout steps {:?}, \
         stepTimeout {step_timeout}s, operator data-plane rate {rate} requests/s, \
         concurrency {}, {} cores, binary {}{}",
        args.report_delay_ms,
        args.steps,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        shadowsync_bin.display(),
        if keep_logs {
            format!(", logs in {}", logs.display())
        } else {
            String::new()
        }
    );
    println!(
        "  expected: about {:.0} min (standalone {:.0}s, deletion {:.0}s, set {:.0}s, rollout \
         {:.0}s); timeout {:.0} min",
        estimate.total() / 60.0,
        estimate.standalone,
        estimate.deletion,
        estimate.set,
        estimate.rollout,
        args.timeout.as_secs_f64() / 60.0
    );

    let kube = start_kube(&root, &logs).await?;
    let client = kube.client.clone();
    let mut audit = Audit::new(kube.cluster.dir.join("audit.log"), client.clone());
    let (dataplane, dp_addr) = start_listening(
        "dataplane",
        &shadowsync_bin,
        &["dataplane", "serve", "--listen", "127.0.0.1:0"],
        &logs.join("dataplane.log"),
        &[],
    )?;
    simulate(
        &dp_addr,
        &format!("{SOLO_PREFIX}*,{FLEET_PREFIX}*"),
        args.report_delay_ms,
    )?;
    let shadows = Arc::new(Shadows::default());
    let sets = Arc::new(SetWatch::default());
    let watches = [
        watch_shadows(client.clone(), shadows.clone()),
        watch_sets(client.clone(), sets.clone()),
    ];
    let operator_log = logs.join("operator.log");
    let deadline = |expected: f64| Duration::from_secs_f64((3.0 * expected).max(600.0));

    // --- 1. Standalone ThingShadows -------------------------------------------------------
    audit.checkpoint().await?;
    let (mut operator, metrics_addr, _) = start_operator(
        &shadowsync_bin,
        &kube.operator_kubeconfig,
        &dp_addr,
        &args,
        &operator_log,
        "shadowsync-bench-1",
    )?;
    wait_operator_ready(&metrics_addr, &operator_log).await?;
    audit.checkpoint().await?;
    Calls::reset(&dp_addr)?;
    let reported_before = devices_reported(&dp_addr)?;
    let cpu = Cpu::now(operator.pid(), &kube);
    let started = Instant::now();
    let create_seconds = create_solo(&client, n, refresh).await?;
    wait_converged(
        &shadows,
        Group::Solo,
        n,
        1,
        deadline(estimate.standalone),
        "standalone convergence",
    )
    .await?;
    let standalone_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.since(operator.pid(), &kube);
    tokio::time::sleep(SETTLE).await;
    let standalone = Phase {
        seconds: standalone_seconds,
        calls: Calls::fetch(&dp_addr)?,
        api: audit.checkpoint().await?,
        cpu,
        reported: devices_reported(&dp_addr)? - reported_before,
    };
    println!(
        "standalone: {n} ThingShadows Converged {standalone_seconds:.2}s after the first create \
         ({:.2}s to create all)",
        create_seconds.as_secs_f64()
    );
    standalone.print("standalone convergence", n);

    // Deleted before the set, so that their refresh reads do not share the data-plane
    // rate with it.
    Calls::reset(&dp_addr)?;
    let started = Instant::now();
    // kube-apiserver gives a request 60 s; marking 10,000 objects deleted can take longer,
    // and then it drops the connection while the deletion goes on. The wait below tells
    // whether they went.
    if let Err(err) = shadows_api(&client)
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{PHASE_LABEL}=standalone")),
        )
        .await
    {
        eprintln!("deleting the standalone ThingShadows: {err} (waiting for them to go)");
    }
    let delete_deadline = deadline(estimate.deletion);
    loop {
        let left = shadows.count(Group::Solo, 1).present;
        if left == 0 {
            break;
        }
        if started.elapsed() > delete_deadline {
            return Err(format!(
                "deleting the standalone ThingShadows: {left} left after {delete_deadline:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deletion_seconds = started.elapsed().as_secs_f64();
    let deletion_calls = Calls::fetch(&dp_addr)?;
    let deletion_api = audit.checkpoint().await?;
    println!(
        "deletion of the standalone ThingShadows (deletionPolicy Retain): {deletion_seconds:.2}s; \
         data-plane calls meanwhile {} ({}); operator requests: {}",
        deletion_calls.total(),
        deletion_calls.describe(),
        deletion_api.describe_operator()
    );
    let hwm_standalone = vm_hwm_kib(operator.pid()).unwrap_or(0);
    operator.terminate(Duration::from_secs(30))?;
    drop(operator);

    // --- 2. The set, all at once ----------------------------------------------------------
    let (mut operator, metrics_addr, _) = start_operator(
        &shadowsync_bin,
        &kube.operator_kubeconfig,
        &dp_addr,
        &args,
        &operator_log,
        "shadowsync-bench-2",
    )?;
    wait_operator_ready(&metrics_addr, &operator_log).await?;
    let startup_api = audit.checkpoint().await?;
    println!(
        "a new operator for the set (empty cluster); its requests at start: {}",
        startup_api.describe_operator()
    );
    Calls::reset(&dp_addr)?;
    let reported_before = devices_reported(&dp_addr)?;
    let cpu = Cpu::now(operator.pid(), &kube);
    let started = Instant::now();
    let set_obj: DynamicObject = serde_json::from_value(set_manifest(n, refresh, step_timeout))?;
    sets_api(&client).create(&bench_post(), &set_obj).await?;
    let (set_elapsed, set_children) = wait_set(
        &sets,
        &shadows,
        &[n],
        1,
        started,
        deadline(estimate.set),
        "set convergence",
        |set| set.complete(n),
    )
    .await?;
    let set_seconds = set_elapsed.as_secs_f64();
    let cpu = cpu.since(operator.pid(), &kube);
    // The peak so far: creating the children and converging them.
    let hwm_after_set = vm_hwm_kib(operator.pid()).unwrap_or(0);
    let first = sets.latest().ok_or("the set's status went missing")?;
    tokio::time::sleep(SETTLE).await;
    let set_phase = Phase {
        seconds: set_seconds,
        calls: Calls::fetch(&dp_addr)?,
        api: audit.checkpoint().await?,
        cpu,
        reported: devices_reported(&dp_addr)? - reported_before,
    };
    let set_children = set_children[0];
    println!(
        "set: Complete with {} of {n} converged {set_seconds:.2}s after the create (revision {}); \
         its children, as the ThingShadow watch saw them: {}",
        first.converged,
        first.revision,
        set_children.describe(),
    );
    set_phase.print("set convergence", n);

    // --- 3. A template change, rolled out in steps ----------------------------------------
    Calls::reset(&dp_addr)?;
    let reported_before = devices_reported(&dp_addr)?;
    let cpu = Cpu::now(operator.pid(), &kube);
    let started = Instant::now();
    let patched = sets_api(&client)
        .patch(
            SET_NAME,
            &PatchParams {
                field_manager: Some("shadowsync-bench".into()),
                ..Default::default()
            },
            &Patch::Merge(&json!({"spec": {
                "template": {"desired": fleet_desired(2)},
                "rollout": {"steps": args.steps},
            }})),
        )
        .await?;
    let generation = patched.metadata.generation.unwrap_or(0);
    let old_revision = first.revision.clone();
    let slices = slice_sizes(&args.steps, n);
    let (rollout_elapsed, step_devices) = wait_set(
        &sets,
        &shadows,
        &slices,
        2,
        started,
        deadline(estimate.rollout),
        "rollout in steps",
        |set| set.complete(n) && set.revision != old_revision && set.observed >= generation,
    )
    .await?;
    let completed = started + rollout_elapsed;
    let rollout_seconds = rollout_elapsed.as_secs_f64();
    let cpu = cpu.since(operator.pid(), &kube);
    let second = sets.latest().ok_or("the set's status went missing")?;
    let transitions = sets.transitions_since(started);
    let step_seconds = step_times(
        &transitions,
        second.observed,
        args.steps.len(),
        started,
        completed,
    );
    tokio::time::sleep(SETTLE).await;
    let rollout = Phase {
        seconds: rollout_seconds,
        calls: Calls::fetch(&dp_addr)?,
        api: audit.checkpoint().await?,
        cpu,
        reported: devices_reported(&dp_addr)? - reported_before,
    };
    println!(
        "rollout in steps {:?}: Complete again {rollout_seconds:.2}s after the template change \
         (revision {} -> {})",
        args.steps, old_revision, second.revision,
    );
    for (k, (p, took)) in args.steps.iter().zip(&step_seconds).enumerate() {
        println!(
            "  step {}/{} ({p}%, {} things in all): {} by the set's status.step; its devices \
             (times from the change): {}",
            k + 1,
            args.steps.len(),
            slices[k],
            took.map_or("not seen by the watch".to_string(), |s| format!("{s:.2}s")),
            step_devices[k].describe(),
        );
    }
    println!(
        "  status transitions seen: {}",
        transitions
            .iter()
            .map(|(at, s)| format!(
                "{:.1}s {} {} (updated {}, converged {})",
                at.saturating_duration_since(started).as_secs_f64(),
                s.phase,
                s.step,
                s.updated,
                s.converged
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    rollout.print("the rollout", n);

    let hwm_set = vm_hwm_kib(operator.pid()).unwrap_or(0);
    let apiserver_rss_mib = mib(vm_hwm_kib(kube.apiserver_pid).unwrap_or(0));
    let etcd_rss_mib = mib(vm_hwm_kib(kube.etcd_pid).unwrap_or(0));
    operator.terminate(Duration::from_secs(30))?;
    drop(operator);
    for watch in &watches {
        watch.abort();
    }
    drop(dataplane);
    let apiserver_version = kube.apiserver_version.clone();
    let control_plane_seconds = kube.control_plane_seconds.as_secs_f64();
    tokio::task::block_in_place(|| drop(kube));

    // --- Figures --------------------------------------------------------------------------
    let round = |x: f64, digits: i32| {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    };
    let overhead = set_seconds / standalone_seconds - 1.0;
    let status_writes_set = set_status_writes(&set_phase.api);
    let status_writes_rollout = set_status_writes(&rollout.api);
    let status_rate_set = status_writes_set as f64 / set_seconds;
    let status_rate_rollout = status_writes_rollout as f64 / rollout_seconds;
    let (burst_set, gap_set) = status_write_burst(&set_phase.api);
    let (burst_rollout, gap_rollout) = status_write_burst(&rollout.api);
    let burst = burst_set.max(burst_rollout);
    let min_gap = [gap_set, gap_rollout]
        .into_iter()
        .flatten()
        .min_by(f64::total_cmp);
    let peak_rss_mib = mib(hwm_set);
    let checks = [
        (
            format!(
                "overhead <= {:.0} % (set {set_seconds:.2}s / standalone {standalone_seconds:.2}s - 1)",
                OVERHEAD_TARGET * 100.0
            ),
            overhead <= OVERHEAD_TARGET,
            format!("{:.1} %", overhead * 100.0),
        ),
        (
            format!("set status writes per second of rollout <= {STATUS_WRITES_TARGET}"),
            status_rate_set.max(status_rate_rollout) <= STATUS_WRITES_TARGET,
            format!(
                "{status_rate_set:.3}/s creating ({status_writes_set} writes), \
                 {status_rate_rollout:.3}/s rolling out ({status_writes_rollout} writes); at most \
                 {burst} within one second{}",
                min_gap.map_or(String::new(), |g| format!(", shortest gap {g:.0} ms"))
            ),
        ),
        (
            format!(
                "peak_rss_mib <= {RSS_TARGET_MIB}{}",
                if n >= MAX_THINGS {
                    ""
                } else {
                    " (target applies at 10000 children)"
                }
            ),
            peak_rss_mib <= RSS_TARGET_MIB,
            format!(
                "{peak_rss_mib:.1} ({:.1} when the set was first Complete; the standalone \
                 operator: {:.1})",
                mib(hwm_after_set),
                mib(hwm_standalone)
            ),
        ),
    ];
    println!();
    println!("summary (set of {n} things, kube-apiserver {apiserver_version}):");
    println!(
        "  standalone {standalone_seconds:.2}s, set {set_seconds:.2}s, rollout in steps \
         {rollout_seconds:.2}s ({})",
        step_seconds
            .iter()
            .map(|s| s.map_or("?".to_string(), |s| format!("{s:.1}s")))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let per_thing = |phase: &Phase| phase.api.writes_but_events() as f64 / n as f64;
    println!(
        "  operator writes per thing, Events apart: standalone {:.3}, set {:.3}, rollout {:.3}; \
         data-plane calls per thing: {:.3}, {:.3}, {:.3}",
        per_thing(&standalone),
        per_thing(&set_phase),
        per_thing(&rollout),
        standalone.per_thing(standalone.calls.total(), n),
        set_phase.per_thing(set_phase.calls.total(), n),
        rollout.per_thing(rollout.calls.total(), n),
    );
    for (what, ok, value) in &checks {
        println!("  {:4} {what}: {value}", if *ok { "PASS" } else { "FAIL" });
    }
    println!(
        "  total benchmark time {:.1}s",
        total_started.elapsed().as_secs_f64()
    );

    let calls = |phase: &Phase| {
        phase
            .calls
            .0
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(op, n)| (op.clone(), *n))
            .collect::<BTreeMap<_, _>>()
    };
    let errors = |phase: &Phase| {
        phase
            .api
            .operator_errors
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect::<BTreeMap<_, _>>()
    };
    let per = |count: u64| round(count as f64 / n as f64, 4);
    let mut out = json!({
        "set": n,
        "standalone_seconds": round(standalone_seconds, 3),
        "set_seconds": round(set_seconds, 3),
        "overhead": round(overhead, 4),
        "rollout_seconds": round(rollout_seconds, 3),
        "steps": args.steps,
        "step_things": slices,
        "step_seconds": step_seconds.iter().map(|s| s.map(|s| round(s, 3))).collect::<Vec<_>>(),
        "set_status_writes_set": status_writes_set,
        "set_status_writes_rollout": status_writes_rollout,
        "set_status_writes_per_second_set": round(status_rate_set, 3),
        "set_status_writes_per_second_rollout": round(status_rate_rollout, 3),
        "set_status_writes_max_in_one_second": burst,
        "set_status_write_min_gap_ms": min_gap.map(|g| round(g, 1)),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "peak_rss_mib_after_set": round(mib(hwm_after_set), 1),
        "peak_rss_mib_standalone": round(mib(hwm_standalone), 1),
        "operator_writes_per_thing_standalone": per(standalone.api.writes_but_events()),
        "operator_writes_per_thing_set": per(set_phase.api.writes_but_events()),
        "operator_writes_per_thing_rollout": per(rollout.api.writes_but_events()),
        "events_per_thing_standalone": per(standalone.api.event_writes()),
        "events_per_thing_set": per(set_phase.api.event_writes()),
        "events_per_thing_rollout": per(rollout.api.event_writes()),
        "operator_writes_standalone": operator_writes(&standalone.api),
        "operator_writes_set": operator_writes(&set_phase.api),
        "operator_writes_rollout": operator_writes(&rollout.api),
        "operator_writes_deletion": operator_writes(&deletion_api),
        "operator_errors_standalone": errors(&standalone),
        "operator_errors_set": errors(&set_phase),
        "operator_errors_rollout": errors(&rollout),
        "calls_per_thing_standalone": per(standalone.calls.total()),
        "calls_per_thing_set": per(set_phase.calls.total()),
        "calls_per_thing_rollout": per(rollout.calls.total()),
        "updates_per_thing_standalone": per(standalone.calls.get("UpdateThingShadow")),
        "updates_per_thing_set": per(set_phase.calls.get("UpdateThingShadow")),
        "updates_per_thing_rollout": per(rollout.calls.get("UpdateThingShadow")),
        "dataplane_calls_standalone": calls(&standalone),
        "dataplane_calls_set": calls(&set_phase),
        "dataplane_calls_rollout": calls(&rollout),
        "device_reports_standalone": standalone.reported,
        "device_reports_set": set_phase.reported,
        "device_reports_rollout": rollout.reported,
        "set_children": set_children.json(),
        "step_devices": step_devices.iter().map(StepDevices::json).collect::<Vec<_>>(),
        "standalone_create_seconds": round(create_seconds.as_secs_f64(), 3),
        "deletion_seconds": round(deletion_seconds, 3),
        "operator_cpu_seconds_standalone": round(standalone.cpu.operator, 2),
        "operator_cpu_seconds_set": round(set_phase.cpu.operator, 2),
        "operator_cpu_seconds_rollout": round(rollout.cpu.operator, 2),
        "apiserver_cpu_seconds_standalone": round(standalone.cpu.apiserver, 2),
        "apiserver_cpu_seconds_set": round(set_phase.cpu.apiserver, 2),
        "apiserver_cpu_seconds_rollout": round(rollout.cpu.apiserver, 2),
        "etcd_cpu_seconds_set": round(set_phase.cpu.etcd, 2),
        "apiserver_peak_rss_mib": round(apiserver_rss_mib, 1),
        "etcd_peak_rss_mib": round(etcd_rss_mib, 1),
        "refresh_interval_seconds": refresh,
        "report_delay_ms": args.report_delay_ms,
        "step_timeout_seconds": step_timeout,
        "max_rps": args.max_rps.as_deref().map(|r| r.parse::<f64>().unwrap_or(0.0)),
        "control_plane_seconds": round(control_plane_seconds, 1),
        "kube_apiserver": apiserver_version,
        "concurrency": args.concurrency,
        "total_seconds": round(total_started.elapsed().as_secs_f64(), 1),
    });
    if !args.operator_args.is_empty() {
        out["operator_args"] = json!(args.operator_args);
    }
    println!("{out}");
    Ok(())
}

/// `cargo bench --bench converge -- --self-test`: the checks below, without a cluster.
/// Exits 0 when they all pass.
pub fn self_test() {
    let all: [(&str, fn()); 8] = [
        (
            "steps follow the rules of spec.rollout.steps",
            checks::steps,
        ),
        (
            "step times run from the change to Complete",
            checks::step_times_from_transitions,
        ),
        ("slices are cumulative and rounded up", checks::slices),
        (
            "the largest set is accepted and a larger one refused",
            checks::sizes,
        ),
        (
            "set mode defaults follow the size and the rate",
            checks::set_defaults,
        ),
        (
            "options of one mode are refused in the other",
            checks::modes,
        ),
        (
            "the standalone mode's defaults are unchanged",
            checks::standalone_defaults,
        ),
        (
            "status write bursts are counted over any one second",
            checks::bursts,
        ),
    ];
    let mut failed = 0;
    for (name, check) in all {
        match std::panic::catch_unwind(check) {
            Ok(()) => println!("check {name} ... ok"),
            Err(_) => {
                println!("check {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} checks, {failed} failed", all.len());
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

mod checks {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args> {
        parse_args_from(args.iter().map(|a| a.to_string()))
    }

    fn error(args: &[&str]) -> String {
        match parse(args) {
            Ok(parsed) => panic!("{args:?} accepted: {parsed:?}"),
            Err(err) => err.to_string(),
        }
    }

    pub fn steps() {
        assert_eq!(parse_steps("1,10,100").unwrap(), vec![1, 10, 100]);
        assert_eq!(parse_steps("100").unwrap(), vec![100]);
        for (bad, why) in [
            ("0,100", "from 1 to 100"),
            ("10,5,100", "must grow"),
            ("10,10,100", "must grow"),
            ("10,50", "the last step must be 100"),
            ("x", "from 1 to 100"),
            ("", "from 1 to 100"),
        ] {
            let err = parse_steps(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("--steps"), "{bad}: {err}");
        }
    }

    pub fn step_times_from_transitions() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let seen = |observed: i64, step: &str| SetSeen {
            observed,
            step: step.into(),
            ..SetSeen::default()
        };
        let transitions = vec![
            (at(1), seen(1, "1/1 (100%)")),
            (at(2), seen(2, "1/3 (1%)")),
            (at(10), seen(2, "2/3 (10%)")),
            (at(25), seen(2, "3/3 (100%)")),
        ];
        let times = step_times(&transitions, 2, 3, t0, at(40));
        assert_eq!(times, vec![Some(10.0), Some(15.0), Some(15.0)]);
        // A step the watch never saw has no time, and neither has the one before it.
        let times = step_times(&transitions[..3], 2, 3, t0, at(40));
        assert_eq!(times, vec![Some(10.0), None, None]);
    }

    pub fn slices() {
        assert_eq!(slice_sizes(&[1, 10, 100], 500), vec![5, 50, 500]);
        assert_eq!(slice_sizes(&[1, 10, 100], 10_000), vec![100, 1000, 10_000]);
        assert_eq!(slice_sizes(&[1, 10, 100], 50), vec![1, 5, 50]);
    }

    pub fn sizes() {
        assert!(check_size(MAX_THINGS).is_ok());
        assert!(check_size(1).is_ok());
        for bad in [0, MAX_THINGS + 1] {
            let err = check_size(bad).unwrap_err().to_string();
            assert!(err.contains("spec.selector.things"), "{err}");
        }
        assert_eq!(parse(&["--set", "10000"]).unwrap().set, Some(10_000));
        assert!(error(&["--set", "10001"]).contains("at most 10000 names"));
        assert!(error(&["--set", "0"]).contains("--set 0"));
        assert!(error(&["--set", "many"]).contains("--set \"many\""));
    }

    pub fn set_defaults() {
        let args = parse(&["--bench", "--set", "10000"]).unwrap();
        assert_eq!(args.steps, DEFAULT_STEPS);
        assert_eq!(
            args.refresh_seconds, 400,
            "N/25 at the default 100 requests/s"
        );
        let expected = Estimate::new(10_000, 400, 100.0, 3).total();
        assert!(args.timeout.as_secs_f64() >= 3.0 * expected - 1.0);
        let args = parse(&["--set", "500", "--max-rps", "400", "--steps", "5,100"]).unwrap();
        assert_eq!(args.refresh_seconds, 10, "at least 10 s");
        assert_eq!(args.steps, vec![5, 100]);
        assert_eq!(args.operator_args, ["--max-rps", "400"]);
        let args = parse(&[
            "--set",
            "500",
            "--refresh-seconds",
            "30",
            "--timeout-seconds",
            "99",
        ])
        .unwrap();
        assert_eq!(args.refresh_seconds, 30);
        assert_eq!(args.timeout, Duration::from_secs(99));
        assert_eq!(step_timeout_seconds(500, 20, 100.0), 600);
        assert_eq!(step_timeout_seconds(10_000, 400, 100.0), 2200);
    }

    pub fn modes() {
        for flag in ["--shadows", "--retained"] {
            let err = error(&["--set", "50", flag, "10"]);
            assert!(
                err.contains(flag) && err.contains("standalone mode"),
                "{err}"
            );
        }
        let err = error(&["--set", "50", "--skip-refresh"]);
        assert!(err.contains("--skip-refresh"), "{err}");
        for (flag, value) in [("--steps", "1,100"), ("--report-delay-ms", "10")] {
            let err = error(&[flag, value]);
            assert!(err.contains(flag) && err.contains("--set N"), "{err}");
        }
        assert!(error(&["--set", "50", "--report-delay-ms", "soon"]).contains("--report-delay-ms"));
    }

    pub fn standalone_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.shadows, args.retained, args.set), (2000, 200, None));
        assert_eq!(args.refresh_seconds, 55);
        assert_eq!(args.timeout, Duration::from_secs(3600));
        let args = parse(&["--shadows", "10000", "--max-rps", "400"]).unwrap();
        assert_eq!(args.refresh_seconds, 255);
        assert_eq!(args.operator_args, ["--max-rps", "400"]);
    }

    pub fn bursts() {
        let mut api = ApiCounts::default();
        assert_eq!(status_write_burst(&api), (0, None));
        api.set_status_received_micros = vec![0, 1_000_000, 2_500_000, 3_400_000, 3_499_000];
        let (most, gap) = status_write_burst(&api);
        assert_eq!(most, 3, "2.5 s, 3.4 s and 3.499 s are within one second");
        assert_eq!(gap, Some(99.0));
    }
}
