//! `test-apiserver`: runs the in-memory Kubernetes API server until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use test_apiserver::{Options, TestApiServer};

/// A small in-memory Kubernetes API server for end-to-end tests (plain HTTP, no auth).
#[derive(Parser, Debug)]
#[command(name = "test-apiserver", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A directory of CRD YAML files, or one file; may be repeated.
    #[arg(long = "crds", value_name = "DIR")]
    crds: Vec<PathBuf>,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long, value_name = "PATH")]
    kubeconfig: PathBuf,
    /// Keep objects in this file (loaded at start, written shortly after each change and
    /// on exit), so a restarted server continues with the same data.
    #[arg(long, value_name = "PATH")]
    data_file: Option<PathBuf>,
    /// Number of changes kept for watches from an older resourceVersion.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Milliseconds between periodic BOOKMARK events.
    #[arg(long, default_value_t = 5_000)]
    bookmark_interval_ms: u64,
    /// Seed for generated names and UIDs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Kubernetes minor version reported by /version.
    #[arg(long, default_value_t = 33)]
    kube_minor: u32,
    /// Log every API request to stderr.
    #[arg(long)]
    log_requests: bool,
    /// Milliseconds between a namespace's deletion and the deletion of its content.
    #[arg(long, default_value_t = 500)]
    namespace_cleanup_delay_ms: u64,
}

fn main() {
    let cli = Cli::parse();
    let server = match TestApiServer::start(Options {
        listen: cli.listen,
        crds: cli.crds,
        kubeconfig: Some(cli.kubeconfig),
        data_file: cli.data_file,
        history_limit: cli.history,
        bookmark_interval: Duration::from_millis(cli.bookmark_interval_ms),
        seed: cli.seed,
        kube_minor: cli.kube_minor,
        log_requests: cli.log_requests,
        namespace_cleanup_delay: Duration::from_millis(cli.namespace_cleanup_delay_ms),
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("test-apiserver: {e}");
            std::process::exit(1);
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.url());
        let _ = writeln!(out, "kubeconfig {}", server.kubeconfig_path().display());
        let _ = out.flush();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a signal runtime");
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    drop(server);
}
