//! The layer stack, and the route templates the metrics layer labels with.
//!
//! Outermost first, as the design fixes it:
//!
//! 1. [`MetricsLayer`]: times everything, rejections included.
//! 2. [`ShieldLayer`]: refuses blocked clients before anything is parsed,
//!    scores the rest.
//! 3. [`AuthLayer`]: verifies the token and records the user and tier, so
//!    that the next layer can key on them.
//! 4. [`RateLimitLayer`]: per user (else per IP), scaled by tier, with the
//!    report's policies (stricter for login and payments).
//! 5. [`RequestDecompressionLayer`]: encoded uploads decoded with a cap
//!    (413); plain bodies are capped by the handlers' body reader (413).
//! 6. Inside the router: [`CacheLayer`], then [`CompressionLayer`], then
//!    the handlers (with [`FieldSelectionLayer`] on `/users/{id}`). The
//!    compression layer sits *inside* the cache, so the cache stores
//!    already-compressed bytes, one entry per negotiated coding: compress
//!    once, serve many. The cache's `accept_encoding` hook is
//!    [`hasivu_compress::negotiate_headers`] with the compression layer's
//!    own preference, so both agree on the coding.
//!
//! [`MetricsLayer`]: hasivu_metrics::MetricsLayer
//! [`ShieldLayer`]: hasivu_ratelimit::shield::ShieldLayer
//! [`AuthLayer`]: crate::api::auth::AuthLayer
//! [`RateLimitLayer`]: hasivu_ratelimit::http::RateLimitLayer
//! [`RequestDecompressionLayer`]: hasivu_compress::RequestDecompressionLayer
//! [`CacheLayer`]: hasivu_cache::CacheLayer
//! [`CompressionLayer`]: hasivu_compress::CompressionLayer
//! [`FieldSelectionLayer`]: hasivu_compress::FieldSelectionLayer

use std::borrow::Cow;

use hasivu_metrics::{RequestHead, RouteExtractor};

/// The route template of a path, for metrics labels. The metrics layer
/// runs outside the router, where axum's `MatchedPath` is not known yet,
/// so the API names its own templates.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiRoutes;

/// The API's route templates.
pub const ROUTES: [&str; 10] = [
    "/health",
    "/auth/login",
    "/menu/daily",
    "/users/{id}",
    "/orders/create",
    "/payments/create",
    "/metrics",
    "/dashboard",
    "/dashboard/data",
    "/",
];

/// The template for a path, if it is one of the API's.
pub fn route_template(path: &str) -> Option<&'static str> {
    if let Some(id) = path.strip_prefix("/users/") {
        return (!id.is_empty() && !id.contains('/')).then_some("/users/{id}");
    }
    ROUTES.iter().copied().find(|r| *r == path)
}

impl RouteExtractor for ApiRoutes {
    fn route<'a>(&self, head: &RequestHead<'a>) -> Option<Cow<'a, str>> {
        route_template(head.uri().path()).map(Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_templates_and_unknown_ones_to_none() {
        assert_eq!(route_template("/users/42"), Some("/users/{id}"));
        assert_eq!(route_template("/users/42/x"), None);
        assert_eq!(route_template("/menu/daily"), Some("/menu/daily"));
        assert_eq!(route_template("/wp-login.php"), None);
    }
}
