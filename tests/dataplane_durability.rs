//! Durability of `shadowsync dataplane serve --db FILE`: several clients write shadows and
//! retained messages through the AWS SDK; the server is killed with SIGKILL in the middle
//! of the stream, restarted on the same file, and read back from outside over HTTP.
//!
//! Each client owns its own things and topics and writes them one request at a time, so
//! after a kill every key is in one of two states: its last acknowledged write, or the
//! one write that was in flight (applied or not, never half). The checks:
//! - the document is exactly what one of those two writes declared (state, and for a
//!   retained message payload, qos and user properties together);
//! - a shadow's version equals the number of writes applied to it (each update bumps it
//!   by one), so no acknowledged write is missing, none is applied twice, and the
//!   metadata carries a timestamp for every leaf of the state it describes.
//!
//! Run: `cargo test --test dataplane_durability -- --nocapture` (prints the counts).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::{DataPlane, ErrorKind, PublishRequest};

const CYCLES: usize = 6;
const SHADOW_WRITERS: usize = 4;
const RETAINED_WRITERS: usize = 2;
/// Keys per writer.
const KEYS: usize = 6;
const SEED_ENV: &str = "SHADOWSYNC_DURABILITY_SEED";

/// `shadowsync dataplane serve --db FILE` as a process, killed (SIGKILL) on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(db: &Path, log: &Path) -> Server {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("a log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowsync"))
            .args(["dataplane", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start shadowsync dataplane serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "no address line ({line:?}); log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .to_string();
        Server { child, url }
    }

    /// SIGKILL: no shutdown, no flush, whatever is in flight is cut.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(url: &str) -> AwsDataPlane {
    AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(url.to_string()),
        region: Some("us-east-1".into()),
    })
    .await
    .expect("an SDK client")
}

fn thing(writer: usize, key: usize) -> String {
    format!("dur-w{writer}-k{key}")
}

fn topic(writer: usize, key: usize) -> String {
    format!("dur/w{writer}/k{key}")
}

/// The desired section write `seq` declares: several leaves, nested, an array.
fn desired(writer: usize, seq: u64) -> Value {
    json!({
        "seq": seq,
        "writer": writer,
        "body": {"a": seq, "list": [seq, seq + 1], "deep": {"v": format!("v{seq}")}},
        "pad": "x".repeat((seq % 64) as usize),
    })
}

fn publish_request(writer: usize, key: usize, seq: u64) -> PublishRequest {
    PublishRequest {
        topic: topic(writer, key),
        payload: json!({"seq": seq, "writer": writer, "pad": "y".repeat((seq % 97) as usize)})
            .to_string()
            .into(),
        qos: (seq % 2) as i32,
        retain: true,
        user_properties: vec![
            ("seq".into(), seq.to_string()),
            ("w".into(), writer.to_string()),
        ],
        ..PublishRequest::default()
    }
}

/// What one key saw: the writes known applied, the last acknowledged, the one in flight.
#[derive(Clone, Debug, Default)]
struct KeyState {
    /// Writes known to be applied (acknowledged, or found applied after a kill).
    applied: u64,
    /// Writes acknowledged (a 200 answer).
    acknowledged: u64,
    /// Seq of the last write known applied.
    last: Option<u64>,
    /// Seq of the write whose answer never came.
    in_flight: Option<u64>,
}

#[derive(Default)]
struct Ledger {
    shadows: BTreeMap<String, (usize, KeyState)>,
    retained: BTreeMap<String, (usize, usize, KeyState)>,
    acknowledged: u64,
}

/// Writes until the first failure (the server died); records every answer.
async fn shadow_writer(url: String, writer: usize, mut seq: u64, ledger: Arc<Mutex<Ledger>>) {
    let plane = client(&url).await;
    loop {
        seq += 1;
        let key = (seq as usize) % KEYS;
        let name = thing(writer, key);
        let body = json!({"state": {"desired": desired(writer, seq)}}).to_string();
        let result = plane.update_thing_shadow(&name, None, body.into()).await;
        let mut ledger = ledger.lock().unwrap();
        let entry = &mut ledger
            .shadows
            .entry(name)
            .or_insert_with(|| (writer, KeyState::default()))
            .1;
        match result {
            Ok(answer) => {
                entry.applied += 1;
                entry.acknowledged += 1;
                entry.last = Some(seq);
                assert_eq!(answer.version, entry.applied, "versions count the writes");
                ledger.acknowledged += 1;
            }
            Err(_) => {
                entry.in_flight = Some(seq);
                return;
            }
        }
    }
}

