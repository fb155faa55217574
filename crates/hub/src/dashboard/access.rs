//! `GET /access` (admins): API keys (create — the value shown once —, rotate,
//! revoke; role and agent scope), users (add, disable, enable, remove; how each
//! signs in) and single sign-on (the provider, the groups it admits). Every action
//! is a form the script sends to the keys, users and SSO API.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;
use muster_proto::KeyState;

use super::layout::{Nav, page};
use super::{Viewer, error_page, path_segment, time};
use crate::handlers::{keys, sso, users};
use crate::state::AppState;

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let (keys, users, sso, groups) = match (
        keys::list(State(state.clone())).await,
        users::list(State(state.clone())).await,
        sso::get_sso(State(state.clone())).await,
        sso::list_groups(State(state)).await,
    ) {
        (Ok(Json(k)), Ok(Json(u)), Ok(Json(s)), Ok(Json(g))) => (k.keys, u.users, s, g.groups),
        (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
            return error_page(e.status, "Keys and users could not be read; try again.");
        }
    };
    let body = html! {
        h1 { "Access" }
        section {
            h2 { "API keys" }
            form.grid #key-form data-api="/api/v1/keys" data-method="POST" data-body="key" data-then="key" {
                label { "Name" input type="text" name="name" required placeholder="ci-deploy"; }
                label { "Role" select name="role" { option value="member" { "member" } option value="admin" { "admin" } } }
                label { "Agents (glob, members)" input type="text" name="agents" placeholder="web-*"; }
                label { "Expires after"
                    select name="expires" {
                        option value="" { "never" }
                        option value="86400" { "1 day" }
                        option value="2592000" { "30 days" }
                        option value="31536000" { "1 year" }
                    }
                }
                div { button.primary type="submit" { "Create key" } }
            }
            section #key-result.result hidden aria-live="polite" {
                h3 { "The new key" }
                p.muted.small { "Shown this once: store it now." }
                div.command { pre { code #key-value {} } button.copy type="button" data-copy="#key-value" { "Copy" } }
            }
            @if keys.is_empty() { p.muted { "No API keys." } } @else {
                div.table-wrap { table.keys {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Role" } th scope="col" { "Scope" }
                        th scope="col" { "State" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "" }
                    } }
                    tbody { @for k in &keys { tr data-key-id=(k.id) {
                        td { (k.name) }
                        td { code { (k.prefix) "…" } }
                        td { (k.role.as_str()) }
                        td { (k.agents.as_deref().unwrap_or("all agents")) }
                        td { (k.state.as_str()) }
                        td { (time(k.last_used_at.as_deref())) }
                        td { @if k.expires_at.is_some() { (time(k.expires_at.as_deref())) } @else { "never" } }
                        td.row-actions { @if k.state == KeyState::Active {
                            form data-api={ "/api/v1/keys/" (k.id) "/rotate" } data-method="POST" data-then="key"
                                data-confirm={ "Rotate " (k.name) "? The old value stops working at once." } {
                                button.small type="submit" { "Rotate" }
                            }
                            form data-api={ "/api/v1/keys/" (k.id) "/revoke" } data-method="POST"
                                data-confirm={ "Revoke " (k.name) "?" } {
                                button.danger.small type="submit" { "Revoke" }
                            }
                        } }
                    } } }
                } }
            }
        }
        section {
            h2 { "Users" }
            form.grid #user-form data-api="/api/v1/users" data-method="POST" data-body="user" {
                label { "Name" input type="text" name="name" required autocomplete="off"; }
                label { "Role" select name="role" { option value="member" { "member" } option value="admin" { "admin" } } }
                label { "Password (empty: single sign-on, name = email)" input type="password" name="password" autocomplete="new-password"; }
                div { button.primary type="submit" { "Add user" } }
            }
            div.table-wrap { table.users {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "State" }
                    th scope="col" { "Signs in with" } th scope="col" { "Last SSO" } th scope="col" { "Created" } th scope="col" { "" }
                } }
                tbody { @for u in &users { tr data-user=(u.name) {
                    td {
                        (u.name)
                        @if let Some(d) = &u.display_name { br; span.muted.small { (d) } }
                    }
                    td.role { (u.role.as_str()) }
                    td { @if u.disabled { "disabled" } @else { "enabled" } }
                    td.signs-in {
                        @if u.password { "password" @if u.granted_role.is_some() && u.subject.is_some() { ", " } }
                        @if !u.groups.is_empty() {
                            "single sign-on via " (u.groups.join(", "))
                        } @else if u.granted_role.is_none() {
                            "single sign-on via groups"
                        } @else if !u.password || u.subject.is_some() {
                            "single sign-on"
                        }
                    }
                    td { (time(u.last_login_at.as_deref())) }
                    td { (time(Some(&u.created_at))) }
                    td.row-actions {
                        @if u.name != viewer.name {
                            @if u.disabled {
                                form data-api={ "/api/v1/users/" (path_segment(&u.name)) "/enable" } data-method="POST" {
                                    button.small type="submit" { "Enable" }
                                }
                            } @else {
                                form data-api={ "/api/v1/users/" (path_segment(&u.name)) "/disable" } data-method="POST"
                                    data-confirm={ "Disable " (u.name) "? Their sessions end at once." } {
                                    button.small type="submit" { "Disable" }
                                }
                            }
                            form data-api={ "/api/v1/users/" (path_segment(&u.name)) } data-method="DELETE"
                                data-confirm={ "Remove " (u.name) "?" } {
                                button.danger.small type="submit" { "Remove" }
                            }
                        }
                    }
                } } }
            } }
        }
        section #sso-section {
            h2 { "Single sign-on" }
            @if sso.enabled {
                p {
                    "Signs people in with " strong { (sso.display_name.as_deref().unwrap_or("")) }
                    " (" code { (sso.issuer.as_deref().unwrap_or("")) } "), set from the "
                    (sso.source.as_deref().unwrap_or("hub")) ". Password login is "
                    (if sso.password_login { "on" } else { "off" }) "."
                }
            } @else {
                p.muted { "Not set up: " code { "muster sso set --issuer URL --client-id ID" } " (see OPERATIONS, \"SSO\")." }
            }
            p.small { "Redirect URL to register at the provider: " code { (sso.redirect_url.as_deref().unwrap_or("")) } }
            h3 { "Groups that may sign in" }
            form.grid #group-form data-api="/api/v1/sso/groups" data-method="POST" data-body="group" {
                label { "Group ID (from the groups claim)" input type="text" name="id" required autocomplete="off"; }
                label { "Name" input type="text" name="name" required autocomplete="off"; }
                label { "Role" select name="role" { option value="member" { "member" } option value="admin" { "admin" } } }
                div { button.primary type="submit" { "Authorize group" } }
            }
            @if groups.is_empty() { p.muted { "No groups: only users added by email may sign in." } } @else {
                div.table-wrap { table.groups {
                    thead { tr { th scope="col" { "Group ID" } th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Added" } th scope="col" { "" } } }
                    tbody { @for g in &groups { tr data-group=(g.id) {
                        td { code { (g.id) } }
                        td { (g.name) }
                        td { (g.role.as_str()) }
                        td { (time(Some(&g.created_at))) }
                        td.row-actions {
                            form data-api={ "/api/v1/sso/groups/" (path_segment(&g.id)) } data-method="DELETE"
                                data-confirm={ "Stop admitting " (g.name) "? Members without their own entry are refused from their next sign-in." } {
                                button.danger.small type="submit" { "Remove" }
                            }
                        }
                    } } }
                } }
            }
        }
    };
    page("Access", &viewer, Nav::Access, false, body).into_response()
}
