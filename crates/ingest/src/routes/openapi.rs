//! `GET /openapi.json`: the OpenAPI 3.1 document of every ingest endpoint,
//! written by hand in `openapi.json` next to this file.

use actix_web::HttpResponse;
use actix_web::http::Method;

use super::Endpoint;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(Method::GET, "/openapi.json", |r| {
        r.to(document)
    })]
}

async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mounted_endpoint_is_documented() {
        let doc: serde_json::Value =
            serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for e in crate::routes::endpoints() {
            let method = e.method.as_str().to_lowercase();
            let op = &doc["paths"][e.path][&method];
            assert!(
                op.is_object(),
                "{} {} is not in openapi.json",
                e.method,
                e.path
            );
            assert!(
                op["responses"].is_object(),
                "{} {} documents no responses",
                e.method,
                e.path
            );
            if op["requestBody"].is_object() {
                for status in ["400", "422"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{} {} takes a body but does not document {status}",
                        e.method,
                        e.path
                    );
                }
            }
        }
    }
}
