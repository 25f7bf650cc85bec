//! `shadowsync run`'s flags: they spell [`operator::Settings`] on the command line.

use std::net::SocketAddr;

use super::target::DataPlaneArgs;
use crate::operator::{self, LeaderElection};

/// Flags of `shadowsync run` (each also an environment variable).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub dataplane: DataPlaneArgs,
    /// Resources reconciled at once, per kind.
    #[arg(long, env = "SHADOWSYNC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SHADOWSYNC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// /healthz fails when a watch has failed, a reconcile has run, or a controller has
    /// stopped, for longer than this many seconds.
    #[arg(
        long,
        env = "SHADOWSYNC_PROGRESS_DEADLINE_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub progress_deadline_seconds: u64,
    /// Take part in leader election on a Lease, so that only one replica writes.
    #[arg(long, env = "SHADOWSYNC_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "SHADOWSYNC_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SHADOWSYNC_LEADER_ELECTION_LEASE",
        default_value = "shadowsync-leader"
    )]
    pub leader_election_lease: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SHADOWSYNC_NAMESPACE")]
    pub namespace: Option<String>,
    /// A namespace without the allow-list annotation for a kind
    /// (iot.shadowsync.dev/allowed-things, iot.shadowsync.dev/allowed-topics) may target
    /// nothing of that kind (default: such a namespace is unrestricted).
    #[arg(
        long,
        env = "SHADOWSYNC_REQUIRE_NAMESPACE_ALLOWLIST",
        default_value_t = false
    )]
    pub require_namespace_allowlist: bool,
    /// Log format.
    #[arg(long, env = "SHADOWSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl RunArgs {
    /// What these flags ask of the operator. The log format is not in it: logging is
    /// set up by the CLI before the operator starts.
    pub fn settings(&self) -> operator::Settings {
        operator::Settings {
            dataplane: self.dataplane.settings(),
            concurrency: self.concurrency,
            metrics_addr: self.metrics_addr,
            progress_deadline: std::time::Duration::from_secs(self.progress_deadline_seconds),
            leader_election: self.leader_election.then(|| LeaderElection {
                namespace: self.leader_election_namespace.clone(),
                lease: self.leader_election_lease.clone(),
            }),
            namespace: self.namespace.clone(),
            require_namespace_allowlist: self.require_namespace_allowlist,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::connect::DataPlaneKind;
    use clap::{CommandFactory, FromArgMatches};

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        run: RunArgs,
    }

    /// Parses `args` with the environment variables of the flags ignored, so that the
    /// test sees the flag defaults whatever the environment it runs in.
    fn parse(args: &[&str]) -> operator::Settings {
        let command = Flags::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(std::iter::once("shadowsync").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{err}"));
        Flags::from_arg_matches(&matches)
            .unwrap_or_else(|err| panic!("{err}"))
            .run
            .settings()
    }

    #[test]
    fn without_flags_the_operator_gets_the_documented_defaults() {
        let settings = parse(&[]);
        assert_eq!(settings.concurrency, 16);
        assert_eq!(settings.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            settings.progress_deadline,
            std::time::Duration::from_secs(300)
        );
        assert_eq!(settings.leader_election, None);
        assert_eq!(settings.namespace, None);
        assert!(!settings.require_namespace_allowlist);
        assert_eq!(settings.dataplane.max_rps, 100);
        assert_eq!(settings.dataplane.max_thing_rps, 20);
    }

    #[test]
    fn the_lease_flags_matter_only_with_leader_election() {
        let lease = [
            "--leader-election-namespace",
            "ops",
            "--leader-election-lease",
            "l",
        ];
        assert_eq!(parse(&lease).leader_election, None);
        let elected = parse(&[&["--leader-election"][..], &lease[..]].concat());
        assert_eq!(
            elected.leader_election,
            Some(LeaderElection {
                namespace: Some("ops".into()),
                lease: "l".into(),
            })
        );
        assert_eq!(
            parse(&["--leader-election"]).leader_election,
            Some(LeaderElection {
                namespace: None,
                lease: "shadowsync-leader".into(),
            })
        );
    }

    #[test]
    fn every_other_flag_reaches_the_settings() {
        let settings = parse(&[
            "--concurrency",
            "3",
            "--metrics-addr",
            "127.0.0.1:9100",
            "--progress-deadline-seconds",
            "7",
            "--namespace",
            "fleet",
            "--require-namespace-allowlist",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--max-rps",
            "5",
        ]);
        assert_eq!(settings.concurrency, 3);
        assert_eq!(settings.metrics_addr, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(
            settings.progress_deadline,
            std::time::Duration::from_secs(7)
        );
        assert_eq!(settings.namespace.as_deref(), Some("fleet"));
        assert!(settings.require_namespace_allowlist);
        assert_eq!(settings.dataplane.kind(), DataPlaneKind::Aws);
        assert_eq!(settings.dataplane.max_rps, 5);
    }
}
