//! [`Leases`] and [`HeldLease`]: exclusive, expiring ownership of named work (a saga run, a
//! projection) among the processes that share a store.

use std::fmt;

use async_trait::async_trait;
use flext_types::FlextResult;

/// A lease taken by [`Leases::try_lease`], held until it is released, expires or is taken
/// by another process after expiring.
pub type BoxLease = Box<dyn HeldLease>;

/// One process's hold on a named piece of work. While it is held no other process holds
/// the same name; a holder that stops renewing it (a crash, a pause) loses it after the
/// store's time-to-live. Dropping it stops the renewals without giving it up.
#[async_trait]
pub trait HeldLease: Send + Sync + fmt::Debug {
    /// The work's name.
    fn name(&self) -> &str;

    /// The fencing token of this acquisition: higher for every later one of the same name.
    fn token(&self) -> u64;

    /// Whether the lease is still held, as far as this process knows.
    fn is_held(&self) -> bool;

    /// Gives the lease up now, so another process can take it at once.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn release(self: Box<Self>) -> FlextResult<()>
    /// ```
    async fn release(self: Box<Self>) -> FlextResult<()>;
}

/// Where processes take leases on named work: a store shared by them all.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease `name` for this process when no other holds it: `None` when one
    /// does.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn try_lease(&self, name: &str) -> FlextResult<Option<BoxLease>>
    /// ```
    async fn try_lease(&self, name: &str) -> FlextResult<Option<BoxLease>>;
}
