//! The invariants of the soak, as a [`Checker`] fed what the store holds and what the
//! driver and the relay's subscriber saw. Pure logic: the run feeds it at each quiet
//! point, the tests feed it planted violations.
//!
//! The checker works in windows, from one quiet point to the next, and forgets a window
//! once it is judged, so its memory stays flat however long the run: what it keeps is one
//! row per account (the replayed balances and each stream's last version) and the window.

use std::collections::{HashMap, HashSet};

use flext_handlers::Types::AppendResult;
use flext_handlers::prelude::*;
use uuid::Uuid;

use super::domain::Balances;

/// A command the driver saw acknowledged, with where its events went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The stream of its events.
    pub stream: String,
    /// Where they went.
    pub append: AppendResult,
}

/// One event of the window: its stream, version and id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    stream: String,
    version: u64,
    event_id: Uuid,
    account: bool,
}

/// Checks the store's log, the acknowledged commands and the relay's deliveries.
///
/// - [`observe`](Checker::observe) reads the log's next events in position order: each
///   stream's versions go 1, 2, 3… (a repeat is a doubled event, a jump a lost one), no
///   event id comes twice in a window, and the account events are folded into a fresh
///   replay of the balances.
/// - [`settle`](Checker::settle) closes the window: every acknowledged command's events
///   are in it exactly where its append said, the window holds no account event no
///   acknowledged command wrote, and the relay's subscriber saw each of the window's
///   account events exactly once and nothing else.
#[derive(Debug, Default)]
pub struct Checker {
    position: u64,
    versions: HashMap<String, u64>,
    window: HashMap<u64, Seen>,
    ids: HashSet<Uuid>,
    replay: Balances,
    events: u64,
    violations: Vec<String>,
}

impl Checker {
    /// A checker of an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The position of the last event observed.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The events observed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The balances replayed from the events observed.
    pub fn replay(&self) -> &Balances {
        &self.replay
    }

    /// Every violation found so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Records a violation found outside the checker (a metric total, memory).
    pub fn violation(&mut self, message: impl Into<String>) {
        self.violations.push(message.into());
    }

    /// Reads the log's next `events`, which must follow the last one observed.
    pub fn observe(&mut self, events: &[StoredEvent]) {
        for event in events {
            self.events += 1;
            if event.position <= self.position {
                self.violations.push(format!(
                    "position {} of {} version {} comes after position {}",
                    event.position, event.stream_id, event.version, self.position
                ));
                continue;
            }
            self.position = event.position;
            if !self.ids.insert(event.event_id) {
                self.violations.push(format!(
                    "event id {} is stored twice (again at position {})",
                    event.event_id, event.position
                ));
            }
            let last = self.versions.get(&*event.stream_id).copied().unwrap_or(0);
            if event.version != last + 1 {
                let what = if event.version <= last {
                    "doubled"
                } else {
                    "after a gap"
                };
                self.violations.push(format!(
                    "{} version {} at position {} is {what}: the stream was at version {last}",
                    event.stream_id, event.version, event.position
                ));
            }
            self.versions
                .insert(event.stream_id.to_string(), last.max(event.version));
            if let Err(error) = self.replay.apply(event) {
                self.violations.push(format!("replay: {error}"));
            }
            self.window.insert(
                event.position,
                Seen {
                    stream: event.stream_id.to_string(),
                    version: event.version,
                    event_id: event.event_id,
                    account: event.stream_id.starts_with("Account-"),
                },
            );
        }
    }

    /// Closes the window: judges `acks` (the commands acknowledged since the last quiet
    /// point) and `delivered` (how many times the relay's subscriber got each event id
    /// since then) against the events observed since the last settle.
    ///
    /// The other streams (the saga runs, all finished at a quiet point) are forgotten, so
    /// the checker keeps one row per account only: a later event of one of them is
    /// reported, as it does not start at version 1.
    pub fn settle(&mut self, acks: &[Ack], delivered: &HashMap<Uuid, u32>) {
        let mut claimed: HashSet<u64> = HashSet::new();
        for ack in acks {
            let append = &ack.append;
            let count = append.last_version.saturating_sub(append.first_version) + 1;
            if append.last_position.saturating_sub(append.first_position) + 1 != count {
                self.violations.push(format!(
                    "the append to {} of versions {}..={} reports positions {}..={}",
                    ack.stream,
                    append.first_version,
                    append.last_version,
                    append.first_position,
                    append.last_position
                ));
                continue;
            }
            for offset in 0..count {
                let position = append.first_position + offset;
                let version = append.first_version + offset;
                match self.window.get(&position) {
                    Some(seen) if seen.stream == ack.stream && seen.version == version => {
                        claimed.insert(position);
                    }
                    Some(seen) => self.violations.push(format!(
                        "an acknowledged command's event {} version {version} should be at \
                         position {position}, which holds {} version {}",
                        ack.stream, seen.stream, seen.version
                    )),
                    None => self.violations.push(format!(
                        "an acknowledged command's event {} version {version} (position \
                         {position}) is not in the store's log",
                        ack.stream
                    )),
                }
            }
        }
        let mut positions: Vec<&u64> = self.window.keys().collect();
        positions.sort_unstable();
        for position in positions {
            let seen = &self.window[position];
            if !seen.account {
                continue;
            }
            if !claimed.contains(position) {
                self.violations.push(format!(
                    "{} version {} at position {position} was written by no acknowledged \
                     command",
                    seen.stream, seen.version
                ));
            }
            match delivered.get(&seen.event_id).copied().unwrap_or(0) {
                1 => {}
                0 => self.violations.push(format!(
                    "the relay's subscriber never got {} version {} (event {})",
                    seen.stream, seen.version, seen.event_id
                )),
                n => self.violations.push(format!(
                    "the relay's subscriber got {} version {} (event {}) {n} times",
                    seen.stream, seen.version, seen.event_id
                )),
            }
        }
        let window_ids: HashSet<Uuid> = self
            .window
            .values()
            .filter(|seen| seen.account)
            .map(|seen| seen.event_id)
            .collect();
        let mut strangers: Vec<&Uuid> = delivered
            .keys()
            .filter(|id| !window_ids.contains(id))
            .collect();
        strangers.sort_unstable();
        for id in strangers {
            self.violations.push(format!(
                "the relay's subscriber got event {id}, which is not among the account events \
                 stored since the last check (delivered again, or never stored)"
            ));
        }
        self.window.clear();
        self.ids.clear();
        self.versions
            .retain(|stream, _| stream.starts_with("Account-"));
    }
}
