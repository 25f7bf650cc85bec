//! Choosing and building a data plane from plain settings: the one place where a
//! caller's wishes (which implementation, where, how fast) become an
//! `Arc<dyn DataPlane>` wrapped in [`Resilient`], and the same store's
//! `Arc<dyn Registry>` wrapped in [`RetryingRegistry`].
//!
//! Every front end goes through here (the CLI commands, the operator, the benchmarks),
//! so they all get the same defaults, the same rate limits and the same wording of
//! what they connected to. The settings are plain data: how they are spelled on a
//! command line is the CLI's business.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::aws::{AwsDataPlane, AwsOptions};
use super::embedded::EmbeddedDataPlane;
use super::registry::retrying::RetryingRegistry;
use super::registry::Registry;
use super::resilient::{CallObserver, RateLimit, ResiliencePolicy, Resilient};
use super::{DataPlane, ShadowLimits};

/// Which implementation of the data plane to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPlaneKind {
    /// AWS IoT through the AWS SDK (real AWS, or any endpoint URL).
    Aws,
    /// The in-process store (in memory, or in a redb file).
    Embedded,
}

/// What a caller asks of its data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlaneSettings {
    /// The implementation asked for; `None` picks one from `endpoint_url` (see
    /// [`DataPlaneSettings::kind`]).
    pub data_plane: Option<DataPlaneKind>,
    /// AWS IoT data endpoint. `None`: discovered with `iot:DescribeEndpoint`.
    pub endpoint_url: Option<String>,
    /// AWS region. `None`: the AWS default chain.
    pub region: Option<String>,
    /// Database file of the embedded data plane. `None`: the caller's default, if any.
    pub db: Option<PathBuf>,
    /// Account-wide requests per second (0 = no limit).
    pub max_rps: u32,
    /// Requests per second to one thing (0 = no limit).
    pub max_thing_rps: u32,
    /// Shadow document size limit in bytes (desired + reported).
    pub max_document_bytes: usize,
    /// Nesting depth limit of desired state.
    pub max_depth: usize,
}

impl DataPlaneSettings {
    /// The shadow limits checked before any call (and enforced by the embedded store).
    pub fn limits(&self) -> ShadowLimits {
        ShadowLimits {
            max_document_bytes: self.max_document_bytes,
            max_depth: self.max_depth,
            ..ShadowLimits::default()
        }
    }

    /// The client-side rate limits and retry policy these settings ask for.
    pub fn policy(&self) -> ResiliencePolicy {
        ResiliencePolicy {
            account_rate: (self.max_rps > 0).then(|| RateLimit::new(self.max_rps, self.max_rps)),
            thing_rate: (self.max_thing_rps > 0).then(|| RateLimit::new(self.max_thing_rps, 2)),
            ..ResiliencePolicy::default()
        }
    }

    /// The implementation to build: the one asked for, else AWS when an endpoint URL is
    /// given (it can only be meant for an AWS-speaking data plane), else the embedded
    /// store, so that nothing reaches an AWS account unless asked to.
    pub fn kind(&self) -> DataPlaneKind {
        self.data_plane.unwrap_or(if self.endpoint_url.is_some() {
            DataPlaneKind::Aws
        } else {
            DataPlaneKind::Embedded
        })
    }

