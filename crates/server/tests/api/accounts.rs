//! Accounts and tenancy over HTTP.

use crate::both_backends;
use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};

both_backends!(
    signup_returns_the_user_the_organization_and_a_working_token,
    signup_reports_every_invalid_field_and_creates_nothing,
    signup_with_a_taken_email_is_a_conflict_and_creates_nothing,
    login_issues_tokens_scoped_to_the_requested_organization,
    login_failures_are_rate_limited_per_email,
    revoked_tokens_are_refused,
    expired_tokens_are_refused_with_token_expired,
    missing_and_malformed_credentials_are_401_with_www_authenticate,
    members_can_be_added_listed_promoted_and_removed,
    roles_are_enforced_on_member_management,
    another_organizations_member_is_not_found_and_unchanged,
    the_last_owner_cannot_leave_or_be_demoted,
    two_owners_demoting_each_other_concurrently_leave_exactly_one_owner,
    organizations_can_be_created_and_listed_with_pagination,
    a_user_lists_and_revokes_their_own_tokens_and_no_one_elses,
    a_password_change_needs_the_current_password_and_revokes_every_other_token,
);

async fn signup_returns_the_user_the_organization_and_a_working_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"email": " Ann@Example.COM ", "password": PASSWORD, "organization_name": "  Ann's shop "});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/signup", None, &body)
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ann@example.com");
    assert_eq!(body["organization"]["name"], "Ann's shop");
    assert_eq!(body["organization"]["role"], "owner");
    let token = body["token"]["token"].as_str().unwrap();
    assert!(token.starts_with("tl_") && token.len() == 46, "{token}");
    assert_eq!(body["token"]["token_type"], "Bearer");
    let me: Value = app.get("/api/v1/me", token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "ann@example.com");
    assert_eq!(me["organization"]["id"], body["organization"]["id"]);
    assert_eq!(me["organization"]["role"], "owner");
    // Only the hash of the token is stored, and the password only as argon2id.
    assert_eq!(app.count("api_tokens").await, 1);
    let hashed = app
        .scalar("SELECT count(*) FROM users WHERE password_hash LIKE '$argon2id$%'")
        .await;
    assert_eq!(hashed, 1);
}

async fn signup_reports_every_invalid_field_and_creates_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.snapshot().await;
    let body = json!({"email": "not-an-email", "password": "short", "organization_name": "  "});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/signup", None, &body)
        .await;
    let problem = assert_problem(response, 400, "validation_failed").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/email", "/password", "/organization_name"]);
    let unknown = json!({"email": "a@example.com", "password": PASSWORD, "organization_name": "x", "admin": true});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/signup", None, &unknown)
        .await;
    let problem = assert_problem(response, 400, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "unknown_field");
    assert_eq!(problem["errors"][0]["field"], "/admin");
    let missing = json!({"email": "a@example.com"});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/signup", None, &missing)
        .await;
    let problem = assert_problem(response, 400, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "missing_field");
    assert_eq!(app.snapshot().await, before);
}

async fn signup_with_a_taken_email_is_a_conflict_and_creates_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let body =
        json!({"email": "ANN@example.com", "password": PASSWORD, "organization_name": "Again"});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/signup", None, &body)
        .await;
    assert_problem(response, 409, "email_taken").await;
    assert_eq!(app.snapshot().await, before);
}

