//! The store's writer thread: one rusqlite connection that makes every append of the
//! store, committing the appends waiting together in one transaction (group commit).
//!
//! An append is sent to the thread over a channel with a oneshot for its answer. The
//! thread takes the first waiting append and every one already queued behind it (up to
//! [`GROUP_APPENDS`] appends or [`GROUP_EVENTS`] events), and writes them in one
//! `BEGIN IMMEDIATE` transaction: the head position is read once under the write lock,
//! and each append runs in a savepoint of its own, with its own expected-version check, so
//! a conflict or a failed insert rolls back that append alone and answers it. Then
//! `COMMIT`, and only then are the appends answered: an acknowledged append is committed.
//! A failed `COMMIT` answers every append of the group with its `STORAGE_ERROR`, and none
//! is stored.

use std::sync::mpsc;
use std::time::Duration;

use flext_store::{HeadSignal, find_retry, metadata_text, retry_or_conflict, timestamp_text};
use flext_types::{
    AppendResult, EventMetadata, ExpectedVersion, FlextError, FlextResult, NewEvent,
};
use rusqlite::{Connection, ErrorCode, params};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::lite::{Database, InTransaction, at_once};
use crate::schema::storage;
use crate::tables::STATEMENTS;

/// The most appends one transaction commits together.
pub(crate) const GROUP_APPENDS: usize = 512;
/// A group takes no more appends once it holds this many events (its first append is
/// taken whatever its size).
pub(crate) const GROUP_EVENTS: usize = 4096;
/// How many times the thread looks for more work before it parks on the channel: an
/// append that follows its predecessor's answer at once (a writer appending in a loop)
/// finds the thread awake.
const SPINS: u32 = 200;

/// The insert of one event row, its columns in `EVENT_COLUMNS` order.
const INSERT: &str = "INSERT INTO flext_events (event_id, stream_id, version, position, \
                      event_type, schema_version, payload, metadata, recorded_at) \
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The head position, read once per transaction under the write lock.
const HEAD: &str = "SELECT COALESCE(MAX(position), 0) FROM flext_events";

/// An append waiting for the writer thread, with where to answer.
struct Append {
    stream_id: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<FlextResult<AppendResult>>,
}

/// What the writer thread is sent.
enum Job {
    Append(Append),
    /// Ends the thread by a panic: for the tests of a writer that died.
    #[cfg(test)]
    Panic,
}

/// The handle of a store's writer thread. The thread ends when the handle is dropped (the
/// last clone of the store), once it has answered the appends already sent.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    path: String,
}

