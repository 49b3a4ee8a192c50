//! The contract of a chain link.

use crate::Handler;

/// A handler whose response has the type of its request, so its output can be the next
/// link's input in a sequential chain.
///
/// Implemented for every such handler; it exists so chains can say what they accept.
pub trait Chainable: Handler<Response = <Self as Handler>::Request> {}

impl<H> Chainable for H where H: Handler<Response = <H as Handler>::Request> + ?Sized {}
