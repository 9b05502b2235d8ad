//! Assessments over HTTP: authoring, import, the lifecycle and its quota, candidates with
//! server time, scoring, review, exports.

use crate::both_backends;
use crate::helpers::*;
use axum::Router;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

both_backends!(
    drafts_are_validated_and_edited_with_etags,
    questions_are_validated_per_type_and_frozen_after_publishing,
    csv_and_xlsx_imports_are_all_or_nothing,
    an_import_with_a_stale_if_match_is_refused_and_imports_nothing,
    publish_close_and_archive_honour_an_if_match,
    fifty_concurrent_publishes_leave_exactly_the_quota_published,
    a_candidate_takes_an_assessment_end_to_end_without_ever_seeing_an_answer,
    two_concurrent_submits_yield_one_submission,
    answers_under_any_spelling_of_a_question_id_come_back_under_its_canonical_id,
    the_server_enforces_the_deadline_and_auto_submits_abandoned_attempts,
    expired_and_revoked_invites_are_refused,
    share_links_register_candidates_without_revealing_existing_invites,
    a_share_link_registration_with_a_key_is_safe_to_retry,
    pass_is_decided_on_exact_arithmetic_and_unicode_answers_match,
    reviews_follow_the_state_machine_and_are_audited,
    results_are_exported_as_formula_safe_csv,
    another_organization_sees_nothing,
    revising_a_published_assessment_never_changes_what_candidates_took,
    candidate_responses_reveal_no_answer_key_no_hidden_score_and_no_other_candidate,
    reordering_with_a_key_replays_a_lost_response,
    concurrent_setting_edits_with_a_star_keep_every_accepted_change,
);

fn settings(title: &str) -> Value {
    json!({"title": title, "time_limit_minutes": 30, "passing_score_percent": 50, "show_score_to_candidate": true})
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app.post("/api/v1/assessments", token, &body).await;
    assert_eq!(response.status(), 201, "create assessment");
    response.json().await.unwrap()
}

async fn add_question(app: &TestApp, token: &str, id: &str, question: Value) -> Value {
    let response = app
        .post(
            &format!("/api/v1/assessments/{id}/questions"),
            token,
            &question,
        )
        .await;
    assert_eq!(response.status(), 201, "add question {question}");
    response.json().await.unwrap()
}

/// A published assessment with one question of every type; returns its id.
async fn published(app: &TestApp, token: &str, body: Value) -> String {
    let a = create(app, token, body).await;
    let id = a["id"].as_str().unwrap().to_owned();
    for q in [
        json!({"type": "single_choice", "prompt": "2+2?", "options": ["3", "4"], "correct": 1}),
        json!({"type": "multiple_choice", "prompt": "Primes?", "options": ["2", "3", "4"], "correct": [0, 1], "points": 2}),
        json!({"type": "true_false", "prompt": "Rust is memory safe", "correct": true}),
        json!({"type": "short_text", "prompt": "Capital of France?", "accepted_answers": ["Paris"]}),
        json!({"type": "numeric", "prompt": "Boiling point of water in F", "value": 212.0, "tolerance": 0.5}),
    ] {
        add_question(app, token, &id, q).await;
    }
    let response = app
        .post(
            &format!("/api/v1/assessments/{id}/publish"),
            token,
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 200, "publish");
    id
}

/// Invites `email`; returns the candidate token.
async fn invite(app: &TestApp, token: &str, id: &str, email: &str) -> String {
    let response = app
        .post(
            &format!("/api/v1/assessments/{id}/invites"),
            token,
            &json!({"candidates": [{"email": email}]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["invites"][0]["token"].as_str().unwrap().to_owned()
}

async fn candidate(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(&format!("/api/v1/public/invites/{path}")));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Answers keyed by prompt → question id, from a candidate view.
fn answers(view: &Value, by_prompt: &[(&str, Value)]) -> Value {
    let mut out = serde_json::Map::new();
    for q in view["questions"].as_array().unwrap() {
        if let Some((_, answer)) = by_prompt.iter().find(|(p, _)| *p == q["prompt"]) {
            out.insert(q["id"].as_str().unwrap().to_owned(), answer.clone());
        }
    }
    Value::Object(out)
}

/// No candidate-facing JSON may carry an answer key: no key field anywhere, and no accepted
/// answer or numeric value of the questions of [`published`] as a value (compared as values,
/// so a request id or a timestamp that happens to contain "212" does not count).
fn assert_no_answer_key(body: &Value) {
    fn walk(v: &Value, whole: &Value) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    assert!(
                        ![
                            "correct",
                            "accepted_answers",
                            "value",
                            "tolerance",
                            "per_question"
                        ]
                        .contains(&key.as_str()),
                        "candidate response leaks {key}: {whole}"
                    );
                    walk(value, whole);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, whole)),
            Value::String(s) => assert!(
                !s.to_lowercase().contains("paris"),
                "candidate response leaks an accepted answer: {whole}"
            ),
            Value::Number(n) => assert!(
                n.as_f64() != Some(212.0),
                "candidate response leaks a numeric answer: {whole}"
            ),
            _ => {}
        }
    }
    walk(body, body);
}

