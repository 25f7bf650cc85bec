//! The calls of a `ThingShadow` pass: [`ShadowPass`] decides, this performs.

use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;

use super::{found, SyncEvent, SyncOptions, Syncer};
use crate::api::{ManagementPolicy, ShadowDeletionPolicy, ThingShadowSpec, ThingShadowStatus};
use crate::dataplane::{DataPlaneError, ErrorKind, ShadowDocument};
use crate::planner::pass::shadow::{
    cleanup, cleared_paths, ShadowPass, ShadowStep, ShadowSyncResult,
};
use crate::planner::shadow::plan_clear;

impl Syncer {
    /// One pass over a `ThingShadow` with the given prior status.
    pub async fn sync_shadow(
        &self,
        spec: &ThingShadowSpec,
        prior: &ThingShadowStatus,
        opts: &SyncOptions,
    ) -> ShadowSyncResult {
        let mut pass = ShadowPass::new(spec, prior, opts, self.limits(), self.conflict_attempts);
        let mut step = pass.start();
        loop {
            step = match step {
                ShadowStep::Read { pause } => {
                    if let Some(attempt) = pause {
                        self.conflict_pause(attempt).await;
                    }
                    let answer = self.read_shadow(spec).await;
                    pass.read(answer, Utc::now())
                }
                ShadowStep::Write(body) => {
                    let answer = self
                        .dataplane()
                        .update_thing_shadow(&spec.thing_name, spec.shadow_name.as_deref(), body)
                        .await;
                    pass.wrote(answer)
                }
                ShadowStep::Done => return pass.finish(Utc::now()),
            };
        }
    }

    async fn read_shadow(
        &self,
        spec: &ThingShadowSpec,
    ) -> Result<Option<ShadowDocument>, DataPlaneError> {
        found(
            self.dataplane()
                .get_thing_shadow(&spec.thing_name, spec.shadow_name.as_deref())
                .await,
        )
    }

    /// Deletion cleanup by `deletionPolicy`; `Ok` once nothing is left to do (including
    /// a shadow that is already gone). `Observe` resources never write.
    pub async fn cleanup_shadow(
        &self,
        spec: &ThingShadowSpec,
        status: &ThingShadowStatus,
    ) -> Result<Vec<SyncEvent>, DataPlaneError> {
        if spec.management_policy == ManagementPolicy::Observe {
            return Ok(Vec::new());
        }
        let thing = spec.thing_name.as_str();
        let shadow = spec.shadow_name.as_deref();
        match spec.deletion_policy {
            ShadowDeletionPolicy::Retain => Ok(vec![cleanup::retained(spec)]),
            ShadowDeletionPolicy::Delete => {
                match found(self.dataplane().delete_thing_shadow(thing, shadow).await)? {
                    Some(deleted) => Ok(vec![cleanup::deleted(spec, deleted.version)]),
                    None => Ok(Vec::new()),
                }
            }
            ShadowDeletionPolicy::ClearDesired => {
                let owned = cleared_paths(spec, status);
                let mut attempt = 0;
                loop {
                    let Some(doc) = self.read_shadow(spec).await? else {
                        return Ok(Vec::new());
                    };
                    let Some(mut update) = plan_clear(&owned, Some(&doc)) else {
                        return Ok(Vec::new());
                    };
                    if let Some(object) = update.as_object_mut() {
                        object.insert("version".into(), Value::from(doc.version));
                    }
                    match self
                        .dataplane()
                        .update_thing_shadow(thing, shadow, Bytes::from(update.to_string()))
                        .await
                    {
                        Ok(done) => return Ok(vec![cleanup::cleared(spec, &owned, done.version)]),
                        Err(err) if err.kind == ErrorKind::Conflict => {
                            attempt += 1;
                            if attempt >= self.conflict_attempts {
                                return Err(err);
                            }
                            self.conflict_pause(attempt).await;
                        }
                        Err(err) if err.kind == ErrorKind::ResourceNotFound => {
                            return Ok(Vec::new())
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
        }
    }
}
