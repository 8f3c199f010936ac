//! Suggestions (DESIGN.md §4): agents post batches, dashboards list them and
//! respond. Every change is stored in PostgreSQL first, then announced as
//! `suggestion.created` / `suggestion.updated` to room `suggestions` (and
//! `user:{user_id}`) and as a domain event.

use std::collections::{HashMap, HashSet};

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::{Problem, api_error};
use switchboard_proto::TenantId;

use super::auth::TenantKey;
use super::events::idempotency_key;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body, page, repository_problem};
use crate::delivery::deliver_now;
use crate::domain::fields::{Fields, text};
use crate::domain::notification::{Preferences, severity_of};
use crate::domain::secrets;
use crate::domain::suggestion::{
    ACTION_RULE, Action, BATCH_ID_RULE, NewSuggestion, PRIORITY_RULE, Priority, STATUS_RULE,
    Status, USER_ID_RULE, cursor, parse_user_id, valid_agent_type, valid_batch_id,
};
use crate::outbound::{publish_announcements, suggestion_json};
use crate::repository::RepositoryError;
use crate::repository::announcements::AnnouncementRow;
use crate::repository::notifications::NotificationRow;
use crate::repository::suggestions::{
    CreateOutcome, IdempotencyRecord, NewResponse, RespondOutcome, SuggestionFilter, SuggestionRow,
};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::POST, "/v1/tenants/{tenant}/suggestions", |r| {
            r.to(create)
        }),
        Endpoint::new(Method::GET, "/v1/tenants/{tenant}/suggestions", |r| {
            r.to(list)
        }),
        // Before `/suggestions/{id}`, which would take it.
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/suggestions/responses",
            |r| r.to(respond_many),
        ),
        Endpoint::new(Method::GET, "/v1/tenants/{tenant}/suggestions/{id}", |r| {
            r.to(get_one)
        }),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/suggestions/{id}/responses",
            |r| r.to(respond_one),
        ),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum SuggestionError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the Idempotency-Key was already used for a different request body")]
    KeyReused,
    #[error("tenant '{tenant}' has no suggestion '{id}'")]
    NotFound { tenant: TenantId, id: String },
    #[error("suggestion '{id}' is {current}; '{action}' is not possible from there")]
    Conflict {
        id: String,
        action: &'static str,
        current: String,
    },
    #[error("the suggestion store failed")]
    Repository(#[from] RepositoryError),
}

impl ApiError for SuggestionError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::KeyReused => Problem::invalid(
                "Idempotency-Key",
                "was already used for a different request body; use a new key for a new request",
            ),
            Self::NotFound { .. } => Problem::not_found(self.to_string()),
            Self::Conflict { current, .. } => {
                let mut p = Problem::conflict(self.to_string()).with_field("action");
                p.current_status = Some(current.clone());
                p
            }
            Self::Repository(e) => return repository_problem(e),
        })
    }
}

api_error!(SuggestionError);

const SUGGESTIONS_RULE: &str = "must be a list of suggestions";
const NOTE_RULE: &str = "must be at most 2000 characters";
const IDEMPOTENCY_SCOPE: &str = "suggestions";
/// Most suggestions one batch response may name.
const MAX_BATCH_RESPONSES: usize = 500;

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

