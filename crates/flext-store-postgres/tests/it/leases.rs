//! Leases: one owner at a time per name among processes (here, stores) sharing a schema;
//! takeover within the TTL plus a renewal interval after the owner dies; fenced checkpoint
//! writes (plain and transactional) refused once the lease is lost; a projection's status.
//! A database has no paused clock, so the leases here live 300 ms; each bound checked is
//! given a margin for a loaded machine. Before this, the store had no leases: two processes
//! ran one projection side by side and a paused one wrote its checkpoint when it woke.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_protocols::{CheckpointStore, EventStore, Leases};
use flext_store_postgres::{
    LeaseConfig, PostgresEventStore, PostgresProjection, PostgresProjectionRunner,
    PostgresStoreOptions,
};
use flext_types::{
    DeadLetter, ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent,
};
use sqlx::{Postgres, Transaction};

const TTL: Duration = Duration::from_millis(300);

fn config(label: &str) -> LeaseConfig {
    LeaseConfig::new(label).with_ttl(TTL)
}

/// Two stores on one fresh schema, as two processes would open it, with the read model of
/// [`Seen`].
async fn two_processes(test: &str) -> Option<(PostgresEventStore, PostgresEventStore)> {
    let first = crate::fresh(test).await?;
    let url = crate::url(test)?;
    let second = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(url).with_schema(first.schema()),
    )
    .await
    .unwrap();
    sqlx::query("CREATE TABLE seen (event_id TEXT PRIMARY KEY)")
        .execute(first.pool())
        .await
        .unwrap();
    Some((first, second))
}

/// Appends `n` events and waits until reads see them (a commit may show a moment late
/// while an older append to the store is still open).
async fn append_n(store: &PostgresEventStore, n: u64) {
    let mut last = 0;
    for i in 0..n {
        let event = NewEvent::new("Tick", JsonPayload::encode(&i).unwrap());
        last = store
            .append("Tick-1", ExpectedVersion::Any, vec![event])
            .await
            .unwrap()
            .last_position;
    }
    flext_testing::event_store::caught_up(store, last).await;
}

/// A transactional projection recording each event id once (a second apply of one breaks
/// the primary key).
struct Seen;

#[async_trait]
impl PostgresProjection for Seen {
    fn name(&self) -> &str {
        "seen"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        sqlx::query("INSERT INTO seen (event_id) VALUES ($1)")
            .bind(event.event_id.to_string())
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(|e| FlextError::storage(e.to_string()))
    }

    async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
        sqlx::query("DELETE FROM seen")
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(|e| FlextError::storage(e.to_string()))
    }
}

async fn seen(store: &PostgresEventStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM seen")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_held_lease_has_one_owner_and_renewals_keep_it_past_many_ttls_pg() {
    let Some((a, b)) =
        two_processes("a_held_lease_has_one_owner_and_renewals_keep_it_past_many_ttls_pg").await
    else {
        return;
    };
    let owner = a.try_lease("p", config("a")).await.unwrap().unwrap();
    assert_eq!(owner.token(), 1);
    assert!(owner.owner().starts_with("a (pid "), "{}", owner.owner());
    for _ in 0..4 {
        tokio::time::sleep(TTL).await;
        assert!(b.try_lease("p", config("b")).await.unwrap().is_none());
        assert!(owner.is_held(), "the heartbeat keeps it");
    }
    // Another name is another lease.
    assert!(b.try_lease("q", config("b")).await.unwrap().is_some());
}