async fn retained_writer(url: String, writer: usize, mut seq: u64, ledger: Arc<Mutex<Ledger>>) {
    let plane = client(&url).await;
    loop {
        seq += 1;
        let key = (seq as usize) % KEYS;
        let request = publish_request(writer, key, seq);
        let result = plane.publish(&request).await;
        let mut ledger = ledger.lock().unwrap();
        let entry = &mut ledger
            .retained
            .entry(request.topic.clone())
            .or_insert_with(|| (writer, key, KeyState::default()))
            .2;
        match result {
            Ok(()) => {
                entry.applied += 1;
                entry.acknowledged += 1;
                entry.last = Some(seq);
                ledger.acknowledged += 1;
            }
            Err(_) => {
                entry.in_flight = Some(seq);
                return;
            }
        }
    }
}

/// Metadata has a `{"timestamp": N}` for every leaf of `state` (arrays: per element).
fn metadata_covers(state: &Value, metadata: &Value) -> bool {
    match state {
        Value::Object(map) => map
            .iter()
            .all(|(k, v)| metadata.get(k).is_some_and(|m| metadata_covers(v, m))),
        Value::Array(items) => metadata
            .as_array()
            .is_some_and(|m| m.len() == items.len() && m.iter().all(|e| e["timestamp"].is_i64())),
        _ => metadata["timestamp"].is_i64(),
    }
}

