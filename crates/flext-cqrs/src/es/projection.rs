//! [`ProjectionRunner`]: feeds a projection from the log, with checkpoints and dead letters.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flext_constants::handler;
use flext_impl::catch_panic;
use flext_protocols::{CheckpointStore, EventStore, Projection};
use flext_types::{DeadLetter, FlextResult, StoredEvent};
use futures_util::StreamExt;

/// How a [`ProjectionRunner`] reads and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionConfig {
    /// Events read per batch while catching up.
    pub batch_size: usize,
    /// Tries per event before it goes to the dead letters.
    pub max_attempts: u32,
    /// The pause between two tries of one event.
    pub retry_delay: Duration,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            max_attempts: handler::MAX_RETRIES,
            retry_delay: Duration::ZERO,
        }
    }
}

impl ProjectionConfig {
    /// The same configuration reading `size` events per batch while catching up.
    #[must_use]
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// The same configuration trying each event `attempts` times before dead-lettering it.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The same configuration pausing `delay` between two tries of one event.
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }
}

/// What a run of a [`ProjectionRunner`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionProgress {
    /// Events applied.
    pub applied: u64,
    /// Events given up on and recorded as dead letters.
    pub dead_lettered: u64,
    /// The checkpoint after the run: the last position finished.
    pub position: u64,
}

/// Feeds one [`Projection`] from the event log: from its checkpoint, event by event, saving
/// the checkpoint after each.
///
/// - [`catch_up`](ProjectionRunner::catch_up) applies everything committed so far;
///   [`run_until`](ProjectionRunner::run_until) catches up, then follows new events live
///   until its shutdown future resolves.
/// - Delivery is at least once: a crash after an event is applied and before its checkpoint
///   is saved applies it again on restart.
/// - An event that fails (or panics) `max_attempts` times in a row is recorded as a
///   [`DeadLetter`] and the runner moves on.
/// - [`rebuild`](ProjectionRunner::rebuild) empties the projection, forgets the checkpoint
///   and dead letters, and replays from the first event.
pub struct ProjectionRunner {
    events: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    projection: Arc<dyn Projection>,
    config: ProjectionConfig,
}

impl ProjectionRunner {
    /// A runner of `projection` over `events`, keeping its checkpoint in `checkpoints`.
    pub fn new(
        events: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        projection: Arc<dyn Projection>,
    ) -> Self {
        Self {
            events,
            checkpoints,
            projection,
            config: ProjectionConfig::default(),
        }
    }

    /// The same runner with `config`.
    #[must_use]
    pub fn with_config(mut self, config: ProjectionConfig) -> Self {
        self.config = config;
        self
    }

    /// The projection's name (its checkpoint's key).
    pub fn name(&self) -> &str {
        self.projection.name()
    }

    /// The last position the projection finished (0 before its first event).
    pub async fn position(&self) -> FlextResult<u64> {
        Ok(self
            .checkpoints
            .load_checkpoint(self.name())
            .await?
            .unwrap_or(0))
    }

    /// The events the projection gave up on.
    pub async fn dead_letters(&self) -> FlextResult<Vec<DeadLetter>> {
        self.checkpoints.dead_letters(self.name()).await
    }

    /// Applies every event committed after the checkpoint.
    pub async fn catch_up(&self) -> FlextResult<ProjectionProgress> {
        let mut progress = ProjectionProgress {
            position: self.position().await?,
            ..ProjectionProgress::default()
        };
        let batch_size = self.config.batch_size.max(1);
        loop {
            let batch = self
                .events
                .read_all(progress.position + 1, batch_size)
                .await?;
            for event in &batch {
                self.process(event, &mut progress).await?;
            }
            if batch.len() < batch_size {
                return Ok(progress);
            }
        }
    }

    /// Catches up, then applies each new event as it commits, until `shutdown` resolves.
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> FlextResult<ProjectionProgress> {
        let mut progress = self.catch_up().await?;
        let mut live = self.events.subscribe(progress.position + 1).await?;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(progress),
                next = live.next() => match next {
                    Some(Ok(event)) => self.process(&event, &mut progress).await?,
                    Some(Err(error)) => return Err(error),
                    None => return Ok(progress),
                },
            }
        }
    }

    /// Empties the projection, forgets its checkpoint and dead letters, and replays every
    /// event.
    pub async fn rebuild(&self) -> FlextResult<ProjectionProgress> {
        self.projection.reset().await?;
        self.checkpoints.reset(self.name()).await?;
        self.catch_up().await
    }

    async fn process(
        &self,
        event: &StoredEvent,
        progress: &mut ProjectionProgress,
    ) -> FlextResult<()> {
        if event.position <= progress.position {
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match catch_panic(self.projection.apply(event)).await {
                Ok(()) => {
                    progress.applied += 1;
                    break;
                }
                Err(error) if attempts >= self.config.max_attempts.max(1) => {
                    tracing::warn!(projection = self.name(), position = event.position, %error, "event dead-lettered");
                    self.checkpoints
                        .add_dead_letter(
                            self.name(),
                            DeadLetter {
                                position: event.position,
                                event_id: event.event_id,
                                stream_id: event.stream_id.to_string(),
                                event_type: event.event_type.to_string(),
                                attempts,
                                error,
                            },
                        )
                        .await?;
                    progress.dead_lettered += 1;
                    break;
                }
                Err(error) => {
                    tracing::debug!(projection = self.name(), position = event.position, attempts, %error, "projection failed; retrying");
                    if !self.config.retry_delay.is_zero() {
                        tokio::time::sleep(self.config.retry_delay).await;
                    }
                }
            }
        }
        self.checkpoints
            .save_checkpoint(self.name(), event.position)
            .await?;
        progress.position = event.position;
        Ok(())
    }
}

impl fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
