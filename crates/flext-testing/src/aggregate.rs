//! Given/when/then for aggregates.

use std::fmt::Debug;

use flext_constants::ErrorCode;
use flext_protocols::{Aggregate, Event};
use flext_types::{FlextResult, JsonPayload};

/// Tests an aggregate's decisions without a store: given past events, when a command,
/// then the events it emits or the error it rejects with.
///
/// The fixture also checks that every event it sees survives a round trip through its
/// stored JSON form, so a serde mistake fails the test that introduced it.
///
/// ```
/// use flext_protocols::{Aggregate, Event};
/// use flext_testing::AggregateFixture;
/// use flext_types::{FlextError, FlextResult};
/// use flext_constants::ErrorCode;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Incremented }
/// impl Event for CounterEvent { fn event_name(&self) -> &str { "Incremented" } }
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Counter { value: u32 }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "Counter";
///     type Command = u32;
///     type Event = CounterEvent;
///     fn handle(&self, limit: u32) -> FlextResult<Vec<CounterEvent>> {
///         if self.value >= limit {
///             return Err(FlextError::business_rule("Limit reached"));
///         }
///         Ok(vec![CounterEvent::Incremented])
///     }
///     fn apply(&mut self, _: &CounterEvent) { self.value += 1; }
/// }
///
/// AggregateFixture::<Counter>::given(vec![CounterEvent::Incremented])
///     .when(5)
///     .then_expect_events(vec![CounterEvent::Incremented]);
/// AggregateFixture::<Counter>::given(vec![CounterEvent::Incremented; 5])
///     .when(5)
///     .then_expect_error(ErrorCode::BusinessRuleViolation, "Limit reached");
/// ```
#[derive(Debug)]
pub struct AggregateFixture<A: Aggregate> {
    state: A,
}

/// The result of [`AggregateFixture::when`], to assert on.
#[derive(Debug)]
pub struct AggregateOutcome<A: Aggregate> {
    state: A,
    result: FlextResult<Vec<A::Event>>,
}

impl<A> AggregateFixture<A>
where
    A: Aggregate + Debug,
    A::Event: PartialEq + Debug,
{
    /// A new aggregate with no history.
    pub fn given_no_previous_events() -> Self {
        Self::given(Vec::new())
    }

    /// An aggregate that has applied `events`, in order.
    pub fn given(events: Vec<A::Event>) -> Self {
        let mut state = A::default();
        for event in &events {
            state.apply(&round_trip(event));
        }
        Self { state }
    }

    /// Lets the aggregate decide on `command`.
    pub fn when(self, command: A::Command) -> AggregateOutcome<A> {
        let result = self.state.handle(command);
        AggregateOutcome {
            state: self.state,
            result,
        }
    }
}

impl<A> AggregateOutcome<A>
where
    A: Aggregate + Debug,
    A::Event: PartialEq + Debug,
{
    /// Asserts that the command was accepted with exactly `expected`.
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<A::Event>) -> A {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command emitted other events");
                let mut state = self.state;
                for event in &events {
                    state.apply(&round_trip(event));
                }
                state
            }
            Err(error) => {
                panic!("expected events {expected:?}, the command was rejected: {error:?}")
            }
        }
    }

    /// Asserts that the command was rejected with `code` and exactly `message`.
    #[track_caller]
    pub fn then_expect_error(self, code: ErrorCode, message: &str) {
        match self.result {
            Ok(events) => panic!(
                "expected a {} error {message:?}, the command emitted {events:?}",
                code.name()
            ),
            Err(error) => {
                assert_eq!(error.code(), code, "rejected with another code: {error:?}");
                assert_eq!(error.message(), message, "rejected with another message");
            }
        }
    }

    /// The raw result, for assertions the fixture does not offer.
    pub fn into_result(self) -> FlextResult<Vec<A::Event>> {
        self.result
    }
}

/// `event` after encoding to and decoding from its stored JSON form; a failure is a test
/// failure naming the event.
#[track_caller]
fn round_trip<E>(event: &E) -> E
where
    E: Event + serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    let stored = JsonPayload::encode(event)
        .unwrap_or_else(|e| panic!("event {} does not serialize: {e}", event.event_name()));
    let back: E = stored.decode().unwrap_or_else(|e| {
        panic!(
            "event {} does not decode from {stored}: {e}",
            event.event_name()
        )
    });
    assert_eq!(
        &back,
        event,
        "event {} changes in a round trip through {stored}",
        event.event_name()
    );
    back
}
