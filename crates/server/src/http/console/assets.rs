//! The console's stylesheet and script, embedded in the binary and served under names that carry a hash of
//! their content: a browser may keep them for a year, and a new build's pages name new files.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::PREFIX;

const STYLESHEET: &str = include_str!("../../../assets/console/console.css");
const SCRIPT: &str = include_str!("../../../assets/console/console.js");

/// Where the pages find the assets.
#[derive(Debug, Clone)]
pub(super) struct Urls {
    pub css: &'static str,
    pub js: &'static str,
}

struct Named {
    css_name: String,
    js_name: String,
    urls: Urls,
}

fn named() -> &'static Named {
    static NAMED: OnceLock<Named> = OnceLock::new();
    NAMED.get_or_init(|| {
        let css_name = format!("console-{:016x}.css", fnv1a(STYLESHEET.as_bytes()));
        let js_name = format!("console-{:016x}.js", fnv1a(SCRIPT.as_bytes()));
        let urls = Urls {
            css: Box::leak(format!("{PREFIX}/assets/{css_name}").into_boxed_str()),
            js: Box::leak(format!("{PREFIX}/assets/{js_name}").into_boxed_str()),
        };
        Named { css_name, js_name, urls }
    })
}

impl Urls {
    pub fn get() -> Urls {
        named().urls.clone()
    }
}

/// FNV-1a: a content fingerprint for cache busting, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let named = named();
    let (body, content_type) = if name == named.css_name {
        (STYLESHEET, "text/css; charset=utf-8")
    } else if name == named.js_name {
        (SCRIPT, "text/javascript; charset=utf-8")
    } else {
        return super::Failure::Page(StatusCode::NOT_FOUND, "No such file.".into()).into_response();
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_follow_their_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let urls = Urls::get();
        assert!(urls.css.starts_with("/console/assets/console-") && urls.css.ends_with(".css"));
        assert!(urls.js.ends_with(".js"));
    }
}
