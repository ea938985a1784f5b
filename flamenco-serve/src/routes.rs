//! Route registration that remembers what it registered. axum's `Router` cannot list its
//! routes, so every module builds its routes with [`Routes`]: each `get`/`post`/… call adds
//! the route to the axum router *and* to a table of `(method, path)`. [`crate::router`]
//! merges the modules' `Routes`, and [`crate::route_table`] gives the same table; the
//! OpenAPI test compares it with `docs/openapi.json` and requests every route. A route
//! added anywhere through [`Routes`] is therefore documented-or-failing, with no list to
//! keep by hand.

use std::sync::Arc;

use axum::handler::Handler;
use axum::routing::{self, MethodRouter};
use axum::Router;
use flamenco_core::Manager;

type State = Arc<Manager>;

/// One registered route: an HTTP method in capitals (`ANY` for every method) and the path
/// in axum's syntax (`/api/jobs/{job_id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

/// An axum router plus the table of the routes it serves.
#[must_use]
pub struct Routes {
    router: Router<State>,
    table: Vec<Route>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add(mut self, method: &'static str, path: &'static str, mr: MethodRouter<State>) -> Self {
        self.router = self.router.route(path, mr);
        self.table.push(Route { method, path });
        self
    }

    /// `GET path`.
    pub fn get<H: Handler<T, State>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("GET", path, routing::get(h))
    }

    /// `POST path`.
    pub fn post<H: Handler<T, State>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("POST", path, routing::post(h))
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, State>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("PUT", path, routing::put(h))
    }

    /// `DELETE path`.
    pub fn delete<H: Handler<T, State>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("DELETE", path, routing::delete(h))
    }

    /// Every method on `path`.
    pub fn any<H: Handler<T, State>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("ANY", path, routing::any(h))
    }

    /// Both routers and both tables.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Apply `f` to the router (for `route_layer`s); the table is unchanged. `f` must not
    /// add routes: add them through [`Routes`].
    pub fn map_router(mut self, f: impl FnOnce(Router<State>) -> Router<State>) -> Self {
        self.router = f(self.router);
        self
    }

    /// The routes registered so far.
    pub fn table(&self) -> &[Route] {
        &self.table
    }

    /// The router and the table.
    pub fn into_parts(self) -> (Router<State>, Vec<Route>) {
        (self.router, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok() -> &'static str {
        "ok"
    }

    #[test]
    fn every_registration_is_in_the_table() {
        let a = Routes::new().get("/a", ok).post("/a", ok);
        let b = Routes::new()
            .delete("/b/{id}", ok)
            .any("/c", ok)
            .put("/d", ok);
        let routes = a.merge(b).map_router(|r| r);
        let mut table = routes.table().to_vec();
        table.sort();
        let pairs: Vec<(&str, &str)> = table.iter().map(|r| (r.method, r.path)).collect();
        assert_eq!(
            pairs,
            [
                ("ANY", "/c"),
                ("DELETE", "/b/{id}"),
                ("GET", "/a"),
                ("POST", "/a"),
                ("PUT", "/d"),
            ]
        );
    }
}