impl Writer {
    /// Starts the writer thread on a connection of its own to `database` (`path` names it
    /// in errors). Commits advance `head`, waking the store's live subscriptions.
    pub(crate) async fn start(
        database: Database,
        busy_timeout: Duration,
        head: HeadSignal,
        path: String,
    ) -> FlextResult<Self> {
        let (jobs, queue) = mpsc::channel();
        let (ready, opened) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("flext-sqlite-writer".into())
            .spawn(move || match database.connect(busy_timeout) {
                Ok(connection) => {
                    if ready.send(Ok(())).is_ok() {
                        Thread {
                            connection,
                            head,
                            path: thread_path,
                            empty_metadata: metadata_text(&EventMetadata::default()).ok(),
                        }
                        .run(&queue);
                    }
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(|e| storage(&path, "cannot start the writer thread", e))?;
        match opened.await {
            Ok(Ok(())) => Ok(Self { jobs, path }),
            Ok(Err(error)) => Err(storage(&path, "the writer cannot open the database", error)),
            Err(_) => Err(gone(&path)),
        }
    }

    /// Appends `events` (a batch `check_batch` passed) to `stream_id` on the writer thread
    /// and waits for its answer, which comes once the append is committed.
    pub(crate) async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        let (reply, answer) = oneshot::channel();
        let append = Append {
            stream_id: stream_id.to_owned(),
            expected,
            events,
            reply,
        };
        self.jobs
            .send(Job::Append(append))
            .map_err(|_| gone(&self.path))?;
        answer.await.map_err(|_| gone(&self.path))?
    }

    /// Makes the writer thread panic, as a bug or a failed allocation would.
    #[cfg(test)]
    pub(crate) fn panic(&self) {
        let _ = self.jobs.send(Job::Panic);
    }
}

/// The `STORAGE_ERROR` of a writer thread that is gone (it panicked or died), so an append
/// cannot be written or was not answered.
fn gone(path: &str) -> FlextError {
    FlextError::storage(format!(
        "SQLite store {path}: the writer thread is gone; the append was not acknowledged"
    ))
}

/// The writer thread's state.
struct Thread {
    connection: Connection,
    head: HeadSignal,
    path: String,
    /// The text of empty metadata (most events' metadata), encoded once.
    empty_metadata: Option<String>,
}

impl Thread {
    /// Commits groups of appends until the channel closes (the store is dropped).
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(GROUP_APPENDS);
        while let Some(first) = next(queue) {
            gather(&mut group, first, queue);
            let answers = self.commit(&group);
            for (append, answer) in group.drain(..).zip(answers) {
                // An appender that stopped waiting (its future dropped) needs no answer.
                let _ = append.reply.send(answer);
            }
        }
    }

    /// Writes `group` in one transaction: the answer of each append, in order.
    fn commit(&mut self, group: &[Append]) -> Vec<FlextResult<AppendResult>> {
        let everyone = |error: &FlextError| group.iter().map(|_| Err(error.clone())).collect();
        let recorded_at = match timestamp_text(OffsetDateTime::now_utc()) {
            Ok(text) => text,
            Err(error) => return everyone(&error),
        };
        // A transaction an earlier failure left open (its ROLLBACK failed) would make
        // every later BEGIN fail: end it first.
        self.roll_back();
        if let Err(error) = self.exec("BEGIN IMMEDIATE", "cannot begin an append") {
            return everyone(&error);
        }
        let head = self
            .connection
            .prepare_cached(HEAD)
            .and_then(|mut statement| statement.query_row([], |row| row.get::<_, i64>(0)));
        let mut head = match head {
            Ok(head) => u64::try_from(head).unwrap_or(0),
            Err(error) => {
                let error = self.fail("cannot read the head position", error);
                self.roll_back();
                return everyone(&error);
            }
        };
        let mut answers = Vec::with_capacity(group.len());
        for append in group {
            // A failure SQLite answers by rolling back the whole transaction (a full disk,
            // an I/O error) leaves nothing to write the rest of the group in.
            if self.connection.is_autocommit() {
                answers.push(Err(FlextError::storage(format!(
                    "SQLite store {}: the append's transaction was rolled back by an \
                     earlier failure",
                    self.path
                ))));
                continue;
            }
            answers.push(self.append(append, group.len() == 1, &mut head, &recorded_at));
        }
        if self.connection.is_autocommit() {
            // A lone append that failed rolled its transaction back: its answer stands.
            if let [_] = group {
                return answers;
            }
            let error = FlextError::storage(format!(
                "SQLite store {}: the transaction of a group of appends was rolled back",
                self.path
            ));
            return everyone(&error);
        }
        if let Err(error) = self.exec("COMMIT", "cannot commit an append") {
            self.roll_back();
            return everyone(&error);
        }
        self.head.advance(head);
        answers
    }

    /// One append of a group; `head` is the store's head position in the transaction so
    /// far, which the append moves on. An append of several events among others has a
    /// savepoint of its own; one `alone` in its group has the transaction to itself, and a
    /// single event is one insert statement, which SQLite undoes by itself when it fails.
    fn append(
        &mut self,
        append: &Append,
        alone: bool,
        head: &mut u64,
        recorded_at: &str,
    ) -> FlextResult<AppendResult> {
        let Append {
            stream_id,
            expected,
            events,
            ..
        } = append;
        let savepoint = !alone && events.len() > 1;
        if savepoint {
            self.exec("SAVEPOINT append", "cannot begin an append")?;
        }
        let current = self
            .connection
            .prepare_cached(STATEMENTS.stream_version)
            .and_then(|mut statement| statement.query_row([stream_id], |row| row.get::<_, i64>(0)));
        let current = match current {
            Ok(current) => u64::try_from(current).unwrap_or(0),
            Err(error) => {
                let error = self.fail("cannot read the stream version", error);
                self.undo(alone, savepoint);
                return Err(error);
            }
        };
        if !expected.accepts(current) {
            self.undo(alone, savepoint);
            // A retry of an append that committed finds the stream moved on: answer with
            // the original result when the ids say it is one.
            let mut connection = self.in_transaction();
            return at_once(retry_or_conflict(
                &mut connection,
                &STATEMENTS,
                stream_id,
                *expected,
                events,
                current,
            ));
        }
        if let Err(error) = self.insert(stream_id, events, current, *head, recorded_at) {
            let unique = matches!(&error, rusqlite::Error::SqliteFailure(e, _)
                if e.code == ErrorCode::ConstraintViolation
                    && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE);
            let error = self.fail("cannot insert events", error);
            self.undo(alone, savepoint);
            // A stored id may mean a retry of a committed append; with this append rolled
            // back, the stored ids decide (as `flext_store::after_failed_insert` does).
            if unique {
                let mut connection = self.in_transaction();
                let retry = find_retry(&mut connection, &STATEMENTS, stream_id, *expected, events);
                if let Some(original) = at_once(retry)? {
                    return Ok(original);
                }
            }
            return Err(error);
        }
        if savepoint && let Err(error) = self.exec("RELEASE append", "cannot finish an append") {
            // The append's rows may still be in the transaction: end it, so that nothing
            // this append wrote commits (its group is answered with the failure too).
            self.roll_back();
            return Err(error);
        }
        let count = events.len() as u64;
        let result = AppendResult::following(current, *head, count);
        *head += count;
        Ok(result)
    }

    /// Inserts `events` after version `current` of `stream_id` and position `head`.
    fn insert(
        &self,
        stream_id: &str,
        events: &[NewEvent],
        current: u64,
        head: u64,
        recorded_at: &str,
    ) -> rusqlite::Result<()> {
        let mut insert = self.connection.prepare_cached(INSERT)?;
        let mut id = [0u8; 36];
        let mut encoded;
        for (i, event) in (1..).zip(events) {
            let metadata = match &self.empty_metadata {
                Some(empty) if event.metadata == EventMetadata::default() => empty.as_str(),
                _ => {
                    encoded = metadata_text(&event.metadata)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    encoded.as_str()
                }
            };
            insert.execute(params![
                &*event.event_id.hyphenated().encode_lower(&mut id),
                stream_id,
                (current + i) as i64,
                (head + i) as i64,
                event.event_type.as_str(),
                i64::from(event.schema_version),
                event.payload.as_str(),
                metadata,
                recorded_at,
            ])?;
        }
        Ok(())
    }

    /// Runs `sql` (no rows); a failure is a `STORAGE_ERROR` saying `what` failed.
    fn exec(&self, sql: &str, what: &str) -> FlextResult<()> {
        self.connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(|e| self.fail(what, e))
    }

    /// Rolls the current append back: the whole transaction when it is `alone` in its
    /// group, else to its `savepoint` (which ends) if it has one (a failed single insert
    /// is undone by SQLite itself).
    fn undo(&self, alone: bool, savepoint: bool) {
        if alone {
            self.roll_back();
        } else if savepoint {
            // After SQLite rolled the whole transaction back these fail, as nothing is left.
            let _ = self.exec("ROLLBACK TO append", "cannot roll back an append");
            let _ = self.exec("RELEASE append", "cannot roll back an append");
        }
    }

    /// Rolls the whole transaction back (after a failure that ends it).
    fn roll_back(&self) {
        if !self.connection.is_autocommit() {
            let _ = self.exec("ROLLBACK", "cannot roll back");
        }
    }

    fn in_transaction(&mut self) -> InTransaction<'_> {
        InTransaction {
            connection: &mut self.connection,
            path: &self.path,
        }
    }

