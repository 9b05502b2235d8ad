//! The authorization matrix: every operation of the served OpenAPI document, called by every
//! kind of caller (no token, a malformed, an expired or a revoked token, each role of the
//! organization, and the owner of another organization), answers the documented status with
//! the documented code; and a caller who is refused, or who belongs to another organization,
//! changes nothing (the organization's state is read back by its owner before and after, and
//! the database's row counts are compared).
//!
//! The operations are read from `/api/v1/openapi.json` at run time and compared with the table
//! below in both directions, so a new endpoint without a row (or a row for an endpoint that is
//! gone) fails the test. Path ids are real: every cell gets a resource created for it in the
//! first organization (a fresh one for each caller that is allowed to change it).

use crate::both_backends;
use crate::helpers::*;
use axum::Router;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

both_backends!(
    every_operation_answers_every_kind_of_caller_with_the_documented_status,
    candidate_routes_accept_only_their_own_token,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    Malformed,
    Expired,
    Revoked,
    Viewer,
    Member,
    Admin,
    Owner,
    OtherOrgOwner,
}

/// The columns of [`MATRIX`], in order.
const CALLERS: [Caller; 9] = [
    Caller::NoToken,
    Caller::Malformed,
    Caller::Expired,
    Caller::Revoked,
    Caller::Viewer,
    Caller::Member,
    Caller::Admin,
    Caller::Owner,
    Caller::OtherOrgOwner,
];

struct Row {
    method: &'static str,
    path: &'static str,
    /// The status each caller of [`CALLERS`] gets.
    expected: [u16; 9],
}

const fn row(method: &'static str, path: &'static str, expected: [u16; 9]) -> Row {
    Row {
        method,
        path,
        expected,
    }
}

