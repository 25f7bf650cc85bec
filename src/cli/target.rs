//! The data-plane flags, shared by every command that talks to a data plane. They only
//! spell [`DataPlaneSettings`] on the command line: choosing and building the data plane
//! is [`crate::dataplane::connect`]'s.

use std::path::PathBuf;

use clap::ValueEnum;

use crate::dataplane::connect::{DataPlaneKind, DataPlaneSettings};
use crate::dataplane::ShadowLimits;

/// `--data-plane`: which implementation of the data plane to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataPlaneChoice {
    /// AWS IoT through the AWS SDK (real AWS, or any endpoint given by --endpoint-url).
    Aws,
    /// The in-process store (memory, or the file given by --db).
    Embedded,
}

impl From<DataPlaneChoice> for DataPlaneKind {
    fn from(choice: DataPlaneChoice) -> Self {
        match choice {
            DataPlaneChoice::Aws => DataPlaneKind::Aws,
            DataPlaneChoice::Embedded => DataPlaneKind::Embedded,
        }
    }
}

/// Data-plane flags. Each also reads an environment variable.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataPlaneArgs {
    /// `aws` or `embedded`. Default: `aws` when --endpoint-url is given, else `embedded`.
    #[arg(long, value_enum, env = "SHADOWSYNC_DATA_PLANE")]
    pub data_plane: Option<DataPlaneChoice>,
    /// AWS IoT data endpoint (e.g. https://xxxx-ats.iot.eu-west-1.amazonaws.com, or a local
    /// data plane). Default: discovered with iot:DescribeEndpoint (iot:Data-ATS).
    #[arg(long, env = "SHADOWSYNC_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region. Default: the AWS default chain (AWS_REGION, profile).
    #[arg(long, env = "SHADOWSYNC_REGION")]
    pub region: Option<String>,
    /// Database file of the embedded data plane.
    #[arg(long, env = "SHADOWSYNC_DB")]
    pub db: Option<PathBuf>,
    /// Account-wide data-plane requests per second (client-side rate limit; 0 = none).
    /// The default is a quarter of the lowest regional shadow quota (400/s).
    #[arg(long, env = "SHADOWSYNC_MAX_RPS", default_value_t = 100)]
    pub max_rps: u32,
    /// Data-plane requests per second to one thing (AWS allows 20; 0 = no limit).
    #[arg(long, env = "SHADOWSYNC_MAX_THING_RPS", default_value_t = 20)]
    pub max_thing_rps: u32,
    /// Shadow document size limit in bytes (desired + reported), checked before any call.
    #[arg(long, env = "SHADOWSYNC_MAX_DOCUMENT_BYTES", default_value_t = ShadowLimits::default().max_document_bytes)]
    pub max_document_bytes: usize,
    /// Nesting depth limit of desired state, checked before any call.
    #[arg(long, env = "SHADOWSYNC_MAX_DEPTH", default_value_t = ShadowLimits::default().max_depth)]
    pub max_depth: usize,
}

impl DataPlaneArgs {
    /// What these flags ask of the data plane.
    pub fn settings(&self) -> DataPlaneSettings {
        DataPlaneSettings {
            data_plane: self.data_plane.map(DataPlaneKind::from),
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            db: self.db.clone(),
            max_rps: self.max_rps,
            max_thing_rps: self.max_thing_rps,
            max_document_bytes: self.max_document_bytes,
            max_depth: self.max_depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        dataplane: DataPlaneArgs,
    }

    /// Parses `args` with the environment variables of the flags ignored, so that the
    /// test sees the flag defaults whatever the environment it runs in.
    fn parse(args: &[&str]) -> DataPlaneSettings {
        let command = Flags::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(std::iter::once("shadowsync").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{err}"));
        Flags::from_arg_matches(&matches)
            .unwrap_or_else(|err| panic!("{err}"))
            .dataplane
            .settings()
    }

    #[test]
    fn every_flag_reaches_the_settings() {
        let settings = parse(&[
            "--data-plane",
            "aws",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--region",
            "eu-west-3",
            "--db",
            "dir/plane.redb",
            "--max-rps",
            "7",
            "--max-thing-rps",
            "3",
            "--max-document-bytes",
            "4321",
            "--max-depth",
            "4",
        ]);
        assert_eq!(
            settings,
            DataPlaneSettings {
                data_plane: Some(DataPlaneKind::Aws),
                endpoint_url: Some("http://127.0.0.1:9".into()),
                region: Some("eu-west-3".into()),
                db: Some(PathBuf::from("dir/plane.redb")),
                max_rps: 7,
                max_thing_rps: 3,
                max_document_bytes: 4321,
                max_depth: 4,
            }
        );
        assert_eq!(
            parse(&["--data-plane", "embedded"]).data_plane,
            Some(DataPlaneKind::Embedded)
        );
    }

    #[test]
    fn the_flag_defaults_reach_the_settings() {
        assert_eq!(
            parse(&[]),
            DataPlaneSettings {
                data_plane: None,
                endpoint_url: None,
                region: None,
                db: None,
                max_rps: 100,
                max_thing_rps: 20,
                max_document_bytes: ShadowLimits::default().max_document_bytes,
                max_depth: ShadowLimits::default().max_depth,
            }
        );
    }
}