    /// Builds the data plane, wrapped in the rate limiter and retry policy. Returns it with
    /// a one-line description for the user. `default_db` is where the embedded store lives
    /// when `db` is not set (None: in memory).
    ///
    /// For the registry too, use [`DataPlaneSettings::connect_with_registry`].
    pub async fn connect(
        &self,
        default_db: Option<&Path>,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<(Arc<dyn DataPlane>, String), String> {
        let connected = self.connect_with_registry(default_db, observer).await?;
        Ok((connected.data_plane, connected.description))
    }

    /// [`DataPlaneSettings::connect`], with the registry of the same account: one store
    /// serves both (the embedded store is one object, in memory or on its file; the AWS
    /// adapter is one client pair), so a thing group created through
    /// [`Connected::registry`] is the one the data plane's fleet is listed from. The data
    /// plane is wrapped in [`Resilient`] (`observer` sees its calls), the registry in
    /// [`RetryingRegistry`] with its default policy (registry calls are not reported to
    /// `observer`: the metrics' operation labels are the data-plane ones).
    pub async fn connect_with_registry(
        &self,
        default_db: Option<&Path>,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<Connected, String> {
        let (data_plane, registry, description): (Arc<dyn DataPlane>, Arc<dyn Registry>, String) =
            match self.kind() {
                DataPlaneKind::Embedded => {
                    let (store, description) = match self.db.as_deref().or(default_db) {
                        Some(path) => {
                            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                                std::fs::create_dir_all(dir).map_err(|err| {
                                    format!("cannot create {}: {err}", dir.display())
                                })?;
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
                    let store = Arc::new(store.with_limits(self.limits()));
                    (store.clone(), store, description)
                }
                DataPlaneKind::Aws => {
                    let aws = AwsDataPlane::connect(AwsOptions {
                        endpoint_url: self.endpoint_url.clone(),
                        region: self.region.clone(),
                    })
                    .await
                    .map_err(|err| err.to_string())?;
                    let description = format!("AWS IoT data plane at {}", aws.endpoint());
                    let aws = Arc::new(aws);
                    (aws.clone(), aws, description)
                }
            };
        let mut resilient = Resilient::new(data_plane, self.policy());
        if let Some(observer) = observer {
            resilient = resilient.with_observer(observer);
        }
        Ok(Connected {
            data_plane: Arc::new(resilient),
            registry: Arc::new(RetryingRegistry::new(registry)),
            description,
        })
    }
}

/// What [`DataPlaneSettings::connect_with_registry`] built: the data plane and the
/// registry of one store, each behind its rate limit and retries.
pub struct Connected {
    /// Wrapped in [`Resilient`].
    pub data_plane: Arc<dyn DataPlane>,
    /// The same store's registry, wrapped in [`RetryingRegistry`].
    pub registry: Arc<dyn Registry>,
    /// One line for the user: what was connected to.
    pub description: String,
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::dataplane::registry::{Attributes, ThingGroupSpec};

    fn settings() -> DataPlaneSettings {
        DataPlaneSettings {
            data_plane: None,
            endpoint_url: None,
            region: None,
            db: None,
            max_rps: 100,
            max_thing_rps: 20,
            max_document_bytes: 8 * 1024,
            max_depth: 6,
        }
    }

    #[test]
    fn the_kind_follows_the_endpoint_unless_one_is_asked_for() {
        assert_eq!(settings().kind(), DataPlaneKind::Embedded);
        let aimed = DataPlaneSettings {
            endpoint_url: Some("http://127.0.0.1:1".into()),
            ..settings()
        };
        assert_eq!(aimed.kind(), DataPlaneKind::Aws);
        let forced = DataPlaneSettings {
            data_plane: Some(DataPlaneKind::Embedded),
            ..aimed
        };
        assert_eq!(forced.kind(), DataPlaneKind::Embedded);
        let aws = DataPlaneSettings {
            data_plane: Some(DataPlaneKind::Aws),
            ..settings()
        };
        assert_eq!(aws.kind(), DataPlaneKind::Aws);
    }

    #[test]
    fn zero_rates_mean_no_limit_and_the_thing_burst_is_two() {
        let policy = DataPlaneSettings {
            max_rps: 7,
            max_thing_rps: 3,
            ..settings()
        }
        .policy();
        assert_eq!(policy.account_rate, Some(RateLimit::new(7, 7)));
        assert_eq!(policy.thing_rate, Some(RateLimit::new(3, 2)));
        assert_eq!(
            policy.max_attempts,
            ResiliencePolicy::default().max_attempts
        );
        let unlimited = DataPlaneSettings {
            max_rps: 0,
            max_thing_rps: 0,
            ..settings()
        }
        .policy();
        assert_eq!(unlimited.account_rate, None);
        assert_eq!(unlimited.thing_rate, None);
    }

    #[test]
    fn limits_take_size_and_depth_and_keep_the_payload_limit() {
        let limits = DataPlaneSettings {
            max_document_bytes: 1234,
            max_depth: 3,
            ..settings()
        }
        .limits();
        assert_eq!(limits.max_document_bytes, 1234);
        assert_eq!(limits.max_depth, 3);
        assert_eq!(
            limits.max_payload_bytes,
            ShadowLimits::default().max_payload_bytes
        );
    }

    async fn fill(connected: &Connected) {
        let registry = &connected.registry;
        registry
            .create_thing("lamp-1", &Attributes::new())
            .await
            .expect("thing");
        registry
            .create_thing_group("lamps", &ThingGroupSpec::default())
            .await
            .expect("group");
        registry
            .add_thing_to_thing_group("lamps", "lamp-1")
            .await
            .expect("member");
        connected
            .data_plane
            .update_thing_shadow(
                "lamp-1",
                None,
                Bytes::from_static(br#"{"state":{"desired":{"on":true}}}"#),
            )
            .await
            .expect("shadow");
    }

    #[tokio::test]
    async fn a_group_created_through_the_registry_is_seen_by_the_same_connection() {
        let connected = settings()
            .connect_with_registry(None, None)
            .await
            .expect("in memory");
        assert_eq!(
            connected.description,
            "embedded data plane in memory (no AWS account is used)"
        );
        fill(&connected).await;

        let page = connected
            .registry
            .list_things_in_thing_group("lamps", false, None, None)
            .await
            .expect("the group exists in this connection");
        assert_eq!(page.things, ["lamp-1"]);
        let shadow = connected
            .data_plane
            .get_thing_shadow("lamp-1", None)
            .await
            .expect("shadow");
        assert_eq!(shadow.version, 1);
    }

    #[tokio::test]
    async fn one_file_store_serves_both_and_keeps_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/plane.redb");
        let settings = DataPlaneSettings {
            db: Some(path.clone()),
            ..settings()
        };
        {
            let connected = settings
                .connect_with_registry(None, None)
                .await
                .expect("file");
            assert!(connected.description.contains("plane.redb"));
            // redb locks its file while a store has it open: the data plane and the
            // registry above are one store, or the second of them could not have opened.
            let again = settings.connect_with_registry(None, None).await;
            let err = again.err().expect("the file is in use");
            assert!(err.contains("cannot open the data-plane database"), "{err}");
            fill(&connected).await;
        }

        // Both halves were written to the one file.
        let store = EmbeddedDataPlane::open(&path).expect("reopened");
        let page = store
            .list_things_in_thing_group("lamps", false, None, None)
            .await
            .expect("group");
        assert_eq!(page.things, ["lamp-1"]);
        assert!(store.get_thing_shadow("lamp-1", None).await.is_ok());
    }

    #[tokio::test]
    async fn connect_gives_the_data_plane_of_connect_with_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default_db = dir.path().join("default.redb");
        let (data_plane, description) = settings()
            .connect(Some(&default_db), None)
            .await
            .expect("default file");
        assert!(description.contains("default.redb"), "{description}");
        assert!(data_plane.get_thing_shadow("none", None).await.is_err());
        assert!(default_db.exists());
    }
}
