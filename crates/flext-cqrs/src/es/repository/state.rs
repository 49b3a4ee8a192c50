//! The state a repository starts from: its cache, snapshots and the events after them.

use super::*;

impl<A: Aggregate> Repository<A> {
    /// Where a load starts: the cached state, else the latest usable snapshot, else the
    /// default state at version 0.
    pub(super) async fn base(&self, id: &str, stream: &str) -> FlextResult<Loaded<A>> {
        match self.cached(id) {
            Some(cached) => Ok(cached),
            None => self.latest_snapshot_state(stream).await,
        }
    }

    pub(super) fn cached(&self, id: &str) -> Option<Loaded<A>> {
        self.cache.get(id).map(|entry| entry.clone())
    }

    pub(super) fn remember(&self, id: &str, loaded: &Loaded<A>) {
        if self.config.cache_capacity == 0 {
            return;
        }
        if self.cache.len() >= self.config.cache_capacity && !self.cache.contains_key(id) {
            // Bounded: make room by forgetting some other aggregate.
            let victim = self.cache.iter().next().map(|entry| entry.key().clone());
            if let Some(victim) = victim {
                self.cache.remove(&victim);
            }
        }
        let mut slot = self
            .cache
            .entry(id.to_owned())
            .or_insert_with(|| loaded.clone());
        if loaded.version >= slot.version {
            *slot = loaded.clone();
        }
    }

    /// The state from the latest usable snapshot, or the default state at version 0.
    pub(super) async fn latest_snapshot_state(&self, stream: &str) -> FlextResult<Loaded<A>> {
        let empty = Loaded::new();
        let Some(store) = &self.snapshots else {
            return Ok(empty);
        };
        let Some(snapshot) = store.load_snapshot(stream).await? else {
            return Ok(empty);
        };
        if snapshot.schema_version != A::SNAPSHOT_VERSION {
            tracing::info!(
                stream,
                found = snapshot.schema_version,
                current = A::SNAPSHOT_VERSION,
                "snapshot of another schema version ignored"
            );
            return Ok(empty);
        }
        match snapshot.payload.decode::<A>() {
            Ok(state) => Ok(Loaded {
                state: Arc::new(state),
                version: snapshot.version,
            }),
            Err(error) => {
                // The events are the truth: a snapshot that does not decode only costs a replay.
                tracing::warn!(stream, %error, "snapshot does not decode; replaying the stream");
                Ok(empty)
            }
        }
    }

    /// The events of `stream` after `version`.
    pub(super) async fn read_after(
        &self,
        stream: &str,
        version: u64,
    ) -> FlextResult<Vec<StoredEvent>> {
        self.events
            .read_stream(stream, version + 1, usize::MAX)
            .await
    }

    /// `base` with the events of `stream` after its version applied, visited in the store
    /// (lent, not copied, where the store can) and decoded at most once each.
    pub(super) async fn load_after(&self, base: Loaded<A>, stream: &str) -> FlextResult<Loaded<A>> {
        let mut state: Option<A> = None;
        let mut version = base.version;
        self.events
            .visit_stream(stream, base.version + 1, &mut |stored| {
                let state = state.get_or_insert_with(|| (*base.state).clone());
                self.apply_one(state, stored)?;
                version = stored.version;
                Ok(())
            })
            .await?;
        Ok(match state {
            Some(state) => Loaded {
                state: Arc::new(state),
                version,
            },
            None => base,
        })
    }

    /// `base` with `stored` (the events right after its version) applied.
    pub(super) fn apply_stored(
        &self,
        base: &Loaded<A>,
        stored: &[StoredEvent],
    ) -> FlextResult<Loaded<A>> {
        let Some(last) = stored.last() else {
            return Ok(base.clone());
        };
        let version = last.version;
        let mut state = (*base.state).clone();
        for stored in stored {
            self.apply_one(&mut state, stored)?;
        }
        Ok(Loaded {
            state: Arc::new(state),
            version,
        })
    }

    /// Applies `stored` to `state`, decoded at most once (lent when its payload keeps the
    /// event), inside a panic guard.
    fn apply_one(&self, state: &mut A, stored: &StoredEvent) -> FlextResult<()> {
        let event = self.upcasters.decoded::<A::Event>(stored)?;
        catch_panic_sync(|| {
            state.apply(&event);
            Ok(())
        })
    }

    pub(super) fn decode(&self, stored: &StoredEvent) -> FlextResult<A::Event> {
        self.upcasters.decode(stored)
    }

    /// Whether a stream going from version `before` to `after` crosses a multiple of the
    /// snapshot interval (and snapshots are configured).
    pub(super) fn snapshot_due(&self, before: u64, after: u64) -> bool {
        match (&self.snapshots, self.config.snapshot_every) {
            (Some(_), Some(every)) => after / every != before / every,
            _ => false,
        }
    }

    pub(super) async fn maybe_snapshot(&self, stream: &str, before: u64, after: &Loaded<A>) {
        let (Some(store), true) = (&self.snapshots, self.snapshot_due(before, after.version))
        else {
            return;
        };
        let snapshot = JsonPayload::encode(&*after.state).map(|payload| Snapshot {
            stream_id: stream.to_owned(),
            version: after.version,
            schema_version: A::SNAPSHOT_VERSION,
            payload,
            timestamp: OffsetDateTime::now_utc(),
        });
        let saved = match snapshot {
            Ok(snapshot) => store.save_snapshot(snapshot).await,
            Err(error) => Err(error),
        };
        if let Err(error) = saved {
            // The events are committed; a missing snapshot only makes later loads longer.
            tracing::warn!(stream, version = after.version, %error, "snapshot not saved");
        }
    }

    /// After an append with derived ids took the stream from `loaded` to version `upto`:
    /// when a snapshot is due, reads what is stored up to `upto`, and snapshots and caches
    /// that (what this execution decided may not be what the store kept).
    pub(super) async fn snapshot_stored(
        &self,
        id: &str,
        stream: &str,
        loaded: &Loaded<A>,
        upto: u64,
    ) {
        if !self.snapshot_due(loaded.version, upto) {
            return;
        }
        let count = usize::try_from(upto - loaded.version).unwrap_or(usize::MAX);
        let stored = match self
            .events
            .read_stream(stream, loaded.version + 1, count)
            .await
        {
            Ok(events) => self.apply_stored(loaded, &events),
            Err(error) => Err(error),
        };
        match stored {
            Ok(stored) => {
                self.remember(id, &stored);
                self.maybe_snapshot(stream, loaded.version, &stored).await;
            }
            Err(error) => {
                tracing::warn!(stream, version = upto, %error, "snapshot not saved");
            }
        }
    }
}
