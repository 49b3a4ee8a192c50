//! One owner at a time among the processes sharing a store's schema: [`Lease`] (taken with
//! [`PostgresEventStore::acquire_lease`] or [`PostgresEventStore::try_lease`]), its
//! [`LeaseConfig`], the [`Fence`] that checkpoint writes check, [`FencedCheckpoints`] for
//! plain projections, and [`ProjectionStatus`], a projection's lag and owner.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flext_protocols::{BoxLease, CheckpointStore, HeldLease, Leases};
use flext_store::{signed, unsigned};
use flext_types::{DeadLetter, ErrorCode, FlextError, FlextResult};
use sqlx::{Postgres, Transaction};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::PostgresEventStore;
use crate::schema::DATABASE;
use crate::tables::{HEAD_POSITION, SAVE_CHECKPOINT, STATEMENTS};

/// How a [`Lease`] is held: for how long each renewal keeps it ([`ttl`](Self::ttl)), how
/// often it is renewed and a waiting process tries to take it
/// ([`renew_every`](Self::renew_every)), and the owner's label.
///
/// A process that dies keeps its lease for at most `ttl`; a process waiting in
/// [`PostgresEventStore::acquire_lease`] tries every `renew_every`, so it takes over at most
/// `ttl + renew_every` after the owner's last renewal: 8 s with the defaults (6 s and 2 s).
///
/// ```
/// use std::time::Duration;
/// use flext_store_postgres::LeaseConfig;
///
/// let config = LeaseConfig::new("replica-a").with_ttl(Duration::from_secs(3));
/// assert_eq!(config.renew_every, Duration::from_secs(1));
/// assert_eq!(LeaseConfig::default().ttl, Duration::from_secs(6));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// How long one renewal keeps the lease (default 6 s); measured by the database's clock.
    pub ttl: Duration,
    /// How often the holder renews it and a waiting process tries to take it (default a
    /// third of the TTL); shorter than the TTL.
    pub renew_every: Duration,
    /// A readable name of the owning process (default `flext`), shown as the owner; the
    /// lease adds the process id and a unique suffix, so two leases never share an owner.
    pub label: String,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::new("flext")
    }
}

impl LeaseConfig {
    /// The defaults (TTL 6 s, renewed every 2 s), the owner labelled `label`.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            ttl: Duration::from_secs(6),
            renew_every: Duration::from_secs(2),
            label: label.into(),
        }
    }

    /// The same config with renewals keeping the lease for `ttl`, renewed every third of it.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.renew_every = ttl / 3;
        self
    }

    /// The same config renewing (and trying to take the lease) every `renew_every`.
    #[must_use]
    pub fn with_renew_every(mut self, renew_every: Duration) -> Self {
        self.renew_every = renew_every;
        self
    }

    /// An `INVALID_ARGUMENT` unless `0 < renew_every < ttl` and the TTL is at least 1 ms.
    fn validate(&self, name: &str) -> FlextResult<()> {
        if self.ttl < Duration::from_millis(1)
            || self.renew_every.is_zero()
            || self.renew_every >= self.ttl
        {
            return Err(FlextError::invalid_argument(format!(
                "Lease '{name}': the renewal interval ({:?}) must be above zero and below the TTL ({:?}, at least 1 ms)",
                self.renew_every, self.ttl
            )));
        }
        Ok(())
    }
}

/// What a lease holder writes with, checked by every fenced write: the lease's name, its
/// owner and the token of that owner's acquisition. A write checked against a fence that
/// is no longer the lease's current one (the lease expired or another owner took it) writes
/// nothing and fails with a `CONCURRENCY_CONFLICT` naming the lease. Fences are cheap
/// clones; they outlive their [`Lease`], as a paused process's would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    name: String,
    owner: String,
    token: u64,
}

