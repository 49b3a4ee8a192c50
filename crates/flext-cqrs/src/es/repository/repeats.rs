//! Recognising a repeated message: the ids it derives, and the searches for its batch.

use super::*;

/// How far the clock of the process that created a message may be ahead of the clocks that
/// stamp stored events, for the early stop of the searches for a repeated message's batch.
const CLOCK_TOLERANCE: time::Duration = time::Duration::seconds(5);

impl<A: Aggregate> Repository<A> {
    /// The original result of the message whose `batch` is among the events of `stream`
    /// after version `floor`, up to `upto` (inclusive), if it is there: looks through them
    /// newest first in growing chunks, stops at the first chunk committed before the message
    /// was created, and replays the state after the batch from the latest snapshot before
    /// it.
    pub(super) async fn find_original(
        &self,
        stream: &str,
        upto: u64,
        floor: u64,
        batch: &BatchIds<'_>,
        retries: u32,
    ) -> FlextResult<Option<Executed<A>>> {
        let since = batch.message.timestamp.checked_sub(CLOCK_TOLERANCE);
        // The chunks read, newest first; together, the events from `high + 1` to `upto`.
        let mut read: Vec<Vec<StoredEvent>> = Vec::new();
        let (mut high, mut chunk) = (upto, 8_u64);
        while high > floor {
            let low = high.saturating_sub(chunk - 1).max(floor + 1);
            let count = usize::try_from(high - low + 1).unwrap_or(usize::MAX);
            let events = self.events.read_stream(stream, low, count).await?;
            let found = batch.locate(&events).is_some();
            let before_the_message = match (events.first(), since) {
                (Some(oldest), Some(since)) => oldest.timestamp < since,
                (None, _) => true,
                (Some(_), None) => false,
            };
            read.push(events);
            if found {
                let newer = read.into_iter().rev().flatten().collect();
                return self
                    .replay_original(stream, low, newer, batch, retries)
                    .await
                    .map(Some);
            }
            if before_the_message {
                break;
            }
            high = low - 1;
            chunk = chunk.saturating_mul(4);
        }
        Ok(None)
    }

    /// The original result of `batch`, which is among `newer` (the events of `stream` from
    /// version `from` on), replayed from the latest snapshot before it, or from the stream's
    /// start.
    pub(super) async fn replay_original(
        &self,
        stream: &str,
        from: u64,
        mut newer: Vec<StoredEvent>,
        batch: &BatchIds<'_>,
        retries: u32,
    ) -> FlextResult<Executed<A>> {
        let missing = || FlextError::storage(format!("Stream {stream} changed while it was read"));
        let start = batch.locate(&newer).ok_or_else(missing)?.start;
        let snapshot = self.latest_snapshot_state(stream).await?;
        let base = if snapshot.version < newer[start].version {
            snapshot
        } else {
            Loaded::new()
        };
        let mut stored = if base.version + 1 < from {
            let count = usize::try_from(from - base.version - 1).unwrap_or(usize::MAX);
            self.events
                .read_stream(stream, base.version + 1, count)
                .await?
        } else {
            Vec::new()
        };
        let skip = usize::try_from((base.version + 1).saturating_sub(from)).unwrap_or(usize::MAX);
        stored.extend(newer.drain(skip.min(newer.len())..));
        if stored
            .first()
            .is_some_and(|first| first.version != base.version + 1)
        {
            return Err(missing());
        }
        let found = batch.locate(&stored).ok_or_else(missing)?;
        self.original(&base, &stored, found, retries)
    }

    /// What executing the batch at `found` in `stored` (the events after `base`) returned.
    pub(super) fn original(
        &self,
        base: &Loaded<A>,
        stored: &[StoredEvent],
        found: Range<usize>,
        retries: u32,
    ) -> FlextResult<Executed<A>> {
        let after = self.apply_stored(base, &stored[..found.end])?;
        let batch = &stored[found];
        let events = batch
            .iter()
            .map(|event| self.decode(event))
            .collect::<FlextResult<Vec<_>>>()?;
        let (first, last) = (&batch[0], &batch[batch.len() - 1]);
        tracing::debug!(
            stream = %first.stream_id,
            version = first.version,
            "message already executed; returning its original result"
        );
        Ok(Executed {
            state: after.state,
            version: after.version,
            events,
            append: Some(AppendResult {
                first_version: first.version,
                last_version: last.version,
                first_position: first.position,
                last_position: last.position,
            }),
            retries,
        })
    }
}

/// A message a command is executed for: its metadata, and the key of the handler executing
/// it (of the subscriber's name for an event subscriber, nil otherwise).
#[derive(Clone, Copy)]
pub(super) struct Message<'a> {
    pub(super) metadata: &'a MessageMetadata,
    handler: SubscriberKey,
}

impl<'a> Message<'a> {
    pub(super) fn new(metadata: &'a MessageMetadata, handler: SubscriberKey) -> Self {
        Self { metadata, handler }
    }
}

/// The ids of the batch of events a message causes on a stream: UUID v5s, in the message
/// id's namespace, of the stream, the handler's key (of the subscriber's name, nil but for
/// an event subscriber) and each event's index. Every execution of the same message on the
/// same stream by the same handler derives the same ids, so the store, and
/// [`BatchIds::locate`], recognise the batch: the stream is part of the name so one message
/// may change several aggregates, the subscriber's key so several subscribers of one event
/// may change the same one.
pub(super) struct BatchIds<'a> {
    message: &'a MessageMetadata,
    /// The name of the ids but for the index: the stream, then the handler's 16-byte key
    /// (the key and the index have fixed lengths, so the stream is what comes before them).
    name: Vec<u8>,
}

impl<'a> BatchIds<'a> {
    /// The batch `message` causes on `stream`.
    pub(super) fn new(message: Message<'a>, stream: &str) -> Self {
        let mut name = Vec::with_capacity(stream.len() + 16 + 8);
        name.extend_from_slice(stream.as_bytes());
        name.extend_from_slice(message.handler.as_bytes());
        Self {
            message: message.metadata,
            name,
        }
    }

    /// The id of the batch's event at `index`.
    pub(super) fn id(&self, index: usize) -> Uuid {
        let mut name = Vec::with_capacity(self.name.len() + 8);
        name.extend_from_slice(&self.name);
        name.extend_from_slice(&(index as u64).to_be_bytes());
        Uuid::new_v5(&self.message.message_id, &name)
    }

    /// Where the batch is among `stored` (consecutive events of its stream), if its first
    /// event is there: the range of its events.
    pub(super) fn locate(&self, stored: &[StoredEvent]) -> Option<Range<usize>> {
        let first = self.id(0);
        let start = stored.iter().position(|event| event.event_id == first)?;
        let len = stored[start..]
            .iter()
            .enumerate()
            .take_while(|(index, event)| event.event_id == self.id(*index))
            .count();
        Some(start..start + len)
    }
}
