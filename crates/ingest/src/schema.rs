//! Diesel table definitions for ingest's own tables (migrations/ingest).

diesel::table! {
    tenants (id) {
        id -> Text,
        name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        tenant_id -> Text,
        name -> Text,
        key_hash -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    idempotency_keys (tenant_id, scope, key) {
        tenant_id -> Text,
        scope -> Text,
        key -> Text,
        request_hash -> Bytea,
        response -> Nullable<Jsonb>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    suggestions (id) {
        id -> Text,
        tenant_id -> Text,
        batch_id -> Text,
        agent_type -> Text,
        title -> Text,
        description -> Text,
        estimated_revenue -> Float8,
        confidence_score -> Float8,
        priority -> Text,
        user_id -> Nullable<Text>,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    suggestion_responses (id) {
        id -> Text,
        tenant_id -> Text,
        suggestion_id -> Text,
        action -> Text,
        user_id -> Text,
        note -> Nullable<Text>,
        from_status -> Text,
        to_status -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notification_preferences (tenant_id, user_id) {
        tenant_id -> Text,
        user_id -> Text,
        preferences -> Jsonb,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    notifications (id) {
        id -> Text,
        tenant_id -> Text,
        user_id -> Text,
        message -> Text,
        severity -> Text,
        data -> Jsonb,
        held -> Bool,
        live -> Bool,
        created_at -> Timestamptz,
        deliver_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    announcements (id) {
        id -> Text,
        tenant_id -> Text,
        event -> Text,
        key -> Text,
        data -> Jsonb,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(suggestions -> tenants (tenant_id));
diesel::joinable!(suggestion_responses -> suggestions (suggestion_id));
diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    api_keys,
    idempotency_keys,
    suggestions,
    suggestion_responses,
    notification_preferences,
    notifications,
    announcements,
);