impl Fence {
    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The owner that acquired it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The fencing token of that acquisition: higher for every later one.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// In `tx`: fails unless the lease is still this fence's, unexpired; otherwise locks
    /// the lease's row against takeover (`FOR SHARE`) until `tx` ends, so no other owner
    /// can take the lease before what `tx` writes is committed. `what` is what would have
    /// been written, for the error.
    pub async fn check(&self, tx: &mut Transaction<'_, Postgres>, what: &str) -> FlextResult<()> {
        let held: Option<i32> = sqlx::query_scalar(CHECK_FENCE)
            .bind(&self.name)
            .bind(&self.owner)
            .bind(signed(self.token, DATABASE)?)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| self.unchecked(e))?;
        match held {
            Some(_) => Ok(()),
            None => Err(self.lost(what)),
        }
    }

    /// The error of a fence check that failed: a `TIMEOUT` when a limit of the store ended
    /// it (waiting for the lease's row, which a renewal or takeover holds a moment), else a
    /// `STORAGE_ERROR`.
    fn unchecked(&self, error: sqlx::Error) -> FlextError {
        let timed_out = matches!(&error, sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("55P03" | "57014")));
        let message = format!("Lease '{}': cannot check its fence: {error}", self.name);
        let failed = if timed_out {
            FlextError::timeout(message)
        } else {
            FlextError::storage(message)
        };
        failed.with_source(error)
    }

    /// The `CONCURRENCY_CONFLICT` of a write refused because the lease is lost.
    fn lost(&self, what: &str) -> FlextError {
        FlextError::new(
            ErrorCode::ConcurrencyConflict,
            format!(
                "Lease '{}' is lost: {} (token {}) no longer holds it (it expired or another owner took it), so {what} was not written",
                self.name, self.owner, self.token
            ),
        )
    }
}

/// The exclusive right, among every process using one store schema, to run the work named
/// by [`name`](Self::name) (a projection, a saga run): held while a background task renews
/// it every [`LeaseConfig::renew_every`], lost when a renewal finds another owner or no
/// renewal succeeded for a TTL.
///
/// Dropping the lease stops its renewals without giving it up (as a crash would): another
/// process takes it once the TTL has run out. [`release`](Self::release) gives it up at
/// once. The holder should stop its work when [`lost`](Self::lost) resolves; writes fenced by
/// its [`fence`](Self::fence) fail from the moment it is lost, whether or not it noticed.
///
/// ```no_run
/// use flext_store_postgres::{LeaseConfig, PostgresEventStore};
/// # async fn run(store: PostgresEventStore) -> flext_types::FlextResult<()> {
/// let lease = store.acquire_lease("projection:orders", LeaseConfig::new("replica-a")).await?;
/// println!("{} holds it with token {}", lease.owner(), lease.token());
/// tokio::select! {
///     () = lease.lost() => println!("lost it: stop"),
///     () = std::future::pending::<()>() => {}
/// }
/// # Ok(())
/// # }
/// ```
pub struct Lease {
    store: PostgresEventStore,
    fence: Fence,
    /// Until when (on this process's clock) the last renewal keeps the lease; `None` once
    /// it is lost.
    held: watch::Receiver<Option<Instant>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("fence", &self.fence)
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Lease {
    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.fence.name
    }

    /// This holder's owner name (the label, the process id and a unique suffix).
    pub fn owner(&self) -> &str {
        &self.fence.owner
    }

    /// The fencing token of this acquisition.
    pub fn token(&self) -> u64 {
        self.fence.token
    }

    /// The fence writes of this holder are checked against.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Whether the lease is still held as far as this process knows: the last renewal
    /// succeeded less than a TTL ago (counted from before it was sent, so this turns false
    /// no later than the database lets the lease expire).
    pub fn is_held(&self) -> bool {
        matches!(*self.held.borrow(), Some(until) if Instant::now() < until)
    }