async fn create(
    req: HttpRequest,
    tenant: TenantKey,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SuggestionError> {
    let key = idempotency_key(&req)?;
    let input = json_body(&body)?;
    let f = Fields::object(&input, "", "", &["batch_id", "suggestions"])?;
    let batch_id = match f.opt_str("batch_id", BATCH_ID_RULE)? {
        Some(b) if valid_batch_id(b) => b.to_owned(),
        Some(_) => return Err(f.invalid("batch_id", BATCH_ID_RULE).into()),
        None => new_id("bat"),
    };
    let list = f.array("suggestions", SUGGESTIONS_RULE)?;
    let max = state.settings.max_batch_events;
    if list.is_empty() || list.len() > max {
        return Err(f
            .invalid("suggestions", format!("must hold 1 to {max} suggestions"))
            .into());
    }
    let now = state.clock.now();
    let parsed = list
        .iter()
        .enumerate()
        .map(|(i, s)| NewSuggestion::parse(s, &format!("suggestions[{i}]."), now))
        .collect::<Result<Vec<_>, _>>()?;

    let request_hash = secrets::request_hash(&body);
    if let Some(k) = key.as_deref() {
        let stored = state
            .repo
            .idempotent_response(tenant.as_str(), IDEMPOTENCY_SCOPE, k)
            .await?;
        if let Some(s) = stored {
            let response = s
                .response
                .expect("suggestion records are written whole, in their batch's transaction");
            return replayed(&state, &request_hash, &s.request_hash, response);
        }
    }

    let rows: Vec<SuggestionRow> = parsed
        .into_iter()
        .map(|s| SuggestionRow {
            id: new_id("sug"),
            tenant_id: tenant.as_str().to_owned(),
            batch_id: batch_id.clone(),
            agent_type: s.agent_type,
            title: s.title,
            description: s.description,
            estimated_revenue: s.estimated_revenue,
            confidence_score: s.confidence_score,
            priority: s.priority.as_str().to_owned(),
            user_id: s.user_id,
            status: Status::Pending.as_str().to_owned(),
            created_at: s.created_at.unwrap_or(now),
            updated_at: now,
        })
        .collect();
    let notes = notifications_for(&state, &tenant, &rows).await?;
    let items: Vec<Value> = rows.iter().map(suggestion_json).collect();
    let outbox: Vec<AnnouncementRow> = rows
        .iter()
        .zip(&items)
        .map(|(r, v)| AnnouncementRow {
            id: new_id("ann"),
            tenant_id: tenant.as_str().to_owned(),
            event: "suggestion.created".to_owned(),
            key: r.id.clone(),
            data: v.clone(),
        })
        .collect();
    let response = json!({"batch_id": batch_id, "items": items});

    let outcome = state
        .repo
        .create_suggestions(
            tenant.as_str(),
            &rows,
            &notes,
            &outbox,
            key.as_deref().map(|k| IdempotencyRecord {
                scope: IDEMPOTENCY_SCOPE,
                key: k,
                request_hash: &request_hash,
                response: &response,
            }),
        )
        .await?;
    if let CreateOutcome::Replayed {
        request_hash: stored_hash,
        response,
    } = outcome
    {
        return replayed(&state, &request_hash, &stored_hash, response);
    }
    tracing::info!(tenant = %tenant, batch = %batch_id, count = rows.len(), "suggestions stored");

    publish_announcements(&state, &tenant, &outbox).await;
    let due: Vec<String> = notes
        .iter()
        .filter(|n| !n.held)
        .map(|n| n.id.clone())
        .collect();
    deliver_now(&state, &due).await;
    Ok(HttpResponse::Created().json(response))
}

/// A retried batch: the first answer again, and nothing new stored (the
/// first attempt's announcements are in the outbox, published by it or by
/// the background loop).
fn replayed(
    state: &AppState,
    request_hash: &[u8],
    stored_hash: &[u8],
    response: Value,
) -> Result<HttpResponse, SuggestionError> {
    if request_hash != stored_hash {
        return Err(SuggestionError::KeyReused);
    }
    state.metrics.idempotent_replays.inc();
    Ok(HttpResponse::Created().json(response))
}

/// The notifications new suggestions cause: one per suggestion with a
/// `user_id` whose preferences want its priority and agent type, held when
/// the user is inside quiet hours.
async fn notifications_for(
    state: &AppState,
    tenant: &TenantId,
    rows: &[SuggestionRow],
) -> Result<Vec<NotificationRow>, RepositoryError> {
    let users: HashSet<&str> = rows.iter().filter_map(|r| r.user_id.as_deref()).collect();
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<&str> = users.into_iter().collect();
    let stored = state.repo.preferences_of(tenant.as_str(), &users).await?;
    let prefs: HashMap<String, Preferences> = stored
        .into_iter()
        .filter_map(|(u, v)| Some((u, serde_json::from_value(v).ok()?)))
        .collect();
    let defaults = Preferences::default();
    let now = state.clock.now();
    let mut notes = Vec::new();
    for row in rows {
        let Some(user) = row.user_id.as_deref() else {
            continue;
        };
        let p = prefs.get(user).unwrap_or(&defaults);
        let priority = Priority::parse(&row.priority).unwrap_or(Priority::Low);
        if !p.wants_suggestion(priority, &row.agent_type) {
            continue;
        }
        let held_until = p.held_until(now);
        let suggestion = suggestion_json(row);
        notes.push(NotificationRow {
            id: new_id("ntf"),
            tenant_id: tenant.as_str().to_owned(),
            user_id: user.to_owned(),
            message: row.title.clone(),
            severity: severity_of(priority).to_owned(),
            data: json!({
                "suggestion_id": row.id,
                "agent_type": row.agent_type,
                "priority": row.priority,
                "estimated_revenue": suggestion["estimated_revenue"],
                "confidence_score": suggestion["confidence_score"],
            }),
            held: held_until.is_some(),
            live: p.websocket(),
            created_at: now,
            deliver_at: held_until.unwrap_or(now),
            delivered_at: None,
        });
    }
    Ok(notes)
}

async fn list(
    tenant: TenantKey,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SuggestionError> {
    let (limit, after) = page(&query)?;
    let get = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let filter = SuggestionFilter {
        status: get("status")
            .map(|s| {
                Status::parse(&s)
                    .map(|s| s.as_str().to_owned())
                    .ok_or_else(|| Invalid::new("status", STATUS_RULE))
            })
            .transpose()?,
        agent_type: get("agent_type")
            .map(|a| {
                if valid_agent_type(&a) {
                    Ok(a)
                } else {
                    Err(Invalid::new(
                        "agent_type",
                        crate::domain::suggestion::AGENT_TYPE_RULE,
                    ))
                }
            })
            .transpose()?,
        priority: get("priority")
            .map(|p| {
                Priority::parse(&p)
                    .map(|p| p.as_str().to_owned())
                    .ok_or_else(|| Invalid::new("priority", PRIORITY_RULE))
            })
            .transpose()?,
        user_id: get("user_id")
            .map(|u| {
                parse_user_id(&u)
                    .map(|_| u.clone())
                    .ok_or_else(|| Invalid::new("user_id", USER_ID_RULE))
            })
            .transpose()?,
    };
    let rows = state
        .repo
        .list_suggestions(tenant.as_str(), &filter, after, limit + 1)
        .await?;
    Ok(HttpResponse::Ok().json(cursor::page(
        rows,
        limit,
        |r| (r.created_at, r.id.as_str()),
        suggestion_json,
    )))
}

async fn get_one(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SuggestionError> {
    let (_, id) = path.into_inner();
    let row = state.repo.suggestion(tenant.as_str(), &id).await?;
    match row {
        Some(row) => Ok(HttpResponse::Ok().json(suggestion_json(&row))),
        None => Err(SuggestionError::NotFound {
            tenant: tenant.0,
            id,
        }),
    }
}

/// A response as posted, checked.
struct ValidResponse {
    action: Action,
    user_id: String,
    note: Option<String>,
}

fn parse_response(f: &Fields<'_>) -> Result<ValidResponse, Invalid> {
    let action = Action::parse(f.str("action", ACTION_RULE)?)
        .ok_or_else(|| f.invalid("action", ACTION_RULE))?;
    let user_id = f.str("user_id", USER_ID_RULE)?;
    if parse_user_id(user_id).is_none() {
        return Err(f.invalid("user_id", USER_ID_RULE));
    }
    let note = f.opt_str("note", NOTE_RULE)?;
    if let Some(n) = note {
        text(f, "note", n, 0, 2000, NOTE_RULE)?;
    }
    Ok(ValidResponse {
        action,
        user_id: user_id.to_owned(),
        note: note.map(str::to_owned),
    })
}

enum Applied {
    Updated {
        /// The outbox entry that announces the change.
        announcement: AnnouncementRow,
        suggestion: Value,
    },
    Conflict(String),
    NotFound,
}

async fn apply(
    state: &AppState,
    tenant: &TenantId,
    suggestion_id: &str,
    r: &ValidResponse,
) -> Result<Applied, RepositoryError> {
    if suggestion_id.is_empty() || suggestion_id.len() > 128 {
        return Ok(Applied::NotFound);
    }
    let allowed: Vec<&str> = r.action.allowed_from().iter().map(|s| s.as_str()).collect();
    let response_id = new_id("rsp");
    let announcement_id = new_id("ann");
    let outcome = state
        .repo
        .respond(
            tenant.as_str(),
            suggestion_id,
            &allowed,
            r.action.target().as_str(),
            NewResponse {
                id: &response_id,
                announcement_id: &announcement_id,
                announce_as: suggestion_json,
                action: r.action.as_str(),
                user_id: &r.user_id,
                note: r.note.as_deref(),
                at: state.clock.now(),
            },
        )
        .await?;
    Ok(match outcome {
        RespondOutcome::Updated { suggestion, from } => {
            tracing::info!(
                tenant = %tenant, suggestion = %suggestion.id, from = %from, to = %suggestion.status,
                "suggestion responded to"
            );
            let suggestion = suggestion_json(&suggestion);
            Applied::Updated {
                announcement: AnnouncementRow {
                    id: announcement_id,
                    tenant_id: tenant.as_str().to_owned(),
                    event: "suggestion.updated".to_owned(),
                    key: response_id,
                    data: suggestion.clone(),
                },
                suggestion,
            }
        }
        RespondOutcome::Conflict(current) => Applied::Conflict(current),
        RespondOutcome::NotFound => Applied::NotFound,
    })
}

fn conflict(action: Action, id: &str, current: &str) -> SuggestionError {
    SuggestionError::Conflict {
        id: id.to_owned(),
        action: action.as_str(),
        current: current.to_owned(),
    }
}

async fn respond_one(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SuggestionError> {
    let (_, id) = path.into_inner();
    let input = json_body(&body)?;
    let f = Fields::object(&input, "", "", &["action", "user_id", "note"])?;
    let r = parse_response(&f)?;
    match apply(&state, &tenant, &id, &r).await? {
        Applied::Updated {
            announcement,
            suggestion,
        } => {
            publish_announcements(&state, &tenant, &[announcement]).await;
            Ok(HttpResponse::Ok().json(suggestion))
        }
        Applied::Conflict(current) => Err(conflict(r.action, &id, &current)),
        Applied::NotFound => Err(SuggestionError::NotFound {
            tenant: tenant.0,
            id,
        }),
    }
}

/// The dashboard's batch action: one response for many suggestions
/// (`{"suggestion_ids", "action", "user_id", "note"?}`), or a response per
/// suggestion (`{"responses": [{"suggestion_id", "action", "user_id",
/// "note"?}]}`). Each is applied on its own; the answer says, in request
/// order, which were updated, which conflicted and which were not found.
async fn respond_many(
    tenant: TenantKey,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SuggestionError> {
    let input = json_body(&body)?;
    let f = Fields::object(
        &input,
        "",
        "",
        &["suggestion_ids", "action", "user_id", "note", "responses"],
    )?;
    let mut wanted: Vec<(String, ValidResponse)> = Vec::new();
    if f.get("responses").is_some() {
        if let Some(other) = ["suggestion_ids", "action", "user_id", "note"]
            .into_iter()
            .find(|k| f.get(k).is_some())
        {
            return Err(f
                .invalid(other, "must not be given together with responses")
                .into());
        }
        for (i, v) in f
            .array("responses", "must be a list of responses")?
            .iter()
            .enumerate()
        {
            let prefix = format!("responses[{i}].");
            let one = Fields::object(
                v,
                &prefix,
                &format!("responses[{i}]"),
                &["suggestion_id", "action", "user_id", "note"],
            )?;
            let id = one.str("suggestion_id", "must be a suggestion id")?;
            wanted.push((id.to_owned(), parse_response(&one)?));
        }
    } else {
        let ids = f.array("suggestion_ids", "must be a list of suggestion ids")?;
        for (i, v) in ids.iter().enumerate() {
            let id = v.as_str().ok_or_else(|| {
                Invalid::new(format!("suggestion_ids[{i}]"), "must be a suggestion id")
            })?;
            wanted.push((id.to_owned(), parse_response(&f)?));
        }
    }
    if wanted.is_empty() || wanted.len() > MAX_BATCH_RESPONSES {
        let field = if f.get("responses").is_some() {
            "responses"
        } else {
            "suggestion_ids"
        };
        return Err(f
            .invalid(
                field,
                format!("must name 1 to {MAX_BATCH_RESPONSES} suggestions"),
            )
            .into());
    }

    let mut items = Vec::with_capacity(wanted.len());
    let (mut succeeded, mut conflicted, mut not_found) = (0, 0, 0);
    let mut announce = Vec::new();
    for (id, r) in &wanted {
        match apply(&state, &tenant, id, r).await? {
            Applied::Updated {
                announcement,
                suggestion,
            } => {
                items.push(json!({"id": id, "result": "updated", "status": suggestion["status"], "suggestion": suggestion}));
                succeeded += 1;
                announce.push(announcement);
            }
            Applied::Conflict(current) => {
                items.push(json!({"id": id, "result": "conflict", "status": current, "current_status": current}));
                conflicted += 1;
            }
            Applied::NotFound => {
                items.push(json!({"id": id, "result": "not_found"}));
                not_found += 1;
            }
        }
    }
    publish_announcements(&state, &tenant, &announce).await;
    Ok(HttpResponse::Ok().json(json!({
        "items": items,
        "succeeded": succeeded,
        "conflicted": conflicted,
        "not_found": not_found,
    })))
}
