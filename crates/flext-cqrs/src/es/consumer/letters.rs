//! Dead letters by hand: retry, retry of every stream, discard and clear.

use super::*;

impl Consumer {
    /// Applies the dead letter at `position` again, once; sequenced, then each letter
    /// parked behind it in order, until one fails again. Every letter applied is removed.
    ///
    /// Refused (`CONCURRENCY_CONFLICT`) while a letter it would apply lies past the
    /// checkpoint: the reader has not got past it yet (a rebuild under way, or a restart
    /// after the letter was stored and before its checkpoint was), and would apply that
    /// event (or the stream's earlier ones) again after the retry.
    pub(crate) async fn retry(
        &self,
        events: &dyn EventStore,
        position: u64,
        target: &dyn Target,
    ) -> FlextResult<DeadLetterRetry> {
        let mut report = DeadLetterRetry::default();
        self.retry_into(events, position, target, &mut report)
            .await?;
        Ok(report)
    }

    async fn retry_into(
        &self,
        events: &dyn EventStore,
        position: u64,
        target: &dyn Target,
        report: &mut DeadLetterRetry,
    ) -> FlextResult<()> {
        self.load().await?;
        let checkpoint = self
            .checkpoints
            .load_checkpoint(&self.name)
            .await?
            .unwrap_or(0);
        let sequenced = self.config.dead_letter_policy == DeadLetterPolicy::Sequenced;
        let stream = {
            let mut index = lock(&self.index);
            let (stream, letters) = index.find(position).ok_or_else(|| self.missing(position))?;
            let head = letters.keys().next().copied().unwrap_or(position);
            if sequenced && head < position {
                return Err(FlextError::invalid_argument(format!(
                    "The dead letter at position {position} of '{}' is parked behind position {head} of stream '{stream}': retry {head}, which applies the stream's letters in order",
                    self.name
                )));
            }
            let last = if sequenced {
                letters.keys().next_back().copied().unwrap_or(position)
            } else {
                position
            };
            if let Some(beyond) = letters
                .range(position..=last)
                .map(|(p, _)| *p)
                .find(|p| *p > checkpoint)
            {
                return Err(self.not_reached(stream, beyond, checkpoint));
            }
            let stream = stream.clone();
            self.claim(&mut index, &stream)?;
            stream
        };
        let mut busy = Busy::new(self, &stream);
        let mut next = Some(position);
        while let Some(current) = next {
            let Some(letter) = lock(&self.index)
                .streams
                .get(&stream)
                .and_then(|letters| letters.get(&current))
                .cloned()
            else {
                break;
            };
            let event = read_event(events, &letter).await?;
            match catch_panic(target.apply(&event)).await {
                Ok(()) => {
                    Tally::add(&self.tally.applied);
                    let removed = self
                        .checkpoints
                        .remove_dead_letter(&self.name, current)
                        .await?;
                    if !removed {
                        self.stale(current);
                    }
                    report.applied.push(current);
                    let mut index = lock(&self.index);
                    index.remove(&stream, current);
                    next = if sequenced {
                        index
                            .streams
                            .get(&stream)
                            .and_then(|letters| letters.keys().next().copied())
                    } else {
                        None
                    };
                    if next.is_none() {
                        busy.release(&mut index);
                    }
                }
                Err(error) => {
                    Tally::add(&self.tally.failures);
                    let (class, error) = self.classified(error);
                    if class == ErrorClass::Stop {
                        tracing::error!(consumer = %self.name, position = current, %error, "retry stopped: the error is not the event's");
                        return Err(stopping(error));
                    }
                    tracing::warn!(consumer = %self.name, position = current, %error, "dead letter failed again");
                    self.record(DeadLetter {
                        attempts: letter.attempts.saturating_add(1),
                        error,
                        parked_behind: None,
                        ..letter
                    })
                    .await?;
                    report.failed.push(current);
                    if sequenced {
                        self.repoint(&stream, current).await?;
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// Retries every sequence (sequenced) or every letter (skip), in position order. A
    /// retry that cannot run or breaks off is reported in
    /// [`errors`](DeadLetterRetry::errors) and the others go on.
    pub(crate) async fn retry_all(
        &self,
        events: &dyn EventStore,
        target: &dyn Target,
    ) -> FlextResult<DeadLetterRetry> {
        self.load().await?;
        let mut starts: Vec<u64> = {
            let index = lock(&self.index);
            match self.config.dead_letter_policy {
                DeadLetterPolicy::Sequenced => index
                    .streams
                    .values()
                    .filter_map(|letters| letters.keys().next().copied())
                    .collect(),
                _ => index
                    .streams
                    .values()
                    .flat_map(|letters| letters.keys().copied())
                    .collect(),
            }
        };
        starts.sort_unstable();
        let mut report = DeadLetterRetry::default();
        for position in starts {
            if let Err(error) = self.retry_into(events, position, target, &mut report).await {
                tracing::warn!(consumer = %self.name, position, %error, "retry of a dead letter did not run to its end");
                report.errors.push((position, error));
            }
        }
        Ok(report)
    }

    /// Removes the dead letter at `position` without applying it: whether there was one.
    /// Sequenced, when it was its stream's head, the next letter becomes the head, untried
    /// and waiting for a retry; when it was the last, the stream applies events again.
    pub(crate) async fn discard(&self, position: u64) -> FlextResult<bool> {
        self.load().await?;
        let stream = {
            let mut index = lock(&self.index);
            let Some((stream, _)) = index.find(position) else {
                return Ok(false);
            };
            let stream = stream.clone();
            self.claim(&mut index, &stream)?;
            stream
        };
        let mut busy = Busy::new(self, &stream);
        let removed = self
            .checkpoints
            .remove_dead_letter(&self.name, position)
            .await?;
        if !removed {
            self.stale(position);
        }
        let new_head = {
            let mut index = lock(&self.index);
            index.remove(&stream, position);
            let head = index
                .streams
                .get(&stream)
                .and_then(|letters| letters.keys().next().copied());
            if head.is_none() {
                busy.release(&mut index);
            }
            head
        };
        if let Some(head) = new_head
            && self.config.dead_letter_policy == DeadLetterPolicy::Sequenced
        {
            self.release_head(&stream, head, position).await?;
            self.repoint(&stream, head).await?;
        }
        tracing::info!(consumer = %self.name, position, "dead letter discarded");
        Ok(removed)
    }

    /// Removes every dead letter without applying any: how many there were.
    pub(crate) async fn clear(&self) -> FlextResult<usize> {
        self.load().await?;
        let positions: Vec<(String, u64)> = lock(&self.index)
            .streams
            .iter()
            .flat_map(|(stream, letters)| letters.keys().map(|p| (stream.clone(), *p)))
            .collect();
        for (stream, position) in &positions {
            self.checkpoints
                .remove_dead_letter(&self.name, *position)
                .await?;
            lock(&self.index).remove(stream, *position);
        }
        Ok(positions.len())
    }

    /// Marks the head at `head` as no longer parked: the letter it waited on at `gone` was
    /// discarded.
    async fn release_head(&self, stream: &str, head: u64, gone: u64) -> FlextResult<()> {
        let letter = lock(&self.index)
            .streams
            .get(stream)
            .and_then(|letters| letters.get(&head))
            .cloned();
        if let Some(letter) = letter.filter(|l| l.parked_behind.is_some()) {
            self.record(DeadLetter {
                error: FlextError::operation(format!(
                    "Released for retry: the dead letter at position {gone} it was parked behind was discarded"
                )),
                parked_behind: None,
                ..letter
            })
            .await?;
        }
        Ok(())
    }

    /// Points every later letter of `stream` at its head `head`.
    async fn repoint(&self, stream: &str, head: u64) -> FlextResult<()> {
        let stale: Vec<DeadLetter> = lock(&self.index)
            .streams
            .get(stream)
            .map(|letters| {
                letters
                    .range(head + 1..)
                    .map(|(_, letter)| letter)
                    .filter(|letter| letter.parked_behind != Some(head))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for letter in stale {
            let error = if letter.attempts == 0 {
                parked_error(head, stream)
            } else {
                letter.error.clone()
            };
            self.record(DeadLetter {
                error,
                parked_behind: Some(head),
                ..letter
            })
            .await?;
        }
        Ok(())
    }

    /// Marks `stream` busy, or refuses when a retry or discard already works on it.
    fn claim(&self, index: &mut Index, stream: &str) -> FlextResult<()> {
        if !index.busy.insert(stream.to_owned()) {
            return Err(FlextError::new(
                ErrorCode::ConcurrencyConflict,
                format!(
                    "A retry or discard of the dead letters of stream '{stream}' of '{}' is already running",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// The refusal of a retry that would apply the letter at `position`, past `checkpoint`.
    fn not_reached(&self, stream: &str, position: u64, checkpoint: u64) -> FlextError {
        FlextError::new(
            ErrorCode::ConcurrencyConflict,
            format!(
                "'{}' has finished position {checkpoint} (its checkpoint), not yet the dead letter at position {position} of stream '{stream}': a retry now could apply the stream's events out of order or twice; retry once it has got past position {position}",
                self.name
            ),
        )
        .with_data(serde_json::json!({ "checkpoint": checkpoint, "position": position }))
    }

    /// Logs that the store had no letter at `position` where the mirror had one: another
    /// instance of the same name changed the letters.
    fn stale(&self, position: u64) {
        tracing::warn!(consumer = %self.name, position, "the store had no dead letter at this position: another runner of the same name changed its dead letters; run one instance per name");
    }

    fn missing(&self, position: u64) -> FlextError {
        FlextError::not_found(format!(
            "No dead letter at position {position} for '{}'",
            self.name
        ))
    }
}

/// A stream marked busy by a retry or discard, unmarked when dropped unless released
/// already (under the lock, together with the check that nothing is left).
struct Busy<'a> {
    consumer: &'a Consumer,
    stream: &'a str,
    held: bool,
}

impl<'a> Busy<'a> {
    fn new(consumer: &'a Consumer, stream: &'a str) -> Self {
        Self {
            consumer,
            stream,
            held: true,
        }
    }

    fn release(&mut self, index: &mut Index) {
        if self.held {
            index.busy.remove(self.stream);
            self.held = false;
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.held {
            lock(&self.consumer.index).busy.remove(self.stream);
        }
    }
}

/// The error a parked letter carries.
pub(super) fn parked_error(head: u64, stream: &str) -> FlextError {
    FlextError::operation(format!(
        "Parked behind the dead letter at position {head} of stream '{stream}'"
    ))
    .with_data(serde_json::json!({ "parked_behind": head }))
}

/// The stored event a dead letter names.
async fn read_event(events: &dyn EventStore, letter: &DeadLetter) -> FlextResult<StoredEvent> {
    events
        .read_all(letter.position, 1)
        .await?
        .into_iter()
        .next()
        .filter(|event| event.position == letter.position && event.event_id == letter.event_id)
        .ok_or_else(|| {
            FlextError::not_found(format!(
                "The event of the dead letter at position {} ({}) is not in the log",
                letter.position, letter.event_id
            ))
        })
}
