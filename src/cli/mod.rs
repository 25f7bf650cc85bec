//! The `shadowsync` command line.

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
    /// Print the CustomResourceDefinitions generated from the API types.
    Crds,
    /// The local AWS IoT data plane.
    Dataplane {
        #[command(subcommand)]
        command: DataplaneCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DataplaneCommand {
    /// Serve the embedded data plane over the AWS IoT Data Plane REST API.
    Serve(ServeArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Crds => ExitCode::SUCCESS,
        Command::Dataplane {
            command: DataplaneCommand::Serve(args),
        } => match runtime.block_on(crate::dataplane::server::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        },
    }
}