/// Expected statuses. Codes follow from the status and the caller: 401 `unauthenticated`
/// without a token, `invalid_token` for a malformed or revoked one, `token_expired`; 403
/// `insufficient_role`; 404 `not_found`. Another organization's owner gets 404 for every
/// resource of the first organization; its idempotent deletes answer 204 exactly as for an id
/// that does not exist (and delete nothing), and on collections it acts in its own
/// organization. Candidate routes authenticate with the invite token in the path, so a bearer
/// token neither helps nor hurts there (their own credentials are tested in
/// `candidate_routes_accept_only_their_own_token`).
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //                                                                  none bad  exp  rev  view memb admn ownr other
    row("POST",   "/api/v1/auth/signup",                               [201, 201, 201, 201, 201, 201, 201, 201, 201]),
    row("POST",   "/api/v1/auth/tokens",                               [201, 201, 201, 201, 201, 201, 201, 201, 201]),
    row("DELETE", "/api/v1/auth/tokens/current",                       [401, 401, 401, 401, 204, 204, 204, 204, 204]),
    row("GET",    "/api/v1/auth/tokens",                               [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("DELETE", "/api/v1/auth/tokens",                               [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("DELETE", "/api/v1/auth/tokens/{id}",                          [401, 401, 401, 401, 204, 204, 204, 204, 204]),
    row("GET",    "/api/v1/me",                                        [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("PUT",    "/api/v1/me/password",                               [401, 401, 401, 401, 400, 400, 400, 400, 400]),
    row("POST",   "/api/v1/organizations",                             [401, 401, 401, 401, 201, 201, 201, 201, 201]),
    row("GET",    "/api/v1/organizations",                             [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/members",                                   [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("POST",   "/api/v1/members",                                   [401, 401, 401, 401, 403, 403, 201, 201, 201]),
    row("PATCH",  "/api/v1/members/{user_id}",                         [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("DELETE", "/api/v1/members/{user_id}",                         [401, 401, 401, 401, 403, 403, 204, 204, 204]),
    row("POST",   "/api/v1/items",                                     [401, 401, 401, 401, 403, 201, 201, 201, 201]),
    row("GET",    "/api/v1/items",                                     [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/items/{id}",                                [401, 401, 401, 401, 200, 200, 200, 200, 404]),
    row("PATCH",  "/api/v1/items/{id}",                                [401, 401, 401, 401, 403, 200, 200, 200, 404]),
    row("DELETE", "/api/v1/items/{id}",                                [401, 401, 401, 401, 403, 204, 204, 204, 204]),
    row("PATCH",  "/api/v1/items/{id}/qty",                            [401, 401, 401, 401, 403, 200, 200, 200, 404]),
    row("GET",    "/api/v1/items/{id}/history",                        [401, 401, 401, 401, 200, 200, 200, 200, 404]),
    row("POST",   "/api/v1/inventory/adjustments",                     [401, 401, 401, 401, 403, 200, 200, 200, 400]),
    row("POST",   "/api/v1/events",                                    [401, 401, 401, 401, 403, 201, 201, 201, 201]),
    row("GET",    "/api/v1/events",                                    [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/events/{id}",                               [401, 401, 401, 401, 200, 200, 200, 200, 404]),
    row("GET",    "/api/v1/events/subscribe",                          [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("POST",   "/api/v1/streams/{stream}/events",                   [401, 401, 401, 401, 403, 201, 201, 201, 201]),
    row("GET",    "/api/v1/streams/{stream}",                          [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/stats",                                     [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("POST",   "/api/v1/webhooks",                                  [401, 401, 401, 401, 403, 403, 201, 201, 201]),
    row("GET",    "/api/v1/webhooks",                                  [401, 401, 401, 401, 403, 403, 200, 200, 200]),
    row("GET",    "/api/v1/webhooks/{id}",                             [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("DELETE", "/api/v1/webhooks/{id}",                             [401, 401, 401, 401, 403, 403, 204, 204, 204]),
    row("GET",    "/api/v1/webhooks/{id}/deliveries",                  [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
                                                                       [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/assessments",                               [401, 401, 401, 401, 403, 403, 201, 201, 201]),
    row("GET",    "/api/v1/assessments",                               [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/assessments/import-template.csv",           [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/assessments/import-template.xlsx",          [401, 401, 401, 401, 200, 200, 200, 200, 200]),
    row("GET",    "/api/v1/assessments/{id}",                          [401, 401, 401, 401, 200, 200, 200, 200, 404]),
    row("PATCH",  "/api/v1/assessments/{id}",                          [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/assessments/{id}/questions",                [401, 401, 401, 401, 403, 403, 201, 201, 404]),
    row("PATCH",  "/api/v1/assessments/{id}/questions/{question_id}",  [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("DELETE", "/api/v1/assessments/{id}/questions/{question_id}",  [401, 401, 401, 401, 403, 403, 204, 204, 404]),
    row("PUT",    "/api/v1/assessments/{id}/questions/order",          [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/assessments/{id}/questions/import",         [401, 401, 401, 401, 403, 403, 201, 201, 404]),
    row("POST",   "/api/v1/assessments/{id}/publish",                  [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/assessments/{id}/close",                    [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/assessments/{id}/archive",                  [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/assessments/{id}/revise",                   [401, 401, 401, 401, 403, 403, 201, 201, 404]),
    row("POST",   "/api/v1/assessments/{id}/invites",                  [401, 401, 401, 401, 403, 403, 201, 201, 404]),
    row("GET",    "/api/v1/assessments/{id}/invites",                  [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("DELETE", "/api/v1/assessments/{id}/invites/{invite_id}",      [401, 401, 401, 401, 403, 403, 204, 204, 204]),
    row("POST",   "/api/v1/assessments/{id}/share-link",               [401, 401, 401, 401, 403, 403, 201, 201, 404]),
    row("DELETE", "/api/v1/assessments/{id}/share-link",               [401, 401, 401, 401, 403, 403, 204, 204, 404]),
    row("GET",    "/api/v1/assessments/{id}/submissions",              [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("GET",    "/api/v1/assessments/{id}/results.csv",              [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("GET",    "/api/v1/submissions/{id}",                          [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("POST",   "/api/v1/submissions/{id}/review",                   [401, 401, 401, 401, 403, 403, 200, 200, 404]),
    row("GET",    "/api/v1/public/invites/{token}",                    [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    row("POST",   "/api/v1/public/invites/{token}/start",              [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    row("PUT",    "/api/v1/public/invites/{token}/answers",            [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    row("POST",   "/api/v1/public/invites/{token}/submit",             [201, 201, 201, 201, 201, 201, 201, 201, 201]),
    row("POST",   "/api/v1/public/share/{token}/register",             [201, 201, 201, 201, 201, 201, 201, 201, 201]),
    row("GET",    "/livez",                                            [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    row("GET",    "/readyz",                                           [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    row("GET",    "/metrics",                                          [200, 200, 200, 200, 200, 200, 200, 200, 200]),
];

/// The code a refusal carries. (The 400s of the table: another organization's item ids in a
/// batch are unknown lines, `adjustments_rejected`, exactly as ids that do not exist; the
/// password change's wrong current password is a `validation_failed` for every caller.)
fn code_of(path: &str, caller: Caller, status: u16) -> Option<&'static str> {
    match (status, caller) {
        (401, Caller::NoToken) => Some("unauthenticated"),
        (401, Caller::Expired) => Some("token_expired"),
        (401, _) => Some("invalid_token"),
        (403, _) => Some("insufficient_role"),
        (404, _) => Some("not_found"),
        (400, _) if path == "/api/v1/me/password" => Some("validation_failed"),
        (400, Caller::OtherOrgOwner) => Some("adjustments_rejected"),
        _ => None,
    }
}

/// Everything the matrix needs: the first organization with one member of every role, the
/// refused tokens, another organization, and a webhook receiver.
pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) owner: Account,
    viewer: Account,
    member: Account,
    admin: Account,
    other: Account,
    viewer_token: String,
    member_token: String,
    admin_token: String,
    expired_token: String,
    revoked_token: String,
    receiver_url: String,
    unique: AtomicUsize,
}

/// One request of a cell: the concrete path, body and headers.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) path: String,
    pub(crate) body: Body,
    pub(crate) if_match: bool,
    /// Paths the owner reads back to prove a refused request changed nothing.
    pub(crate) reads: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    None,
    Json(Value),
    Csv(&'static str),
}

impl Req {
    /// A request without a body.
    fn bare(path: String, reads: Vec<String>) -> Self {
        Self {
            path,
            body: Body::None,
            if_match: false,
            reads,
        }
    }

    fn json(path: String, body: Value, reads: Vec<String>) -> Self {
        Self {
            path,
            body: Body::Json(body),
            if_match: false,
            reads,
        }
    }

    fn if_match(mut self) -> Self {
        self.if_match = true;
        self
    }
}

const IMPORT_CSV: &str = "type,prompt,options,correct,points\nsingle_choice,Imported?,yes|no,1,1\n";

impl World {
    pub(crate) async fn new(backend: Backend) -> Self {
        let receiver_url = start_receiver().await;
        let app = spawn_app_with(
            backend,
            |c| {
                c.webhooks.allow_private_targets = true;
                c.webhooks.poll_ms = 20;
                // Every cell that publishes uses a slot; the quota has its own tests.
                c.assessments.published_max = 100_000;
            },
            Router::new(),
        )
        .await;
        // The expired token: the owner's signup token, issued 31 days ago (30-day lifetime).
        app.clock.advance(time::Duration::days(-31));
        let owner = app.sign_up("owner@a.example.com").await;
        let expired_token = owner.token.clone();
        app.clock.advance(time::Duration::days(31));
        let mut owner = owner;
        owner.token = app.log_in(&owner, &owner.org_id).await;
        let revoked_token = app.log_in(&owner, &owner.org_id).await;
        let response = app
            .request(
                Method::DELETE,
                "/api/v1/auth/tokens/current",
                Some(&revoked_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "revoke");
        let viewer = app.sign_up("viewer@a.example.com").await;
        let member = app.sign_up("member@a.example.com").await;
        let admin = app.sign_up("admin@a.example.com").await;
        let viewer_token = app.add_member(&owner, &viewer, "viewer").await;
        let member_token = app.add_member(&owner, &member, "member").await;
        let admin_token = app.add_member(&owner, &admin, "admin").await;
        let other = app.sign_up("owner@b.example.com").await;
        Self {
            app,
            owner,
            viewer,
            member,
            admin,
            other,
            viewer_token,
            member_token,
            admin_token,
            expired_token,
            revoked_token,
            receiver_url,
            unique: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> usize {
        self.unique.fetch_add(1, Ordering::SeqCst)
    }

    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::NoToken => None,
            Caller::Malformed => Some("tl_not-a-real-token".to_owned()),
            Caller::Expired => Some(self.expired_token.clone()),
            Caller::Revoked => Some(self.revoked_token.clone()),
            Caller::Viewer => Some(self.viewer_token.clone()),
            Caller::Member => Some(self.member_token.clone()),
            Caller::Admin => Some(self.admin_token.clone()),
            Caller::Owner => Some(self.owner.token.clone()),
            Caller::OtherOrgOwner => Some(self.other.token.clone()),
        }
    }

    /// A token of its own for a caller (for the route that revokes the token it is called with).
    async fn fresh_token(&self, caller: Caller) -> Option<String> {
        let (account, org) = match caller {
            Caller::Viewer => (&self.viewer, &self.owner.org_id),
            Caller::Member => (&self.member, &self.owner.org_id),
            Caller::Admin => (&self.admin, &self.owner.org_id),
            Caller::Owner => (&self.owner, &self.owner.org_id),
            Caller::OtherOrgOwner => (&self.other, &self.other.org_id),
            _ => return self.token(caller),
        };
        Some(self.app.log_in(account, org).await)
    }

    async fn send(&self, method: &Method, req: &Req, token: Option<&str>) -> reqwest::Response {
        let mut builder = self.app.request(method.clone(), &req.path, token);
        if req.if_match {
            builder = builder.header("if-match", "*");
        }
        builder = match &req.body {
            Body::None => builder,
            Body::Json(body) => builder.json(body),
            Body::Csv(csv) => builder.header("content-type", "text/csv").body(*csv),
        };
        builder.send().await.unwrap()
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let response = self
            .app
            .send_json(method.clone(), path, Some(&self.owner.token), &body)
            .await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    // ---- fixtures, created by the first organization's owner ----

    async fn item(&self) -> String {
        let n = self.next();
        let item = self
            .app
            .create_item(&self.owner.token, &format!("Item {n}"), 10)
            .await;
        item["id"].as_str().unwrap().to_owned()
    }

    async fn member_of_a(&self) -> String {
        let account = self
            .app
            .sign_up(&format!("m{}@a.example.com", self.next()))
            .await;
        self.app.add_member(&self.owner, &account, "member").await;
        account.user_id
    }

    async fn event(&self) -> String {
        let body = json!({"type": "matrix.tested", "stream": self.stream_name(), "data": {}});
        let appended = self.ok(Method::POST, "/api/v1/events", body).await;
        appended["id"].as_str().unwrap().to_owned()
    }

    /// Stream names carry a UUID, so the "does not exist" probe can swap it for another.
    fn stream_name(&self) -> String {
        format!("s-{}", uuid::Uuid::now_v7())
    }

    async fn stream(&self) -> String {
        let name = self.stream_name();
        let body = json!({"events": [{"type": "matrix.tested", "data": {}}]});
        self.ok(
            Method::POST,
            &format!("/api/v1/streams/{name}/events"),
            body,
        )
        .await;
        name
    }

    async fn webhook(&self, event_types: &[&str]) -> String {
        let body = json!({"url": self.receiver_url, "event_types": event_types});
        let created = self.ok(Method::POST, "/api/v1/webhooks", body).await;
        created["id"].as_str().unwrap().to_owned()
    }

    /// A webhook with one (delivered) delivery: it listens to item deletions only, so the
    /// rest of the matrix does not feed it.
    async fn delivery(&self) -> (String, String) {
        let hook = self.webhook(&["inventory.item.deleted"]).await;
        let item = self.item().await;
        let response = self
            .app
            .request(
                Method::DELETE,
                &format!("/api/v1/items/{item}"),
                Some(&self.owner.token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let path = format!("/api/v1/webhooks/{hook}/deliveries");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let delivery = loop {
            let list: Value = self
                .app
                .get(&path, &self.owner.token)
                .await
                .json()
                .await
                .unwrap();
            // Delivered, not merely listed: a redelivery while its attempt runs is a 409.
            if list["data"][0]["state"] == "succeeded" {
                break list["data"][0]["id"].as_str().unwrap().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no delivered delivery for {hook}: {list}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        (hook, delivery)
    }

    /// A draft with one question: (assessment id, question id).
    async fn draft(&self) -> (String, String) {
        let body = json!({"title": format!("Assessment {}", self.next()), "time_limit_minutes": 30,
            "passing_score_percent": 50, "show_score_to_candidate": false});
        let a = self.ok(Method::POST, "/api/v1/assessments", body).await;
        let id = a["id"].as_str().unwrap().to_owned();
        let q = self
            .ok(
                Method::POST,
                &format!("/api/v1/assessments/{id}/questions"),
                json!({"type": "single_choice", "prompt": "2+2?", "options": ["3", "4"], "correct": 1}),
            )
            .await;
        (id, q["id"].as_str().unwrap().to_owned())
    }

    async fn transition(&self, id: &str, to: &str) {
        self.ok(
            Method::POST,
            &format!("/api/v1/assessments/{id}/{to}"),
            json!({}),
        )
        .await;
    }

    async fn published(&self) -> String {
        let (id, _) = self.draft().await;
        self.transition(&id, "publish").await;
        id
    }

    async fn closed(&self) -> String {
        let id = self.published().await;
        self.transition(&id, "close").await;
        id
    }

    /// An invite to a published assessment: (assessment id, invite id, token).
    async fn invite(&self, assessment: &str) -> (String, String) {
        let body = json!({"candidates": [{"email": format!("cand{}@example.com", self.next())}]});
        let created = self
            .ok(
                Method::POST,
                &format!("/api/v1/assessments/{assessment}/invites"),
                body,
            )
            .await;
        let invite = &created["invites"][0];
        (
            invite["id"].as_str().unwrap().to_owned(),
            invite["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn candidate(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A submission: (assessment id, submission id).
    async fn submission(&self) -> (String, String) {
        let assessment = self.published().await;
        let (_, token) = self.invite(&assessment).await;
        self.candidate(
            Method::POST,
            &format!("/api/v1/public/invites/{token}/start"),
            None,
        )
        .await;
        self.candidate(
            Method::POST,
            &format!("/api/v1/public/invites/{token}/submit"),
            Some(json!({})),
        )
        .await;
        let list = self
            .app
            .get(
                &format!("/api/v1/assessments/{assessment}/submissions"),
                &self.owner.token,
            )
            .await
            .json::<Value>()
            .await
            .unwrap();
        let submission = list["data"][0]["id"].as_str().unwrap().to_owned();
        (assessment, submission)
    }

    /// The concrete request for one cell of `method template`, with the resources it names
    /// freshly created in the first organization.
    pub(crate) async fn prepare(&self, method: &str, template: &str) -> Req {
        let fresh_email = || format!("new{}@example.com", self.next());
        match (method, template) {
            ("POST", "/api/v1/auth/signup") => Req::json(
                template.into(),
                json!({"email": fresh_email(), "password": PASSWORD, "organization_name": "New"}),
                vec![],
            ),
            ("POST", "/api/v1/auth/tokens") => Req::json(
                template.into(),
                json!({"email": self.owner.email, "password": PASSWORD}),
                vec![],
            ),
            ("DELETE", "/api/v1/auth/tokens/current")
            | ("GET" | "DELETE", "/api/v1/auth/tokens")
            | ("GET", "/api/v1/me" | "/api/v1/organizations" | "/api/v1/members")
            | ("GET", "/api/v1/items" | "/api/v1/events" | "/api/v1/stats")
            | ("GET", "/api/v1/webhooks" | "/api/v1/assessments")
            | ("GET", "/api/v1/assessments/import-template.csv")
            | ("GET", "/api/v1/assessments/import-template.xlsx")
            | ("GET", "/livez" | "/readyz" | "/metrics") => Req::bare(template.into(), vec![]),
            ("GET", "/api/v1/events/subscribe") => Req::bare(format!("{template}?after=0"), vec![]),
            // A wrong current password: every caller with a working token gets as far as
            // the check (a change would revoke the tokens the rest of the matrix uses).
            ("PUT", "/api/v1/me/password") => Req::json(
                template.into(),
                json!({"current_password": "not the password", "new_password": "a new passphrase"}),
                vec![],
            ),
            ("POST", "/api/v1/organizations") => {
                Req::json(template.into(), json!({"name": "Another"}), vec![])
            }
            ("POST", "/api/v1/members") => {
                let account = self.app.sign_up(&fresh_email()).await;
                Req::json(
                    template.into(),
                    json!({"email": account.email, "role": "member"}),
                    vec![],
                )
            }
            ("DELETE", "/api/v1/auth/tokens/{id}") => {
                // A token of the first organization's owner: only the owner's own call
                // revokes it (the others answer 204 and change nothing).
                let body = json!({"email": self.owner.email, "password": PASSWORD, "organization_id": self.owner.org_id});
                let response = self
                    .app
                    .send_json(Method::POST, "/api/v1/auth/tokens", None, &body)
                    .await;
                let token: Value = response.json().await.unwrap();
                let id = token["id"].as_str().unwrap().to_owned();
                Req::bare(format!("/api/v1/auth/tokens/{id}"), vec![])
            }
            ("PATCH" | "DELETE", "/api/v1/members/{user_id}") => {
                let user = self.member_of_a().await;
                let path = format!("/api/v1/members/{user}");
                match method {
                    "PATCH" => Req::json(path, json!({"role": "viewer"}), vec![]),
                    _ => Req::bare(path, vec![]),
                }
            }
            ("POST", "/api/v1/items") => {
                let name = format!("Posted {}", self.next());
                Req::json(template.into(), json!({"name": name, "qty": 1}), vec![])
            }
            (_, "/api/v1/items/{id}" | "/api/v1/items/{id}/qty" | "/api/v1/items/{id}/history") => {
                let id = self.item().await;
                let path = template.replace("{id}", &id);
                let reads = vec![
                    format!("/api/v1/items/{id}"),
                    format!("/api/v1/items/{id}/history"),
                ];
                match (method, template) {
                    ("PATCH", "/api/v1/items/{id}") => {
                        let name = format!("Renamed {}", self.next());
                        Req::json(path, json!({"name": name}), reads).if_match()
                    }
                    ("PATCH", _) => Req::json(path, json!({"delta": -1}), reads),
                    _ => Req::bare(path, reads),
                }
            }
            ("POST", "/api/v1/inventory/adjustments") => {
                let id = self.item().await;
                Req::json(
                    template.into(),
                    json!({"reason": "count", "adjustments": [{"item_id": id, "delta": 2}]}),
                    vec![format!("/api/v1/items/{id}")],
                )
            }
            ("POST", "/api/v1/events") => Req::json(
                template.into(),
                json!({"type": "matrix.posted", "data": {"n": 1}}),
                vec![],
            ),
            ("GET", "/api/v1/events/{id}") => {
                let id = self.event().await;
                Req::bare(format!("/api/v1/events/{id}"), vec![])
            }
            ("POST", "/api/v1/streams/{stream}/events") => {
                let stream = self.stream().await;
                Req::json(
                    format!("/api/v1/streams/{stream}/events"),
                    json!({"events": [{"type": "matrix.posted", "data": {}}]}),
                    vec![format!("/api/v1/streams/{stream}")],
                )
            }
            ("GET", "/api/v1/streams/{stream}") => {
                let stream = self.stream().await;
                Req::bare(format!("/api/v1/streams/{stream}"), vec![])
            }
            ("POST", "/api/v1/webhooks") => Req::json(
                template.into(),
                json!({"url": self.receiver_url, "event_types": ["nothing.*"]}),
                vec![],
            ),
            (_, "/api/v1/webhooks/{id}" | "/api/v1/webhooks/{id}/deliveries") => {
                let id = self.webhook(&["nothing.*"]).await;
                let reads = vec![format!("/api/v1/webhooks/{id}")];
                Req::bare(template.replace("{id}", &id), reads)
            }
            ("POST", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver") => {
                let (hook, delivery) = self.delivery().await;
                Req::json(
                    format!("/api/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"),
                    json!({}),
                    vec![format!("/api/v1/webhooks/{hook}/deliveries")],
                )
            }
            ("POST", "/api/v1/assessments") => Req::json(
                template.into(),
                json!({"title": "Posted", "time_limit_minutes": 10, "passing_score_percent": 50}),
                vec![],
            ),
            (_, "/api/v1/assessments/{id}")
            | (_, "/api/v1/assessments/{id}/questions")
            | (_, "/api/v1/assessments/{id}/questions/{question_id}")
            | (_, "/api/v1/assessments/{id}/questions/order")
            | (_, "/api/v1/assessments/{id}/questions/import")
            | ("POST", "/api/v1/assessments/{id}/publish") => {
                let (id, question) = self.draft().await;
                let path = template
                    .replace("{id}", &id)
                    .replace("{question_id}", &question);
                let reads = vec![format!("/api/v1/assessments/{id}")];
                let question_body =
                    json!({"type": "true_false", "prompt": "Sky is blue", "correct": true});
                match (method, template) {
                    ("PATCH", "/api/v1/assessments/{id}") => {
                        Req::json(path, json!({"title": "Renamed"}), reads).if_match()
                    }
                    ("POST", "/api/v1/assessments/{id}/questions") => {
                        Req::json(path, question_body, reads)
                    }
                    ("PATCH", _) => Req::json(path, question_body, reads).if_match(),
                    ("DELETE", _) => Req::bare(path, reads).if_match(),
                    ("PUT", _) => {
                        Req::json(path, json!({"question_ids": [question]}), reads).if_match()
                    }
                    ("POST", "/api/v1/assessments/{id}/questions/import") => Req {
                        path,
                        body: Body::Csv(IMPORT_CSV),
                        if_match: false,
                        reads,
                    },
                    ("POST", _) => Req::json(path, json!({}), reads),
                    _ => Req::bare(path, reads),
                }
            }
            ("POST", "/api/v1/assessments/{id}/close" | "/api/v1/assessments/{id}/revise")
            | (_, "/api/v1/assessments/{id}/invites")
            | (_, "/api/v1/assessments/{id}/share-link") => {
                let id = self.published().await;
                let path = template.replace("{id}", &id);
                let reads = vec![
                    format!("/api/v1/assessments/{id}"),
                    format!("/api/v1/assessments/{id}/invites"),
                ];
                match (method, template) {
                    ("POST", "/api/v1/assessments/{id}/invites") => Req::json(
                        path,
                        json!({"candidates": [{"email": fresh_email()}]}),
                        reads,
                    ),
                    ("POST", _) => Req::json(path, json!({}), reads),
                    ("DELETE", _) => {
                        // Something to remove.
                        self.ok(Method::POST, &path, json!({})).await;
                        Req::bare(path, reads)
                    }
                    _ => Req::bare(path, reads),
                }
            }
            ("POST", "/api/v1/assessments/{id}/archive") => {
                let id = self.closed().await;
                Req::json(
                    template.replace("{id}", &id),
                    json!({}),
                    vec![format!("/api/v1/assessments/{id}")],
                )
            }
            ("DELETE", "/api/v1/assessments/{id}/invites/{invite_id}") => {
                let id = self.published().await;
                let (invite, _) = self.invite(&id).await;
                Req::bare(
                    format!("/api/v1/assessments/{id}/invites/{invite}"),
                    vec![format!("/api/v1/assessments/{id}/invites")],
                )
            }
            (
                "GET",
                "/api/v1/assessments/{id}/submissions" | "/api/v1/assessments/{id}/results.csv",
            ) => {
                let (id, _) = self.submission().await;
                Req::bare(
                    template.replace("{id}", &id),
                    vec![format!("/api/v1/assessments/{id}/submissions")],
                )
            }
            (_, "/api/v1/submissions/{id}" | "/api/v1/submissions/{id}/review") => {
                let (_, id) = self.submission().await;
                let path = template.replace("{id}", &id);
                let reads = vec![format!("/api/v1/submissions/{id}")];
                match method {
                    "POST" => Req::json(path, json!({"decision": "verify"}), reads),
                    _ => Req::bare(path, reads),
                }
            }
            (_, "/api/v1/public/invites/{token}")
            | (_, "/api/v1/public/invites/{token}/start")
            | (_, "/api/v1/public/invites/{token}/answers")
            | (_, "/api/v1/public/invites/{token}/submit") => {
                let id = self.published().await;
                let (_, token) = self.invite(&id).await;
                if template.ends_with("/answers") || template.ends_with("/submit") {
                    self.candidate(
                        Method::POST,
                        &format!("/api/v1/public/invites/{token}/start"),
                        None,
                    )
                    .await;
                }
                let path = template.replace("{token}", &token);
                match method {
                    "PUT" => Req::json(path, json!({"answers": {}}), vec![]),
                    "POST" if template.ends_with("/submit") => Req::json(path, json!({}), vec![]),
                    _ => Req::bare(path, vec![]),
                }
            }
            ("POST", "/api/v1/public/share/{token}/register") => {
                let id = self.published().await;
                let link = self
                    .ok(
                        Method::POST,
                        &format!("/api/v1/assessments/{id}/share-link"),
                        json!({}),
                    )
                    .await;
                let token = link["token"].as_str().unwrap();
                Req::json(
                    template.replace("{token}", token),
                    json!({"email": fresh_email()}),
                    vec![],
                )
            }
            _ => panic!("no fixture for {method} {template}"),
        }
    }

    /// Waits until the background work that follows a change is done (outbox published,
    /// webhook deliveries settled), so two reads of a state that nobody changed are equal.
    async fn settle(&self) {
        let app = &self.app;
        assert!(
            eventually(30, || async {
                app.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .await
                    == 0
                    && app
                        .scalar("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'")
                        .await
                        == 0
            })
            .await,
            "the outbox and webhook deliveries settle"
        );
    }

    /// The first organization as its owner sees it: its collections and `reads`.
    pub(crate) async fn state_of_a(&self, reads: &[String]) -> Vec<String> {
        self.settle().await;
        let mut paths: Vec<String> = [
            "/api/v1/members?limit=200",
            "/api/v1/items?limit=200",
            "/api/v1/assessments?limit=200",
            "/api/v1/webhooks?limit=200",
            "/api/v1/stats",
            "/api/v1/organizations?limit=200",
        ]
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
        paths.extend(reads.iter().cloned());
        let mut out = Vec::new();
        for path in paths {
            let response = self.app.get(&path, &self.owner.token).await;
            out.push(format!(
                "{path} → {} {}",
                response.status(),
                response.text().await.unwrap()
            ));
        }
        out
    }

    /// Row counts of every table a request can add to or remove from.
    pub(crate) async fn counts(&self) -> Vec<(String, i64)> {
        let mut out = self.app.snapshot().await;
        for table in [
            "webhooks",
            "webhook_deliveries",
            "assessments",
            "assessment_questions",
            "invites",
            "attempts",
            "submissions",
            "submission_reviews",
        ] {
            out.push((table.to_owned(), self.app.count(table).await));
        }
        out
    }
}

/// A webhook receiver that accepts everything.
async fn start_receiver() -> String {
    let app = Router::new().route(
        "/hook",
        post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/hook")
}

/// Every UUID in `text`.
fn uuids_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        let window = &bytes[i..i + 36];
        let found = std::str::from_utf8(window)
            .ok()
            .filter(|s| s.as_bytes()[8] == b'-' && uuid::Uuid::parse_str(s).is_ok());
        match found {
            Some(id) => {
                out.insert(id.to_ascii_lowercase());
                i += 36;
            }
            None => i += 1,
        }
    }
    out
}

/// The same request with every UUID in its path and body replaced by a new one: it names
/// resources that do not exist.
fn with_unknown_ids(req: &Req) -> Option<Req> {
    let body = match &req.body {
        Body::Json(value) => value.to_string(),
        _ => String::new(),
    };
    let ids: BTreeSet<String> = uuids_in(&req.path)
        .into_iter()
        .chain(uuids_in(&body))
        .collect();
    if ids.is_empty() {
        return None;
    }
    let (mut path, mut body_text) = (req.path.clone(), body);
    for id in ids {
        let unknown = uuid::Uuid::now_v7().to_string();
        path = path.replace(&id, &unknown);
        body_text = body_text.replace(&id, &unknown);
    }
    Some(Req {
        path,
        body: match &req.body {
            Body::Json(_) => Body::Json(serde_json::from_str(&body_text).unwrap()),
            other => other.clone(),
        },
        if_match: req.if_match,
        reads: vec![],
    })
}

/// Checks one response against the expected status and, for refusals, the code.
async fn check(
    response: reqwest::Response,
    method: &str,
    path: &str,
    caller: Caller,
    expected: u16,
) -> String {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = if headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    {
        // Endless; the headers are the answer.
        String::new()
    } else {
        response.text().await.unwrap()
    };
    assert_eq!(
        status, expected,
        "{method} {path} as {caller:?}: expected {expected}, got {status} {text}"
    );
    if let Some(code) = code_of(path, caller, status) {
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body["code"], code,
            "{method} {path} as {caller:?}: code in {text}"
        );
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{method} {path}"
        );
        if status == 401 {
            assert!(
                headers.contains_key("www-authenticate"),
                "{method} {path}: 401 without WWW-Authenticate"
            );
        }
    }
    text
}

/// The operations of the served OpenAPI document, with whether each declares bearer auth and
/// the statuses it documents.
pub(crate) async fn documented_operations(
    app: &TestApp,
) -> Vec<(String, String, bool, BTreeSet<u16>)> {
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ![
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                continue;
            }
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let statuses = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            out.push((method.to_ascii_uppercase(), path.clone(), secured, statuses));
        }
    }
    out
}

async fn every_operation_answers_every_kind_of_caller_with_the_documented_status(backend: Backend) {
    let w = World::new(backend).await;
    let documented = documented_operations(&w.app).await;
    let in_table: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let in_doc: BTreeSet<(String, String)> = documented
        .iter()
        .map(|(m, p, _, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(
        in_table.len(),
        MATRIX.len(),
        "every operation has exactly one row"
    );
    assert_eq!(
        in_doc.difference(&in_table).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations of the OpenAPI document without a matrix row"
    );
    assert_eq!(
        in_table.difference(&in_doc).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "matrix rows for operations the OpenAPI document does not have"
    );
    // Every expected status is documented for its operation, and the document declares bearer
    // auth exactly where a request without a token is refused.
    for (method, path, secured, statuses) in &documented {
        let row = MATRIX
            .iter()
            .find(|r| r.method == method && r.path == path)
            .unwrap();
        for status in row.expected {
            assert!(
                statuses.contains(&status),
                "{method} {path}: {status} is not documented ({statuses:?})"
            );
        }
        assert_eq!(
            *secured,
            row.expected[0] == 401,
            "{method} {path}: security declared iff a missing token is refused"
        );
    }

    let mut cells = 0;
    let mut unknown_id_probes = 0;
    let a_ids = uuids_in(&w.state_of_a(&[]).await.join("\n"));
    for row in MATRIX {
        let method = Method::from_bytes(row.method.as_bytes()).unwrap();
        let consumes_token = row.path == "/api/v1/auth/tokens/current";
        // A cell may change state when it succeeds, except another organization's owner on
        // the first organization's resources (its idempotent deletes answer 204 and must
        // delete nothing). Public routes (signup, login, candidates, operations) ignore bearer
        // tokens, so every caller succeeds there.
        let secured = row.expected[0] == 401;
        let changes = |i: usize| {
            (200..300).contains(&row.expected[i])
                && !(secured && CALLERS[i] == Caller::OtherOrgOwner && row.path.contains('{'))
        };

        // 1. Refused callers (and another organization's owner on the first organization's
        //    resources) against one shared fixture: nothing may change.
        let shared = w.prepare(row.method, row.path).await;
        let state_before = w.state_of_a(&shared.reads).await;
        let counts_before = w.counts().await;
        for (i, caller) in CALLERS.iter().enumerate() {
            if changes(i) || *caller == Caller::OtherOrgOwner {
                continue;
            }
            let response = w.send(&method, &shared, w.token(*caller).as_deref()).await;
            check(response, row.method, &shared.path, *caller, row.expected[i]).await;
            cells += 1;
        }
        // What another organization gets for this resource must be exactly what the owner
        // gets for a resource that does not exist: the answer reveals nothing.
        let other = 8;
        // (Not for creations: a new stream name is simply a new stream.)
        let creates = (200..300).contains(&row.expected[other])
            && matches!(row.method, "POST" | "PUT" | "PATCH");
        if secured
            && !creates
            && let Some(unknown) = with_unknown_ids(&shared)
        {
            let response = w.send(&method, &unknown, Some(&w.owner.token)).await;
            check(
                response,
                row.method,
                &unknown.path,
                Caller::OtherOrgOwner,
                row.expected[other],
            )
            .await;
            unknown_id_probes += 1;
        }
        if !changes(other) {
            let token = if consumes_token {
                w.fresh_token(Caller::OtherOrgOwner).await
            } else {
                w.token(Caller::OtherOrgOwner)
            };
            let response = w.send(&method, &shared, token.as_deref()).await;
            let text = check(
                response,
                row.method,
                &shared.path,
                Caller::OtherOrgOwner,
                row.expected[other],
            )
            .await;
            cells += 1;
            // The first organization's ids that the caller did not send must not come back.
            let sent: BTreeSet<String> = match &shared.body {
                Body::Json(body) => uuids_in(&format!("{} {body}", shared.path)),
                _ => uuids_in(&shared.path),
            };
            let leaked: Vec<_> = uuids_in(&text)
                .intersection(&a_ids)
                .filter(|id| !sent.contains(*id))
                .cloned()
                .collect();
            assert!(
                leaked.is_empty(),
                "{} {}: another organization saw {leaked:?}",
                row.method,
                shared.path
            );
        }
        assert_eq!(
            w.counts().await,
            counts_before,
            "{} {}: a refused request changed the database",
            row.method,
            row.path
        );
        assert_eq!(
            w.state_of_a(&shared.reads).await,
            state_before,
            "{} {}: a refused request changed the organization",
            row.method,
            row.path
        );

        // 2. Callers allowed to change things, each on a fixture of its own.
        for (i, caller) in CALLERS.iter().enumerate() {
            if !changes(i) {
                continue;
            }
            let req = w.prepare(row.method, row.path).await;
            let token = if consumes_token {
                w.fresh_token(*caller).await
            } else {
                w.token(*caller)
            };
            let response = w.send(&method, &req, token.as_deref()).await;
            let text = check(response, row.method, &req.path, *caller, row.expected[i]).await;
            cells += 1;
            if secured && *caller == Caller::OtherOrgOwner {
                let leaked: Vec<_> = uuids_in(&text).intersection(&a_ids).cloned().collect();
                assert!(
                    leaked.is_empty(),
                    "{} {}: another organization saw {leaked:?}",
                    row.method,
                    req.path
                );
            }
        }
    }
    assert_eq!(cells, MATRIX.len() * CALLERS.len(), "every cell ran");
    eprintln!(
        "authorization matrix: {} operations × {} callers = {cells} cells, {unknown_id_probes} unknown-id probes",
        MATRIX.len(),
        CALLERS.len()
    );
}

/// The candidate routes take the invite (or share-link) token in the path instead of a bearer
/// token. Every other credential is a 404 `not_found` (an expired invite that was never
/// started is a 410 `invite_expired`), a bearer token does not help, and a refused request
/// changes nothing.
async fn candidate_routes_accept_only_their_own_token(backend: Backend) {
    let w = World::new(backend).await;
    let assessment = w.published().await;
    let (revoked_invite, revoked) = w.invite(&assessment).await;
    let response = w
        .app
        .request(
            Method::DELETE,
            &format!("/api/v1/assessments/{assessment}/invites/{revoked_invite}"),
            Some(&w.owner.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let link = w
        .ok(
            Method::POST,
            &format!("/api/v1/assessments/{assessment}/share-link"),
            json!({}),
        )
        .await;
    let share = link["token"].as_str().unwrap().to_owned();
    // An invite of another organization's assessment.
    let other_assessment = {
        let body = json!({"title": "B", "time_limit_minutes": 5, "passing_score_percent": 50});
        let created: Value = w
            .app
            .post("/api/v1/assessments", &w.other.token, &body)
            .await
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let question = json!({"type": "true_false", "prompt": "B?", "correct": true});
        w.app
            .post(
                &format!("/api/v1/assessments/{id}/questions"),
                &w.other.token,
                &question,
            )
            .await;
        w.app
            .post(
                &format!("/api/v1/assessments/{id}/publish"),
                &w.other.token,
                &json!({}),
            )
            .await;
        id
    };
    let other_org_invite: Value = w
        .app
        .post(
            &format!("/api/v1/assessments/{other_assessment}/invites"),
            &w.other.token,
            &json!({"candidates": [{"email": "b-cand@example.com"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let other_org_token = other_org_invite["invites"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The candidate whose routes are called; the other organization's candidate must see
    // none of this assessment, and this assessment's candidate none of theirs.
    let (_, own) = w.invite(&assessment).await;
    let wrong = format!("tli_{}", "A".repeat(43));
    let refused: Vec<(&str, String)> = vec![
        ("missing", String::new()),
        ("malformed", "not-a-token".to_owned()),
        ("unknown", wrong.clone()),
        ("revoked", revoked.clone()),
        ("share-link token", share.clone()),
        ("employer bearer token", w.owner.token.clone()),
        ("over-long", format!("tli_{}", "A".repeat(100))),
    ];
    let routes: [(Method, &str, Option<Value>); 4] = [
        (Method::GET, "", None),
        (Method::POST, "/start", None),
        (Method::PUT, "/answers", Some(json!({"answers": {}}))),
        (Method::POST, "/submit", Some(json!({}))),
    ];
    let mut cells = 0;
    let counts = w.counts().await;
    for (method, suffix, body) in &routes {
        for (what, token) in &refused {
            for bearer in [None, Some(w.owner.token.as_str())] {
                let path = format!("/api/v1/public/invites/{token}{suffix}");
                let mut request = w.app.request(method.clone(), &path, bearer);
                if let Some(body) = body {
                    request = request.json(body);
                }
                let response = request.send().await.unwrap();
                let text =
                    check(response, method.as_str(), &path, Caller::OtherOrgOwner, 404).await;
                assert!(
                    !text.contains("tli_") && !text.contains("tls_"),
                    "{what}: {text}"
                );
                cells += 1;
            }
        }
    }
    for (what, token) in [
        ("missing", String::new()),
        ("unknown", format!("tls_{}", "A".repeat(43))),
        ("invite token", own.clone()),
        ("employer bearer token", w.owner.token.clone()),
    ] {
        let path = format!("/api/v1/public/share/{token}/register");
        let response = w
            .app
            .send_json(
                Method::POST,
                &path,
                None,
                &json!({"email": "reg@example.com"}),
            )
            .await;
        let text = check(response, "POST", &path, Caller::OtherOrgOwner, 404).await;
        assert!(!text.contains("tli_"), "{what}: {text}");
        cells += 1;
    }
    assert_eq!(
        w.counts().await,
        counts,
        "refused candidate requests changed nothing"
    );

    // The other organization's candidate sees their own assessment only.
    let theirs = w
        .candidate(
            Method::POST,
            &format!("/api/v1/public/invites/{other_org_token}/start"),
            None,
        )
        .await;
    assert_eq!(theirs["assessment"]["title"], "B");
    // The own token works on every route.
    let view = w
        .candidate(Method::GET, &format!("/api/v1/public/invites/{own}"), None)
        .await;
    assert_eq!(view["status"], "not_started");
    let started = w
        .candidate(
            Method::POST,
            &format!("/api/v1/public/invites/{own}/start"),
            None,
        )
        .await;
    assert!(
        !started.to_string().contains("B?"),
        "no question of the other organization"
    );
    w.candidate(
        Method::PUT,
        &format!("/api/v1/public/invites/{own}/answers"),
        Some(json!({"answers": {}})),
    )
    .await;
    let submitted = w
        .candidate(
            Method::POST,
            &format!("/api/v1/public/invites/{own}/submit"),
            Some(json!({})),
        )
        .await;
    assert_eq!(submitted["status"], "submitted");
    let registered = w
        .app
        .send_json(
            Method::POST,
            &format!("/api/v1/public/share/{share}/register"),
            None,
            &json!({"email": "reg@example.com"}),
        )
        .await;
    assert_eq!(registered.status(), 201);
    cells += 5;
    // An invite that expired before it was started: 410 on every route, nothing changes.
    let (_, expiring) = {
        let body = json!({"candidates": [{"email": "late@example.com"}], "expires_in_hours": 1});
        let created = w
            .ok(
                Method::POST,
                &format!("/api/v1/assessments/{assessment}/invites"),
                body,
            )
            .await;
        (
            created["invites"][0]["id"].as_str().unwrap().to_owned(),
            created["invites"][0]["token"].as_str().unwrap().to_owned(),
        )
    };
    w.app.clock.advance(time::Duration::hours(2));
    let counts = w.counts().await;
    for (method, suffix, body) in &routes {
        let path = format!("/api/v1/public/invites/{expiring}{suffix}");
        let mut request = w.app.request(method.clone(), &path, None);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_problem(response, 410, "invite_expired").await;
        cells += 1;
    }
    assert_eq!(w.counts().await, counts, "expired invites change nothing");
    eprintln!("candidate credential matrix: {cells} requests");
}
