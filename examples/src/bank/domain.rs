//! The account: an event-sourced aggregate whose withdrawals ask a fraud service, through
//! a circuit breaker, before they are decided.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flext_handlers::Patterns::CircuitBreaker;
use flext_handlers::prelude::*;
use serde::{Deserialize, Serialize};

/// Withdrawals of at least this many cents notify the account's owner.
pub const LARGE_WITHDRAWAL: u64 = 10_000;

/// The largest amount one command moves, in cents (a billion): larger ones are refused
/// before any handler runs, so a balance never comes near the read model's 64-bit integers.
pub const MAX_AMOUNT: u64 = 100_000_000_000;

/// The largest balance an account may hold, in cents.
pub const MAX_BALANCE: u64 = 1_000 * MAX_AMOUNT;

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    /// The account was opened for `owner`.
    Opened {
        /// Who holds it.
        owner: String,
    },
    /// Money came in, in cents.
    Deposited {
        /// In cents.
        amount: u64,
    },
    /// Money went out, in cents.
    Withdrawn {
        /// In cents.
        amount: u64,
    },
}

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        match self {
            Self::Opened { .. } => "AccountOpened",
            Self::Deposited { .. } => "MoneyDeposited",
            Self::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }
}

/// What an account decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open it for an owner.
    Open(String),
    /// Put cents in.
    Deposit(u64),
    /// Take cents out, if the balance and the fraud service allow.
    Withdraw(u64),
}

/// An account's state, rebuilt from its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    /// Who holds it; `None` before it is opened.
    pub owner: Option<String>,
    /// Its balance, in cents.
    pub balance: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;

    /// The rules that need no service and no id; [`ServicedAggregate::decide`] is where
    /// the service asks for decisions.
    fn handle(&self, command: AccountCommand) -> FlextResult<Vec<AccountEvent>> {
        match command {
            AccountCommand::Open(owner) => {
                if self.owner.is_some() {
                    return Err(FlextError::duplicate("The account is open already"));
                }
                Ok(vec![AccountEvent::Opened { owner }])
            }
            AccountCommand::Deposit(_) | AccountCommand::Withdraw(_) if self.owner.is_none() => {
                Err(FlextError::not_found("No such account"))
            }
            AccountCommand::Deposit(amount) => match self.balance.checked_add(amount) {
                Some(balance) if balance <= MAX_BALANCE => {
                    Ok(vec![AccountEvent::Deposited { amount }])
                }
                _ => Err(FlextError::business_rule(format!(
                    "The deposit would take the balance past {MAX_BALANCE}"
                ))),
            },
            AccountCommand::Withdraw(amount) if amount > self.balance => {
                Err(FlextError::business_rule(format!(
                    "Insufficient funds: the balance is {}, the withdrawal {amount}",
                    self.balance
                ))
                .with_data(serde_json::json!({"balance": self.balance, "requested": amount})))
            }
            AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// The fraud service, as an account sees it.
#[async_trait]
pub trait FraudCheck: Send + Sync {
    /// `Ok` when `account` may withdraw `amount`; `AUTHORIZATION_DENIED` when the
    /// withdrawal is held for review; `UNAVAILABLE` when the service cannot be reached.
    async fn approve(&self, account: &str, amount: u64) -> FlextResult<()>;
}

/// What an account's decisions call: the fraud service behind its breaker.
pub struct BankServices {
    /// The fraud service.
    pub fraud: Arc<dyn FraudCheck>,
    /// The breaker in front of it: once it opens, withdrawals fail at once with
    /// `CIRCUIT_OPEN` instead of waiting on a service that is down.
    pub breaker: Arc<CircuitBreaker>,
    /// How long a fraud check may take: a service that hangs is a `TIMEOUT`, which the
    /// breaker counts as a failure.
    pub fraud_timeout: std::time::Duration,
}

impl std::fmt::Debug for BankServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankServices")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ServicedAggregate for Account {
    type Services = BankServices;

    async fn decide(
        &self,
        id: &str,
        command: AccountCommand,
        services: &BankServices,
    ) -> FlextResult<Vec<AccountEvent>> {
        let events = self.handle(command.clone()).map_err(|error| {
            if error.code() == ErrorCode::NotFound {
                FlextError::not_found(format!("No account {id}"))
            } else {
                error
            }
        })?;
        if let AccountCommand::Withdraw(amount) = command {
            // Asked again, on the fresh state, if another withdrawal wins the race.
            let check = async {
                tokio::time::timeout(services.fraud_timeout, services.fraud.approve(id, amount))
                    .await
                    .map_err(|_| {
                        FlextError::timeout(format!(
                            "The fraud service did not answer within {:?}",
                            services.fraud_timeout
                        ))
                    })?
            };
            services.breaker.call(check).await?;
        }
        Ok(events)
    }
}

/// A stand-in fraud service: holds withdrawals over its limit for review, and can be
/// taken down.
#[derive(Debug)]
pub struct SimulatedFraud {
    limit: u64,
    down: AtomicBool,
}

impl SimulatedFraud {
    /// A service that holds withdrawals over `limit` cents.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            down: AtomicBool::new(false),
        }
    }

    /// Takes the service down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl FraudCheck for SimulatedFraud {
    async fn approve(&self, account: &str, amount: u64) -> FlextResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(FlextError::unavailable("The fraud service does not answer"));
        }
        if amount > self.limit {
            return Err(FlextError::authorization_denied(format!(
                "The withdrawal of {amount} from {account} is held for review"
            )));
        }
        Ok(())
    }
}