#[tokio::test]
async fn another_process_takes_over_within_ttl_and_a_renewal_after_the_owner_dies_pg() {
    let Some((a, b)) = two_processes(
        "another_process_takes_over_within_ttl_and_a_renewal_after_the_owner_dies_pg",
    )
    .await
    else {
        return;
    };
    let owner = a.acquire_lease("p", config("a")).await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.acquire_lease("p", config("b")).await.unwrap() }
    });
    tokio::time::sleep(TTL * 2).await;
    assert!(!waiting.is_finished(), "the owner still renews it");
    // The owner dies: its renewals stop, the lease is not given up.
    let died = Instant::now();
    drop(owner);
    let taken = waiting.await.unwrap();
    let took = died.elapsed();
    eprintln!("taken over {took:?} after the owner died (TTL {TTL:?})");
    assert!(
        took <= TTL + TTL / 3 + Duration::from_millis(400),
        "taken over {took:?} after the owner died (TTL {TTL:?})"
    );
    assert_eq!(taken.token(), 2, "a takeover raises the token");
    assert!(taken.owner().starts_with("b "));
    let status = a.projection_status("p").await.unwrap();
    assert_eq!(status.owner.as_deref(), Some(taken.owner()));
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_and_the_default_bound_is_at_most_ten_seconds_pg() {
    let default = LeaseConfig::default();
    assert!(default.ttl + default.renew_every <= Duration::from_secs(10));
    let Some((a, b)) = two_processes(
        "a_released_lease_is_taken_at_once_and_the_default_bound_is_at_most_ten_seconds_pg",
    )
    .await
    else {
        return;
    };
    let owner = a.try_lease("p", default.clone()).await.unwrap().unwrap();
    owner.release().await.unwrap();
    let next = b.try_lease("p", default).await.unwrap();
    assert_eq!(next.map(|lease| lease.token()), Some(2));
}

#[tokio::test]
async fn an_owner_learns_it_lost_its_lease_at_its_next_renewal_pg() {
    let Some((a, b)) =
        two_processes("an_owner_learns_it_lost_its_lease_at_its_next_renewal_pg").await
    else {
        return;
    };
    let owner = a.try_lease("p", config("a")).await.unwrap().unwrap();
    // Its lease runs out behind its back (as for a partitioned owner) and is taken.
    sqlx::query("UPDATE flext_leases SET expires_at = now() WHERE name = 'p'")
        .execute(a.pool())
        .await
        .unwrap();
    let _taken = b.try_lease("p", config("b")).await.unwrap().unwrap();
    tokio::time::timeout(TTL, owner.lost())
        .await
        .expect("the next renewal finds it lost");
    assert!(!owner.is_held());
}

/// An owner whose renewals fail (its database unreachable) counts its lease as lost once a
/// TTL has passed since the last renewal it sent, no later than the database lets it
/// expire, though no other owner has taken it.
#[tokio::test]
async fn an_owner_whose_renewals_fail_gives_its_lease_up_after_a_ttl_pg() {
    let Some((a, b)) =
        two_processes("an_owner_whose_renewals_fail_gives_its_lease_up_after_a_ttl_pg").await
    else {
        return;
    };
    let owner = a.try_lease("p", config("a")).await.unwrap().unwrap();
    let cut_off = Instant::now();
    a.pool().close().await;
    assert!(owner.is_held(), "held until its TTL runs out");
    tokio::time::timeout(TTL + TTL / 2, owner.lost())
        .await
        .expect("lost within a TTL of the last renewal");
    assert!(cut_off.elapsed() <= TTL + TTL / 2);
    assert!(!owner.is_held());
    // The database agrees by then: another process takes it.
    let next = b.acquire_lease("p", config("b")).await.unwrap();
    assert_eq!(next.token(), 2);
}

