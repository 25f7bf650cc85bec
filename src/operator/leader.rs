//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager).
//!
//! [`Leadership`] is this replica's right to run the controllers: unconditional without
//! leader election, else from [`Leadership::acquire`] (the Lease is held) until
//! [`Leadership::end`]. While it lasts, [`Leadership::until_stopped`] is the shutdown
//! signal of each controller: it fires on shutdown, and also when the Lease is lost, so
//! that a replica that no longer leads stops writing at once. A replica that lost the
//! Lease exits ([`Ended::LeaseLost`]) and comes back as a standby; one that stops on its
//! own releases the Lease so that a standby takes over without waiting for it to expire.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Where the Lease lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// Namespace of the Lease. `None`: `$POD_NAMESPACE`, else `default`.
    pub namespace: Option<String>,
    /// Name of the Lease.
    pub lease: String,
}

impl LeaderElection {
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }
}

/// This replica may run the controllers (see the module documentation).
pub struct Leadership {
    /// Turns true if the Lease is lost; `None` without leader election.
    lost: Option<watch::Receiver<bool>>,
    /// The held Lease, released at the end; `None` without leader election.
    held: Option<Held>,
}

/// How a term of [`Leadership`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Stopped on request (or never elected): the Lease, if any, was released.
    Stopped,
    /// Another replica took the Lease while this one led.
    LeaseLost,
}

impl Leadership {
    /// Without leader election: leads until stopped, and never loses a Lease.
    pub fn unconditional() -> Self {
        Self {
            lost: None,
            held: None,
        }
    }

    /// Waits until this replica holds the Lease (`Ok(None)` if `stop` turned true first;
    /// nothing is then held).
    pub async fn acquire(
        client: Client,
        election: &LeaderElection,
        stop: watch::Receiver<bool>,
    ) -> kube_lease_manager::Result<Option<Self>> {
        let held = acquire(client, &election.namespace(), &election.lease, stop).await?;
        Ok(held.map(|(held, lost)| Self {
            lost: Some(lost),
            held: Some(held),
        }))
    }

