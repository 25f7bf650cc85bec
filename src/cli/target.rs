//! Choosing and building the data plane from command-line flags (shared by every
//! command that talks to one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;

use crate::dataplane::aws::{AwsDataPlane, AwsOptions};
use crate::dataplane::embedded::EmbeddedDataPlane;
use crate::dataplane::resilient::{CallObserver, RateLimit, ResiliencePolicy, Resilient};
use crate::dataplane::{DataPlane, ShadowLimits};

/// Which implementation of the data plane to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataPlaneKind {
    /// AWS IoT through the AWS SDK (real AWS, or any endpoint given by --endpoint-url).
    Aws,
    /// The in-process store (memory, or the file given by --db).
    Embedded,
}

/// Data-plane flags. Each also reads an environment variable.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataPlaneArgs {
    /// `aws` or `embedded`. Default: `aws` when --endpoint-url is given, else `embedded`.
    #[arg(long, value_enum, env = "SHADOWSYNC_DATA_PLANE")]
    pub data_plane: Option<DataPlaneKind>,
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
    pub fn limits(&self) -> ShadowLimits {
        ShadowLimits {
            max_document_bytes: self.max_document_bytes,
            max_depth: self.max_depth,
            ..ShadowLimits::default()
        }
    }

    /// The client-side rate limits and retry policy these flags ask for.
    pub fn policy(&self) -> ResiliencePolicy {
        ResiliencePolicy {
            account_rate: (self.max_rps > 0).then(|| RateLimit::new(self.max_rps, self.max_rps)),
            thing_rate: (self.max_thing_rps > 0).then(|| RateLimit::new(self.max_thing_rps, 2)),
            ..ResiliencePolicy::default()
        }
    }

    pub fn kind(&self) -> DataPlaneKind {
        self.data_plane.unwrap_or(if self.endpoint_url.is_some() {
            DataPlaneKind::Aws
        } else {
            DataPlaneKind::Embedded
        })
    }

    /// Builds the data plane, wrapped in the rate limiter and retry policy. Returns it with
    /// a one-line description for the user. `default_db` is where the embedded store lives
    /// when --db is not given (None: in memory).
    pub async fn connect(
        &self,
        default_db: Option<&Path>,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<(Arc<dyn DataPlane>, String), String> {
        let (inner, description): (Arc<dyn DataPlane>, String) = match self.kind() {
            DataPlaneKind::Embedded => {
                let store = match self.db.as_deref().or(default_db) {
                    Some(path) => {
                        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                            std::fs::create_dir_all(dir)
                                .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
                        }
                        let store = EmbeddedDataPlane::open(path).map_err(|err| {
                            format!(
                                "cannot open the data-plane database {}: {err}",
                                path.display()
                            )
                        })?;
                        (
                            store,
                            format!(
                                "embedded data plane stored in {} (no AWS account is used; pass --endpoint-url or --data-plane aws for a real one)",
                                path.display()
                            ),
                        )
                    }
                    None => (
                        EmbeddedDataPlane::in_memory(),
                        "embedded data plane in memory (no AWS account is used)".to_string(),
                    ),
                };
                (Arc::new(store.0.with_limits(self.limits())), store.1)
            }
            DataPlaneKind::Aws => {
                let aws = AwsDataPlane::connect(AwsOptions {
                    endpoint_url: self.endpoint_url.clone(),
                    region: self.region.clone(),
                })
                .await
                .map_err(|err| err.to_string())?;
                let description = format!("AWS IoT data plane at {}", aws.endpoint());
                (Arc::new(aws), description)
            }
        };
        let mut resilient = Resilient::new(inner, self.policy());
        if let Some(observer) = observer {
            resilient = resilient.with_observer(observer);
        }
        Ok((Arc::new(resilient), description))
    }
}