    fn fail(&self, what: &str, error: rusqlite::Error) -> FlextError {
        storage(&self.path, what, error)
    }
}

/// Fills `group` with `first` and the appends queued behind it, up to [`GROUP_APPENDS`]
/// appends, and no more once it holds [`GROUP_EVENTS`] events.
fn gather(group: &mut Vec<Append>, first: Job, queue: &mpsc::Receiver<Job>) {
    let mut events = 0;
    let mut job = Some(first);
    while let Some(taken) = job.take() {
        match taken {
            Job::Append(append) => {
                events += append.events.len();
                group.push(append);
            }
            #[cfg(test)]
            Job::Panic => panic!("the writer thread was told to panic"),
        }
        if group.len() < GROUP_APPENDS && events < GROUP_EVENTS {
            job = queue.try_recv().ok();
        }
    }
}

/// The next job, looking a few times before parking on the channel; `None` once the
/// channel is closed and empty.
fn next(queue: &mpsc::Receiver<Job>) -> Option<Job> {
    for _ in 0..SPINS {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    queue.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteEventStore;
    use flext_protocols::EventStore;
    use flext_types::{ErrorCode, JsonPayload};

    fn event(n: u64) -> NewEvent {
        NewEvent::new(
            "Noted",
            JsonPayload::from_text(format!("{{\"n\":{n}}}")).unwrap(),
        )
    }

    fn temp_path() -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "flext-sqlite-writer-{}-{}.db",
            std::process::id(),
            FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
    }

    static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn append(stream_id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Append {
        Append {
            stream_id: stream_id.to_owned(),
            expected,
            events,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn each_append_of_one_group_is_checked_and_answered_on_its_own() {
        let path = temp_path();
        let store = SqliteEventStore::open(&path).await.unwrap();
        let committed = vec![event(1), event(2)];
        let original = store
            .append("base", ExpectedVersion::NoStream, committed.clone())
            .await
            .unwrap();
        let mut thread = Thread {
            connection: Database::File(path.clone())
                .connect(Duration::from_secs(5))
                .unwrap(),
            head: store.inner.head.clone(),
            path: "test".into(),
            empty_metadata: metadata_text(&EventMetadata::default()).ok(),
        };
        let first = event(10);
        let group = [
            append(
                "a",
                ExpectedVersion::NoStream,
                vec![first.clone(), event(11)],
            ),
            // Sees the append before it in the same transaction: a conflict.
            append("a", ExpectedVersion::NoStream, vec![event(12)]),
            // An exact retry of the committed batch: its original answer.
            append("base", ExpectedVersion::NoStream, committed.clone()),
            // A stored id in another stream: a duplicate, rolled back alone.
            append(
                "c",
                ExpectedVersion::Any,
                vec![event(13), committed[0].clone()],
            ),
            // An id the group stored a moment ago, in another stream: a duplicate too.
            append("d", ExpectedVersion::Any, vec![first]),
            // Follows the first append of its stream in the same transaction.
            append("a", ExpectedVersion::Exact(2), vec![event(14)]),
            append("e", ExpectedVersion::StreamExists, vec![event(15)]),
        ];
        let answers = thread.commit(&group);
        assert_eq!(answers.len(), group.len());
        assert_eq!(
            answers[0].as_ref().unwrap(),
            &AppendResult::following(0, 2, 2)
        );
        let code = |i: usize| answers[i].as_ref().unwrap_err().code();
        assert_eq!(code(1), ErrorCode::ConcurrencyConflict);
        assert_eq!(answers[2].as_ref().unwrap(), &original);
        assert_eq!(code(3), ErrorCode::Duplicate);
        assert_eq!(code(4), ErrorCode::Duplicate);
        assert_eq!(
            answers[5].as_ref().unwrap(),
            &AppendResult::following(2, 4, 1)
        );
        assert_eq!(code(6), ErrorCode::ConcurrencyConflict);
        // Committed: the head moved, and the store reads exactly the two appends that won.
        assert_eq!(store.inner.head.get(), 5);
        let stored = store.read_all(1, 100).await.unwrap();
        let placed: Vec<(&str, u64, u64)> = stored
            .iter()
            .map(|e| (&*e.stream_id, e.version, e.position))
            .collect();
        assert_eq!(
            placed,
            [
                ("base", 1, 1),
                ("base", 2, 2),
                ("a", 1, 3),
                ("a", 2, 4),
                ("a", 3, 5)
            ]
        );
        drop(thread);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    /// `count` queued single-event (or `size`-event) appends.
    fn queued(count: usize, size: u64) -> (mpsc::Sender<Job>, mpsc::Receiver<Job>) {
        let (jobs, queue) = mpsc::channel();
        for n in 0..count {
            let events = (0..size).map(event).collect();
            let job = Job::Append(append(&format!("s-{n}"), ExpectedVersion::Any, events));
            jobs.send(job).unwrap();
        }
        (jobs, queue)
    }

    #[test]
    fn a_group_takes_what_is_queued_up_to_its_caps() {
        let sizes = |count, size| {
            let (_jobs, queue) = queued(count, size);
            let mut sizes = Vec::new();
            while let Ok(first) = queue.try_recv() {
                let mut group = Vec::new();
                gather(&mut group, first, &queue);
                sizes.push(group.len());
            }
            sizes
        };
        assert_eq!(sizes(3, 1), [3], "everything queued");
        assert_eq!(
            sizes(GROUP_APPENDS + 5, 1),
            [GROUP_APPENDS, 5],
            "at most GROUP_APPENDS appends"
        );
        // 500-event appends: the ninth takes the group past GROUP_EVENTS (4500 ≥ 4096).
        assert_eq!(sizes(10, 500), [9, 1], "no more once GROUP_EVENTS are held");
        // 4096 events in 8 appends: the group is full at exactly GROUP_EVENTS.
        assert_eq!(sizes(9, 512), [8, 1]);
        assert_eq!(sizes(2, 5000), [1, 1], "a big append is a group of its own");
    }

    #[tokio::test]
    async fn a_writer_thread_that_died_answers_with_a_storage_error_not_a_hang() {
        let store = SqliteEventStore::open(":memory:").await.unwrap();
        store.inner.writer.panic();
        for _ in 0..2 {
            let error = store
                .append("s", ExpectedVersion::Any, vec![event(1)])
                .await
                .unwrap_err();
            assert_eq!(error.code(), ErrorCode::StorageError);
            assert!(
                error.message().contains("the writer thread is gone"),
                "{error}"
            );
        }
        // Reads go on: they are not the writer's.
        assert_eq!(store.head_position().await.unwrap(), 0);
    }
}
