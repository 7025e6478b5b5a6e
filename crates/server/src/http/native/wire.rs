//! The native API's wire shapes: every answer a handler sends is one of these typed structs, serialized as it is
//! and described by the same type in the OpenAPI document (`openapi.rs`), so an answer and its description cannot
//! part ways. Request bodies are described here too; the handlers parse them by hand (to name the field that is
//! wrong), and the contract test sends what these describe.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_core::{Quota, QuotaSetting, Rights, Scope, TokenKind};
use tessera_store::{AuditEntry, Collection, Creator, Downlink, TokenPolicy, TokenRecord, User};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::audit::AuditEvent;
use crate::time::{now_ms, rfc3339};

/// A string schema whose values are exactly `names` (taken from the code's own lists, not copied by hand).
fn names_schema(description: &str, names: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(names.into_iter().collect::<Vec<_>>()))
        .into()
}

/// A Tessera id: 13 characters of Crockford's base32 in lower case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdText(pub String);

impl PartialSchema for IdText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A Tessera id: 13 characters of 0-9 and a-z without i, l, o and u."))
            .pattern(Some("^[0-9a-hjkmnp-tv-z]{13}$"))
            .examples(["0f3xk2m9q8a1b"])
            .into()
    }
}

impl ToSchema for IdText {
    fn name() -> Cow<'static, str> {
        "Id".into()
    }
}

impl IdText {
    fn of(id: impl std::fmt::Display) -> IdText {
        IdText(id.to_string())
    }
}

/// A kind of token, by the name the API uses (`TokenKind::as_str`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenKindName(String);

impl PartialSchema for TokenKindName {
    fn schema() -> RefOr<Schema> {
        names_schema("A kind of token.", TokenKind::ALL.iter().map(|kind| kind.as_str()))
    }
}

impl ToSchema for TokenKindName {
    fn name() -> Cow<'static, str> {
        "TokenKind".into()
    }
}

/// The name of an audited event (`AuditEvent::name`).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct AuditEventName(String);

impl PartialSchema for AuditEventName {
    fn schema() -> RefOr<Schema> {
        names_schema("What happened.", AuditEvent::ALL.iter().map(|event| event.name()))
    }
}

impl ToSchema for AuditEventName {
    fn name() -> Cow<'static, str> {
        "AuditEvent".into()
    }
}

/// An RFC 9457 problem document, the body of every native refusal and failure (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What was wrong, for a person; names the field or parameter at fault. Server-side failures say nothing of
    /// internals.
    pub detail: String,
}

