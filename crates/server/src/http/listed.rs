//! A router that lists what it routes: each vendor dialect registers its routes through `ListedRouter`, which adds
//! the handler to the axum router and the method, path and a one-line summary to a list, in one call. The OpenAPI
//! document lists the dialects' routes from that list (`native/openapi.rs`), so a dialect route cannot be served
//! without being listed there.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};

/// One route of a dialect, as the document lists it.
#[derive(Debug, Clone)]
pub struct ListedRoute {
    /// Lower case, as OpenAPI names methods.
    pub method: &'static str,
    /// The whole path template, prefix included (`/api/v1.6/devices/{device}`).
    pub path: String,
    pub summary: &'static str,
}

/// A dialect's routes with their listing.
#[derive(Debug)]
pub struct ListedRouter<S> {
    pub router: Router<S>,
    pub routes: Vec<ListedRoute>,
}

impl<S: Clone + Send + Sync + 'static> Default for ListedRouter<S> {
    fn default() -> Self {
        ListedRouter { router: Router::new(), routes: Vec::new() }
    }
}

macro_rules! method {
    ($name:ident, $filter:ident) => {
        pub fn $name<H, T>(self, path: &str, summary: &'static str, handler: H) -> Self
        where
            H: Handler<T, S>,
            T: 'static,
        {
            self.on(MethodFilter::$filter, stringify!($name), path, summary, handler)
        }
    };
}

impl<S: Clone + Send + Sync + 'static> ListedRouter<S> {
    pub fn new() -> Self {
        Self::default()
    }

    fn on<H, T>(
        mut self,
        filter: MethodFilter,
        method: &'static str,
        path: &str,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(path, on(filter, handler));
        self.routes.push(ListedRoute { method, path: path.to_owned(), summary });
        self
    }

    method!(get, GET);
    method!(post, POST);
    method!(put, PUT);
    method!(patch, PATCH);
    method!(delete, DELETE);

    /// The same routes, their router changed by `change` (a layer, a fallback): what is listed stays.
    pub fn map_router(mut self, change: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = change(self.router);
        self
    }

    pub fn merge(mut self, other: ListedRouter<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }
}

/// A dialect's listing for the document.
#[derive(Debug)]
pub struct DialectListing {
    /// The tag and the `x-tessera-dialect` value.
    pub tag: &'static str,
    pub title: &'static str,
    /// The vendor's documentation of the API Tessera speaks.
    pub docs: &'static str,
    pub routes: Vec<ListedRoute>,
}
