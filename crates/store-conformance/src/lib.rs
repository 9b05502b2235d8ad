//! The behavioural suite every store adapter must pass. Each test takes a [`Fixture`] (a fresh,
//! migrated database behind the `Store` trait, plus raw SQL access to prove the schema itself
//! refuses what the code might forget). Adapters instantiate the whole suite with
//! [`conformance_suite!`], so SQLite and PostgreSQL run exactly the same cases in every CI run.

// A test-support crate: a failed expectation is a failed test, so panicking is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod accounts;
pub mod assessment_races;
pub mod assessments;
pub mod delivery;
pub mod events;
pub mod fixtures;
pub mod idempotency;
pub mod inventory;
pub mod reviews;
pub mod schema;

pub use fixtures::*;

/// Expands to one `#[tokio::test]` per conformance case, each calling `$make().await` for a
/// fresh [`Fixture`]. Extra attributes (e.g. `#[ignore = "needs PostgreSQL"]`) apply to all.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path $(, #[$attr:meta])*) => {
        $crate::__cases!($make, [$(#[$attr])*],
            accounts::signup_creates_user_organization_owner_and_token,
            accounts::signup_with_a_taken_email_is_refused_and_changes_nothing,
            accounts::tokens_resolve_to_the_current_role_and_record_revocation,
            accounts::tokens_of_a_removed_member_stop_resolving,
            accounts::a_password_change_is_guarded_by_the_checked_hash,
            accounts::members_are_listed_in_keyset_pages,
            accounts::organizations_of_a_user_are_listed_with_roles,
            accounts::adding_members_checks_user_role_and_duplicates,
            accounts::admins_cannot_touch_owners_and_members_cannot_manage,
            accounts::the_last_owner_can_be_neither_demoted_nor_removed,
            accounts::owners_demoting_each_other_concurrently_leave_one_owner,
            accounts::owners_removing_each_other_concurrently_leave_one_owner,
            accounts::membership_changes_write_audit_records,
            accounts::removing_an_absent_member_is_idempotent,
            accounts::the_default_organization_is_the_oldest_membership,
            schema::database_refuses_removing_the_last_owner_behind_the_codes_back,
            schema::database_refuses_invalid_roles_emails_and_names,
            schema::audit_records_cannot_be_changed_or_deleted,
            schema::database_refuses_deleting_an_unpublished_outbox_row,
            schema::migrations_go_up_down_and_up_again,
            inventory::items_are_created_with_history_and_outbox_in_one_transaction,
            inventory::names_are_unique_per_organization_case_insensitively,
            inventory::names_equal_under_unicode_normalization_and_case_folding_collide,
            inventory::keys_of_the_earlier_rule_are_recomputed_after_migrating,
            inventory::guarded_deltas_refuse_negative_and_overflow_and_change_nothing,
            inventory::another_organizations_item_is_not_found_and_unchanged,
            inventory::updates_check_the_expected_version,
            inventory::deletes_are_idempotent_and_keep_history,
            inventory::batches_are_all_or_nothing_and_list_every_failing_line,
            inventory::crossing_batches_do_not_deadlock,
            inventory::concurrent_deltas_never_lose_updates_or_go_negative,
            inventory::listings_filter_sort_and_page_without_gaps,
            inventory::the_schema_refuses_negative_quantities_and_history_rewrites,
            inventory::outbox_rows_exist_exactly_for_committed_changes,
            inventory::combined_deltas_apply_in_order_and_refuse_individually,
            inventory::combined_deltas_honour_keys_of_earlier_requests,
            inventory::large_combined_batches_apply_every_delta,
            inventory::a_combined_batch_that_fails_half_way_changes_nothing,
            inventory::a_run_of_combined_batches_applies_each_in_order,
            inventory::combined_batches_of_two_organizations_in_opposite_orders_do_not_deadlock,
            idempotency::a_completed_key_replays_and_a_different_request_is_a_mismatch,
            idempotency::a_failed_mutation_stores_nothing_and_a_released_key_can_be_reused,
            idempotency::a_mutation_whose_claim_was_lost_rolls_back,
            idempotency::an_expired_pending_claim_is_taken_over,
            idempotency::an_expired_claim_is_taken_over_by_a_corrected_request,
            idempotency::the_event_log_mark_only_moves_forward_for_its_log,
            idempotency::old_records_are_purged,
            assessments::published_versions_are_frozen_by_the_schema,
            assessments::lifecycle_edges_are_held_by_the_schema,
            assessments::staff_changes_to_assessments_are_audited,
            assessments::transitions_with_a_stale_revision_change_nothing,
            assessments::concurrent_publishes_never_exceed_the_quota,
            assessments::closing_frees_a_slot_and_the_counter_follows_the_status,
            assessments::two_concurrent_submits_leave_exactly_one_submission,
            assessments::deadlines_are_enforced_by_the_guarded_statements,
            assessments::draft_edits_and_share_links_write_outbox_events,
            assessment_races::concurrent_reviews_of_one_submission_apply_one_decision,
            assessment_races::concurrent_edits_at_one_revision_let_exactly_one_through,
            assessment_races::an_edit_racing_a_publish_never_changes_the_published_version,
            assessment_races::concurrent_transitions_and_revisions_run_one_after_another,
            assessment_races::a_start_rechecks_revocation_expiry_and_status_in_its_transaction,
            assessment_races::overlapping_invites_in_opposite_orders_both_succeed,
            assessment_races::a_submit_of_saved_answers_is_refused_when_a_save_replaced_them,
            assessment_races::saves_and_submits_recheck_revocation_in_their_transaction,
            assessment_races::reads_of_an_assessment_show_one_moment_while_it_changes,
            assessments::invite_events_follow_the_request_order,
            assessments::draft_edits_that_change_nothing_are_no_ops,
            reviews::a_review_trail_keeps_the_transition_order_when_the_clock_goes_back,
            reviews::the_database_refuses_two_review_rows_of_one_step_and_a_step_below_one,
            reviews::review_rows_written_before_the_sequence_are_numbered_by_time,
            delivery::outbox_rows_are_leased_per_organization_in_sequence_order,
            delivery::a_round_splits_max_rows_among_its_organizations,
            delivery::completing_marks_rows_once_and_creates_each_delivery_once,
            delivery::only_rows_every_destination_published_are_purged_oldest_first,
            delivery::the_outbox_tells_whether_it_ever_published,
            delivery::failed_publications_are_counted,
            delivery::webhooks_are_listed_per_organization_and_deleted_with_their_deliveries,
            delivery::deliveries_retry_then_die_and_can_be_redelivered,
            delivery::an_attempt_whose_lease_was_lost_records_nothing,
            delivery::deliveries_are_leased_in_turns_per_organization,
            delivery::finished_deliveries_are_purged_with_their_attempts,
            delivery::concurrent_leases_never_take_a_delivery_twice,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cases {
    ($make:path, $attrs:tt, $($module:ident :: $case:ident),* $(,)?) => {$(
        $crate::__case!($make, $attrs, $module, $case);
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case {
    ($make:path, [$(#[$attr:meta])*], $module:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $case() {
            let fixture = $make().await;
            $crate::$module::$case(&fixture).await;
        }
    };
}