    /// Completes when the controllers must stop: `stop` turned true, or the Lease was
    /// lost. Each controller gets one, and each one that sees the loss logs it.
    pub fn until_stopped(
        &self,
        mut stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + Sync + 'static {
        let lost = self.lost.clone();
        async move {
            let stopped = async {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            match lost {
                Some(mut lost) => {
                    tokio::select! {
                        _ = stopped => {}
                        _ = lost.wait_for(|lost| *lost) => {
                            // The operator's target, with its other lines on starting
                            // and stopping the controllers.
                            warn!(target: "shadowsync::operator", "leadership lost: stopping the controllers");
                        }
                    }
                }
                None => stopped.await,
            }
        }
    }

    /// Ends the term once the controllers have stopped: says whether the Lease was lost,
    /// and releases it so that a standby takes over at once.
    pub async fn end(self) -> Ended {
        let lost = self.lost.is_some_and(|lost| *lost.borrow());
        if let Some(held) = self.held {
            held.release().await;
        }
        if lost {
            Ended::LeaseLost
        } else {
            Ended::Stopped
        }
    }
}

/// A held lease.
struct Held {
    channel: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    forward: JoinHandle<()>,
}

impl Held {
    /// Gives the lease up so that a standby takes over at once.
    async fn release(self) {
        self.forward.abort();
        drop(self.channel);
        if let Ok(Ok(manager)) = self.task.await {
            let _ = manager.release().await;
        }
    }
}

/// How often a standby reads the Lease again, as client-go's retry period.
const STANDBY_RECHECK: Duration = Duration::from_secs(2);

/// Waits until this replica holds the lease (`Ok(None)` if stopped first). With the lease
/// comes a receiver that turns true if leadership is lost.
async fn acquire(
    client: Client,
    namespace: &str,
    lease: &str,
    mut stop: watch::Receiver<bool>,
) -> kube_lease_manager::Result<Option<(Held, watch::Receiver<bool>)>> {
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("shadowsync-{}", std::process::id()));
    info!(%namespace, %lease, %identity, "waiting for leadership");
    let (channel, task) = loop {
        // A fresh manager reads the Lease anew. One that keeps running sleeps until
        // the holder's lease would expire, so it would miss a lease that its holder
        // released on shutdown and take over only a lease duration later.
        let manager = LeaseManagerBuilder::new(client.clone(), lease)
            .with_namespace(namespace)
            .with_identity(identity.clone())
            .with_field_manager(super::FIELD_MANAGER)
            .build()
            .await?;
        let (mut channel, task) = manager.watch().await;
        let recheck = tokio::time::sleep(STANDBY_RECHECK);
        tokio::pin!(recheck);
        let leading = loop {
            if *channel.borrow_and_update() {
                break true;
            }
            tokio::select! {
                changed = channel.changed() => {
                    if changed.is_err() {
                        // The manager gave up (an API error): look again.
                        (&mut recheck).await;
                        break false;
                    }
                }
                _ = &mut recheck => break false,
                _ = stop.wait_for(|stopped| *stopped) => {
                    drop(channel);
                    if let Ok(Ok(manager)) = task.await {
                        let _ = manager.release().await;
                    }
                    return Ok(None);
                }
            }
        };
        if leading {
            break (channel, task);
        }
        // Not leading: end this manager (it releases nothing it does not hold).
        drop(channel);
        let _ = task.await;
    };
    info!(%namespace, %lease, %identity, "leading");
    let (lost_tx, lost) = watch::channel(false);
    let mut follow = channel.clone();
    let forward = tokio::spawn(async move {
        while follow.changed().await.is_ok() {
            if !*follow.borrow_and_update() {
                let _ = lost_tx.send(true);
                return;
            }
        }
    });
    Ok(Some((
        Held {
            channel,
            task,
            forward,
        },
        lost,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::poll;

    #[tokio::test]
    async fn without_election_the_controllers_stop_only_when_told() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let leadership = Leadership::unconditional();
        let until = leadership.until_stopped(stop_rx);
        tokio::pin!(until);
        assert!(poll!(&mut until).is_pending());
        stop_tx.send(true).unwrap();
        assert!(poll!(&mut until).is_ready());
        assert_eq!(leadership.end().await, Ended::Stopped);
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_controllers_and_ends_the_term_as_lost() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (lost_tx, lost) = watch::channel(false);
        let leadership = Leadership {
            lost: Some(lost),
            held: None,
        };
        let first = leadership.until_stopped(stop_rx.clone());
        let second = leadership.until_stopped(stop_rx);
        tokio::pin!(first, second);
        assert!(poll!(&mut first).is_pending());
        assert!(poll!(&mut second).is_pending());
        lost_tx.send(true).unwrap();
        assert!(poll!(&mut first).is_ready());
        assert!(poll!(&mut second).is_ready());
        assert_eq!(leadership.end().await, Ended::LeaseLost);
    }

    #[tokio::test]
    async fn a_stop_while_leading_ends_the_term_as_stopped() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (_lost_tx, lost) = watch::channel(false);
        let leadership = Leadership {
            lost: Some(lost),
            held: None,
        };
        let until = leadership.until_stopped(stop_rx);
        tokio::pin!(until);
        assert!(poll!(&mut until).is_pending());
        stop_tx.send(true).unwrap();
        assert!(poll!(&mut until).is_ready());
        assert_eq!(leadership.end().await, Ended::Stopped);
    }

    #[test]
    fn the_lease_namespace_given_wins_over_the_pod_namespace() {
        let election = LeaderElection {
            namespace: Some("ops".into()),
            lease: "shadowsync-leader".into(),
        };
        assert_eq!(election.namespace(), "ops");
    }
}
