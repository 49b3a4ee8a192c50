//! The middleware contract and the rest of a stack ([`Next`]).

use std::sync::Arc;

use async_trait::async_trait;
use flext_types::{FlextError, FlextResult};

use crate::Handler;

/// A shared, type-erased middleware.
pub type SharedMiddleware<Req, Res> = Arc<dyn Middleware<Req, Res>>;

/// Code that runs around a handler: before the request, after the response, on an error, or
/// around the whole call.
///
/// The simple hooks are synchronous transforms; override [`Middleware::call`] for anything
/// that must await or decide whether to call the rest of the stack at all (a timeout, a
/// cache, a circuit breaker). The default `call`:
///
/// 1. runs [`before_request`](Middleware::before_request); an error there is returned as it
///    is and nothing after it runs;
/// 2. runs the rest of the stack through [`Next::run`];
/// 3. on success runs [`after_response`](Middleware::after_response), on failure
///    [`handle_error`](Middleware::handle_error), which may recover with a response.
///
/// In a stack `[a, b, c]`, `a` is outermost: requests pass `a`, `b`, `c`, then the handler;
/// responses come back through `c`, `b`, `a`.
#[async_trait]
pub trait Middleware<Req, Res>: Send + Sync
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    /// The middleware's name, for metrics and errors.
    fn name(&self) -> &str;

    /// Transforms or rejects a request before the rest of the stack sees it.
    fn before_request(&self, request: Req) -> FlextResult<Req> {
        Ok(request)
    }

    /// Transforms or rejects a successful response.
    fn after_response(&self, response: Res) -> FlextResult<Res> {
        Ok(response)
    }

    /// Sees an error from the rest of the stack; returns it (the default), another error,
    /// or a response that recovers.
    fn handle_error(&self, error: FlextError) -> FlextResult<Res> {
        Err(error)
    }

    /// Runs the middleware around the rest of the stack.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res>
    /// ```
    async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res> {
        let request = self.before_request(request)?;
        match next.run(request).await {
            Ok(response) => self.after_response(response),
            Err(error) => self.handle_error(error),
        }
    }
}

/// The rest of a middleware stack: the middleware after the current one, then the handler.
///
/// `Next` is two references, so it is `Copy`: a middleware that retries may run the rest of
/// the stack more than once.
pub struct Next<'a, Req, Res> {
    handler: &'a (dyn Handler<Request = Req, Response = Res> + 'a),
    rest: &'a [SharedMiddleware<Req, Res>],
}

impl<'a, Req, Res> Next<'a, Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    /// The stack `middleware` (outermost first) around `handler`.
    pub fn new(
        handler: &'a (dyn Handler<Request = Req, Response = Res> + 'a),
        middleware: &'a [SharedMiddleware<Req, Res>],
    ) -> Self {
        Self {
            handler,
            rest: middleware,
        }
    }

    /// Runs the next middleware, or the handler when none is left.
    pub async fn run(self, request: Req) -> FlextResult<Res> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                first
                    .call(
                        request,
                        Next {
                            handler: self.handler,
                            rest,
                        },
                    )
                    .await
            }
            None => self.handler.handle(request).await,
        }
    }

    /// The name of the handler at the bottom of the stack.
    pub fn handler_name(&self) -> &str {
        self.handler.handler_name()
    }
}

impl<Req, Res> Clone for Next<'_, Req, Res> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Res> Copy for Next<'_, Req, Res> {}

impl<Req, Res> std::fmt::Debug for Next<'_, Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("handler", &self.handler.handler_name())
            .field("remaining_middleware", &self.rest.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxHandler;
    use std::sync::Mutex;

    struct Echo;

    #[async_trait]
    impl Handler for Echo {
        type Request = String;
        type Response = String;

        fn handler_name(&self) -> &str {
            "echo"
        }

        async fn handle(&self, request: String) -> FlextResult<String> {
            if request == "fail" {
                Err(FlextError::operation("echo failed"))
            } else {
                Ok(request)
            }
        }
    }

    struct Tag {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Middleware<String, String> for Tag {
        fn name(&self) -> &str {
            self.name
        }

        fn before_request(&self, request: String) -> FlextResult<String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("before {}", self.name));
            if request == "reject" {
                return Err(FlextError::validation(format!("{} rejected", self.name)));
            }
            Ok(format!("{request}>{}", self.name))
        }

        fn after_response(&self, response: String) -> FlextResult<String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("after {}", self.name));
            Ok(format!("{response}<{}", self.name))
        }

        fn handle_error(&self, error: FlextError) -> FlextResult<String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("error {}", self.name));
            if self.name == "outer" {
                Ok(format!("recovered from {error}"))
            } else {
                Err(error)
            }
        }
    }

    fn make_stack(log: &Arc<Mutex<Vec<String>>>) -> Vec<SharedMiddleware<String, String>> {
        vec![
            Arc::new(Tag {
                name: "outer",
                log: log.clone(),
            }),
            Arc::new(Tag {
                name: "inner",
                log: log.clone(),
            }),
        ]
    }

    #[tokio::test]
    async fn first_added_is_outermost() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stack = make_stack(&log);
        let out = Next::new(&Echo, &stack)
            .run("req".to_string())
            .await
            .unwrap();
        assert_eq!(out, "req>outer>inner<inner<outer");
        assert_eq!(
            *log.lock().unwrap(),
            ["before outer", "before inner", "after inner", "after outer"]
        );
    }

    #[tokio::test]
    async fn errors_unwind_through_handle_error_and_may_recover() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stack: Vec<SharedMiddleware<String, String>> = vec![Arc::new(Tag {
            name: "inner",
            log: log.clone(),
        })];
        let err = Next::new(&Echo, &[])
            .run("fail".to_string())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "echo failed");
        let rejected = Next::new(&Echo, &stack)
            .run("reject".to_string())
            .await
            .unwrap_err();
        assert_eq!(rejected.to_string(), "inner rejected");
        assert_eq!(
            *log.lock().unwrap(),
            ["before inner"],
            "a rejection skips the handler and handle_error"
        );

        struct Failing;
        #[async_trait]
        impl Handler for Failing {
            type Request = String;
            type Response = String;
            fn handler_name(&self) -> &str {
                "failing"
            }
            async fn handle(&self, _request: String) -> FlextResult<String> {
                Err(FlextError::timeout("too slow"))
            }
        }
        log.lock().unwrap().clear();
        let stack = make_stack(&log);
        let out = Next::new(&Failing, &stack)
            .run("x".to_string())
            .await
            .unwrap();
        assert_eq!(out, "recovered from too slow");
        assert_eq!(
            *log.lock().unwrap(),
            ["before outer", "before inner", "error inner", "error outer"]
        );
    }

    #[tokio::test]
    async fn boxed_and_shared_handlers_are_handlers() {
        let boxed: BoxHandler<String, String> = Arc::new(Echo);
        assert_eq!(boxed.handler_name(), "echo");
        assert_eq!(boxed.handle("hi".into()).await.unwrap(), "hi");
        let twice: Box<BoxHandler<String, String>> = Box::new(boxed);
        assert!(twice.can_handle(&"anything".to_string()));
    }
}
