//! The delegation every wrapper around a [`BasicHandler`](crate::BasicHandler) shares,
//! written once.

/// Implements `Handler`, `ManagedHandler` and `MetricsSource` for a wrapper type whose
/// field `base` is a `BasicHandler<H>`.
///
/// The name, `can_handle`, the core and the base metrics come from `base`; the wrapper
/// gives its own `handle` body (which ends by calling `base`) and the samples it adds to
/// the base's metric set.
///
/// ```text
/// delegate_to_base! {
///     impl<H> ValidatingHandler<H> where {}
///     handle(&self, request) { … self.base.handle(request).await }
///     extend_metrics(&self, set) { set.push(…); }
/// }
/// ```
macro_rules! delegate_to_base {
    (
        impl<H> $wrapper:ident<H> where { $($bounds:tt)* }
        handle(&$self:ident, $request:ident) $handle:block
        extend_metrics(&$self2:ident, $set:ident) $extend:block
    ) => {
        #[async_trait::async_trait]
        impl<H> flext_protocols::Handler for $wrapper<H>
        where
            H: flext_protocols::Handler,
            $($bounds)*
        {
            type Request = H::Request;
            type Response = H::Response;

            fn handler_name(&self) -> &str {
                self.base.handler_name()
            }

            fn can_handle(&self, request: &Self::Request) -> bool {
                self.base.can_handle(request)
            }

            fn handler_kind(&self) -> flext_constants::HandlerKind {
                self.base.handler_kind()
            }

            async fn handle(
                &$self,
                $request: Self::Request,
            ) -> flext_types::FlextResult<Self::Response> $handle
        }

        impl<H> $crate::ManagedHandler for $wrapper<H>
        where
            H: flext_protocols::Handler,
            $($bounds)*
        {
            fn core(&self) -> &$crate::HandlerCore {
                self.base.core()
            }
        }

        impl<H> flext_protocols::MetricsSource for $wrapper<H>
        where
            H: flext_protocols::Handler,
            $($bounds)*
        {
            fn metric_set(&$self2) -> flext_types::MetricSet {
                let mut $set = flext_protocols::MetricsSource::metric_set(&$self2.base);
                $extend
                $set
            }
        }
    };
}

pub(crate) use delegate_to_base;
