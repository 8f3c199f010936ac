//! problem+json (RFC 9457) errors. Every HTTP error of every service goes
//! through [`Problem`], which names a stable `code`, and where the input was
//! wrong, the `field` and the `rule` it broke.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Boxed, so that `Result<_, Problem>` stays one pointer wide on the
/// happy path.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemBody>);

impl std::ops::Deref for Problem {
    type Target = ProblemBody;
    fn deref(&self) -> &ProblemBody {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemBody {
        &mut self.0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
    /// The methods a `405` names in its `Allow` header.
    #[serde(skip)]
    pub allow: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

/// A field that broke a rule (`422`): both are named, for the client to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}' is invalid: {rule}")]
pub struct Invalid {
    pub field: String,
    pub rule: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl From<&Invalid> for Problem {
    fn from(e: &Invalid) -> Self {
        Problem::invalid(e.field.clone(), e.rule.clone())
    }
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::invalid(e.field, e.rule)
    }
}

/// A request body that is not JSON at all (`400`); one that is JSON but
/// breaks a rule is [`Invalid`] (`422`).
#[derive(Debug, thiserror::Error)]
#[error("body is not valid JSON: {0}")]
pub struct NotJson(#[from] pub serde_json::Error);

impl From<&NotJson> for Problem {
    fn from(e: &NotJson) -> Self {
        Problem::bad_request(format!(
            "{e}; send a JSON object (Content-Type: application/json)"
        ))
    }
}

/// Parses a request body as JSON; the fields are checked after.
pub fn json_body(body: &[u8]) -> Result<serde_json::Value, NotJson> {
    Ok(serde_json::from_slice(body)?)
}

/// What a handler's error is for the client. Each error type maps its own
/// variants to problems ([`problem`](ApiError::problem)); `None` marks an
/// unexpected failure. [`api_error!`](crate::api_error) turns such a type
/// into responses in one place: unexpected failures are logged once, here,
/// with their whole chain and an id the client sees instead of the text;
/// `5xx` problems are logged with their cause too.
pub trait ApiError: std::error::Error + 'static {
    fn problem(&self) -> Option<Problem>;

    /// The problem the client gets, logging what the operator needs.
    fn respond(&self) -> Problem
    where
        Self: Sized,
    {
        match self.problem() {
            Some(p) => {
                if p.status >= 500 {
                    tracing::warn!(status = p.status, error = %chain(self), "request failed");
                }
                p
            }
            None => internal_error("request failed", self),
        }
    }
}

/// Implements `actix_web::ResponseError` for [`ApiError`] types.
#[macro_export]
macro_rules! api_error {
    ($($t:ty),+ $(,)?) => {$(
        impl ::actix_web::ResponseError for $t {
            fn status_code(&self) -> ::actix_web::http::StatusCode {
                let status = $crate::problem::ApiError::problem(self).map_or(500, |p| p.status);
                ::actix_web::http::StatusCode::from_u16(status)
                    .unwrap_or(::actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
            }
            fn error_response(&self) -> ::actix_web::HttpResponse {
                ::actix_web::ResponseError::error_response(&$crate::problem::ApiError::respond(self))
            }
        }
    )+};
}

/// An error and its sources, `: `-separated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    chain
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self(Box::new(ProblemBody {
            type_: format!("https://switchboard.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail: detail.into(),
            field: None,
            rule: None,
            current_status: None,
            retry_after_s: None,
            allow: None,
        }))
    }

    /// `422`: a field broke a rule. The detail says both.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        let field = field.into();
        let rule = rule.into();
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("field '{field}' is invalid: {rule}"),
        );
        p.field = Some(field);
        p.rule = Some(rule);
        p
    }

    /// `400`: a query parameter broke a rule (`field` names it, `rule` says
    /// what it takes).
    pub fn invalid_query(field: impl Into<String>, rule: impl Into<String>) -> Self {
        let field = field.into();
        let rule = rule.into();
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("query parameter '{field}' is invalid: {rule}"),
        );
        p.field = Some(field);
        p.rule = Some(rule);
        p
    }

    /// `400`: the body is not the JSON we expect.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn too_many_requests(detail: impl Into<String>, retry_after_s: u64) -> Self {
        let mut p = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail);
        p.retry_after_s = Some(retry_after_s.max(1));
        p
    }

    /// `405` with `Allow` listing what the path takes.
    pub fn method_not_allowed(method: &str, allow: &[&str]) -> Self {
        let allow = allow.join(", ");
        let mut p = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here; this path takes {allow}"),
        );
        p.allow = Some(allow);
        p
    }

    /// `503`: a dependency (NATS, PostgreSQL) is unreachable; nothing was
    /// stored, retry with the same idempotency key.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// `500` for a bug or an unexpected failure. The caller logs the cause
    /// with `error_id`; the client only sees the id.
    pub fn internal(error_id: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error {error_id}; the server log has the details"),
        )
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(s) = self.retry_after_s {
            res.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if let Some(allow) = &self.allow {
            res.insert_header((header::ALLOW, allow.clone()));
        }
        res.json(&*self.0)
    }
}

/// Logs an unexpected error with its whole chain once, and returns the
/// `500` problem that shows the client only an id.
pub fn internal_error(context: &str, error: &(dyn std::error::Error + 'static)) -> Problem {
    let id = format!("err_{:016x}", rand_id());
    tracing::error!(error_id = %id, error = %chain(error), "{context}");
    Problem::internal(&id)
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
