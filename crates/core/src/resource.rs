//! Horde resource paths: the text form of a token's scope (`/`, `/teams`, `/teams/{id}`, `/collections`,
//! `/collections/{id}`, `/collections/{id}/devices/{id}`), parsed and normalised before anything else sees them.
//!
//! Normalisation follows RFC 3986: percent-encoded octets are decoded (so `%2e` is a dot), empty segments (`//`)
//! and a trailing slash vanish, `.` segments are dropped and `..` removes the segment before it. An encoded slash
//! (`%2F`) is refused rather than decoded, since it would let one segment pose as two. What remains must be one of
//! the six shapes, with ids in their canonical spelling; anything else is refused with the reason. The scope that
//! results is compared node by node by `authorize`, so no spelling of a path can reach more than its normal form.

use std::fmt;

use crate::access::Scope;
use crate::id::{CollectionId, DeviceId, TeamId};

/// A parsed resource path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Root,
    Teams,
    Team(TeamId),
    Collections,
    Collection(CollectionId),
    Device(CollectionId, DeviceId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource '{path}': {reason}")]
pub struct InvalidResource {
    pub path: String,
    pub reason: String,
}

impl Resource {
    pub fn parse(path: &str) -> Result<Resource, InvalidResource> {
        let invalid =
            |reason: &str| InvalidResource { path: path.chars().take(200).collect(), reason: reason.to_owned() };
        if !path.starts_with('/') {
            return Err(invalid("a resource path starts with '/'"));
        }
        let mut segments: Vec<String> = Vec::new();
        for raw in path.split('/') {
            let segment = percent_decode(raw).map_err(|reason| invalid(&reason))?;
            match segment.as_str() {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(invalid("'..' climbs above the root"));
                    }
                }
                _ => segments.push(segment),
            }
        }
        let id_error = |what: &str| invalid(&format!("'{what}' is not a valid id"));
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(match segments.as_slice() {
            [] => Resource::Root,
            ["teams"] => Resource::Teams,
            ["teams", team] => Resource::Team(team.parse().map_err(|_| id_error(team))?),
            ["collections"] => Resource::Collections,
            ["collections", collection] => Resource::Collection(collection.parse().map_err(|_| id_error(collection))?),
            ["collections", collection, "devices", device] => Resource::Device(
                collection.parse().map_err(|_| id_error(collection))?,
                device.parse().map_err(|_| id_error(device))?,
            ),
            _ => {
                return Err(invalid(
                    "expected /, /teams, /teams/{id}, /collections, /collections/{id} or \
                     /collections/{id}/devices/{id}",
                ));
            }
        })
    }

    /// The scope a token for this resource has.
    pub fn scope(self) -> Scope {
        match self {
            Resource::Root => Scope::Account,
            Resource::Teams => Scope::AllTeams,
            Resource::Team(team) => Scope::Team(team),
            Resource::Collections => Scope::AllCollections,
            Resource::Collection(collection) => Scope::Collection(collection),
            Resource::Device(_, device) => Scope::Device(device),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Root => f.write_str("/"),
            Resource::Teams => f.write_str("/teams"),
            Resource::Team(team) => write!(f, "/teams/{team}"),
            Resource::Collections => f.write_str("/collections"),
            Resource::Collection(collection) => write!(f, "/collections/{collection}"),
            Resource::Device(collection, device) => write!(f, "/collections/{collection}/devices/{device}"),
        }
    }
}

/// Decodes `%XX` escapes in one segment; refuses malformed escapes, encoded slashes and non-UTF-8 results.
fn percent_decode(segment: &str) -> Result<String, String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            // Checked here, not left to `from_str_radix`, which also reads a sign: `%+a` is no escape.
            let hex = bytes
                .get(index + 1..index + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                .ok_or("a '%' without two hex digits")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a '%' without two hex digits")?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| "a '%' without two hex digits")?;
            if byte == b'/' || byte == b'\\' {
                return Err("an encoded slash inside a segment".into());
            }
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding that is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0am5x1h3qnr0w";
    const D: &str = "0am5x1j5xfpq3";

    fn collection() -> CollectionId {
        C.parse().unwrap()
    }

    #[test]
    fn the_six_shapes_parse_and_print_back() {
        for text in [
            "/",
            "/teams",
            "/teams/0am5x1h3qnr0w",
            "/collections",
            &format!("/collections/{C}"),
            &format!("/collections/{C}/devices/{D}"),
        ] {
            assert_eq!(Resource::parse(text).unwrap().to_string(), text, "{text}");
        }
    }

    #[test]
    fn spellings_normalise_to_one_form() {
        let expected = Resource::Collection(collection());
        for text in [
            format!("//collections/{C}"),
            format!("/collections/{C}/"),
            format!("/collections/./{C}"),
            format!("/./collections//{C}//"),
            format!("/collections/x/../{C}"),
            format!("/%63ollections/{C}"),
            format!("/collections/%2e/{C}"),
            format!("/teams/../collections/{C}"),
        ] {
            assert_eq!(Resource::parse(&text), Ok(expected), "{text}");
        }
        assert_eq!(Resource::parse(&format!("/collections/{C}/..")), Ok(Resource::Collections));
        assert_eq!(Resource::parse("/collections/.."), Ok(Resource::Root));
    }

    #[test]
    fn nothing_else_is_accepted() {
        for text in [
            "",
            "collections",
            "/..",
            "/collections/../..",
            &format!("/collections%2F{C}"),
            &format!("/collections/{C}%2fdevices"),
            "/collections/not-an-id",
            &format!("/collections/{}", C.to_uppercase()),
            &format!("/collections/{C}x"),
            &format!("/collections/{C}/devices"),
            &format!("/collections/{C}/data"),
            "/users",
            "/tokens",
            "/teams/%zz",
            "/teams/%c3",
        ] {
            assert!(Resource::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let error = Resource::parse("/collections%2Fx").unwrap_err();
        assert!(error.to_string().contains("encoded slash"), "{error}");
        let error = Resource::parse("/teams/%+a").unwrap_err();
        assert!(error.to_string().contains("two hex digits"), "a sign is not a hex digit: {error}");
        let error = Resource::parse("/things").unwrap_err();
        assert!(error.to_string().contains("expected /"), "{error}");
    }

    #[test]
    fn scopes_follow_the_resource() {
        assert_eq!(Resource::Root.scope(), Scope::Account);
        assert_eq!(Resource::Collections.scope(), Scope::AllCollections);
        assert_eq!(
            Resource::parse(&format!("/collections/{C}/devices/{D}")).unwrap().scope(),
            Scope::Device(D.parse().unwrap())
        );
    }
}
