//! Server processes for the integration tests: moto and `shadowsync dataplane serve`.
//!
//! One server of each kind per test binary, started on first use. Every process runs
//! under a small `sh` guard that holds a pipe from the test process and kills the
//! server when that pipe closes, so servers die with the test binary however it ends
//! (normal exit, panic, SIGKILL), without relying on destructors of statics.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to come up.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Set to `1` in CI: the moto tests fail, rather than skip, without moto.
pub const REQUIRE_MOTO_ENV: &str = "SHADOWSYNC_REQUIRE_MOTO";

/// Starts `"$@"` in the background, kills it once fd 3 (our pipe) reads EOF, and exits
/// with the server's status so that `try_wait` sees a server that died on its own.
const GUARD_SCRIPT: &str = r#"exec 3<&0
"$@" &
child=$!
{ while read -r _ <&3; do :; done; kill "$child" 2>/dev/null; } >/dev/null 2>&1 &
wait "$child"
"#;

/// A server process tied to the life of the test binary.
pub struct Guarded {
    child: Mutex<Child>,
    /// Never written: the guard kills the server when this end closes.
    _lifeline: ChildStdin,
    /// The server's stderr (and stdout for moto), for failure messages.
    pub log: PathBuf,
}

impl Guarded {
    fn spawn(
        program: &str,
        args: &[&str],
        log_name: &str,
        pipe_stdout: bool,
    ) -> Result<(Self, Option<std::process::ChildStdout>), String> {
        let log = log_path(log_name);
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        let stdout = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(log_file)
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("guard")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let lifeline = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take();
        Ok((
            Guarded {
                child: Mutex::new(child),
                _lifeline: lifeline,
                log,
            },
            stdout,
        ))
    }

    /// `Some(status)` once the server has exited.
    fn exited(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot be waited for: {e}")),
        }
    }

    /// The last lines of the log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("{} (last lines):\n{tail}", self.log.display())
    }
}

fn log_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.log", std::process::id()))
}

/// A free port on 127.0.0.1 at the time of asking (the server may still lose a race
/// for it; callers retry with another).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

// ---------------------------------------------------------------------------------
// moto

/// A running moto server.
pub struct Moto {
    pub process: Guarded,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Moto {
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a Thing in moto's registry: moto (unlike AWS) keeps shadows of registered
    /// Things only. moto checks no signature, but routes by the service named in the
    /// credential scope of the Authorization header.
    pub fn create_thing(&self, name: &str) -> Result<(), String> {
        let (status, body) = http_request(
            &self.addr,
            "POST",
            &format!("/things/{name}"),
            &[
                ("Content-Type", "application/json"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/iot/aws4_request, \
                     SignedHeaders=host, Signature=0",
                ),
            ],
            b"{}",
        )
        .map_err(|e| format!("moto CreateThing {name}: {e}"))?;
        if status == 200 && body.contains("thingName") {
            Ok(())
        } else {
            Err(format!("moto CreateThing {name}: HTTP {status}: {body}"))
        }
    }
}

/// How to run moto here, if it is installed.
fn moto_command() -> Option<(&'static str, &'static [&'static str])> {
    let candidates: [(&'static str, &'static [&'static str]); 2] =
        [("moto_server", &[]), ("python3", &["-m", "moto.server"])];
    candidates.into_iter().find(|(program, args)| {
        Command::new(program)
            .args(*args)
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

pub enum MotoState {
    Running(Moto),
    NotInstalled,
    Failed(String),
}

/// The moto server of this test binary, started on first use.
pub fn moto() -> &'static MotoState {
    static MOTO: OnceLock<MotoState> = OnceLock::new();
    MOTO.get_or_init(|| {
        let Some((program, base_args)) = moto_command() else {
            return MotoState::NotInstalled;
        };
        let mut failures = Vec::new();
        // A port found free can be taken before moto binds it: try a few.
        for _ in 0..3 {
            match start_moto(program, base_args) {
                Ok(moto) => return MotoState::Running(moto),
                Err(e) => failures.push(e),
            }
        }
        MotoState::Failed(failures.join("\n---\n"))
    })
}

fn start_moto(program: &str, base_args: &[&str]) -> Result<Moto, String> {
    let port = free_port()?;
    let port_text = port.to_string();
    let mut args: Vec<&str> = base_args.to_vec();
    args.extend(["-H", "127.0.0.1", "-p", &port_text]);
    let (process, _) = Guarded::spawn(program, &args, "moto", false)?;
    let moto = Moto {
        process,
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        // A real answer from moto's iot API, not just an open port.
        let probe = moto.create_thing(&format!("shadowsync-probe-{}", std::process::id()));
        if probe.is_ok() {
            return Ok(moto);
        }
        if let Some(status) = moto.process.exited() {
            return Err(format!(
                "moto exited ({status}) on port {port}; {}",
                moto.process.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "moto did not answer on port {port} within {START_DEADLINE:?} ({}); {}",
                probe.err().unwrap_or_default(),
                moto.process.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// shadowsync dataplane serve

/// A running `shadowsync dataplane serve`.
pub struct LocalServer {
    pub process: Guarded,
    /// `http://127.0.0.1:PORT`, from the server's first stdout line.
    pub url: String,
}

/// The local data-plane server of this test binary (in-memory store), started on
/// first use.
pub fn local_server() -> &'static Result<LocalServer, String> {
    static SERVER: OnceLock<Result<LocalServer, String>> = OnceLock::new();
    SERVER.get_or_init(|| start_local_server(&[]))
}

/// Starts `shadowsync dataplane serve --listen 127.0.0.1:0` with `extra` flags and
/// waits for its `listening on URL` line.
pub fn start_local_server(extra: &[&str]) -> Result<LocalServer, String> {
    let mut args = vec!["dataplane", "serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (process, stdout) = Guarded::spawn(
        env!("CARGO_BIN_EXE_shadowsync"),
        &args,
        "dataplane-serve",
        true,
    )?;
    let stdout = stdout.ok_or("no stdout pipe")?;

    // Read the first line on a thread, so that the wait has a deadline; then keep
    // draining stdout so that the server never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let read = reader.read_line(&mut first).map(|_| first);
        let _ = tx.send(read);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(START_DEADLINE) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(format!("reading the server's stdout: {e}")),
        Err(_) => {
            return Err(format!(
                "the server printed no line within {START_DEADLINE:?}; {}",
                process.log_tail()
            ))
        }
    };
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "the server's first line is {line:?}, not `listening on URL`; {}",
                process.log_tail()
            )
        })?;
    Ok(LocalServer { process, url })
}

// ---------------------------------------------------------------------------------
// HTTP

/// A blocking HTTP/1.1 request (`Connection: close`); returns status and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status in {:?}",
                text.chars().take(100).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
