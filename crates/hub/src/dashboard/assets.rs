//! The dashboard's two files, embedded in the binary: served under names that
//! carry a hash of their content (`/assets/app.<hash>.css`), so browsers may cache
//! them for a year and a new build is fetched at once. Compressed with gzip once,
//! at first use, for clients that accept it.

use std::io::Write as _;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const CSS: &[u8] = include_bytes!("static/app.css");
const JS: &[u8] = include_bytes!("static/app.js");

struct Asset {
    /// `app.<hash>.css`
    name: String,
    content_type: &'static str,
    raw: &'static [u8],
    /// `None` when compressing did not pay (or failed).
    gzip: Option<Vec<u8>>,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, raw: &'static [u8]) -> Asset {
        let digest = Sha256::digest(raw);
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            name: format!("{stem}.{hash}.{ext}"),
            content_type,
            raw,
            gzip: gzip(raw).filter(|z| z.len() < raw.len()),
        }
    }
}

fn gzip(raw: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(raw).ok()?;
    enc.finish().ok()
}

fn all() -> &'static [Asset; 2] {
    static ASSETS: OnceLock<[Asset; 2]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            Asset::new("app", "css", "text/css; charset=utf-8", CSS),
            Asset::new("app", "js", "text/javascript; charset=utf-8", JS),
        ]
    })
}

/// Where pages find the stylesheet.
pub fn css_path() -> String {
    format!("/assets/{}", all()[0].name)
}

/// Where pages find the script.
pub fn js_path() -> String {
    format!("/assets/{}", all()[1].name)
}

/// `GET /assets/{name}`: public (the login page needs them), immutable.
pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = all().iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let wants_gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.trim().split(';');
            parts.next() == Some("gzip") && parts.all(|p| p.trim() != "q=0")
        });
    let mut response = match (&asset.gzip, wants_gzip) {
        (Some(z), true) => {
            let mut r = z.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => asset.raw.into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}