/// Reads every key back after a restart and checks it against the ledger; settles the
/// in-flight writes (applied or not) for the next cycle. Returns (acknowledged writes
/// confirmed present, in-flight writes found applied, in-flight writes found absent).
async fn check(plane: &AwsDataPlane, ledger: &mut Ledger) -> (u64, u64, u64) {
    let mut confirmed = 0;
    let (mut landed, mut absent) = (0, 0);
    for (name, (writer, state)) in ledger.shadows.iter_mut() {
        let doc = match plane.get_thing_shadow(name, None).await {
            Ok(doc) => Some(doc),
            Err(err) if err.kind == ErrorKind::ResourceNotFound => None,
            Err(err) => panic!("GetThingShadow {name}: {err}"),
        };
        let Some(doc) = doc else {
            assert_eq!(
                state.applied, 0,
                "{name}: acknowledged writes lost: {state:?}"
            );
            if state.in_flight.take().is_some() {
                absent += 1;
            }
            continue;
        };
        let got = doc.state.desired.clone().unwrap_or(Value::Null);
        let seq = got["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {got}"));
        assert_eq!(got, desired(*writer, seq), "{name}: a half-applied write");
        let in_flight_applied = if Some(seq) == state.last && state.in_flight != Some(seq) {
            false
        } else if Some(seq) == state.in_flight {
            true
        } else {
            panic!("{name}: seq {seq} is neither the last acknowledged write nor the one in flight: {state:?}")
        };
        let expected_version = state.applied + u64::from(in_flight_applied);
        assert_eq!(
            doc.version, expected_version,
            "{name}: version {} after {} applied writes (in flight applied: {in_flight_applied})",
            doc.version, expected_version
        );
        let metadata = doc.metadata.desired.clone().unwrap_or(Value::Null);
        assert!(
            metadata_covers(&got, &metadata),
            "{name}: metadata {metadata} does not describe {got}"
        );
        confirmed += state.acknowledged;
        if state.in_flight.take().is_some() {
            if in_flight_applied {
                landed += 1;
                state.applied += 1;
                state.last = Some(seq);
            } else {
                absent += 1;
            }
        }
    }
    for (name, (writer, key, state)) in ledger.retained.iter_mut() {
        let message = match plane.get_retained_message(name).await {
            Ok(message) => Some(message),
            Err(err) if err.kind == ErrorKind::ResourceNotFound => None,
            Err(err) => panic!("GetRetainedMessage {name}: {err}"),
        };
        let Some(message) = message else {
            assert_eq!(
                state.applied, 0,
                "{name}: acknowledged publishes lost: {state:?}"
            );
            if state.in_flight.take().is_some() {
                absent += 1;
            }
            continue;
        };
        let payload: Value = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("{name}: payload is not the JSON written: {e}"));
        let seq = payload["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {payload}"));
        let want = publish_request(*writer, *key, seq);
        assert_eq!(
            message.payload, want.payload,
            "{name}: a half-applied publish"
        );
        assert_eq!(message.qos, want.qos, "{name}: qos of another write");
        assert_eq!(
            message.user_properties, want.user_properties,
            "{name}: user properties of another write"
        );
        let in_flight_applied = if Some(seq) == state.in_flight {
            true
        } else if Some(seq) == state.last {
            false
        } else {
            panic!("{name}: seq {seq} is neither the last acknowledged publish nor the one in flight: {state:?}")
        };
        confirmed += state.acknowledged;
        if state.in_flight.take().is_some() {
            if in_flight_applied {
                landed += 1;
                state.applied += 1;
                state.last = Some(seq);
            } else {
                absent += 1;
            }
        }
    }
    (confirmed, landed, absent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let started = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dataplane-durability");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    let db = dir.join("iot.redb");
    let log = dir.join("server.log");
    let seed: u64 = match std::env::var(SEED_ENV) {
        Ok(text) => text.parse().expect("a numeric seed"),
        Err(_) => rand::random(),
    };
    eprintln!("dataplane-durability: seed {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (mut total_confirmed, mut total_landed, mut total_absent) = (0, 0, 0);
    // Seqs grow over the cycles: each cycle starts past every seq used before (a writer
    // makes far fewer than a million writes in one cycle).

    for cycle in 0..CYCLES {
        let first_seq = 1_000_000 * cycle as u64;
        let server = Server::start(&db, &log);
        let mut tasks = Vec::new();
        for w in 0..SHADOW_WRITERS {
            let task = shadow_writer(server.url.clone(), w, first_seq, ledger.clone());
            tasks.push(tokio::spawn(task));
        }
        for w in 0..RETAINED_WRITERS {
            let task = retained_writer(server.url.clone(), w, first_seq, ledger.clone());
            tasks.push(tokio::spawn(task));
        }
        // Let the stream run, then kill at a random moment of it. The wait is the
        // scenario's random input, not a wait for a state.
        let run_for = Duration::from_millis(rng.random_range(300..1500));
        tokio::time::sleep(run_for).await;
        let acknowledged_before_kill = ledger.lock().unwrap().acknowledged;
        server.kill();
        for task in tasks {
            // Every writer stops at its first failed call, which the kill guarantees.
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a writer to stop after the kill")
                .expect("the writer task");
        }
        assert!(
            acknowledged_before_kill > 0,
            "cycle {cycle}: no write was acknowledged before the kill"
        );

        let server = Server::start(&db, &log);
        let plane = client(&server.url).await;
        // Hold no lock across awaits: take the ledger out while checking.
        let mut taken = std::mem::take(&mut *ledger.lock().unwrap());
        let (confirmed, landed, absent) = check(&plane, &mut taken).await;
        eprintln!(
            "dataplane-durability cycle {cycle}: killed after {} ms, {} writes acknowledged so far; after restart {confirmed} acknowledged writes confirmed, {landed} in-flight writes applied whole, {absent} not applied",
            run_for.as_millis(),
            taken.acknowledged
        );
        total_confirmed = confirmed;
        total_landed += landed;
        total_absent += absent;
        *ledger.lock().unwrap() = taken;
        server.kill();
    }
    let acknowledged = ledger.lock().unwrap().acknowledged;
    assert!(acknowledged > 0);
    assert_eq!(
        total_confirmed, acknowledged,
        "every acknowledged write is accounted for in the final read"
    );
    eprintln!(
        "dataplane-durability: {CYCLES} SIGKILL cycles, {} clients, {acknowledged} acknowledged writes checked ({} keys), {total_landed} in-flight writes found applied whole, {total_absent} not applied, 0 half-applied, {:.1}s",
        SHADOW_WRITERS + RETAINED_WRITERS,
        SHADOW_WRITERS * KEYS + RETAINED_WRITERS * KEYS,
        started.elapsed().as_secs_f64()
    );
}
