//! Finding the running system (`.run/env`, written by scripts/up) and making
//! the bench's own tenant through the admin API, with its limits lifted.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use switchboard_proto::token::{self, Claims, Permissions};
use switchboard_proto::{RoomPattern, TenantId};

/// Addresses and the admin token of the system under test.
#[derive(Debug, Clone)]
pub struct SystemEnv {
    pub ingest_url: String,
    pub admin_token: String,
    pub nats_url: String,
    /// Every `SB_*` variable of the file, passed on to gateways the bench starts.
    pub vars: Vec<(String, String)>,
}

/// Reads `export KEY=VALUE` lines (values as bash's `printf %q` writes them);
/// variables already in the environment win.
pub fn load_env(path: &Path) -> anyhow::Result<SystemEnv> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (run scripts/up first, or pass --env)",
            path.display()
        )
    })?;
    let mut vars: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        if let Some((k, v)) = rest.split_once('=') {
            vars.insert(k.to_owned(), unquote(v));
        }
    }
    // The file describes the system under test and wins: scripts/test
    // exports SB_NATS_URL for the tests (the machine's NATS), while the
    // smoke's system runs on a NATS of its own. Other SB_* settings from the
    // environment (e.g. for the gateways the bench starts) still apply.
    for (k, v) in std::env::vars() {
        if k.starts_with("SB_") {
            vars.entry(k).or_insert(v);
        }
    }
    let get = |k: &str| {
        vars.get(k)
            .cloned()
            .with_context(|| format!("{k} is missing from {}", path.display()))
    };
    let mut list: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| k.starts_with("SB_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    list.sort();
    Ok(SystemEnv {
        ingest_url: get("SB_INGEST_URL")?,
        admin_token: get("SB_ADMIN_TOKEN")?,
        nats_url: vars
            .get("SB_NATS_URL")
            .cloned()
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
        vars: list,
    })
}

/// Undoes `printf %q` for the simple values scripts/up writes (URLs, hex):
/// quotes and backslash escapes.
fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => {}
            c => out.push(c),
        }
    }
    out
}

/// The bench's tenant: its key for ingest, its secret for browser tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub api_key: String,
    pub signing_secret: String,
}

#[derive(Deserialize)]
struct Created {
    id: String,
    api_key: String,
    signing_secret: String,
}

/// Creates a fresh tenant and lifts its request, connection and message
/// limits (0 = none); an ingest without the PATCH endpoint is tolerated.
pub async fn create_tenant(env: &SystemEnv) -> anyhow::Result<Tenant> {
    let http = reqwest::Client::new();
    let name = format!("bench-{:08x}", rand::random::<u32>());
    let res = http
        .post(format!("{}/v1/admin/tenants", env.ingest_url))
        .bearer_auth(&env.admin_token)
        .json(&serde_json::json!({ "id": name, "name": name }))
        .send()
        .await
        .context("POST /v1/admin/tenants")?;
    let status = res.status();
    if status.as_u16() != 201 {
        bail!(
            "creating the bench tenant answered {status}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    let created: Created = res.json().await.context("reading the created tenant")?;
    let res = http
        .patch(format!(
            "{}/v1/admin/tenants/{}",
            env.ingest_url, created.id
        ))
        .bearer_auth(&env.admin_token)
        .json(&serde_json::json!({"limits": {
            "http_rps": 0, "connections": 0, "client_msgs_per_s": 0
        }}))
        .send()
        .await
        .context("PATCH /v1/admin/tenants/{id}")?;
    match res.status().as_u16() {
        200..=299 => {}
        404 | 405 => eprintln!(
            "[bench] ingest has no PATCH /v1/admin/tenants/{{id}} yet; the tenant keeps its default limits"
        ),
        s => bail!(
            "lifting the bench tenant's limits answered {s}: {}",
            res.text().await.unwrap_or_default()
        ),
    }
    Ok(Tenant {
        id: created.id,
        api_key: created.api_key,
        signing_secret: created.signing_secret,
    })
}

/// A browser token for `sub` that may read every room, valid for six hours.
pub fn mint_token(tenant: &Tenant, sub: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs() as i64;
    let mut rooms = BTreeMap::new();
    rooms.insert(
        RoomPattern::parse("*").context("'*' is a room pattern")?,
        Permissions::READ,
    );
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: TenantId::parse(tenant.id.clone()).context("tenant id from ingest")?,
        exp: now + 6 * 3600,
        iat: Some(now),
        info: None,
        rooms,
    };
    Ok(token::sign(&claims, tenant.signing_secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_q_values_are_unquoted() {
        assert_eq!(unquote("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(unquote("'a b'"), "a b");
        assert_eq!(unquote(r"a\ b"), "a b");
    }
}
