//! The frame of every page: head (our one stylesheet and one script), the
//! navigation (admin-only entries are not rendered for members), the signed-in user
//! and the logout button.

use maud::{DOCTYPE, Markup, html};

use super::Viewer;
use super::assets::{css_path, js_path};

/// The navigation's entries; the current page is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Enrollment,
    Access,
    Audit,
    Hub,
    Api,
}

/// (entry, link, label, admins only)
const ENTRIES: &[(Nav, &str, &str, bool)] = &[
    (Nav::Fleet, "/", "Fleet", false),
    (Nav::Enrollment, "/enrollment", "Enrollment", true),
    (Nav::Access, "/access", "Access", true),
    (Nav::Audit, "/audit", "Audit", true),
    (Nav::Hub, "/hub", "Hub", true),
    (Nav::Api, "/api", "API", false),
];

/// A full page around `body`. `live` marks pages the script keeps up to date from
/// the hub's event stream, once it has one.
pub fn page(title: &str, viewer: &Viewer, current: Nav, live: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Muster" }
                link rel="stylesheet" href=(css_path());
                script src=(js_path()) defer {}
            }
            body data-live=[live.then_some("on")] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Muster" }
                    nav aria-label="Main" {
                        ul {
                            @for (entry, href, label, admin_only) in ENTRIES {
                                @if !*admin_only || viewer.admin {
                                    li {
                                        a href=(href)
                                            aria-current=[(*entry == current).then_some("page")]
                                            { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span title="Signed in" { (viewer.name) " · " (if viewer.admin { "admin" } else { "member" }) }
                        " "
                        button.link type="button" data-logout { "Log out" }
                    }
                }
                main #main {
                    div.flash role="status" aria-live="polite" hidden {}
                    (body)
                }
            }
        }
    }
}
