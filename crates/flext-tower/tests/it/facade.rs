//! The adapter as users reach it: through the facade's `tower` module (feature `tower`).

use std::time::Duration;

use flext_handlers::prelude::*;
use flext_handlers::tower::tower::{ServiceBuilder, ServiceExt};
use flext_handlers::tower::{HandlerExt, ServiceHandler, TowerLayered};

struct Greet(String);

impl Command for Greet {
    type Output = String;
}

#[tokio::test(start_paused = true)]
async fn the_facade_reaches_the_adapter_and_tower_itself() {
    let greet = handler_fn("greet", |cmd: Greet| async move {
        Ok(format!("hello {}", cmd.0))
    });
    let layered: TowerLayered<_, _> = greet.layer(
        ServiceBuilder::new()
            .concurrency_limit(4)
            .timeout(Duration::from_secs(1)),
    );
    let mut bus = CommandBus::new();
    bus.register::<Greet>(layered).unwrap();
    assert_eq!(bus.send(Greet("ada".into())).await, Ok("hello ada".into()));

    let service =
        handler_fn("shout", |s: String| async move { Ok(s.to_uppercase()) }).into_service();
    let handler = ServiceHandler::new("shout", service.clone());
    assert_eq!(handler.handle("hey".into()).await, Ok("HEY".into()));
    assert_eq!(service.oneshot("ho".into()).await, Ok("HO".into()));
}
