//! The `shadowsync` command line.

pub mod apply;
pub mod import;
pub mod manifest;
pub mod parse;
pub mod run;
pub mod sets;
pub mod state;
pub mod target;
pub mod yaml;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::dataplane::server::ServeArgs;

/// Keeps AWS IoT device shadows and retained MQTT messages in the state declared by
/// Kubernetes resources.
#[derive(Parser, Debug)]
#[command(name = "shadowsync", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: watch ThingShadow and RetainedMessage resources and keep the
    /// data plane in their declared state.
    Run(run::RunArgs),
    /// Reconcile manifest files once, straight against a data plane, and print the
    /// resulting status of each resource. Exits 1 if any is not Ready, 2 on bad input.
    ///
    /// A ThingShadowSet becomes one ThingShadow per selected thing (a thing group or
    /// query is read from the data plane's registry), all applied at once: staged
    /// rollouts (spec.rollout) need the operator. A set whose things cannot be read fails
    /// alone; the other manifests are still applied.
    Apply(apply::ApplyArgs),
    /// Show what `apply` would write, without writing. Exits 0 when in sync, 1 when
    /// there are differences, 2 on errors. A ThingShadowSet shows as its ThingShadows.
    Diff(apply::ManifestArgs),
    /// Print ThingShadow and RetainedMessage manifests that declare existing shadows and
    /// retained messages as they are, or a ThingShadowSet for the shared desired state of
    /// a thing group's shadows (onboarding a fleet). Exits 2 on errors.
    Import(import::ImportArgs),
    /// Read manifests as `apply` reads them, without a data plane.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Print the CustomResourceDefinitions generated from the API types.
    Crds,
    /// The local AWS IoT data plane.
    Dataplane {
        #[command(subcommand)]
        command: DataplaneCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Print the resources exactly as `apply` reads them (as kubectl and the operator
    /// read them), or the error naming the field. Exits 2 on unreadable manifests, 1 when
    /// a spec breaks a rule.
    Parse(parse::ParseArgs),
}

#[derive(Subcommand, Debug)]
pub enum DataplaneCommand {
    /// Serve the embedded data plane over the AWS IoT Data Plane REST API.
    Serve(ServeArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs =
        matches!(&cli.command, Command::Run(args) if args.log_format == run::LogFormat::Json);
    init_logging(json_logs);
    // The AWS SDK and the Kubernetes client share one TLS stack; pick its crypto provider
    // once so that neither has to guess.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let code = match cli.command {
        Command::Run(args) => runtime.block_on(crate::operator::run(args.settings())),
        Command::Apply(args) => runtime.block_on(apply::apply(args)),
        Command::Diff(args) => runtime.block_on(apply::diff(args)),
        Command::Import(args) => runtime.block_on(import::import(args)),
        Command::Manifest {
            command: ManifestCommand::Parse(args),
        } => parse::parse(args),
        Command::Crds => {
            print!("{}", crate::api::crds_yaml());
            0
        }
        Command::Dataplane {
            command: DataplaneCommand::Serve(args),
        } => match runtime.block_on(crate::dataplane::server::run(args)) {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("error: {err}");
                2
            }
        },
    };
    ExitCode::from(code)
}

/// Logs go to stderr, so that command output on stdout stays machine-readable.
/// `RUST_LOG` sets the filter (default: warnings, and info for shadowsync itself), except
/// that the AWS SDK's own logs stop at info (see [`aws_sdk_detail`]).
fn init_logging(json: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shadowsync=info"));
    let cap = tracing_subscriber::filter::filter_fn(|meta| !aws_sdk_detail(meta));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().finish().with(cap).try_init()
    } else {
        builder.finish().with(cap).try_init()
    };
}

/// Crates of the AWS SDK whose debug and trace output is never written, whatever `RUST_LOG`
/// asks for: it prints the resolved credentials (the access key ID, and the session token
/// inside signed headers), and whole request and response bodies, which carry payloads
/// that may come from Secrets.
const AWS_SDK_TARGETS: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_",
    "aws_sigv4",
    "aws_smithy_",
    "aws_types",
];

/// A span or event of the AWS SDK below info.
fn aws_sdk_detail(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() > tracing::Level::INFO
        && AWS_SDK_TARGETS
            .iter()
            .any(|prefix| meta.target().starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::{Level, Metadata};

    fn metadata(target: &'static str, level: Level) -> Metadata<'static> {
        struct Nothing;
        impl tracing::Callsite for Nothing {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CALLSITE: Nothing = Nothing;
        Metadata::new(
            "test",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing_core_identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        )
    }

    fn tracing_core_identifier(
        callsite: &'static dyn tracing::Callsite,
    ) -> tracing::callsite::Identifier {
        tracing::callsite::Identifier(callsite)
    }

    #[test]
    fn the_aws_sdk_is_capped_at_info_and_nothing_else_is() {
        for target in [
            "aws_smithy_runtime::client::orchestrator::auth",
            "aws_sigv4::http_request::sign",
            "aws_config::meta::credentials",
            "aws_sdk_iotdataplane::operation::publish",
        ] {
            assert!(aws_sdk_detail(&metadata(target, Level::TRACE)), "{target}");
            assert!(aws_sdk_detail(&metadata(target, Level::DEBUG)), "{target}");
            assert!(!aws_sdk_detail(&metadata(target, Level::INFO)), "{target}");
            assert!(!aws_sdk_detail(&metadata(target, Level::WARN)), "{target}");
        }
        for target in [
            "shadowsync::operator",
            "kube_runtime::controller",
            "hyper::proto",
        ] {
            assert!(!aws_sdk_detail(&metadata(target, Level::TRACE)), "{target}");
        }
    }
}