/// A collection: a group of devices, owned by a team or by the account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Collection)]
pub struct CollectionView {
    pub id: IdText,
    pub name: String,
    /// Where devices made with an account-wide credential land; it cannot be deleted.
    pub is_default: bool,
    /// The owning team; null for a collection of the account itself.
    pub team: Option<IdText>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Collection> for CollectionView {
    fn from(collection: &Collection) -> CollectionView {
        CollectionView {
            id: IdText::of(collection.id),
            name: collection.name.clone(),
            is_default: collection.is_default,
            team: collection.team.map(IdText::of),
            created_at: rfc3339(collection.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    pub collections: Vec<CollectionView>,
}

/// What a token reaches.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[schema(as = Scope)]
pub enum ScopeView {
    Account,
    Team { id: IdText },
    Collection { id: IdText },
    Device { id: IdText },
    AllTeams,
    AllCollections,
}

impl From<Scope> for ScopeView {
    fn from(scope: Scope) -> ScopeView {
        match scope {
            Scope::Account => ScopeView::Account,
            Scope::Team(id) => ScopeView::Team { id: IdText::of(id) },
            Scope::Collection(id) => ScopeView::Collection { id: IdText::of(id) },
            Scope::Device(id) => ScopeView::Device { id: IdText::of(id) },
            Scope::AllTeams => ScopeView::AllTeams,
            Scope::AllCollections => ScopeView::AllCollections,
        }
    }
}

/// Which authority issued a token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[schema(as = Issuer)]
pub enum IssuerView {
    /// Tessera itself (the bootstrap API key).
    System,
    /// Another token, by its id.
    Token { id: IdText },
    /// A user, by their id.
    User { id: IdText },
}

impl From<Creator> for IssuerView {
    fn from(creator: Creator) -> IssuerView {
        match creator {
            Creator::System => IssuerView::System,
            Creator::Token(token) => IssuerView::Token { id: IdText::of(token) },
            Creator::User(user) => IssuerView::User { id: IdText::of(user) },
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Rights)]
pub enum RightsView {
    Read,
    ReadWrite,
}

impl From<Rights> for RightsView {
    fn from(rights: Rights) -> RightsView {
        match rights {
            Rights::Read => RightsView::Read,
            Rights::ReadWrite => RightsView::ReadWrite,
        }
    }
}

/// A quota that is not a number: the token kind's default, or none.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaName {
    Default,
    Unlimited,
}

/// A number of requests per window; no other field (the API refuses one, naming the forms it takes).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimit {
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub requests: u32,
    #[schema(minimum = 1, maximum = 86_400)]
    pub window_seconds: u32,
}

/// A token's request quota: `"default"` (its kind's), `"unlimited"`, or a number of requests per window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Quota)]
pub enum QuotaView {
    Named(QuotaName),
    Limited(QuotaLimit),
}

impl From<QuotaSetting> for QuotaView {
    fn from(quota: QuotaSetting) -> QuotaView {
        match quota {
            QuotaSetting::KindDefault => QuotaView::Named(QuotaName::Default),
            QuotaSetting::Unlimited => QuotaView::Named(QuotaName::Unlimited),
            QuotaSetting::Limited(Quota { requests, window_seconds }) => {
                QuotaView::Limited(QuotaLimit { requests, window_seconds })
            }
        }
    }
}

/// A token as the API shows it: never its secret (that is shown once, by the answer that made it).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenView {
    pub id: IdText,
    pub kind: TokenKindName,
    pub name: String,
    pub scope: ScopeView,
    pub rights: RightsView,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Null: it does not expire.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// The address of its last use.
    pub last_used_from: Option<String>,
    /// Requests it made (counted per node, written every few seconds).
    pub uses: u64,
    /// Requests refused for its quota.
    pub throttled: u64,
    pub enabled: bool,
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    #[schema(format = DateTime)]
    pub rotated_at: Option<String>,
    /// Until when the secret a rotation replaced still works; null when it works no more.
    #[schema(format = DateTime)]
    pub replaced_secret_valid_until: Option<String>,
    pub quota: QuotaView,
    pub issued_by: IssuerView,
}

impl From<&TokenRecord> for TokenView {
    fn from(token: &TokenRecord) -> TokenView {
        TokenView {
            id: IdText::of(token.id),
            kind: TokenKindName(token.kind.as_str().to_owned()),
            name: token.name.clone(),
            scope: token.scope.into(),
            rights: token.rights.into(),
            created_at: rfc3339(token.created_at_ms),
            expires_at: token.expires_at_ms.map(rfc3339),
            last_used_at: token.last_used_at_ms.map(rfc3339),
            last_used_from: token.last_used_from.map(|address| address.to_string()),
            uses: token.uses,
            throttled: token.throttled,
            enabled: token.disabled_at_ms.is_none(),
            disabled_at: token.disabled_at_ms.map(rfc3339),
            rotated_at: token.rotated_at_ms.map(rfc3339),
            replaced_secret_valid_until: token.previous_valid_until_ms.filter(|until| *until > now_ms()).map(rfc3339),
            quota: token.quota.into(),
            issued_by: token.creator.into(),
        }
    }
}

/// A token with its secret, shown this once (when it is made or rotated).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokenWithSecret)]
pub struct TokenWithSecret {
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret to present as `Authorization: Bearer <secret>`; Tessera keeps only its digest.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// A downlink message queued for a device.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Downlink)]
pub struct DownlinkView {
    pub id: IdText,
    pub port: u16,
    /// The payload, in standard base64.
    #[schema(content_encoding = "base64")]
    pub payload: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Null while it waits.
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
}

impl From<&Downlink> for DownlinkView {
    fn from(downlink: &Downlink) -> DownlinkView {
        DownlinkView {
            id: IdText::of(downlink.id),
            port: downlink.port,
            payload: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &downlink.payload),
            created_at: rfc3339(downlink.created_at_ms),
            delivered_at: downlink.delivered_at_ms.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DownlinkList {
    pub downlinks: Vec<DownlinkView>,
}

/// A person's account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    pub id: IdText,
    pub email: String,
    pub display_name: String,
    pub phone: String,
    /// An administrator of the account reaches all of it.
    pub is_admin: bool,
    pub totp_enabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> UserView {
        UserView {
            id: IdText::of(user.id),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            phone: user.phone.clone(),
            is_admin: user.is_admin,
            totp_enabled: user.totp.as_ref().is_some_and(|totp| totp.enabled),
            created_at: rfc3339(user.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    Bearer,
}

/// A login session: an access token to present, and a refresh token to renew it with.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    pub access_token: String,
    pub token_type: TokenType,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Renews the session once (`POST /v1/token/refresh`); a reused one revokes the session as stolen.
    pub refresh_token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl SessionView {
    pub fn of(session: &crate::people::Session, expires_in: u64) -> SessionView {
        SessionView {
            access_token: session.access_token.expose().to_owned(),
            token_type: TokenType::Bearer,
            expires_in,
            refresh_token: session.refresh_token.expose().to_owned(),
            expires_at: rfc3339(session.expires_at_ms),
        }
    }
}

/// The password was right and the user has a second factor: send the challenge back with a code.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecondFactorChallenge {
    /// Always true.
    pub mfa_required: bool,
    pub challenge: IdText,
    pub user_id: IdText,
}

/// What a login answers: a session, or a second-factor challenge.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    Session(SessionView),
    Challenge(SecondFactorChallenge),
}

/// A second factor being enrolled: not in force until confirmed with a code.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    /// The shared secret, in base32.
    pub secret: String,
    /// The `otpauth://` URI authenticator apps read.
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// Codes that each open a login once in place of a second-factor code; shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedCount {
    /// How many tokens this call revoked.
    pub revoked: u64,
}

/// The same answer whether or not any reported secret was a live token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAccepted {
    pub message: String,
}

/// The account's expiry policy for one kind of token.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = TokenPolicy)]
pub struct PolicyView {
    /// The longest lifetime a new token may have; a longer one asked for is cut to it. Null: no maximum.
    #[schema(minimum = 0, maximum = 3_153_600_000_u64)]
    pub max_lifetime_seconds: Option<u64>,
    /// The lifetime of a new token that asks for none. Null: such a token does not expire.
    #[schema(minimum = 0, maximum = 3_153_600_000_u64)]
    pub default_lifetime_seconds: Option<u64>,
}

impl From<&TokenPolicy> for PolicyView {
    fn from(policy: &TokenPolicy) -> PolicyView {
        PolicyView {
            max_lifetime_seconds: policy.max_lifetime_seconds,
            default_lifetime_seconds: policy.default_lifetime_seconds,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverTheMaximum {
    /// A lifetime asked for beyond the maximum is cut to it, not refused.
    Capped,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// The policies set, by token kind; a kind without one is absent.
    pub policies: BTreeMap<String, PolicyView>,
    pub over_the_maximum: OverTheMaximum,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Outcome)]
pub enum OutcomeView {
    Ok,
    Refused,
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditEntryView {
    /// Time-ordered: the listing's cursor.
    pub id: IdText,
    #[schema(format = DateTime)]
    pub at: String,
    pub event: AuditEventName,
    /// `user:<id>`, `token:<id>`, `system` or `anonymous`.
    #[schema(pattern = "^(user:[0-9a-hjkmnp-tv-z]{13}|token:[0-9a-hjkmnp-tv-z]{13}|system|operator|anonymous)$")]
    pub actor: String,
    /// The token the event is about.
    pub token: Option<IdText>,
    pub address: Option<String>,
    pub outcome: OutcomeView,
    /// Entries gathered into this one (refused credentials of one kind from one address).
    pub count: u64,
    /// What changed or why it was refused.
    #[schema(value_type = Object)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(entry: &AuditEntry) -> AuditEntryView {
        AuditEntryView {
            id: IdText::of(entry.id),
            at: rfc3339(entry.at_ms),
            event: AuditEventName(entry.event.clone()),
            actor: super::lifecycle::actor_text(entry.actor),
            token: entry.token.map(IdText::of),
            address: entry.address.map(|address| address.to_string()),
            outcome: match entry.outcome {
                tessera_store::Outcome::Ok => OutcomeView::Ok,
                tessera_store::Outcome::Refused => OutcomeView::Refused,
            },
            count: entry.count,
            detail: entry.detail.clone(),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// The `cursor` of the next page; null on the last.
    pub next: Option<IdText>,
}

// Request bodies. The handlers read them field by field (to name the field that is wrong and to refuse the ones
// they do not take); these describe what they read.

/// `{"name", "team"?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct NewCollection {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// The owning team; without it, a user's session makes it in their private team and a token in the account.
    pub team: Option<IdText>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MintedKind {
    Account,
    Collection,
}

/// A new account or collection token.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct NewToken {
    pub kind: MintedKind,
    /// Required for a collection token.
    pub collection: Option<IdText>,
    /// `read_write` when absent.
    pub rights: Option<RightsView>,
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// Seconds from now; null or absent: no expiry beyond the account's policy.
    #[schema(minimum = 1, maximum = 3_153_600_000_i64)]
    pub expires_in: Option<i64>,
    pub quota: Option<QuotaView>,
}

/// A new device or ground token; an empty body is taken as `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct NewDeviceToken {
    #[schema(max_length = 200)]
    pub name: Option<String>,
    #[schema(minimum = 1, maximum = 3_153_600_000_i64)]
    pub expires_in: Option<i64>,
    pub quota: Option<QuotaView>,
}

/// An empty body is taken as `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Rotation {
    /// Seconds the replaced secret keeps working (0 when absent: it stops now).
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub overlap_seconds: Option<u64>,
}

/// At least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
#[allow(dead_code)]
pub struct TokenChange {
    pub enabled: Option<bool>,
    #[schema(max_length = 200)]
    pub name: Option<String>,
    pub quota: Option<QuotaView>,
}

/// The live tokens that all the fields given name together; at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BulkRevocation {
    /// Tokens a user made (their sessions among them).
    pub user: Option<IdText>,
    pub collection: Option<IdText>,
    pub device: Option<IdText>,
    pub kind: Option<TokenKindName>,
}

/// Secrets seen in public.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LeakReport {
    #[schema(min_items = 1, max_items = 100, inline)]
    pub credentials: Vec<LeakedSecret>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(max_length = 200)]
#[allow(dead_code)]
pub struct LeakedSecret(String);

/// A lifetime policy; both null or absent removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PolicyChange {
    #[schema(minimum = 0, maximum = 3_153_600_000_u64)]
    pub max_lifetime_seconds: Option<u64>,
    #[schema(minimum = 0, maximum = 3_153_600_000_u64)]
    pub default_lifetime_seconds: Option<u64>,
}

/// A password login, or the second step of one with a code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LoginRequest {
    Password {
        email: String,
        password: String,
        /// Who is logging in, for the audit trail; `native` when absent.
        client_id: Option<String>,
    },
    SecondFactor {
        challenge: IdText,
        user_id: IdText,
        /// A code of the authenticator, or a recovery code.
        code: String,
        client_id: Option<String>,
    },
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RefreshRequest {
    pub refresh_token: String,
    pub client_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CodeRequest {
    /// A code of the authenticator.
    pub code: String,
}

/// A new user (account administrators only).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct NewUser {
    pub email: String,
    /// At least `people::MIN_PASSWORD_LEN` characters (a unit test holds the two equal).
    #[schema(min_length = 10)]
    pub password: String,
    pub display_name: Option<String>,
    pub phone: Option<String>,
    pub is_admin: Option<bool>,
}