async fn login_issues_tokens_scoped_to_the_requested_organization(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let response = app
        .post(
            "/api/v1/organizations",
            &ann.token,
            &json!({"name": "Second"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let second: Value = response.json().await.unwrap();
    let second_id = second["id"].as_str().unwrap();
    let token = app.log_in(&ann, second_id).await;
    let me: Value = app.get("/api/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["organization"]["id"], second_id);
    // Without organization_id: the first organization (by id).
    let body = json!({"email": "ann@example.com", "password": PASSWORD});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/tokens", None, &body)
        .await;
    assert_eq!(response.status(), 201);
    // An organization the user is not in is a 404.
    let bob = app.sign_up("bob@example.com").await;
    let body =
        json!({"email": "ann@example.com", "password": PASSWORD, "organization_id": bob.org_id});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/tokens", None, &body)
        .await;
    assert_problem(response, 404, "not_found").await;
}

async fn login_failures_are_rate_limited_per_email(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("ann@example.com").await;
    let tokens_before = app.count("api_tokens").await;
    let wrong = json!({"email": "ann@example.com", "password": "wrong password!"});
    for _ in 0..5 {
        let response = app
            .send_json(Method::POST, "/api/v1/auth/tokens", None, &wrong)
            .await;
        assert_problem(response, 401, "invalid_credentials").await;
    }
    let right = json!({"email": "ann@example.com", "password": PASSWORD});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/tokens", None, &right)
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 429, "rate_limited").await;
    assert_eq!(app.count("api_tokens").await, tokens_before);
    // Unknown emails fail exactly like wrong passwords (no account enumeration).
    let unknown = json!({"email": "nobody@example.com", "password": "whatever password"});
    let response = app
        .send_json(Method::POST, "/api/v1/auth/tokens", None, &unknown)
        .await;
    assert_problem(response, 401, "invalid_credentials").await;
    // Guesses sent at once cannot all slip past the check while the first are hashed: each
    // is counted before its password is checked, so only five are ever checked.
    app.sign_up("bob@example.com").await;
    let wrong = json!({"email": "bob@example.com", "password": "wrong password!"});
    let guesses = (0..12).map(|_| app.send_json(Method::POST, "/api/v1/auth/tokens", None, &wrong));
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7);
}

async fn revoked_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let response = app
        .request(
            Method::DELETE,
            "/api/v1/auth/tokens/current",
            Some(&ann.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_problem(
        app.get("/api/v1/me", &ann.token).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(
        app.scalar("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
}

async fn expired_tokens_are_refused_with_token_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    assert_eq!(app.get("/api/v1/me", &ann.token).await.status(), 200);
    app.clock.advance(time::Duration::days(30));
    let response = app.get("/api/v1/me", &ann.token).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"trueline\", error=\"invalid_token\""
    );
    assert_problem(response, 401, "token_expired").await;
}

async fn missing_and_malformed_credentials_are_401_with_www_authenticate(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .request(Method::GET, "/api/v1/me", None)
        .send()
        .await
        .unwrap();
    // RFC 6750 §3: the challenge alone without a bearer token, `error="invalid_token"`
    // for one that was sent and refused.
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"trueline\""
    );
    assert_problem(response, 401, "unauthenticated").await;
    for bad in ["garbage", "tl_short", &format!("tl_{}", "A".repeat(43))] {
        let response = app.get("/api/v1/me", bad).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"trueline\", error=\"invalid_token\""
        );
        assert_problem(response, 401, "invalid_token").await;
    }
    // Another scheme is no bearer token: as without the header.
    let response = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"trueline\""
    );
    assert_problem(response, 401, "unauthenticated").await;
}

async fn members_can_be_added_listed_promoted_and_removed(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.sign_up("owner@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let bob_token = app.add_member(&owner, &bob, "member").await;
    let list: Value = app
        .get("/api/v1/members", &owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["next_cursor"], Value::Null);
    let path = format!("/api/v1/members/{}", bob.user_id);
    let response = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&owner.token),
            &json!({"role": "admin"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let member: Value = response.json().await.unwrap();
    assert_eq!(member["role"], "admin");
    let me: Value = app
        .get("/api/v1/me", &bob_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["organization"]["role"], "admin",
        "the role applies to existing tokens"
    );
    let response = app
        .request(Method::DELETE, &path, Some(&owner.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .request(Method::DELETE, &path, Some(&owner.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "removing again is idempotent");
    assert_problem(
        app.get("/api/v1/me", &bob_token).await,
        401,
        "invalid_token",
    )
    .await;
    // Paging: limit 1 walks the list.
    let page: Value = app
        .get("/api/v1/members?limit=1", &owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_problem(
        app.get("/api/v1/members?limit=0", &owner.token).await,
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get("/api/v1/members?cursor=zzz", &owner.token).await,
        400,
        "invalid_cursor",
    )
    .await;
    assert_problem(
        app.get("/api/v1/members?bogus=1", &owner.token).await,
        400,
        "validation_failed",
    )
    .await;
}

async fn roles_are_enforced_on_member_management(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.sign_up("owner@example.com").await;
    let viewer = app.sign_up("viewer@example.com").await;
    let admin = app.sign_up("admin@example.com").await;
    let carol = app.sign_up("carol@example.com").await;
    let viewer_token = app.add_member(&owner, &viewer, "viewer").await;
    let admin_token = app.add_member(&owner, &admin, "admin").await;
    let before = app.snapshot().await;
    let add = json!({"email": carol.email, "role": "member"});
    assert_problem(
        app.post("/api/v1/members", &viewer_token, &add).await,
        403,
        "insufficient_role",
    )
    .await;
    let owner_path = format!("/api/v1/members/{}", owner.user_id);
    let demote = json!({"role": "member"});
    let response = app
        .send_json(Method::PATCH, &owner_path, Some(&admin_token), &demote)
        .await;
    assert_problem(response, 403, "insufficient_role").await;
    let make_owner = json!({"email": carol.email, "role": "owner"});
    assert_problem(
        app.post("/api/v1/members", &admin_token, &make_owner).await,
        403,
        "insufficient_role",
    )
    .await;
    assert_eq!(app.snapshot().await, before);
    // Admins may manage non-owners.
    assert_eq!(
        app.post("/api/v1/members", &admin_token, &add)
            .await
            .status(),
        201
    );
    // Anyone may leave.
    let viewer_path = format!("/api/v1/members/{}", viewer.user_id);
    let response = app
        .request(Method::DELETE, &viewer_path, Some(&viewer_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

async fn another_organizations_member_is_not_found_and_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let before = app.snapshot().await;
    let path = format!("/api/v1/members/{}", bob.user_id);
    let response = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&ann.token),
            &json!({"role": "viewer"}),
        )
        .await;
    assert_problem(response, 404, "not_found").await;
    let response = app
        .send_json(
            Method::PATCH,
            "/api/v1/members/not-a-uuid",
            Some(&ann.token),
            &json!({"role": "viewer"}),
        )
        .await;
    assert_problem(response, 404, "not_found").await;
    assert_eq!(app.snapshot().await, before);
    let me: Value = app
        .get("/api/v1/me", &bob.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["organization"]["role"], "owner");
}

async fn the_last_owner_cannot_leave_or_be_demoted(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.snapshot().await;
    let path = format!("/api/v1/members/{}", ann.user_id);
    let response = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&ann.token),
            &json!({"role": "admin"}),
        )
        .await;
    assert_problem(response, 409, "last_owner").await;
    let response = app
        .request(Method::DELETE, &path, Some(&ann.token))
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "last_owner").await;
    assert_eq!(app.snapshot().await, before);
}

async fn two_owners_demoting_each_other_concurrently_leave_exactly_one_owner(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    for round in 0..8 {
        let a = app.sign_up(&format!("a{round}@example.com")).await;
        let b = app.sign_up(&format!("b{round}@example.com")).await;
        let b_token = app.add_member(&a, &b, "owner").await;
        let mut tasks = Vec::new();
        for (token, target) in [
            (a.token.clone(), b.user_id.clone()),
            (b_token, a.user_id.clone()),
        ] {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("/api/v1/members/{target}");
                app.send_json(
                    Method::PATCH,
                    &path,
                    Some(&token),
                    &json!({"role": "admin"}),
                )
                .await
                .status()
                .as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        statuses.sort();
        assert!(
            statuses == [200, 403] || statuses == [200, 409],
            "round {round}: {statuses:?}"
        );
        let owners = app
            .scalar(&format!(
                "SELECT count(*) FROM memberships WHERE role = 'owner' AND org_id IN
                 (SELECT m.org_id FROM memberships m JOIN users u ON u.id = m.user_id
                  WHERE u.email = 'a{round}@example.com')"
            ))
            .await;
        assert_eq!(owners, 1, "round {round}");
    }
}

async fn organizations_can_be_created_and_listed_with_pagination(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    for i in 0..3 {
        let response = app
            .post(
                "/api/v1/organizations",
                &ann.token,
                &json!({"name": format!("Org {i}")}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let response = app
        .post("/api/v1/organizations", &ann.token, &json!({"name": ""}))
        .await;
    assert_problem(response, 400, "validation_failed").await;
    let mut names = Vec::new();
    let mut path = "/api/v1/organizations?limit=3".to_owned();
    loop {
        let page: Value = app.get(&path, &ann.token).await.json().await.unwrap();
        for org in page["data"].as_array().unwrap() {
            assert_eq!(org["role"], "owner");
            names.push(org["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/organizations?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(names.len(), 4);
    assert_eq!(app.count("organizations").await, 4);
}

/// A leaked token can be found and killed: the caller lists their working tokens in the
/// organization, revokes one by id or all but the current one; another user's token id
/// changes nothing (and says nothing); each revocation is audited.
async fn a_user_lists_and_revokes_their_own_tokens_and_no_one_elses(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let bob_token = app.add_member(&ann, &bob, "member").await;
    let second = app.log_in(&ann, &ann.org_id).await;
    let third = app.log_in(&ann, &ann.org_id).await;
    let listed: Value = app
        .get("/api/v1/auth/tokens", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let tokens = listed["data"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{listed}");
    assert_eq!(
        tokens
            .iter()
            .filter(|t| t["current"] == json!(true))
            .count(),
        1
    );
    assert!(!listed.to_string().contains("tl_"), "no secret in the list");
    let second_id = current_token_id(&app, &second).await;
    let bob_id = current_token_id(&app, &bob_token).await;
    let audit_before = app.count("audit_log").await;

    // Another user's token: 204, nothing revoked, nothing recorded.
    let response = app
        .delete(&format!("/api/v1/auth/tokens/{bob_id}"), &ann.token)
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.get("/api/v1/me", &bob_token).await.status(), 200);
    assert_eq!(app.count("audit_log").await, audit_before);

    // One of the caller's own: gone at once (also through the SQLite token cache).
    assert_eq!(app.get("/api/v1/me", &second).await.status(), 200);
    let response = app
        .delete(&format!("/api/v1/auth/tokens/{second_id}"), &ann.token)
        .await;
    assert_eq!(response.status(), 204);
    assert_problem(app.get("/api/v1/me", &second).await, 401, "invalid_token").await;
    assert_eq!(app.count("audit_log").await, audit_before + 1);
    // Again: nothing more happens.
    let response = app
        .delete(&format!("/api/v1/auth/tokens/{second_id}"), &ann.token)
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.count("audit_log").await, audit_before + 1);

    // All but the current one.
    let response = app.delete("/api/v1/auth/tokens", &third).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revoked"], json!(1), "ann's signup token");
    assert_problem(
        app.get("/api/v1/me", &ann.token).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.get("/api/v1/me", &third).await.status(), 200);
    assert_eq!(app.get("/api/v1/me", &bob_token).await.status(), 200);
    let listed: Value = app
        .get("/api/v1/auth/tokens", &third)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.count("audit_log").await, audit_before + 2);
}

/// The id of `token`, as `GET /auth/tokens` marks it current.
async fn current_token_id(app: &TestApp, token: &str) -> String {
    let listed: Value = app
        .get("/api/v1/auth/tokens", token)
        .await
        .json()
        .await
        .unwrap();
    listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["current"] == json!(true))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `PUT /me/password`: refused without the right current password or with a weak new one
/// (nothing changes: the old password and every token still work); accepted, the new
/// password logs in, the old one no longer does, and every other token of the user, in every
/// organization, is revoked while the request's own token works on; audited. Wrong guesses
/// are limited like failed logins.
async fn a_password_change_needs_the_current_password_and_revokes_every_other_token(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let other_org: Value = app
        .post(
            "/api/v1/organizations",
            &ann.token,
            &json!({"name": "Second"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let second_org = other_org["id"].as_str().unwrap().to_owned();
    let in_second = app.log_in(&ann, &second_org).await;
    let another_here = app.log_in(&ann, &ann.org_id).await;
    let current = app.log_in(&ann, &ann.org_id).await;
    let change = |current_password: &str, new_password: &str| json!({"current_password": current_password, "new_password": new_password});
    let put = |token: &str, body: Value| {
        let token = token.to_owned();
        let app = &app;
        async move {
            app.send_json(Method::PUT, "/api/v1/me/password", Some(&token), &body)
                .await
        }
    };
    let works = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move { app.get("/api/v1/me", &token).await.status() == 200 }
    };
    let login = |password: &str| {
        let body = json!({"email": ann.email, "password": password});
        let app = &app;
        async move {
            app.send_json(Method::POST, "/api/v1/auth/tokens", None, &body)
                .await
                .status()
        }
    };
    let audited = || async {
        app.scalar("SELECT count(*) FROM audit_log WHERE action = 'password.changed'")
            .await
    };

    let wrong = put(
        &current,
        change("not my password at all", "a brand new passphrase"),
    )
    .await;
    assert_eq!(wrong.status(), 400);
    let problem: Value = wrong.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/current_password");
    assert_eq!(problem["errors"][0]["code"], "wrong_password");
    let weak = put(&current, change(PASSWORD, "short")).await;
    assert_eq!(weak.status(), 400);
    let problem: Value = weak.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "/new_password");
    for token in [&ann.token, &in_second, &another_here, &current] {
        assert!(works(token).await, "a refused change revokes nothing");
    }
    assert_eq!(login(PASSWORD).await, 201, "the old password still works");
    assert_eq!(audited().await, 0);

    let changed = put(&current, change(PASSWORD, "a brand new passphrase")).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    // The sign-up's token, the second organization's, another here, and the one the
    // old-password login above issued.
    assert_eq!(changed["tokens_revoked"], 4);
    assert!(works(&current).await, "the request's own token works on");
    for token in [&ann.token, &in_second, &another_here] {
        assert!(!works(token).await, "every other token is revoked");
    }
    assert_eq!(
        login(PASSWORD).await,
        401,
        "the old password no longer logs in"
    );
    assert_eq!(login("a brand new passphrase").await, 201);
    assert_eq!(audited().await, 1);

    // Guesses at the current password with a (stolen) token are limited.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            put(
                &current,
                change("a wrong guess again", "yet another passphrase"),
            )
            .await
            .status()
            .as_u16(),
        );
    }
    assert_eq!(statuses, [400, 400, 400, 400, 400, 429]);
    // Those guesses were one token's: the owner's own token still changes the password, and
    // logins were never limited by them.
    assert_eq!(login("a brand new passphrase").await, 201);
    let owners = app
        .send_json(
            Method::POST,
            "/api/v1/auth/tokens",
            None,
            &json!({"email": ann.email, "password": "a brand new passphrase"}),
        )
        .await;
    let owners: Value = owners.json().await.unwrap();
    let owners = owners["token"].as_str().unwrap().to_owned();
    let again = put(
        &owners,
        change("a brand new passphrase", "the third passphrase"),
    )
    .await;
    assert_eq!(again.status(), 200);
}