async fn drafts_are_validated_and_edited_with_etags(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let before = app.count("assessments").await;
    let bad =
        json!({"title": " ", "time_limit_minutes": 2, "passing_score_percent": 101, "bogus": 1});
    let problem = assert_problem(
        app.post("/api/v1/assessments", &ann.token, &bad).await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["code"], "unknown_field");
    let bad = json!({"title": " ", "time_limit_minutes": 2, "passing_score_percent": 101});
    let problem = assert_problem(
        app.post("/api/v1/assessments", &ann.token, &bad).await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);
    assert_eq!(app.count("assessments").await, before);
    let response = app
        .post("/api/v1/assessments", &ann.token, &settings("Rust"))
        .await;
    assert_eq!(response.headers()["etag"], "\"r1\"");
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/api/v1/assessments/")
    );
    let a: Value = response.json().await.unwrap();
    assert_eq!(
        (a["status"].as_str(), a["version_number"].as_u64()),
        (Some("draft"), Some(1))
    );
    let path = format!("/api/v1/assessments/{}", a["id"].as_str().unwrap());
    assert_problem(
        app.send_json(
            Method::PATCH,
            &path,
            Some(&ann.token),
            &json!({"title": "Rust 2"}),
        )
        .await,
        428,
        "precondition_required",
    )
    .await;
    let stale = app
        .request(Method::PATCH, &path, Some(&ann.token))
        .header("if-match", "\"r7\"")
        .json(&json!({"title": "X"}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412, "precondition_failed").await;
    let ok = app
        .request(Method::PATCH, &path, Some(&ann.token))
        .header("if-match", "\"r1\"")
        .json(&json!({"title": "Rust 2", "description": "Basics"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let updated: Value = ok.json().await.unwrap();
    assert_eq!(
        (
            updated["title"].as_str(),
            updated["revision"].as_u64(),
            updated["description"].as_str()
        ),
        (Some("Rust 2"), Some(2), Some("Basics"))
    );
    let member = app.sign_up("member@example.com").await;
    let member_token = app.add_member(&ann, &member, "member").await;
    assert_problem(
        app.post("/api/v1/assessments", &member_token, &settings("No"))
            .await,
        403,
        "insufficient_role",
    )
    .await;
    let list: Value = app
        .get("/api/v1/assessments?status=draft", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // Deleting a question: a retry after a lost 204 (its If-Match now stale) is a 204, since
    // the question is gone; a stale If-Match on a question that is still there is a 412.
    let draft_id = updated["id"].as_str().unwrap().to_owned();
    let first = add_question(
        &app,
        &ann.token,
        &draft_id,
        json!({"type": "true_false", "prompt": "One", "correct": true}),
    )
    .await;
    add_question(
        &app,
        &ann.token,
        &draft_id,
        json!({"type": "true_false", "prompt": "Two", "correct": true}),
    )
    .await;
    let now: Value = app
        .get(&format!("/api/v1/assessments/{draft_id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let tag = format!("\"r{}\"", now["revision"]);
    let path = format!(
        "/api/v1/assessments/{draft_id}/questions/{}",
        first["id"].as_str().unwrap()
    );
    for _ in 0..2 {
        let response = app
            .request(Method::DELETE, &path, Some(&ann.token))
            .header("if-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let after: Value = app
        .get(&format!("/api/v1/assessments/{draft_id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["revision"],
        json!(now["revision"].as_u64().unwrap() + 1),
        "one delete"
    );
    let second = after["questions"][0]["id"].as_str().unwrap().to_owned();
    let stale = app
        .request(
            Method::DELETE,
            &format!("/api/v1/assessments/{draft_id}/questions/{second}"),
            Some(&ann.token),
        )
        .header("if-match", &tag)
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412, "precondition_failed").await;
}

async fn questions_are_validated_per_type_and_frozen_after_publishing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let a = create(&app, &ann.token, settings("Quiz")).await;
    let id = a["id"].as_str().unwrap();
    let path = format!("/api/v1/assessments/{id}/questions");
    for (question, code) in [
        (
            json!({"type": "single_choice", "prompt": "?", "options": ["a", "b"], "correct": 2}),
            "invalid_correct_answer",
        ),
        (
            json!({"type": "single_choice", "prompt": "?", "options": ["a"], "correct": 0}),
            "invalid_length",
        ),
        (
            json!({"type": "single_choice", "prompt": "?", "options": ["a", "A"], "correct": 0}),
            "duplicate_option",
        ),
        (
            json!({"type": "true_false", "prompt": "?", "correct": true, "options": ["x", "y"]}),
            "field_not_allowed",
        ),
        (
            json!({"type": "numeric", "prompt": "?", "value": 1, "tolerance": -1}),
            "out_of_range",
        ),
        (json!({"type": "essay", "prompt": "?"}), "invalid_value"),
        (
            json!({"type": "true_false", "prompt": "?", "correct": true, "points": 0}),
            "out_of_range",
        ),
    ] {
        let problem = assert_problem(
            app.post(&path, &ann.token, &question).await,
            400,
            "validation_failed",
        )
        .await;
        let codes: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{question}: {codes:?}");
    }
    let q = add_question(
        &app,
        &ann.token,
        id,
        json!({"type": "true_false", "prompt": "Sky is blue", "correct": true}),
    )
    .await;
    let second = add_question(
        &app,
        &ann.token,
        id,
        json!({"type": "true_false", "prompt": "Grass is red", "correct": false}),
    )
    .await;
    let detail: Value = app
        .get(&format!("/api/v1/assessments/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let revision = detail["revision"].as_u64().unwrap();
    let order = json!({"question_ids": [second["id"], q["id"]]});
    let reordered = app
        .request(Method::PUT, &format!("{path}/order"), Some(&ann.token))
        .header("if-match", format!("\"r{revision}\""))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(reordered.status(), 200);
    let body: Value = reordered.json().await.unwrap();
    assert_eq!(body["questions"][0]["id"], second["id"]);
    app.post(
        &format!("/api/v1/assessments/{id}/publish"),
        &ann.token,
        &json!({}),
    )
    .await;
    let frozen = app
        .post(
            &path,
            &ann.token,
            &json!({"type": "true_false", "prompt": "Late", "correct": true}),
        )
        .await;
    assert_problem(frozen, 409, "not_editable").await;
    let patch = app
        .request(
            Method::PATCH,
            &format!("/api/v1/assessments/{id}"),
            Some(&ann.token),
        )
        .header("if-match", "*")
        .json(&json!({"title": "Changed"}))
        .send()
        .await
        .unwrap();
    assert_problem(patch, 409, "not_editable").await;
    let publish_again = app
        .post(
            &format!("/api/v1/assessments/{id}/publish"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_problem(publish_again, 409, "invalid_transition").await;
}

/// Imports take bodies up to 5 MiB (more than other requests); sent with an
/// `Idempotency-Key` they must get the same answer as without one, not a 413 from the layer
/// that stores the answer.
#[tokio::test]
async fn an_import_over_a_mib_gets_the_same_answer_with_an_idempotency_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.sign_up("ann@example.com").await;
    let a = create(&app, &ann.token, settings("Large import")).await;
    let path = format!(
        "/api/v1/assessments/{}/questions/import",
        a["id"].as_str().unwrap()
    );
    // One question, then 1.5 MiB of blank lines.
    let mut csv = "type,prompt,options,correct,points\r\ntrue_false,Yes?,,true,\r\n".to_owned();
    csv.push_str(&"\r\n".repeat(768 * 1024));
    let mut statuses = Vec::new();
    for key in [None, Some("large-import-1")] {
        let mut request = app
            .request(Method::POST, &path, Some(&ann.token))
            .header("content-type", "text/csv")
            .body(csv.clone());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_ne!(statuses[0], 413, "{statuses:?}");
    assert_eq!(
        statuses[0], statuses[1],
        "with and without a key: {statuses:?}"
    );
    // Other routes, assessment routes too, keep their own (1 MiB) limit, with a key or not:
    // the layer buffers no more than the route would read.
    for (path, key) in [
        ("/api/v1/items".to_owned(), Some("large-item-1")),
        (
            format!(
                "/api/v1/assessments/{}/questions",
                a["id"].as_str().unwrap()
            ),
            None,
        ),
        (
            format!(
                "/api/v1/assessments/{}/questions",
                a["id"].as_str().unwrap()
            ),
            Some("large-question-1"),
        ),
    ] {
        let mut request = app
            .request(Method::POST, &path, Some(&ann.token))
            .header("content-type", "application/json")
            .body(vec![b' '; 2 * 1024 * 1024]);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        assert_problem(response, 413, "payload_too_large").await;
    }
}

async fn csv_and_xlsx_imports_are_all_or_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let a = create(&app, &ann.token, settings("Imported")).await;
    let path = format!(
        "/api/v1/assessments/{}/questions/import",
        a["id"].as_str().unwrap()
    );
    let csv = "\u{feff}Type,Prompt,Options,Correct,Points\r\nsingle_choice,\"Pick, one\",\"a|b \"\"quoted\"\"\",2,3\r\ntrue_false,Yes?,,true,\r\n";
    let response = app
        .request(Method::POST, &path, Some(&ann.token))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["imported"], 2);
    assert_eq!(
        body["questions"][0]["question"]["options"][1],
        "b \"quoted\""
    );
    let count = app.count("assessment_questions").await;
    let broken = "type,prompt,options,correct\nsingle_choice,Q1,a|b,3\ntrue_false,Q2,,maybe\nnumeric,Q3,,abc\ntrue_false,Q4,,true\n";
    let response = app
        .request(Method::POST, &path, Some(&ann.token))
        .header("content-type", "text/csv")
        .body(broken)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "invalid_import").await;
    assert_eq!(
        problem["errors"].as_array().unwrap().len(),
        3,
        "every bad row is reported: {problem}"
    );
    assert_eq!(
        app.count("assessment_questions").await,
        count,
        "nothing imported"
    );
    // The XLSX template (written by a spreadsheet writer), as a multipart upload with a key;
    // the retry's form has a boundary of its own, and is still the same request.
    let upload = || {
        let xlsx = trueline_import::template_xlsx().to_vec();
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(xlsx)
                .file_name("questions.xlsx")
                .mime_str("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
                .unwrap(),
        );
        app.request(Method::POST, &path, Some(&ann.token))
            .header("idempotency-key", "xlsx-import-1")
            .multipart(form)
            .send()
    };
    let response = upload().await.unwrap();
    assert_eq!(response.status(), 201);
    let first = response.text().await.unwrap();
    let after_first = app.snapshot().await;
    let retry = upload().await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), first);
    assert_eq!(app.snapshot().await, after_first, "imported once");
    let template_csv = app
        .get("/api/v1/assessments/import-template.csv", &ann.token)
        .await;
    assert_eq!(template_csv.status(), 200);
    assert!(
        template_csv
            .text()
            .await
            .unwrap()
            .to_lowercase()
            .starts_with("type,prompt")
    );
    let response = app
        .request(Method::POST, &path, Some(&ann.token))
        .header("content-type", "application/pdf")
        .body("%PDF")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
    let response = app
        .request(Method::POST, &path, Some(&ann.token))
        .header(
            "content-type",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        .body("not a zip")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_import").await;
}

/// The import checks `If-Match` as adding one question does: a stale or malformed tag is a
/// `412` and the draft stays as it was; the current tag imports.
async fn an_import_with_a_stale_if_match_is_refused_and_imports_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let a = create(&app, &ann.token, settings("Guarded import")).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let stale_tag = app
        .get(&format!("/api/v1/assessments/{id}"), &ann.token)
        .await
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    add_question(
        &app,
        &ann.token,
        &id,
        json!({"type": "true_false", "prompt": "First?", "correct": true}),
    )
    .await;
    let detail = || async {
        let response = app
            .get(&format!("/api/v1/assessments/{id}"), &ann.token)
            .await;
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        (etag, response.json::<Value>().await.unwrap())
    };
    let (current_tag, before) = detail().await;
    assert_ne!(
        current_tag, stale_tag,
        "adding a question moved the revision on"
    );
    let snapshot = app.snapshot().await;
    let path = format!("/api/v1/assessments/{id}/questions/import");
    let csv = "type,prompt,correct\ntrue_false,Imported?,true\n";
    let import = |tag: String| {
        app.request(Method::POST, &path, Some(&ann.token))
            .header("content-type", "text/csv")
            .header("if-match", tag)
            .body(csv)
            .send()
    };
    for tag in [
        stale_tag,
        "not-a-tag".to_owned(),
        format!("W/{current_tag}"),
    ] {
        let response = import(tag.clone()).await.unwrap();
        assert_problem(response, 412, "precondition_failed").await;
        assert_eq!(app.snapshot().await, snapshot, "{tag}: nothing imported");
        assert_eq!(
            detail().await,
            (current_tag.clone(), before.clone()),
            "{tag}"
        );
    }
    let response = import(current_tag.clone()).await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["imported"], 1);
    let (after_tag, _) = detail().await;
    assert_ne!(after_tag, current_tag);
}

/// What the author saw is what gets published: a publish (or close, or archive) with an
/// `If-Match` of another revision, a weak or a malformed tag is `412` and changes nothing;
/// with the current one, or none, it goes ahead.
async fn publish_close_and_archive_honour_an_if_match(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let a = create(&app, &ann.token, settings("Guarded publish")).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let tag_of =
        |response: &reqwest::Response| response.headers()["etag"].to_str().unwrap().to_owned();
    let seen = tag_of(
        &app.get(&format!("/api/v1/assessments/{id}"), &ann.token)
            .await,
    );
    add_question(
        &app,
        &ann.token,
        &id,
        json!({"type": "true_false", "prompt": "Added since?", "correct": true}),
    )
    .await;
    let current = tag_of(
        &app.get(&format!("/api/v1/assessments/{id}"), &ann.token)
            .await,
    );
    let move_to = |to: &'static str, tag: Option<String>| {
        let mut request = app.request(
            Method::POST,
            &format!("/api/v1/assessments/{id}/{to}"),
            Some(&ann.token),
        );
        if let Some(tag) = tag {
            request = request.header("if-match", tag);
        }
        request.send()
    };
    let snapshot = app.snapshot().await;
    for to in ["publish", "close", "archive"] {
        for tag in [seen.clone(), format!("W/{current}"), "r-one".to_owned()] {
            let response = move_to(to, Some(tag.clone())).await.unwrap();
            assert_problem(response, 412, "precondition_failed").await;
            assert_eq!(
                app.snapshot().await,
                snapshot,
                "{to} {tag}: nothing changed"
            );
        }
    }
    let published = move_to("publish", Some(current.clone())).await.unwrap();
    assert_eq!(published.status(), 200);
    assert_eq!(tag_of(&published), current);
    let body: Value = published.json().await.unwrap();
    assert_eq!(body["status"], "published");
    let closed = move_to("close", Some("*".to_owned())).await.unwrap();
    assert_eq!(closed.status(), 200);
    let archived = move_to("archive", None).await.unwrap();
    assert_eq!(archived.status(), 200);
}

async fn fifty_concurrent_publishes_leave_exactly_the_quota_published(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let ann = app.sign_up("ann@example.com").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let a = create(&app, &ann.token, settings(&format!("Draft {i}"))).await;
        let id = a["id"].as_str().unwrap().to_owned();
        add_question(
            &app,
            &ann.token,
            &id,
            json!({"type": "true_false", "prompt": "?", "correct": true}),
        )
        .await;
        ids.push(id);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(ids.len()));
    let mut tasks = Vec::new();
    for id in ids {
        let (app, token, barrier) = (app.clone(), ann.token.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = app
                .post(
                    &format!("/api/v1/assessments/{id}/publish"),
                    &token,
                    &json!({}),
                )
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body["code"].as_str().map(str::to_owned))
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (409, Some(code)) if code == "active_assessment_limit" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 3);
    let published: Value = app
        .get("/api/v1/assessments?status=published", &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["data"].as_array().unwrap().len(), 3);
}

async fn a_candidate_takes_an_assessment_end_to_end_without_ever_seeing_an_answer(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Everything")).await;
    let token = invite(&app, &ann.token, &id, "cand@example.com").await;
    assert!(token.starts_with("tli_"));
    let again: Value = app
        .post(
            &format!("/api/v1/assessments/{id}/invites"),
            &ann.token,
            &json!({"candidates": [{"email": "CAND@example.com"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            again["invites"][0]["status"].as_str(),
            &again["invites"][0]["token"]
        ),
        (Some("already_invited"), &Value::Null)
    );
    let view: Value = candidate(&app, Method::GET, &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            view["status"].as_str(),
            view["questions"].as_array().unwrap().len()
        ),
        (Some("not_started"), 0),
        "no questions before the timer starts"
    );
    assert_no_answer_key(&view);
    let started = candidate(&app, Method::POST, &format!("{token}/start"), None).await;
    assert_eq!(started.status(), 200);
    let started: Value = started.json().await.unwrap();
    assert_eq!(
        (
            started["status"].as_str(),
            started["questions"].as_array().unwrap().len()
        ),
        (Some("in_progress"), 5)
    );
    assert_no_answer_key(&started);
    let again: Value = candidate(&app, Method::POST, &format!("{token}/start"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["attempt"]["deadline_at"], started["attempt"]["deadline_at"],
        "starting again changes nothing"
    );
    // A malformed answer is a 400 naming the question, never a silent zero.
    let sc_id = started["questions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["type"] == "single_choice")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = json!({"answers": {sc_id.clone(): "one"}});
    let problem = assert_problem(
        candidate(&app, Method::PUT, &format!("{token}/answers"), Some(bad)).await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], format!("/answers/{sc_id}"));
    let partial = answers(&started, &[("2+2?", json!(1))]);
    let saved = candidate(
        &app,
        Method::PUT,
        &format!("{token}/answers"),
        Some(json!({"answers": partial})),
    )
    .await;
    assert_eq!(saved.status(), 200);
    let view: Value = candidate(&app, Method::GET, &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["answers"][&sc_id], 1, "autosaved answers come back");
    let all = answers(
        &started,
        &[
            ("2+2?", json!(1)),
            ("Primes?", json!([1, 0])),
            ("Rust is memory safe", json!(false)),
            ("Capital of France?", json!("  paris ")),
            ("Boiling point of water in F", json!(212.3)),
        ],
    );
    let submitted = candidate(
        &app,
        Method::POST,
        &format!("{token}/submit"),
        Some(json!({"answers": all})),
    )
    .await;
    assert_eq!(submitted.status(), 201);
    let first_body = submitted.text().await.unwrap();
    let result: Value = serde_json::from_str(&first_body).unwrap();
    assert_no_answer_key(&result);
    // 1 + 2 + 0 + 1 + 1 of 6 points.
    assert_eq!(
        (
            result["result"]["earned"].as_u64(),
            result["result"]["total"].as_u64(),
            result["result"]["passed"].as_bool()
        ),
        (Some(5), Some(6), Some(true))
    );
    assert_eq!(result["status"], "submitted");
    // The 201 may be lost on the way: the same submit sent again, without answers or with
    // the same ones (multiple-choice indices in another order are the same answer), gets
    // what the first got and changes nothing; other answers are a second submission.
    let after_submit = app.snapshot().await;
    let same = answers(
        &started,
        &[
            ("2+2?", json!(1)),
            ("Primes?", json!([0, 1])),
            ("Rust is memory safe", json!(false)),
            ("Capital of France?", json!("  paris ")),
            ("Boiling point of water in F", json!(212.3)),
        ],
    );
    for retry in [json!({}), json!({"answers": all}), json!({"answers": same})] {
        let again = candidate(
            &app,
            Method::POST,
            &format!("{token}/submit"),
            Some(retry.clone()),
        )
        .await;
        assert_eq!(again.status(), 201, "{retry}");
        assert_eq!(again.text().await.unwrap(), first_body, "{retry}");
    }
    let changed = answers(&started, &[("2+2?", json!(0))]);
    for other in [json!({"answers": changed}), json!({"answers": {}})] {
        let again = candidate(
            &app,
            Method::POST,
            &format!("{token}/submit"),
            Some(other.clone()),
        )
        .await;
        assert_problem(again, 409, "already_submitted").await;
    }
    assert_eq!(app.snapshot().await, after_submit, "retries change nothing");
    assert_eq!(app.count("submissions").await, 1);
    let late_save = candidate(
        &app,
        Method::PUT,
        &format!("{token}/answers"),
        Some(json!({"answers": {}})),
    )
    .await;
    assert_problem(late_save, 409, "already_submitted").await;
    // The employer sees the breakdown.
    let subs: Value = app
        .get(&format!("/api/v1/assessments/{id}/submissions"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let sub_id = subs["data"][0]["id"].as_str().unwrap();
    let detail: Value = app
        .get(&format!("/api/v1/submissions/{sub_id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["questions"].as_array().unwrap().len(), 5);
    assert_eq!(detail["percent"], "83.33");
}

/// Two submits at once make one submission: with the same answers both get the one result
/// (the second is a retry of the first, whichever commits first); with different answers
/// the second is refused.
async fn two_concurrent_submits_yield_one_submission(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Race")).await;
    for (email, differ) in [("same@example.com", false), ("other@example.com", true)] {
        let token = invite(&app, &ann.token, &id, email).await;
        let started: Value = candidate(&app, Method::POST, &format!("{token}/start"), None)
            .await
            .json()
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (app, token) = (app.clone(), token.clone());
            let choice = if differ { i } else { 1 };
            let body = json!({"answers": answers(&started, &[("2+2?", json!(choice))])});
            tasks.push(tokio::spawn(async move {
                let response =
                    candidate(&app, Method::POST, &format!("{token}/submit"), Some(body)).await;
                (response.status().as_u16(), response.text().await.unwrap())
            }));
        }
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap());
        }
        replies.sort();
        if differ {
            assert_eq!((replies[0].0, replies[1].0), (201, 409), "{replies:?}");
            assert!(replies[1].1.contains("already_submitted"), "{replies:?}");
        } else {
            assert_eq!((replies[0].0, replies[1].0), (201, 201), "{replies:?}");
            assert_eq!(replies[0].1, replies[1].1, "both get the one result");
        }
    }
    assert_eq!(app.count("submissions").await, 2, "one per candidate");
}

/// `Uuid::parse_str` reads uppercase, braces, `urn:uuid:` and unhyphenated ids; answers are
/// kept and shown under the id as `questions[].id` spells it, and two spellings of one id in
/// a request are refused.
async fn answers_under_any_spelling_of_a_question_id_come_back_under_its_canonical_id(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Spellings")).await;
    let token = invite(&app, &ann.token, &id, "cand@example.com").await;
    let started: Value = candidate(&app, Method::POST, &format!("{token}/start"), None)
        .await
        .json()
        .await
        .unwrap();
    let id_of = |prompt: &str| {
        started["questions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["prompt"] == prompt)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (sc, tf, st, nu) = (
        id_of("2+2?"),
        id_of("Rust is memory safe"),
        id_of("Capital of France?"),
        id_of("Boiling point of water in F"),
    );
    let spelled = json!({
        sc.to_uppercase(): 1,
        format!("{{{tf}}}"): true,
        format!("urn:uuid:{st}"): "Paris",
        nu.replace('-', ""): 212,
    });
    let expected = json!({sc.clone(): 1, tf.clone(): true, st.clone(): "Paris", nu.clone(): 212});
    let saved = candidate(
        &app,
        Method::PUT,
        &format!("{token}/answers"),
        Some(json!({"answers": spelled})),
    )
    .await;
    assert_eq!(saved.status(), 200);
    let view: Value = candidate(&app, Method::GET, &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["answers"], expected, "saved under the canonical ids");
    // Two spellings of one id: refused, naming the key, and nothing is saved or submitted.
    let before = app.snapshot().await;
    for path in ["answers", "submit"] {
        let method = if path == "answers" {
            Method::PUT
        } else {
            Method::POST
        };
        let twice = json!({"answers": {sc.clone(): 0, sc.to_uppercase(): 1}});
        let problem = assert_problem(
            candidate(&app, method, &format!("{token}/{path}"), Some(twice)).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(
            problem["errors"][0]["code"], "duplicate_answer_id",
            "{problem}"
        );
    }
    // An answer as an integer too wide for 64 bits is out of range (it was read as a
    // rounded double); an id named twice in the same spelling is a duplicate too (the map
    // kept the last one).
    for path in ["answers", "submit"] {
        let method = if path == "answers" {
            Method::PUT
        } else {
            Method::POST
        };
        for (body, code, field) in [
            (
                format!(r#"{{"answers":{{"{nu}":212000000000000000000}}}}"#),
                "out_of_range",
                format!("/answers/{nu}"),
            ),
            (
                format!(r#"{{"answers":{{"{sc}":0,"{sc}":1}}}}"#),
                "duplicate_field",
                "/answers".to_owned(),
            ),
        ] {
            let response = app
                .client
                .request(
                    method.clone(),
                    app.url(&format!("/api/v1/public/invites/{token}/{path}")),
                )
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let problem = assert_problem(response, 400, "validation_failed").await;
            assert_eq!(
                (
                    &problem["errors"][0]["code"],
                    &problem["errors"][0]["field"]
                ),
                (&json!(code), &json!(field)),
                "{body}: {problem}"
            );
        }
    }
    assert_eq!(app.snapshot().await, before);
    let again: Value = candidate(&app, Method::GET, &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["answers"], expected,
        "the refused requests changed nothing"
    );
    let submitted = candidate(
        &app,
        Method::POST,
        &format!("{token}/submit"),
        Some(json!({"answers": spelled})),
    )
    .await;
    assert_eq!(submitted.status(), 201);
    let subs: Value = app
        .get(&format!("/api/v1/assessments/{id}/submissions"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let sub_id = subs["data"][0]["id"].as_str().unwrap();
    let detail: Value = app
        .get(&format!("/api/v1/submissions/{sub_id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        detail["answers"], expected,
        "submitted under the canonical ids"
    );
}

async fn the_server_enforces_the_deadline_and_auto_submits_abandoned_attempts(backend: Backend) {
    let app = spawn_app_with(
        backend,
        |c| c.assessments.sweep_interval_s = 1,
        Router::new(),
    )
    .await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Timed")).await;
    let late = invite(&app, &ann.token, &id, "late@example.com").await;
    let gone = invite(&app, &ann.token, &id, "gone@example.com").await;
    let started: Value = candidate(&app, Method::POST, &format!("{late}/start"), None)
        .await
        .json()
        .await
        .unwrap();
    let gone_view: Value = candidate(&app, Method::POST, &format!("{gone}/start"), None)
        .await
        .json()
        .await
        .unwrap();
    let saved = answers(&gone_view, &[("2+2?", json!(1))]);
    candidate(
        &app,
        Method::PUT,
        &format!("{gone}/answers"),
        Some(json!({"answers": saved})),
    )
    .await;
    // Within the grace period a submission still counts…
    app.clock
        .advance(time::Duration::minutes(30) + time::Duration::seconds(10));
    let all = answers(&started, &[("2+2?", json!(1))]);
    assert_eq!(
        candidate(
            &app,
            Method::POST,
            &format!("{late}/submit"),
            Some(json!({"answers": all}))
        )
        .await
        .status(),
        201
    );
    // … beyond it, nothing is accepted, and the sweeper submits what was saved.
    app.clock.advance(time::Duration::seconds(30));
    let refused = candidate(
        &app,
        Method::POST,
        &format!("{gone}/submit"),
        Some(json!({})),
    )
    .await;
    let code = refused.status().as_u16();
    assert!(code == 409, "{code}");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["code"] == "deadline_passed" || body["code"] == "already_submitted",
        "{body}"
    );
    // The sweeper leaves a request timeout for submits still in flight; meanwhile the
    // candidate sees that the time is up (no questions, no answers).
    let view: Value = candidate(&app, Method::GET, &gone, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "time_up", "{view}");
    assert_eq!(view["questions"], json!([]));
    app.clock.advance(time::Duration::minutes(5));
    assert!(
        eventually(10, || async {
            let v: Value = candidate(&app, Method::GET, &gone, None)
                .await
                .json()
                .await
                .unwrap();
            v["status"] == "submitted"
        })
        .await,
        "the sweeper auto-submits"
    );
    let view: Value = candidate(&app, Method::GET, &gone, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            view["result"]["auto_submitted"].as_bool(),
            view["result"]["earned"].as_u64()
        ),
        (Some(true), Some(1))
    );
}

async fn expired_and_revoked_invites_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Invites")).await;
    let response = app
        .post(
            &format!("/api/v1/assessments/{id}/invites"),
            &ann.token,
            &json!({"candidates": [{"email": "short@example.com"}], "expires_in_hours": 1}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let short = body["invites"][0]["token"].as_str().unwrap().to_owned();
    let revoked = invite(&app, &ann.token, &id, "revoked@example.com").await;
    let invites: Value = app
        .get(&format!("/api/v1/assessments/{id}/invites"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let revoked_id = invites["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == "revoked@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .request(
            Method::DELETE,
            &format!("/api/v1/assessments/{id}/invites/{revoked_id}"),
            Some(&ann.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_problem(
        candidate(&app, Method::GET, &revoked, None).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        candidate(&app, Method::GET, "tli_unknown", None).await,
        404,
        "not_found",
    )
    .await;
    app.clock.advance(time::Duration::hours(2));
    assert_problem(
        candidate(&app, Method::POST, &format!("{short}/start"), None).await,
        410,
        "invite_expired",
    )
    .await;
    // Invited again, the revoked and the expired (never started) invites are re-issued: the
    // same invite with a new token; the old tokens stay dead. An active one is not.
    let active = invite(&app, &ann.token, &id, "active@example.com").await;
    let again: Value = app
        .post(
            &format!("/api/v1/assessments/{id}/invites"),
            &ann.token,
            &json!({"candidates": [
                {"email": "revoked@example.com"},
                {"email": "short@example.com"},
                {"email": "active@example.com"},
            ]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let results = again["invites"].as_array().unwrap();
    assert_eq!(results[0]["status"], "reissued", "{again}");
    assert_eq!(results[0]["id"], json!(revoked_id));
    assert_eq!(results[1]["status"], "reissued", "{again}");
    assert_eq!(results[2]["status"], "already_invited");
    assert!(results[2]["token"].is_null());
    for old in [&revoked, &short] {
        let refused = candidate(&app, Method::GET, old, None).await;
        assert_eq!(refused.status(), 404, "an old token stays dead");
    }
    for result in &results[..2] {
        let token = result["token"].as_str().unwrap();
        let view: Value = candidate(&app, Method::GET, token, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(view["status"], "not_started", "{view}");
    }
    let view: Value = candidate(&app, Method::GET, &active, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "not_started");
    let draft = create(&app, &ann.token, settings("Draft")).await;
    let response = app
        .post(
            &format!(
                "/api/v1/assessments/{}/invites",
                draft["id"].as_str().unwrap()
            ),
            &ann.token,
            &json!({"candidates": [{"email": "x@example.com"}]}),
        )
        .await;
    assert_problem(response, 409, "invalid_transition").await;
}

async fn share_links_register_candidates_without_revealing_existing_invites(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Open")).await;
    invite(&app, &ann.token, &id, "known@example.com").await;
    let url = share_link_url(&app, &ann.token, &id).await;
    let response = app
        .client
        .post(&url)
        .json(&json!({"email": "new@example.com", "name": "New"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let registered: Value = response.json().await.unwrap();
    let token = registered["token"].as_str().unwrap();
    assert_eq!(
        candidate(&app, Method::GET, token, None).await.status(),
        200
    );
    let response = app
        .client
        .post(&url)
        .json(&json!({"email": "KNOWN@example.com"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 409, "already_invited").await;
    assert!(
        !problem.to_string().contains("tli_"),
        "the existing token is never returned"
    );
    let unknown = app
        .client
        .post(app.url("/api/v1/public/share/tls_nope/register"))
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_problem(unknown, 404, "not_found").await;
    // A closed assessment takes no registrations: no new link (it would be dead).
    let closed = app
        .post(
            &format!("/api/v1/assessments/{id}/close"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(closed.status(), 200);
    let before = assessment_and_counts(&app, &ann.token, &id).await;
    let refused = app
        .post(
            &format!("/api/v1/assessments/{id}/share-link"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_problem(refused, 409, "invalid_transition").await;
    assert_eq!(
        assessment_and_counts(&app, &ann.token, &id).await,
        before,
        "the refusal changed nothing"
    );
}

/// A new share link of the assessment `id`; its registration URL.
async fn share_link_url(app: &TestApp, token: &str, id: &str) -> String {
    let link: Value = app
        .post(
            &format!("/api/v1/assessments/{id}/share-link"),
            token,
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    app.url(link["register_url"].as_str().unwrap())
}

/// A registration whose answer was lost can be sent again with its key and gets the same
/// answer (the same token, which works); without a key it was `409 already_invited` with no
/// way to the token. The key is the candidate's secret there: another request with it, a
/// short key, or the key on another link get no token and change nothing.
async fn a_share_link_registration_with_a_key_is_safe_to_retry(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Open")).await;
    let other = published(&app, &ann.token, settings("Other")).await;
    let urls = [
        share_link_url(&app, &ann.token, &id).await,
        share_link_url(&app, &ann.token, &other).await,
    ];
    let register = |url: &str, key: &str, body: Value| {
        app.client
            .post(url)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let key = uuid::Uuid::new_v4().to_string();
    let bob = json!({"email": "bob@example.com", "name": "Bob"});
    let first = register(&urls[0], &key, bob.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = first.text().await.unwrap();
    let again = register(&urls[0], &key, bob.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.text().await.unwrap(),
        first,
        "byte-identical, with the same token"
    );
    let token = serde_json::from_str::<Value>(&first).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        candidate(&app, Method::GET, &token, None).await.status(),
        200
    );
    // Without the key, the email is taken: its token is not told.
    let unkeyed = app.client.post(&urls[0]).json(&bob).send().await.unwrap();
    let problem = assert_problem(unkeyed, 409, "already_invited").await;
    assert!(!problem.to_string().contains("tli_"));
    // The key with another request, a short key: refused, nothing changed.
    let before = (
        assessment_and_counts(&app, &ann.token, &id).await,
        app.count("invites").await,
    );
    let other = register(&urls[0], &key, json!({"email": "bob@example.com"}))
        .await
        .unwrap();
    assert_problem(other, 422, "idempotency_key_reused").await;
    let short = register(&urls[0], "abc", json!({"email": "carol@example.com"}))
        .await
        .unwrap();
    let problem = assert_problem(short, 400, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "invalid_idempotency_key");
    let after = (
        assessment_and_counts(&app, &ann.token, &id).await,
        app.count("invites").await,
    );
    assert_eq!(after, before, "the refusals changed nothing");
    // A refused registration stores nothing under its key: the key then serves a corrected
    // request.
    let key2 = uuid::Uuid::new_v4().to_string();
    let taken = register(&urls[0], &key2, json!({"email": "bob@example.com"}))
        .await
        .unwrap();
    assert_problem(taken, 409, "already_invited").await;
    let corrected = register(&urls[0], &key2, json!({"email": "dora@example.com"}))
        .await
        .unwrap();
    assert_eq!(corrected.status(), 201);
    assert!(corrected.headers().get("idempotent-replayed").is_none());
    // A key belongs to its link.
    let elsewhere = register(&urls[1], &key, bob.clone()).await.unwrap();
    assert_eq!(elsewhere.status(), 201);
    assert!(elsewhere.headers().get("idempotent-replayed").is_none());
    let elsewhere: Value = elsewhere.json().await.unwrap();
    assert_ne!(elsewhere["token"].as_str().unwrap(), token);
    assert_eq!(app.count("invites").await, before.1 + 2);
}

async fn pass_is_decided_on_exact_arithmetic_and_unicode_answers_match(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    for (percent, expected) in [(66, true), (67, false)] {
        let a = create(&app, &ann.token, json!({"title": format!("Threshold {percent}"), "time_limit_minutes": 10, "passing_score_percent": percent, "show_score_to_candidate": true})).await;
        let id = a["id"].as_str().unwrap().to_owned();
        for prompt in ["Ｃａｆé?", "One", "Two"] {
            add_question(
                &app,
                &ann.token,
                &id,
                json!({"type": "short_text", "prompt": prompt, "accepted_answers": ["café"]}),
            )
            .await;
        }
        app.post(
            &format!("/api/v1/assessments/{id}/publish"),
            &ann.token,
            &json!({}),
        )
        .await;
        let token = invite(&app, &ann.token, &id, "c@example.com").await;
        let view: Value = candidate(&app, Method::POST, &format!("{token}/start"), None)
            .await
            .json()
            .await
            .unwrap();
        // 2 of 3: 66.67% passes at 66 and fails at 67, decided without rounding.
        let given = answers(
            &view,
            &[
                ("Ｃａｆé?", json!("  CAFÉ  ")),
                ("One", json!("Café")),
                ("Two", json!("tea")),
            ],
        );
        let result: Value = candidate(
            &app,
            Method::POST,
            &format!("{token}/submit"),
            Some(json!({"answers": given})),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            (
                result["result"]["earned"].as_u64(),
                result["result"]["passed"].as_bool()
            ),
            (Some(2), Some(expected)),
            "{percent}%"
        );
        app.post(
            &format!("/api/v1/assessments/{id}/close"),
            &ann.token,
            &json!({}),
        )
        .await;
    }
}

async fn reviews_follow_the_state_machine_and_are_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Review")).await;
    let token = invite(&app, &ann.token, &id, "c@example.com").await;
    candidate(&app, Method::POST, &format!("{token}/start"), None).await;
    candidate(
        &app,
        Method::POST,
        &format!("{token}/submit"),
        Some(json!({})),
    )
    .await;
    let subs: Value = app
        .get(
            &format!("/api/v1/assessments/{id}/submissions?review_status=submitted"),
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/api/v1/submissions/{}/review",
        subs["data"][0]["id"].as_str().unwrap()
    );
    assert_problem(
        app.post(&path, &ann.token, &json!({"decision": "approve"}))
            .await,
        409,
        "invalid_transition",
    )
    .await;
    assert_problem(
        app.post(&path, &ann.token, &json!({"decision": "maybe"}))
            .await,
        400,
        "validation_failed",
    )
    .await;
    for decision in ["verify", "approve", "archive"] {
        let response = app
            .post(
                &path,
                &ann.token,
                &json!({"decision": decision, "note": format!("{decision}d")}),
            )
            .await;
        assert_eq!(response.status(), 200, "{decision}");
    }
    let detail: Value = app
        .get(&path.replace("/review", ""), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["review_status"], "archived");
    let trail: Vec<(&str, &str)> = detail["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["from"].as_str().unwrap(), r["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        trail,
        [
            ("submitted", "verified"),
            ("verified", "approved"),
            ("approved", "archived")
        ]
    );
    assert!(
        app.execute("UPDATE submission_reviews SET note = 'forged'")
            .await
            .is_err(),
        "review records are immutable"
    );
}

async fn results_are_exported_as_formula_safe_csv(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("Export")).await;
    let token = invite(&app, &ann.token, &id, "=hyperlink(1)@example.com").await;
    candidate(&app, Method::POST, &format!("{token}/start"), None).await;
    candidate(
        &app,
        Method::POST,
        &format!("{token}/submit"),
        Some(json!({})),
    )
    .await;
    let response = app
        .get(&format!("/api/v1/assessments/{id}/results.csv"), &ann.token)
        .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers().get("link").is_none(),
        "one part holds it all"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("submission_id,email,earned,total,percent,passed"));
    assert!(text.contains("'=hyperlink(1)@example.com"), "{text}");
    // A part continues where a cursor (of the listing, or of a part's `Link`) says.
    let token = invite(&app, &ann.token, &id, "bob@example.com").await;
    candidate(&app, Method::POST, &format!("{token}/start"), None).await;
    candidate(
        &app,
        Method::POST,
        &format!("{token}/submit"),
        Some(json!({})),
    )
    .await;
    let first: Value = app
        .get(
            &format!("/api/v1/assessments/{id}/submissions?limit=1"),
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/api/v1/assessments/{id}/results.csv?cursor={cursor}"),
            &ann.token,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        rest.lines().count(),
        2,
        "the header and the one row after: {rest}"
    );
    assert!(!rest.contains(first["data"][0]["id"].as_str().unwrap()));
    let bad = app
        .get(
            &format!("/api/v1/assessments/{id}/results.csv?cursor=nope"),
            &ann.token,
        )
        .await;
    assert_problem(bad, 400, "invalid_cursor").await;
}

async fn another_organization_sees_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let id = published(&app, &ann.token, settings("Private")).await;
    for path in [
        format!("/api/v1/assessments/{id}"),
        format!("/api/v1/assessments/{id}/invites"),
        format!("/api/v1/assessments/{id}/submissions"),
    ] {
        assert_problem(app.get(&path, &bob.token).await, 404, "not_found").await;
    }
    assert_problem(
        app.post(
            &format!("/api/v1/assessments/{id}/close"),
            &bob.token,
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let mine: Value = app
        .get(&format!("/api/v1/assessments/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["status"], "published");
}

async fn revising_a_published_assessment_never_changes_what_candidates_took(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let id = published(&app, &ann.token, settings("V1")).await;
    let token = invite(&app, &ann.token, &id, "c@example.com").await;
    let before: Value = candidate(&app, Method::POST, &format!("{token}/start"), None)
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .post(
            &format!("/api/v1/assessments/{id}/revise"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let v2: Value = response.json().await.unwrap();
    assert_eq!(
        (
            v2["version_number"].as_u64(),
            v2["status"].as_str(),
            v2["question_count"].as_u64()
        ),
        (Some(2), Some("draft"), Some(5))
    );
    let v2_id = v2["id"].as_str().unwrap();
    add_question(
        &app,
        &ann.token,
        v2_id,
        json!({"type": "true_false", "prompt": "New in v2", "correct": true}),
    )
    .await;
    let after: Value = candidate(&app, Method::GET, &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["questions"], before["questions"],
        "the candidate's version is frozen"
    );
}

/// What a candidate-facing JSON body may contain, key by key (the documented `CandidateView`,
/// `SavedResponse`, `RegisterResponse` and problem bodies); `show_score` says whether the
/// score fields may carry values. Anything else (an answer key, per-question results, another
/// field added later) fails until it is reviewed and added here.
fn assert_candidate_shape(body: &Value, show_score: bool) {
    assert_no_answer_key(body);
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let allowed = |v: &Value, allowed: &[&str], what: &str| {
        for key in keys(v) {
            assert!(
                allowed.contains(&key.as_str()),
                "{what} has an undocumented field {key}: {v}"
            );
        }
    };
    if body.get("code").is_some() {
        allowed(
            body,
            &[
                "type",
                "title",
                "status",
                "detail",
                "code",
                "request_id",
                "errors",
            ],
            "a problem",
        );
        for error in body["errors"].as_array().into_iter().flatten() {
            allowed(error, &["field", "code", "detail"], "a field error");
        }
        return;
    }
    if body.get("saved_at").is_some() || body.get("invite_id").is_some() {
        allowed(
            body,
            &["saved_at", "invite_id", "token", "expires_at"],
            "a small response",
        );
        return;
    }
    allowed(
        body,
        &[
            "status",
            "assessment",
            "email",
            "invite_expires_at",
            "attempt",
            "questions",
            "answers",
            "result",
        ],
        "the candidate view",
    );
    allowed(
        &body["assessment"],
        &[
            "title",
            "description",
            "time_limit_minutes",
            "question_count",
            "total_points",
        ],
        "the assessment",
    );
    allowed(
        &body["attempt"],
        &["started_at", "deadline_at", "saved_at"],
        "the attempt",
    );
    for question in body["questions"].as_array().unwrap() {
        allowed(
            question,
            &["id", "type", "prompt", "points", "options"],
            "a question",
        );
    }
    let result = &body["result"];
    allowed(
        result,
        &[
            "submitted_at",
            "auto_submitted",
            "earned",
            "total",
            "percent",
            "passed",
        ],
        "the result",
    );
    if result.is_object() && !show_score {
        for field in ["earned", "total", "percent", "passed"] {
            assert!(
                result[field].is_null(),
                "{field} is shown although hidden: {body}"
            );
        }
    }
}

async fn candidate_responses_reveal_no_answer_key_no_hidden_score_and_no_other_candidate(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    for show_score in [false, true] {
        let mut body = settings(&format!("Walk {show_score}"));
        body["show_score_to_candidate"] = json!(show_score);
        let id = published(&app, &ann.token, body).await;
        let alice = invite(
            &app,
            &ann.token,
            &id,
            &format!("alice-{show_score}@example.com"),
        )
        .await;
        let bob = invite(
            &app,
            &ann.token,
            &id,
            &format!("bob-{show_score}@example.com"),
        )
        .await;
        let link: Value = app
            .post(
                &format!("/api/v1/assessments/{id}/share-link"),
                &ann.token,
                &json!({}),
            )
            .await
            .json()
            .await
            .unwrap();
        let share = link["token"].as_str().unwrap().to_owned();
        // Bob starts and saves a distinctive answer first.
        let bob_view: Value = candidate(&app, Method::POST, &format!("{bob}/start"), None)
            .await
            .json()
            .await
            .unwrap();
        let bob_answers = answers(
            &bob_view,
            &[("Capital of France?", json!("bob-only-answer"))],
        );
        let saved = candidate(
            &app,
            Method::PUT,
            &format!("{bob}/answers"),
            Some(json!({"answers": bob_answers})),
        )
        .await;
        assert_eq!(saved.status(), 200);
        let bob_before: Value = candidate(&app, Method::GET, &bob, None)
            .await
            .json()
            .await
            .unwrap();

        // Every candidate-facing route, right and wrong, as Alice (and an outsider).
        let mut bodies: Vec<(String, Value)> = Vec::new();
        let mut record = |what: &str, status: u16, body: Value| {
            bodies.push((format!("{what} ({status})"), body));
        };
        let steps: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, alice.clone(), None),
            (
                Method::PUT,
                format!("{alice}/answers"),
                Some(json!({"answers": {}})),
            ),
            (Method::POST, format!("{alice}/submit"), Some(json!({}))),
            (Method::POST, format!("{alice}/start"), None),
            (Method::POST, format!("{alice}/start"), None),
            (Method::GET, alice.clone(), None),
        ];
        let mut started = Value::Null;
        for (method, path, body) in steps {
            let response = candidate(&app, method.clone(), &path, body).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if path.ends_with("/start") {
                started = body.clone();
            }
            record(&format!("{method} {path}"), status, body);
        }
        let all = answers(
            &started,
            &[
                ("2+2?", json!(0)),
                ("Primes?", json!([0])),
                ("Rust is memory safe", json!(true)),
                ("Capital of France?", json!("Lyon")),
                ("Boiling point of water in F", json!(100)),
            ],
        );
        let question = started["questions"][0]["id"].as_str().unwrap().to_owned();
        for (method, path, body) in [
            (
                Method::PUT,
                format!("{alice}/answers"),
                json!({"answers": {question.clone(): "not an answer at all"}}),
            ),
            (
                Method::PUT,
                format!("{alice}/answers"),
                json!({"answers": {(uuid::Uuid::now_v7().to_string()): 1}}),
            ),
            (
                Method::PUT,
                format!("{alice}/answers"),
                json!({"answers": all.clone()}),
            ),
            (
                Method::POST,
                format!("{alice}/submit"),
                json!({"answers": all.clone()}),
            ),
            (Method::POST, format!("{alice}/submit"), json!({})),
            (
                Method::PUT,
                format!("{alice}/answers"),
                json!({"answers": {}}),
            ),
        ] {
            let response = candidate(&app, method.clone(), &path, Some(body)).await;
            let status = response.status().as_u16();
            record(
                &format!("{method} {path}"),
                status,
                response.json().await.unwrap(),
            );
        }
        let after: Value = candidate(&app, Method::GET, &alice, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(after["status"], "submitted");
        record("GET after submit", 200, after);
        for (path, body) in [
            (
                format!("/api/v1/public/share/{share}/register"),
                json!({"email": format!("carol-{show_score}@example.com")}),
            ),
            (
                format!("/api/v1/public/share/{share}/register"),
                json!({"email": format!("bob-{show_score}@example.com")}),
            ),
            (
                format!("/api/v1/public/share/{alice}/register"),
                json!({"email": "dave@example.com"}),
            ),
        ] {
            let response = app.send_json(Method::POST, &path, None, &body).await;
            let status = response.status().as_u16();
            record(
                &format!("POST {path}"),
                status,
                response.json().await.unwrap(),
            );
        }
        // Ids are not tokens: the invite's id, the submission's id, Bob's invite id.
        let invites: Value = app
            .get(&format!("/api/v1/assessments/{id}/invites"), &ann.token)
            .await
            .json()
            .await
            .unwrap();
        for invite in invites["data"].as_array().unwrap() {
            let invite_id = invite["id"].as_str().unwrap();
            let response = candidate(&app, Method::GET, invite_id, None).await;
            record(
                "an invite id as token",
                404,
                assert_problem(response, 404, "not_found").await,
            );
        }

        assert!(bodies.len() >= 16, "walked {}", bodies.len());
        eprintln!(
            "candidate responses (scores shown: {show_score}): {} bodies",
            bodies.len()
        );
        for (what, body) in &bodies {
            assert_candidate_shape(body, show_score);
            let text = body.to_string();
            assert!(
                !text.contains("bob-only-answer") && !text.contains(&format!("bob-{show_score}@")),
                "{what} shows another candidate: {text}"
            );
            assert!(!text.contains(&bob), "{what} shows Bob's token");
        }
        let shown = bodies
            .iter()
            .filter(|(_, b)| b["result"]["earned"].is_u64())
            .count();
        assert_eq!(
            shown > 0,
            show_score,
            "scores shown only when the employer allows it"
        );
        // Bob's attempt is exactly as he left it.
        let bob_after: Value = candidate(&app, Method::GET, &bob, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            bob_after, bob_before,
            "another candidate's actions changed Bob's attempt"
        );
        assert_eq!(bob_after["answers"], bob_answers);
        assert_eq!(bob_after["email"], format!("bob-{show_score}@example.com"));
    }
}

/// The question order is a `PUT` with a required `If-Match`: without a key a retry after a
/// lost response fails `412` (the first attempt moved the revision on); with one it gets the
/// first response again, and the order changes once.
async fn reordering_with_a_key_replays_a_lost_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.sign_up("ann@example.com").await;
    let a = create(&app, &ann.token, settings("Order")).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for prompt in ["First?", "Second?"] {
        let added = add_question(
            &app,
            &ann.token,
            &id,
            json!({"type": "true_false", "prompt": prompt, "correct": true}),
        )
        .await;
        ids.push(added["id"].as_str().unwrap().to_owned());
    }
    let detail: Value = app
        .get(&format!("/api/v1/assessments/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    let etag = format!("\"r{}\"", detail["revision"].as_u64().unwrap());
    let reorder_to = |order: [&String; 2]| {
        app.request(
            Method::PUT,
            &format!("/api/v1/assessments/{id}/questions/order"),
            Some(&ann.token),
        )
        .header("if-match", etag.clone())
        .header("idempotency-key", "reorder-1")
        .json(&json!({ "question_ids": order }))
        .send()
    };
    let reorder = || reorder_to([&ids[1], &ids[0]]);
    let first = reorder().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = reorder().await.unwrap();
    let again_status = again.status();
    let again_body = again.text().await.unwrap();
    assert_eq!(again_status, 200, "the retry replays: {again_body}");
    let again: Value = serde_json::from_str(&again_body).unwrap();
    assert_eq!(again, first);
    let revision = |v: &Value| v["revision"].as_u64().unwrap();
    let after: Value = app
        .get(&format!("/api/v1/assessments/{id}"), &ann.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        revision(&after),
        revision(&a) + 3,
        "two adds and one reorder"
    );
    // The same key with another order is a different request.
    let other = reorder_to([&ids[0], &ids[1]]).await.unwrap();
    assert_problem(other, 422, "idempotency_key_reused").await;
}

/// `If-Match: *` on a settings edit fills the fields the body leaves out from the current
/// settings: without a guard on the revision it read them at, it put back a setting another
/// admin changed in between (both answered 200). Every change answered 200 must be there.
async fn concurrent_setting_edits_with_a_star_keep_every_accepted_change(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let ann = app.sign_up("ann@example.com").await;
    for round in 0..20 {
        let a = create(&app, &ann.token, settings("Before")).await;
        let id = a["id"].as_str().unwrap().to_owned();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let edits = [
            ("*".to_owned(), json!({"title": format!("Title {round}")})),
            (
                format!("\"r{}\"", a["revision"]),
                json!({"passing_score_percent": 80}),
            ),
        ];
        let mut tasks = Vec::new();
        for (tag, body) in edits {
            let (app, token, barrier, id) =
                (app.clone(), ann.token.clone(), barrier.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let response = app
                    .request(
                        Method::PATCH,
                        &format!("/api/v1/assessments/{id}"),
                        Some(&token),
                    )
                    .header("if-match", tag)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            }));
        }
        let star = tasks.remove(0).await.unwrap();
        let tagged = tasks.remove(0).await.unwrap();
        assert_eq!(star, 200, "a star edit goes through");
        assert!(tagged == 200 || tagged == 412, "{tagged}");
        let now: Value = app
            .get(&format!("/api/v1/assessments/{id}"), &ann.token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            now["title"],
            json!(format!("Title {round}")),
            "round {round}"
        );
        if tagged == 200 {
            assert_eq!(
                now["passing_score_percent"],
                json!(80),
                "round {round}: {now}"
            );
        } else {
            assert_eq!(
                now["passing_score_percent"],
                json!(50),
                "round {round}: {now}"
            );
        }
    }
}

/// The assessment as its owner reads it, and the row counts of every table: what a refused
/// request must leave as it was.
async fn assessment_and_counts(
    app: &TestApp,
    token: &str,
    id: &str,
) -> (Value, Vec<(String, i64)>) {
    let body: Value = app
        .get(&format!("/api/v1/assessments/{id}"), token)
        .await
        .json()
        .await
        .unwrap();
    (body, app.snapshot().await)
}
