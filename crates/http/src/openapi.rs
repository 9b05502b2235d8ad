//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations, then
//! completed with the error responses every operation can produce (derived from what the
//! operation has: a body can be malformed, a path id can be unknown, a secured operation can
//! be unauthenticated or forbidden), so the spec documents every status the server sends.

use crate::problem::{Problem, ProblemField, codes};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi as _};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Trueline API",
        description = "Inventory, event log and assessments on one backend that never lies. \
            Errors are RFC 9457 problem+json with a stable `code`; see the README's error-code table.",
    ),
    components(schemas(Problem, ProblemField)),
    modifiers(&BearerAuth),
    tags((name = "accounts", description = "Signup, tokens, organizations and members"),
         (name = "inventory", description = "Items, guarded quantity deltas, batch adjustments, history"),
         (name = "assessments", description = "Authoring, publishing, invites, submissions and review (employers)"),
         (name = "candidates", description = "Taking an assessment with an invite token"),
         (name = "webhooks", description = "Signed, retried, dead-lettered event deliveries to your URLs"),
         (name = "events", description = "The append-only event log: append, read, catch-up, subscribe"),
         (name = "operations", description = "Health, readiness and metrics")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tl_<43 base64url chars>")
                    .build(),
            ),
        );
    }
}

pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

fn problem_response(description: &str) -> RefOr<Response> {
    let content = Content::new(Some(Ref::from_schema_name("Problem")));
    RefOr::T(
        Response::builder()
            .description(description)
            .content("application/problem+json", content)
            .build(),
    )
}

fn codes_of(status: u16) -> String {
    codes::ALL
        .iter()
        .filter(|c| c.status.as_u16() == status)
        .map(|c| format!("`{}`", c.code))
        .collect::<Vec<_>>()
        .join(", ")
}

fn add(op: &mut Operation, status: u16, description: &str) {
    let key = status.to_string();
    op.responses
        .responses
        .entry(key)
        .or_insert_with(|| problem_response(&format!("{description} ({})", codes_of(status))));
}

/// The optional `Idempotency-Key` request header.
fn idempotency_key_parameter(description: &str) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255)),
        ))
        .build()
}

fn complete(path: &str, writes: bool, op: &mut Operation) {
    let has_body = op.request_body.is_some();
    let has_query = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter().any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)))
    });
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    // The idempotency layer wraps the authenticated routes but the events' (made
    // idempotent by client-chosen event ids): not signup, login or the candidates' routes.
    let events = path.starts_with("/api/v1/events") || path.starts_with("/api/v1/streams");
    // Nor the password change (its body is passwords: no fingerprint of it is stored).
    let keyed = writes && secured && !events && path != "/api/v1/me/password";
    // The one public write that hands out a secret takes keys too (`share_registration_layer`).
    let registration = path == "/api/v1/public/share/{token}/register";
    // A write that takes no body still refuses one that says something (`NoBody`).
    if has_body || has_query || writes {
        add(op, 400, "Invalid request");
    }
    if keyed || registration || (writes && secured && events) {
        let description = if registration {
            "Makes the registration safe to retry: the same key and request again get the \
             stored answer with its token. At least 26 characters, unguessable (a random \
             UUID or ULID): here the key is the candidate's secret (README, Idempotency keys)"
        } else if keyed {
            "Makes the request safe to retry: the same key and request again get the stored \
             response (README, Idempotency keys)"
        } else {
            "Names the events sent without an `id`: the same key and request again append \
             nothing and answer 200 with the original positions (README, Idempotency keys)"
        };
        op.parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(idempotency_key_parameter(description)));
    }
    if keyed || registration {
        // The idempotency layer runs on every POST and PATCH, and on authenticated PUTs.
        add(op, 400, "Invalid request or Idempotency-Key");
        add(op, 409, "Idempotency key in use or sealed to another token");
        add(op, 422, "Idempotency key used for another request");
    }
    if has_body || writes {
        add(
            op,
            408,
            "The body did not arrive in time; nothing was changed",
        );
        add(op, 413, "Body too large");
        add(op, 415, "Body is not JSON");
    }
    if secured {
        add(op, 401, "Missing, invalid or expired token");
        add(op, 403, "Role too low");
    }
    if path.contains('{') {
        add(op, 404, "Not found (or in another organization)");
    }
    // Rate limits and load shedding apply under `/api/` only (health and metrics never).
    if path.starts_with("/api/") {
        add(op, 429, "Rate limited; see Retry-After");
    }
    add(op, 500, "Server error; report the request id");
    add(
        op,
        503,
        "Dependency unavailable, overloaded, timed out or shutting down; see Retry-After",
    );
}

/// Adds the error responses every operation can produce.
pub fn finalize(mut api: OpenApi) -> OpenApi {
    for (path, item) in api.paths.paths.iter_mut() {
        for (writes, op) in [
            (false, &mut item.get),
            (true, &mut item.put),
            (true, &mut item.post),
            (false, &mut item.delete),
            (true, &mut item.patch),
            (false, &mut item.head),
            (false, &mut item.options),
            (false, &mut item.trace),
        ] {
            if let Some(op) = op {
                complete(path, writes, op);
            }
        }
    }
    api
}
