//! The calls of a `RetainedMessage` pass: [`RetainedPass`] decides, this performs.

use chrono::Utc;

use super::{found, PayloadInput, SyncEvent, SyncOptions, Syncer};
use crate::api::{
    ManagementPolicy, RetainedDeletionPolicy, RetainedMessageSpec, RetainedMessageStatus,
};
use crate::dataplane::DataPlaneError;
use crate::planner::pass::retained::{cleanup, RetainedPass, RetainedStep, RetainedSyncResult};
use crate::planner::retained::delete_request;

impl Syncer {
    /// One pass over a `RetainedMessage` with the given prior status.
    pub async fn sync_retained(
        &self,
        spec: &RetainedMessageSpec,
        prior: &RetainedMessageStatus,
        payload: PayloadInput,
        opts: &SyncOptions,
    ) -> RetainedSyncResult {
        let mut pass = RetainedPass::new(spec, prior, opts, self.limits());
        let mut step = pass.start(payload);
        loop {
            step = match step {
                RetainedStep::Read => {
                    let answer = found(self.dataplane().get_retained_message(&spec.topic).await);
                    pass.read(answer, Utc::now())
                }
                RetainedStep::Publish(request) => {
                    let answer = self.dataplane().publish(&request).await;
                    pass.published(answer, Utc::now())
                }
                RetainedStep::Done => return pass.finish(Utc::now()),
            };
        }
    }

    /// Deletion cleanup by `deletionPolicy`. `Delete` publishes an empty retained payload
    /// (which deletes it) only when a retained message exists, because subscribers see
    /// that empty message too.
    pub async fn cleanup_retained(
        &self,
        spec: &RetainedMessageSpec,
    ) -> Result<Vec<SyncEvent>, DataPlaneError> {
        if spec.management_policy == ManagementPolicy::Observe {
            return Ok(Vec::new());
        }
        match spec.deletion_policy {
            RetainedDeletionPolicy::Retain => Ok(vec![cleanup::retained(spec)]),
            RetainedDeletionPolicy::Delete => {
                if found(self.dataplane().get_retained_message(&spec.topic).await)?.is_none() {
                    return Ok(Vec::new());
                }
                self.dataplane().publish(&delete_request(spec)).await?;
                Ok(vec![cleanup::deleted(spec)])
            }
        }
    }
}