    /// Resolves once the lease is lost: a renewal found it taken, or none succeeded for a
    /// TTL.
    pub async fn lost(&self) {
        let mut held = self.held.clone();
        loop {
            let Some(until) = *held.borrow_and_update() else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                changed = held.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Gives the lease up now (when still held), so another process can take it at once.
    pub async fn release(self) -> FlextResult<()> {
        self.heartbeat.abort();
        sqlx::query(RELEASE)
            .bind(&self.fence.name)
            .bind(&self.fence.owner)
            .bind(signed(self.fence.token, DATABASE)?)
            .execute(self.store.pool())
            .await
            .map_err(|e| {
                self.store.fail(
                    &format!("lease '{}': cannot release it", self.fence.name),
                    e,
                )
            })?;
        Ok(())
    }
}

#[async_trait]
impl HeldLease for Lease {
    fn name(&self) -> &str {
        Lease::name(self)
    }

    fn token(&self) -> u64 {
        Lease::token(self)
    }

    fn is_held(&self) -> bool {
        Lease::is_held(self)
    }

    async fn release(self: Box<Self>) -> FlextResult<()> {
        Lease::release(*self).await
    }
}

/// The store's leases as the [`Leases`] contract gives them to code above the adapters (a
/// saga's `resume_owned`, say), each taken with one [`LeaseConfig`]: from
/// [`PostgresEventStore::leases`].
#[derive(Debug, Clone)]
pub struct PostgresLeases {
    store: PostgresEventStore,
    config: LeaseConfig,
}

#[async_trait]
impl Leases for PostgresLeases {
    async fn try_lease(&self, name: &str) -> FlextResult<Option<BoxLease>> {
        let lease = self.store.try_lease(name, self.config.clone()).await?;
        Ok(lease.map(|lease| Box::new(lease) as BoxLease))
    }
}

/// A projection's progress as every process sees it: returned by
/// [`PostgresEventStore::projection_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name (its checkpoint's key).
    pub name: String,
    /// Its checkpoint: the last position it finished (0 before the first).
    pub position: u64,
    /// The store's head: the last position readers can see.
    pub head: u64,
    /// Events after the checkpoint up to the head (positions are not dense, so this is
    /// counted, not subtracted): what the projection still has to apply.
    pub behind: u64,
    /// The owner holding the lease of the same name, if one holds it unexpired.
    pub owner: Option<String>,
}

/// A [`CheckpointStore`] whose checkpoint writes are fenced: a save or reset of the fence's
/// holder commits only while its lease is current, otherwise it writes nothing and fails
/// with a `CONCURRENCY_CONFLICT` naming the lease, which stops the projection runner that
/// called it. Give it to a plain projection runner in place of the store. Reads and dead
/// letters go to the store unfenced (a dead letter records a failure; it moves no
/// checkpoint).
#[derive(Debug, Clone)]
pub struct FencedCheckpoints {
    store: PostgresEventStore,
    fence: Fence,
}

impl FencedCheckpoints {
    /// The fence the writes are checked against.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// One transaction: the fence's check, then `statements` (each bound to the name and,
    /// when it has a `$2`, `position`).
    async fn write(
        &self,
        name: &str,
        position: Option<u64>,
        statements: &[&str],
    ) -> FlextResult<()> {
        let what = format!("the checkpoint of '{name}'");
        let fail = |e: sqlx::Error| self.store.fail(&format!("cannot write {what}"), e);
        let mut tx = self.store.pool().begin().await.map_err(fail)?;
        self.fence.check(&mut tx, &what).await?;
        for statement in statements {
            let mut query = sqlx::query(statement).bind(name);
            if let Some(position) = position {
                query = query.bind(signed(position, DATABASE)?);
            }
            query.execute(&mut *tx).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }
}

#[async_trait]
impl CheckpointStore for FencedCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.store.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        self.write(name, Some(position), &[SAVE_CHECKPOINT]).await
    }

    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        self.store.add_dead_letter(name, letter).await
    }

    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        self.store.dead_letters(name).await
    }

    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
        self.store.remove_dead_letter(name, position).await
    }

    async fn reset(&self, name: &str) -> FlextResult<()> {
        self.write(name, None, &STATEMENTS.reset).await
    }
}

/// Takes the lease when it is free or expired (inserting it the first time), raising its
/// token; returns the new token, or no row when another owner holds it unexpired.
const ACQUIRE: &str = "INSERT INTO flext_leases (name, owner, token, expires_at) \
     VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond') \
     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
     token = flext_leases.token + 1, expires_at = excluded.expires_at \
     WHERE flext_leases.expires_at <= now() \
     RETURNING token";

/// Extends the lease while this owner's acquisition still holds it; no row once it is lost.
const RENEW: &str = "UPDATE flext_leases SET expires_at = now() + $4 * interval '1 millisecond' \
     WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > now() RETURNING token";

/// Ends the lease now, when this owner's acquisition still holds it.
const RELEASE: &str = "UPDATE flext_leases SET expires_at = now() \
     WHERE name = $1 AND owner = $2 AND token = $3";

/// A row while the fence is current, its row locked against takeover until the
/// transaction ends.
const CHECK_FENCE: &str = "SELECT 1 FROM flext_leases \
     WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > now() FOR SHARE";

/// The owner of an unexpired lease.
const LEASE_OWNER: &str = "SELECT owner FROM flext_leases WHERE name = $1 AND expires_at > now()";

/// Events after a position, up to the read barrier (the head).
const BEHIND: &str = "SELECT COUNT(*) FROM flext_events WHERE position > $1 AND position <= $2";

/// A new owner name: the label, the process id and a suffix unique in this process and
/// (by the standard library's random hash keys) across processes.
fn owner_name(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    format!(
        "{label} (pid {}, {:016x})",
        std::process::id(),
        hasher.finish()
    )
}

/// Milliseconds of `duration` for the server, at least 1.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

