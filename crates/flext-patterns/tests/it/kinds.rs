//! Chains and pipelines say what they are; middleware and timeouts pass the kind through.

use std::time::Duration;

use flext_constants::HandlerKind;
use flext_impl::{BasicHandler, Identity};
use flext_patterns::{HandlerChain, Layered, Pipeline, Timeout};
use flext_protocols::Handler;

#[test]
fn chains_and_pipelines_have_kinds_of_their_own() {
    assert_eq!(
        HandlerChain::<u32>::new("steps").handler_kind(),
        HandlerKind::Chain
    );
    assert_eq!(
        HandlerChain::<u32>::first_match("routes").handler_kind(),
        HandlerKind::Chain
    );
    assert_eq!(
        Pipeline::<u32>::new("stages").handler_kind(),
        HandlerKind::Pipeline
    );
    assert_eq!(
        Layered::new(Pipeline::<u32>::new("stages")).handler_kind(),
        HandlerKind::Pipeline
    );
    let timed = Timeout::new(Duration::from_secs(1))
        .wrap(BasicHandler::wrap(HandlerChain::<u32>::new("steps")));
    assert_eq!(timed.handler_kind(), HandlerKind::Chain);
    let basic = Timeout::new(Duration::from_secs(1)).wrap(BasicHandler::<Identity<u32>>::new("b"));
    assert_eq!(basic.handler_kind(), HandlerKind::Basic);
}
