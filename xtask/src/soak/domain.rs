//! The soak's domain: an event-sourced bank account, its commands and query, the balances
//! read model (fed by a projection, and folded again by the checker from the store), and
//! the transfer saga's data.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use flext_handlers::CQRS::Upcasters;
use flext_handlers::Types::AppendResult;
use flext_handlers::prelude::*;
use serde::{Deserialize, Serialize};

/// The events of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened, empty.
    Opened,
    /// Money came in.
    Deposited {
        /// How much.
        amount: u64,
    },
    /// Money went out.
    Withdrawn {
        /// How much.
        amount: u64,
    },
}

/// The names of the account's events, one per variant of [`AccountEvent`].
pub const EVENT_NAMES: [&str; 3] = ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"];

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        match self {
            Self::Opened => EVENT_NAMES[0],
            Self::Deposited { .. } => EVENT_NAMES[1],
            Self::Withdrawn { .. } => EVENT_NAMES[2],
        }
    }
}

/// What an account is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// Open it.
    Open,
    /// Put money in.
    Deposit(u64),
    /// Take money out; more than the balance is refused.
    Withdraw(u64),
}

/// The event-sourced account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Whether it was opened.
    pub open: bool,
    /// Its balance.
    pub balance: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountAction;
    type Event = AccountEvent;

    fn handle(&self, action: AccountAction) -> FlextResult<Vec<AccountEvent>> {
        match action {
            AccountAction::Open if self.open => {
                Err(FlextError::business_rule("the account is already open"))
            }
            AccountAction::Open => Ok(vec![AccountEvent::Opened]),
            _ if !self.open => Err(FlextError::not_found("the account is not open")),
            AccountAction::Deposit(0) | AccountAction::Withdraw(0) => {
                Err(FlextError::invalid_argument("an amount must not be zero"))
            }
            AccountAction::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            AccountAction::Withdraw(amount) if amount > self.balance => {
                Err(FlextError::business_rule("insufficient funds"))
            }
            AccountAction::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened => self.open = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// The command the bus carries: an action on one account. Its output is where the
/// account's events went (`None` when the action emitted none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCommand {
    /// The account's id.
    pub account: String,
    /// What to do.
    pub action: AccountAction,
}

impl Command for AccountCommand {
    type Output = Option<AppendResult>;
}

/// The query: an account's balance as the read model has it (`None` when the read model
/// has not seen the account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetBalance {
    /// The account's id.
    pub account: String,
}

impl Query for GetBalance {
    type Output = Option<u64>;
}

/// A heartbeat published straight on the event bus (not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat;

/// The name [`Heartbeat`] is published under.
pub const HEARTBEAT: &str = "Heartbeat";

impl Event for Heartbeat {
    fn event_name(&self) -> &str {
        HEARTBEAT
    }
}

/// One account as the read model shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountRow {
    /// Its balance.
    pub balance: u64,
    /// The version of the last event applied.
    pub version: u64,
}

/// The balances folded from the log, in position order: what the projection keeps and
/// what the checker replays. Events of other streams only move the position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances {
    /// Per account stream (`Account-{id}`).
    pub accounts: BTreeMap<String, AccountRow>,
    /// The position of the last event folded.
    pub position: u64,
    /// Events of a stream delivered again (a version already applied), skipped.
    pub redelivered: u64,
}

impl Balances {
    /// Folds `event` in. A version already applied is skipped and counted; a version that
    /// skips one, an event that does not decode and a withdrawal below zero are errors
    /// naming the event (the state is left as it was).
    pub fn apply(&mut self, event: &StoredEvent) -> Result<(), String> {
        self.position = self.position.max(event.position);
        if !event.stream_id.starts_with("Account-") {
            return Ok(());
        }
        let row = self
            .accounts
            .get(&*event.stream_id)
            .copied()
            .unwrap_or_default();
        if event.version <= row.version {
            self.redelivered += 1;
            return Ok(());
        }
        let at = || {
            format!(
                "{} version {} (position {})",
                event.stream_id, event.version, event.position
            )
        };
        if event.version != row.version + 1 {
            return Err(format!(
                "{}: the read model's last version of the stream is {}",
                at(),
                row.version
            ));
        }
        let decoded = Envelope::<AccountEvent>::decode(event, &Upcasters::new())
            .map_err(|e| format!("{} does not decode: {e}", at()))?;
        let balance = match decoded.payload {
            AccountEvent::Opened => row.balance,
            AccountEvent::Deposited { amount } => row
                .balance
                .checked_add(amount)
                .ok_or_else(|| format!("{}: the balance overflows", at()))?,
            AccountEvent::Withdrawn { amount } => row
                .balance
                .checked_sub(amount)
                .ok_or_else(|| format!("{}: the balance goes below zero", at()))?,
        };
        self.accounts.insert(
            event.stream_id.to_string(),
            AccountRow {
                balance,
                version: event.version,
            },
        );
        Ok(())
    }

    /// The first account where `self` and `other` differ, described; `None` when they
    /// agree (their positions and redelivery counts aside).
    pub fn difference(&self, other: &Self) -> Option<String> {
        if self.accounts == other.accounts {
            return None;
        }
        self.accounts
            .keys()
            .chain(other.accounts.keys())
            .find_map(|stream| {
                let (mine, theirs) = (self.accounts.get(stream), other.accounts.get(stream));
                (mine != theirs).then(|| format!("{stream}: {mine:?} against {theirs:?}"))
            })
    }

    /// The sum of every balance.
    pub fn total(&self) -> u64 {
        self.accounts.values().map(|row| row.balance).sum()
    }
}

/// The read model: [`Balances`] fed by a
/// [`ProjectionRunner`], answering [`GetBalance`].
#[derive(Debug, Default)]
pub struct ReadModel {
    state: Mutex<(Balances, Vec<String>)>,
}

impl ReadModel {
    /// The balance of `account`, if the read model has seen it.
    pub fn balance(&self, account: &str) -> Option<u64> {
        let stream = Repository::<Account>::stream_id(account);
        self.lock().0.accounts.get(&stream).map(|row| row.balance)
    }

    /// A copy of the balances.
    pub fn balances(&self) -> Balances {
        self.lock().0.clone()
    }

    /// Takes the errors of folding since the last call.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().1)
    }

    fn lock(&self) -> MutexGuard<'_, (Balances, Vec<String>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Projection for ReadModel {
    fn name(&self) -> &str {
        "soak-balances"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        let mut state = self.lock();
        if let Err(error) = state.0.apply(event) {
            // Kept for the checker to report; failing here would only dead-letter it.
            state.1.push(error);
        }
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        *self.lock() = Default::default();
        Ok(())
    }
}

/// The transfer saga's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// How much.
    pub amount: u64,
    /// Whether the credit is refused (so the debit is compensated).
    pub refuse_credit: bool,
    /// Whether the compensation (the refund) fails on its first try.
    pub refund_fails_once: bool,
}