impl PostgresEventStore {
    /// Takes the lease `name` for this process, waiting (trying every
    /// [`LeaseConfig::renew_every`]) while another owner holds it; then a background task
    /// renews it. Cancel the wait by dropping the future. A bad config is an
    /// `INVALID_ARGUMENT`; a failing database a `STORAGE_ERROR` or `TIMEOUT`.
    pub async fn acquire_lease(&self, name: &str, config: LeaseConfig) -> FlextResult<Lease> {
        config.validate(name)?;
        let owner = owner_name(&config.label);
        loop {
            if let Some(lease) = self.try_take(name, &owner, &config).await? {
                return Ok(lease);
            }
            tokio::time::sleep(config.renew_every).await;
        }
    }

    /// Takes the lease `name` when no other owner holds it: `None` when one does.
    pub async fn try_lease(&self, name: &str, config: LeaseConfig) -> FlextResult<Option<Lease>> {
        config.validate(name)?;
        let owner = owner_name(&config.label);
        self.try_take(name, &owner, &config).await
    }

    async fn try_take(
        &self,
        name: &str,
        owner: &str,
        config: &LeaseConfig,
    ) -> FlextResult<Option<Lease>> {
        let sent = Instant::now();
        let token: Option<i64> = sqlx::query_scalar(ACQUIRE)
            .bind(name)
            .bind(owner)
            .bind(millis(config.ttl))
            .fetch_optional(self.pool())
            .await
            .map_err(|e| self.fail(&format!("lease '{name}': cannot take it"), e))?;
        let Some(token) = token else {
            return Ok(None);
        };
        let fence = Fence {
            name: name.to_owned(),
            owner: owner.to_owned(),
            token: unsigned(token),
        };
        let (renewed, held) = watch::channel(Some(sent + config.ttl));
        let heartbeat = tokio::spawn(heartbeat(
            self.clone(),
            fence.clone(),
            config.clone(),
            renewed,
        ));
        tracing::debug!(lease = name, owner, token, "lease taken");
        Ok(Some(Lease {
            store: self.clone(),
            fence,
            held,
            heartbeat,
        }))
    }

    /// The store's leases behind the [`Leases`] contract, each taken with `config`.
    pub fn leases(&self, config: LeaseConfig) -> PostgresLeases {
        PostgresLeases {
            store: self.clone(),
            config,
        }
    }

    /// A plain projection's checkpoint store fenced by `fence`: see [`FencedCheckpoints`].
    pub fn fenced_checkpoints(&self, fence: Fence) -> FencedCheckpoints {
        FencedCheckpoints {
            store: self.clone(),
            fence,
        }
    }

    /// Projection `name`'s checkpoint, the store's head, how many events lie between, and
    /// the owner of the lease named `name`, if any holds it.
    pub async fn projection_status(&self, name: &str) -> FlextResult<ProjectionStatus> {
        let fail = |e| self.fail(&format!("projection '{name}': cannot read its status"), e);
        let position = self.load_checkpoint(name).await?.unwrap_or(0);
        let head: i64 = sqlx::query_scalar(HEAD_POSITION)
            .fetch_one(self.pool())
            .await
            .map_err(fail)?;
        let behind: i64 = sqlx::query_scalar(BEHIND)
            .bind(signed(position, DATABASE)?)
            .bind(head)
            .fetch_one(self.pool())
            .await
            .map_err(fail)?;
        let owner: Option<String> = sqlx::query_scalar(LEASE_OWNER)
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(fail)?;
        Ok(ProjectionStatus {
            name: name.to_owned(),
            position,
            head: unsigned(head),
            behind: unsigned(behind),
            owner,
        })
    }
}

/// Renews `fence`'s lease every `renew_every`, publishing until when it is held; stops,
/// publishing `None`, when a renewal finds it lost or none has succeeded for a TTL (a
/// failing renewal is tried again at the next tick until then).
async fn heartbeat(
    store: PostgresEventStore,
    fence: Fence,
    config: LeaseConfig,
    renewed: watch::Sender<Option<Instant>>,
) {
    let mut until = *renewed.borrow();
    loop {
        tokio::time::sleep(config.renew_every).await;
        let sent = Instant::now();
        let token = match signed(fence.token, DATABASE) {
            Ok(token) => token,
            Err(_) => break,
        };
        let renewal: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(RENEW)
            .bind(&fence.name)
            .bind(&fence.owner)
            .bind(token)
            .bind(millis(config.ttl))
            .fetch_optional(store.pool())
            .await;
        match renewal {
            Ok(Some(_)) => {
                until = Some(sent + config.ttl);
                renewed.send_replace(until);
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(lease = %fence.name, %error, "a lease renewal failed");
                if until.is_none_or(|until| Instant::now() >= until) {
                    break;
                }
            }
        }
    }
    tracing::info!(lease = %fence.name, owner = %fence.owner, "lease lost");
    renewed.send_replace(None);
}
