//! The behaviours under concurrency: the order of racing batches, racing writers with a
//! tailing reader, live subscriptions, commits out of position order.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_protocols::EventStore;
use flext_types::{ExpectedVersion, NewEvent, StoredEvent};
use futures_util::StreamExt;
use uuid::Uuid;

use super::{PATIENCE, all_of, batch, caught_up, event, numbers, versions};
use crate::unique_name;

/// Positions strictly increase in read order and each batch's events are adjacent, also
/// when batches are appended concurrently.
pub async fn positions_increase_and_batches_do_not_interleave(store: Arc<dyn EventStore>) {
    let prefix = unique_name("interleave");
    let from = store.head_position().await.unwrap() + 1;
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let store = store.clone();
            let stream = format!("{prefix}-{w}");
            tokio::spawn(async move {
                let mut last = 0;
                for b in 0..5u64 {
                    let result = store
                        .append(&stream, ExpectedVersion::Any, batch(w * 100 + b * 10, 3))
                        .await
                        .expect("append");
                    assert!(
                        result.first_position >= from,
                        "a new append is placed past the head read before it: {result:?}, head {}",
                        from - 1
                    );
                    last = last.max(result.last_position);
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.expect("writer"));
    }
    caught_up(&*store, last).await;
    let mine: Vec<StoredEvent> = store
        .read_all(from, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_id.starts_with(&prefix))
        .collect();
    assert_eq!(mine.len(), 8 * 5 * 3);
    assert!(
        mine.windows(2).all(|w| w[0].position < w[1].position),
        "positions strictly increase"
    );
    for chunk in mine.chunks(3) {
        assert!(
            chunk.iter().all(|e| e.stream_id == chunk[0].stream_id),
            "a batch is not interleaved"
        );
        assert_eq!(
            chunk[2].position,
            chunk[0].position + 2,
            "a batch's positions are adjacent"
        );
        assert_eq!(
            chunk[0].version % 3,
            1,
            "batches start at versions 1, 4, 7, …"
        );
    }
}

/// Sixteen writers race on four streams with exact expected versions: one wins each
/// version, the losers retry, nothing is lost or duplicated, and a tailing reader sees every
/// event once, in order.
pub async fn concurrent_writers_on_shared_streams(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 16;
    const STREAMS: u64 = 4;
    const PER_WRITER: u64 = 10;
    let prefix = unique_name("race");
    let from = store.head_position().await.unwrap() + 1;
    let mut live = store.subscribe(from).await.expect("subscribe");
    let expected_total = (WRITERS * PER_WRITER) as usize;
    let reader_prefix = prefix.clone();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < expected_total {
            let event = live
                .next()
                .await
                .expect("the feed ends only with an error")
                .expect("an event");
            if event.stream_id.starts_with(&reader_prefix) {
                seen.push(event);
            }
        }
        seen
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let stream = format!("{prefix}-{}", w % STREAMS);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut highest = 0;
                for i in 0..PER_WRITER {
                    loop {
                        let version = store.stream_version(&stream).await.expect("version");
                        let event = event(w * 1000 + i);
                        let id = event.event_id;
                        match store
                            .append(&stream, ExpectedVersion::Exact(version), vec![event])
                            .await
                        {
                            Ok(result) => {
                                assert_eq!(
                                    result.last_version,
                                    version + 1,
                                    "the winner gets the next version"
                                );
                                ids.push(id);
                                highest = result.last_position.max(highest);
                                break;
                            }
                            Err(error) if error.code() == ErrorCode::ConcurrencyConflict => {
                                tokio::task::yield_now().await
                            }
                            Err(error) => panic!("append failed: {error:?}"),
                        }
                    }
                }
                (ids, highest)
            })
        })
        .collect();
    let mut written = HashSet::new();
    let mut last = 0;
    for writer in writers {
        let (ids, highest) = writer.await.expect("writer");
        last = last.max(highest);
        for id in ids {
            assert!(written.insert(id), "an id was reported twice");
        }
    }
    caught_up(&*store, last).await;
    for s in 0..STREAMS {
        let events = all_of(&*store, &format!("{prefix}-{s}")).await;
        assert_eq!(
            versions(&events),
            (1..=(WRITERS / STREAMS * PER_WRITER)).collect::<Vec<_>>(),
            "no gaps, no duplicates"
        );
    }
    let stored: HashSet<Uuid> = store
        .read_all(from, usize::MAX)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.stream_id.starts_with(&prefix))
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        stored, written,
        "exactly the acknowledged events are stored"
    );
    let seen = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the reader saw every event in time")
        .expect("reader");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "the reader saw events in order"
    );
    assert_eq!(
        seen.iter().map(|e| e.event_id).collect::<HashSet<_>>(),
        written,
        "the reader saw each event once"
    );
}

