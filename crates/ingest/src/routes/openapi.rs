//! `GET /openapi.json`: the OpenAPI 3.1 document of every ingest endpoint,
//! written by hand in `openapi.json` next to this file.

use super::Endpoint;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn endpoints() -> Vec<Endpoint> {
    vec![switchboard_platform::http::openapi_endpoint()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mounted_endpoint_is_documented() {
        switchboard_platform::http::assert_documented(super::DOCUMENT, crate::routes::endpoints());
    }
}
