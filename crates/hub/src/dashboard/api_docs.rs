//! `GET /api` (members and admins): the hub's API for people — every operation of
//! the published OpenAPI document with its method, path, the role it needs,
//! summary, parameters and the schemas it takes and answers — and a link to the
//! document itself (`/api/v1/openapi.json`).
//!
//! It reads the same document the API serves (`crate::openapi`), so the page, the
//! document and the route table cannot disagree (the table and the document are
//! tied by tests in `api.rs`). Every value goes through maud's escaping.

use axum::Extension;
use maud::{Markup, html};
use serde_json::Value;

use super::Viewer;
use super::layout::{Nav, page};
use crate::openapi::{METHODS, document, role_of};
use crate::principal::Role;

/// One operation as the page lists it.
struct Row<'d> {
    method: &'static str,
    path: &'d str,
    op: &'d Value,
}

pub async fn page_handler(Extension(viewer): Extension<Viewer>) -> Markup {
    let doc = document();
    let mut tags: Vec<(String, Vec<Row<'_>>)> = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                let row = Row { method, path, op };
                match tags.iter_mut().find(|(t, _)| *t == tag) {
                    Some((_, rows)) => rows.push(row),
                    None => tags.push((tag, vec![row])),
                }
            }
        }
    }
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    let count: usize = tags.iter().map(|(_, rows)| rows.len()).sum();
    let body = html! {
        h1 { "API" }
        p {
            "The hub's HTTP API: " (count) " operations, OpenAPI " (doc["openapi"].as_str().unwrap_or("?"))
            ". The machine-readable document: " a href="/api/v1/openapi.json" { code { "/api/v1/openapi.json" } }
            " (public). Errors are always " code { "{\"error\":{\"code\",\"message\"}}" }
            " (" code { "ApiError" } "); API keys go in " code { "Authorization: Bearer …" } "."
        }
        nav.small aria-label="API sections" {
            @for (tag, _) in &tags { a href={ "#api-" (tag) } { (tag) } " " }
        }
        @for (tag, rows) in &tags {
            h2 id={ "api-" (tag) } { (tag) }
            div.table-wrap { table.api {
                thead { tr {
                    th scope="col" { "Method" } th scope="col" { "Path" } th scope="col" { "Role" }
                    th scope="col" { "Summary" } th scope="col" { "Parameters" }
                    th scope="col" { "Request" } th scope="col" { "Responses" }
                } }
                tbody { @for row in rows { (operation(row)) } }
            } }
        }
    };
    page("API", &viewer, Nav::Api, false, body)
}

fn operation(row: &Row<'_>) -> Markup {
    let op = row.op;
    let role = match role_of(op) {
        Ok(None) => "public".to_owned(),
        Ok(Some(Role::Agent)) => "agent".to_owned(),
        Ok(Some(Role::Member)) => "member".to_owned(),
        Ok(Some(Role::Admin)) => "admin".to_owned(),
        Ok(Some(Role::Hub)) => "hub".to_owned(),
        Err(e) => e,
    };
    let params: Vec<String> = op["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{} ({}{})",
                        p["name"].as_str().unwrap_or("?"),
                        p["in"].as_str().unwrap_or("?"),
                        if p["required"].as_bool() == Some(true) {
                            ", required"
                        } else {
                            ""
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let request = op["requestBody"]["content"]
        .as_object()
        .and_then(|c| c.iter().next())
        .map(|(media, c)| schema_name(&c["schema"], media));
    let responses: Vec<(String, String)> = op["responses"]
        .as_object()
        .map(|rs| {
            rs.iter()
                .map(|(status, r)| {
                    let name = r["content"]
                        .as_object()
                        .and_then(|c| c.iter().next())
                        .map(|(media, c)| schema_name(&c["schema"], media))
                        .unwrap_or_default();
                    (status.clone(), name)
                })
                .collect()
        })
        .unwrap_or_default();
    html! {
        tr {
            td { code { (row.method.to_uppercase()) } }
            td { code { (row.path) } }
            td { (role) }
            td { (op["summary"].as_str().unwrap_or("")) }
            td { @for p in &params { span.nowrap { (p) } br; } }
            td { @if let Some(r) = &request { code { (r) } } }
            td { @for (status, name) in &responses {
                span.nowrap { (status) @if !name.is_empty() { " " code { (name) } } } br;
            } }
        }
    }
}

/// A schema as a short name: the component it refers to, or its type, or the
/// media type when it is not JSON.
fn schema_name(schema: &Value, media: &str) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    if !media.starts_with("application/json") {
        return media.to_owned();
    }
    match &schema["type"] {
        Value::String(t) => t.clone(),
        _ => "any".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_lists_every_operation_and_escapes_what_it_shows() {
        let viewer = Viewer {
            name: "<b>eve</b>".to_owned(),
            admin: false,
        };
        let html = page_handler(Extension(viewer)).await.into_string();
        assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;") && !html.contains("<b>eve"));
        let paths = document()["paths"].as_object().unwrap();
        for (path, item) in paths {
            for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                let row = format!(
                    "<td><code>{}</code></td><td><code>{path}</code></td>",
                    method.to_uppercase()
                );
                assert!(html.contains(&row), "{method} {path} is not on the page");
            }
        }
        assert!(html.contains("href=\"/api/v1/openapi.json\""));
        assert!(html.contains("<td>admin</td>") && html.contains("<td>public</td>"));
    }
}