/// A subscription delivers the stored events from its start, then new ones as they commit,
/// each once, in order; one started later starts at its position.
pub async fn subscription_sees_every_event_once_in_order(store: Arc<dyn EventStore>) {
    let stream = unique_name("live");
    let first = store
        .append(&stream, ExpectedVersion::NoStream, batch(1, 3))
        .await
        .unwrap();
    let mut live = store
        .subscribe(first.first_position)
        .await
        .expect("subscribe");
    let writer = {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            for b in 0..10u64 {
                store
                    .append(&stream, ExpectedVersion::Any, batch(4 + b * 2, 2))
                    .await
                    .expect("append");
                tokio::task::yield_now().await;
            }
        })
    };
    let collect = async {
        let mut seen = Vec::new();
        while seen.len() < 23 {
            let event = live.next().await.expect("an open feed").expect("an event");
            if *event.stream_id == *stream {
                seen.push(event);
            }
        }
        seen
    };
    let seen = tokio::time::timeout(PATIENCE, collect)
        .await
        .expect("every event arrived in time");
    writer.await.expect("writer");
    assert_eq!(
        numbers(&seen),
        (1..=23).collect::<Vec<_>>(),
        "each event once, in order"
    );
    assert_eq!(versions(&seen), (1..=23).collect::<Vec<_>>());

    let middle = seen[10].position;
    let mut later = store.subscribe(middle).await.expect("subscribe");
    let next = tokio::time::timeout(PATIENCE, later.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("an event");
    assert_eq!(
        next.position, middle,
        "a subscription starts at its position"
    );
}

/// The way a store's test holds an append open: a call `hold(stream, events)` appends
/// `events` to the new stream `stream` in a transaction it leaves open (its events take
/// their positions now) and returns the commit, which the test awaits later.
pub type Held = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An append that takes its positions first and commits last (held open by `hold`, see
/// [`Held`]) while eight later appends commit: a subscription tailing from before it all
/// sees every event exactly once, in position order, the held ones first; while the held
/// append is open, `read_all` returns none of the later events (a reader that had read
/// past the held positions would never go back for them); afterwards it returns what the
/// subscription delivered. For stores whose appends run side by side (a store that
/// serializes its writers would make the later appends wait for the held one).
pub async fn out_of_order_commits_are_not_skipped<H, F>(store: Arc<dyn EventStore>, hold: H)
where
    H: FnOnce(String, Vec<NewEvent>) -> F,
    F: Future<Output = Held>,
{
    const LATER: u64 = 8;
    let prefix = unique_name("out-of-order");
    let from = store.head_position().await.unwrap() + 1;
    let mut live = store.subscribe(from).await.expect("subscribe");
    let reader_prefix = prefix.clone();
    let expected = (LATER + 2) as usize;
    let reader = tokio::spawn(async move {
        let mut seen: Vec<StoredEvent> = Vec::new();
        while seen.len() < expected {
            let event = live
                .next()
                .await
                .expect("the feed ends only with an error")
                .expect("an event");
            if event.stream_id.starts_with(&reader_prefix) {
                seen.push(event);
            }
        }
        seen
    });

    let slow = format!("{prefix}-slow");
    let commit = hold(slow.clone(), batch(0, 2)).await;
    let mut later = Vec::new();
    for n in 1..=LATER {
        let stream = format!("{prefix}-{n}");
        let append = store.append(&stream, ExpectedVersion::NoStream, batch(n * 10, 1));
        let result = tokio::time::timeout(PATIENCE, append)
            .await
            .expect("a later append does not wait for the held one")
            .expect("a later append commits while the held one is open");
        later.push(result.last_position);
    }
    // While the held append is open, a reader sees none of the later events: each would
    // come before the held ones are visible, and a reader that had read past them would
    // never go back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early: Vec<StoredEvent> = store
        .read_all(from, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_id.starts_with(&prefix))
        .collect();
    assert!(
        early.is_empty(),
        "read_all returned later events while an earlier position was uncommitted: {early:?}"
    );
    assert!(!reader.is_finished(), "the reader is still waiting");
    commit.await;

    let last = later.iter().copied().max().unwrap_or(0);
    caught_up(&*store, last).await;
    let seen = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the reader saw every event in time")
        .expect("reader");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "the reader saw events in position order: {:?}",
        seen.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert_eq!(
        seen.iter().filter(|e| *e.stream_id == *slow).count(),
        2,
        "the reader saw the held events once"
    );
    assert!(
        seen[0].stream_id.as_ref() == slow.as_str() && seen[1].stream_id.as_ref() == slow.as_str(),
        "the held events, placed first, came first"
    );
    let all: Vec<StoredEvent> = store
        .read_all(from, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_id.starts_with(&prefix))
        .collect();
    assert_eq!(
        all.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        seen.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        "read_all and the subscription agree"
    );
}

/// Eight writers append to one stream at once with `ExpectedVersion::Any`, ten times each:
/// every append lands (an expectation the new version still meets is never a conflict,
/// however the writers race), at the version its result says, and the stream holds
/// versions 1 to 80 once each, in the order of their positions.
pub async fn racing_appends_with_any_all_land(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 10;
    let stream = unique_name("any-race");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut placed = Vec::new();
                for i in 0..PER_WRITER {
                    let result = store
                        .append(&stream, ExpectedVersion::Any, vec![event(w * 100 + i)])
                        .await
                        .expect("an append with Any never conflicts");
                    placed.push((result.first_version, result.first_position));
                }
                placed
            })
        })
        .collect();
    let mut placed = Vec::new();
    for writer in writers {
        placed.extend(writer.await.expect("writer"));
    }
    placed.sort_unstable();
    assert_eq!(
        placed
            .iter()
            .map(|(version, _)| *version)
            .collect::<Vec<_>>(),
        (1..=WRITERS * PER_WRITER).collect::<Vec<_>>(),
        "each version once"
    );
    assert!(
        placed.windows(2).all(|w| w[0].1 < w[1].1),
        "versions and positions in the same order"
    );
    let stored = all_of(&*store, &stream).await;
    assert_eq!(
        stored
            .iter()
            .map(|e| (e.version, e.position))
            .collect::<Vec<_>>(),
        placed,
        "the stream holds what the appends reported"
    );
}