/// A fenced write that cannot lock the lease's row within the store's lock timeout fails
/// with a `TIMEOUT` naming the lease (it was a `STORAGE_ERROR`) and writes nothing.
#[tokio::test]
async fn a_fence_check_waiting_past_the_lock_timeout_is_a_timeout_pg() {
    let Some((a, _)) =
        two_processes("a_fence_check_waiting_past_the_lock_timeout_is_a_timeout_pg").await
    else {
        return;
    };
    let url = crate::url("a_fence_check_waiting_past_the_lock_timeout_is_a_timeout_pg").unwrap();
    let impatient = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(url)
            .with_schema(a.schema())
            .with_lock_timeout(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let owner = impatient
        .try_lease("p", config("a"))
        .await
        .unwrap()
        .unwrap();
    let mut holder = a.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM flext_leases WHERE name = 'p' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let error = impatient
        .fenced_checkpoints(owner.fence())
        .save_checkpoint("p", 5)
        .await
        .unwrap_err();
    holder.commit().await.unwrap();
    assert_eq!(error.code(), ErrorCode::Timeout, "{error}");
    assert!(error.message().contains("Lease 'p'"), "{error}");
    assert_eq!(a.load_checkpoint("p").await.unwrap(), None);
}

#[tokio::test]
async fn a_paused_owner_writes_no_plain_checkpoint_after_its_lease_is_lost_pg() {
    let Some((a, b)) =
        two_processes("a_paused_owner_writes_no_plain_checkpoint_after_its_lease_is_lost_pg").await
    else {
        return;
    };
    let owner = a.try_lease("plain", config("a")).await.unwrap().unwrap();
    let checkpoints = a.fenced_checkpoints(owner.fence());
    checkpoints.save_checkpoint("plain", 10).await.unwrap();
    // The owner pauses: no renewal past the TTL; its writer still has the fence.
    drop(owner);
    tokio::time::sleep(TTL + TTL / 2).await;
    let expired = checkpoints.save_checkpoint("plain", 15).await.unwrap_err();
    assert_eq!(expired.code(), ErrorCode::ConcurrencyConflict);
    let next = b.try_lease("plain", config("b")).await.unwrap().unwrap();
    let stale = checkpoints.save_checkpoint("plain", 20).await.unwrap_err();
    assert_eq!(stale.code(), ErrorCode::ConcurrencyConflict);
    assert!(stale.message().contains("Lease 'plain'"), "{stale}");
    let reset = checkpoints.reset("plain").await.unwrap_err();
    assert_eq!(reset.code(), ErrorCode::ConcurrencyConflict);
    assert_eq!(a.load_checkpoint("plain").await.unwrap(), Some(10));
    let current = b.fenced_checkpoints(next.fence());
    current.save_checkpoint("plain", 30).await.unwrap();
    assert_eq!(b.load_checkpoint("plain").await.unwrap(), Some(30));
    // The holder's reset forgets the checkpoint and the dead letters.
    let letter = DeadLetter {
        position: 31,
        event_id: uuid::Uuid::now_v7(),
        stream_id: "Tick-1".to_owned(),
        event_type: "Tick".to_owned(),
        attempts: 1,
        error: FlextError::validation("poison"),
        parked_behind: None,
    };
    b.add_dead_letter("plain", letter).await.unwrap();
    current.reset("plain").await.unwrap();
    assert_eq!(b.load_checkpoint("plain").await.unwrap(), None);
    assert!(b.dead_letters("plain").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_paused_transactional_owner_applies_and_checkpoints_nothing_after_takeover_pg() {
    let Some((a, b)) = two_processes(
        "a_paused_transactional_owner_applies_and_checkpoints_nothing_after_takeover_pg",
    )
    .await
    else {
        return;
    };
    append_n(&a, 5).await;
    let owner = a.try_lease("seen", config("a")).await.unwrap().unwrap();
    let paused = PostgresProjectionRunner::new(a.clone(), Arc::new(Seen))
        .with_batch_size(2)
        .with_fence(owner.fence());
    assert_eq!(paused.catch_up().await.unwrap().applied, 5);
    let before = paused.position().await.unwrap();
    drop(owner);
    tokio::time::sleep(TTL + TTL / 2).await;
    let next = b.acquire_lease("seen", config("b")).await.unwrap();
    append_n(&a, 3).await;
    // The paused owner wakes and goes on: nothing of it commits.
    let error = paused.catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict);
    assert!(error.message().contains("Lease 'seen'"), "{error}");
    assert_eq!(seen(&a).await, 5);
    assert_eq!(paused.position().await.unwrap(), before);
    let current = PostgresProjectionRunner::new(b.clone(), Arc::new(Seen)).with_fence(next.fence());
    assert_eq!(current.catch_up().await.unwrap().applied, 3);
    assert_eq!(seen(&b).await, 8);
    let status = b.projection_status("seen").await.unwrap();
    assert_eq!(status.behind, 0);
    assert_eq!(status.position, status.head);
}

/// A fenced write under way holds the lease: a takeover waits for its commit, so the new
/// owner reads what it wrote, and nothing is written after the takeover.
#[tokio::test]
async fn a_takeover_waits_for_a_fenced_write_under_way_pg() {
    let Some((a, b)) = two_processes("a_takeover_waits_for_a_fenced_write_under_way_pg").await
    else {
        return;
    };
    // Short: the open transaction holds every reader of the cluster back meanwhile.
    let short = LeaseConfig::new("a").with_ttl(Duration::from_millis(60));
    let owner = a.try_lease("p", short.clone()).await.unwrap().unwrap();
    let fence = owner.fence();
    drop(owner);
    let mut tx = a.pool().begin().await.unwrap();
    fence.check(&mut tx, "a checkpoint").await.unwrap();
    tokio::time::sleep(Duration::from_millis(90)).await;
    let takeover = tokio::spawn({
        let b = b.clone();
        async move { b.try_lease("p", short).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!takeover.is_finished(), "the takeover waits for the write");
    PostgresEventStore::save_checkpoint_in(&mut tx, "p", 7)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let next = takeover
        .await
        .unwrap()
        .expect("taken once the write committed");
    assert_eq!(next.token(), 2);
    assert_eq!(b.load_checkpoint("p").await.unwrap(), Some(7));
    let mut late = a.pool().begin().await.unwrap();
    let error = fence.check(&mut late, "a checkpoint").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_acquirers_get_one_lease_each_round_pg() {
    let Some((a, b)) = two_processes("racing_acquirers_get_one_lease_each_round_pg").await else {
        return;
    };
    for round in 0..20 {
        let name = format!("race-{round}");
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let name = name.clone();
                tokio::spawn(async move { store.try_lease(&name, config("r")).await.unwrap() })
            })
            .collect();
        let mut held = Vec::new();
        for attempt in tries {
            held.extend(attempt.await.unwrap());
        }
        assert_eq!(held.len(), 1, "round {round}: one owner");
    }
}

#[tokio::test]
async fn projection_status_shows_the_checkpoint_the_head_the_events_between_and_the_owner_pg() {
    let Some((a, _)) = two_processes(
        "projection_status_shows_the_checkpoint_the_head_the_events_between_and_the_owner_pg",
    )
    .await
    else {
        return;
    };
    let empty = a.projection_status("seen").await.unwrap();
    assert_eq!(
        (
            empty.name.as_str(),
            empty.position,
            empty.head,
            empty.behind,
            empty.owner
        ),
        ("seen", 0, 0, 0, None)
    );
    append_n(&a, 4).await;
    let all = a.read_all(1, usize::MAX).await.unwrap();
    a.save_checkpoint("seen", all[0].position).await.unwrap();
    let lease = a.try_lease("seen", config("a")).await.unwrap().unwrap();
    let status = a.projection_status("seen").await.unwrap();
    assert_eq!(status.position, all[0].position);
    assert_eq!(status.head, all[3].position);
    assert_eq!(status.behind, 3);
    assert_eq!(status.owner.as_deref(), Some(lease.owner()));
}

#[tokio::test]
async fn a_bad_lease_config_is_an_invalid_argument_pg() {
    let Some((a, _)) = two_processes("a_bad_lease_config_is_an_invalid_argument_pg").await else {
        return;
    };
    for config in [
        LeaseConfig::new("a").with_ttl(Duration::ZERO),
        LeaseConfig::new("a").with_renew_every(Duration::from_secs(6)),
        LeaseConfig::new("a").with_renew_every(Duration::ZERO),
    ] {
        let error = a.try_lease("p", config.clone()).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{config:?}");
        let error = a.acquire_lease("p", config).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }
}

/// The store's leases behind the `Leases` contract (what a saga's `resume_owned` takes):
/// one holder per name, a release hands it on with a higher token.
#[tokio::test]
async fn the_leases_contract_gives_one_holder_per_name_pg() {
    let Some((a, b)) = two_processes("the_leases_contract_gives_one_holder_per_name_pg").await
    else {
        return;
    };
    let (first, second) = (a.leases(config("a")), b.leases(config("b")));
    let held = first.try_lease("saga/pay/p-1").await.unwrap().unwrap();
    assert_eq!((held.name(), held.token()), ("saga/pay/p-1", 1));
    assert!(held.is_held());
    assert!(second.try_lease("saga/pay/p-1").await.unwrap().is_none());
    assert!(second.try_lease("saga/pay/p-2").await.unwrap().is_some());
    held.release().await.unwrap();
    let next = second.try_lease("saga/pay/p-1").await.unwrap().unwrap();
    assert_eq!(next.token(), 2);
}
