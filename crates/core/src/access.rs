//! The one authorization rule. Every dialect route, MQTT packet and WebSocket turns its request into an
//! `(Action, Target)` pair and calls [`authorize`]; the write paths above the core take the [`Permit`] it returns,
//! which nothing else can construct. Dialect code never decides access itself.
//!
//! The rule, in order:
//! 1. A revoked or expired token is refused as unauthenticated (401), whatever it asks.
//! 2. The target must be in the token's account.
//! 3. What the token's kind may ever do: an API key only manages tokens, a refresh token only refreshes, and
//!    among the rest only a user's access token manages tokens. Device-level tokens (device, ground) reach device
//!    data only, never a collection, team or account resource.
//! 4. A person acting for themselves at the account's root (creating a team, accepting an invite, managing their
//!    own tokens) needs only to still reach something; no scope or reach check follows.
//! 5. The token's scope must be an ancestor-or-self of the target, compared node by node by id.
//! 6. A write needs read-write rights (reads are GET, HEAD, OPTIONS and subscribe; everything else writes).
//! 7. The token never reaches further than its creator reaches now: the creator's current reach (computed by the
//!    caller from the store, passed in) must cover the target, with write rights for a write.

use std::collections::BTreeMap;

use crate::id::{AccountId, CollectionId, DeviceId, TeamId, TokenId, UserId, VariableId};
use crate::secret::TokenKind;

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rights {
    Read,
    ReadWrite,
}

impl Rights {
    pub fn can_write(self) -> bool {
        self == Rights::ReadWrite
    }

    /// The narrower of two rights.
    pub fn meet(self, other: Rights) -> Rights {
        self.min(other)
    }
}

/// A user's role in a team: admins reach the team's collections read-write, members read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn rights(self) -> Rights {
        match self {
            Role::Admin => Rights::ReadWrite,
            Role::Member => Rights::Read,
        }
    }
}

/// What a request wants to do to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Look, without changing anything.
    Read,
    /// Change anything: create, update, delete, send data.
    Write,
    /// Create, list, change or delete tokens.
    ManageTokens,
    /// Create, change or delete user accounts (an account administrator's work).
    ManageUsers,
    /// What a person does for themselves in the resource tree: create a team, accept an invitation.
    SelfService,
    /// What only the person logged in may do to their own login: see their profile, set up or remove a second
    /// factor, log out. Never a token acting for its owner: whoever holds a Horde token for "/" must not be able
    /// to lock the owner out by enrolling a second factor of their own.
    ManageOwnLogin,
}

impl Action {
    /// The action an HTTP method asks for. Deny by default: any method not known to be safe is a write.
    pub fn for_http_method(method: &str) -> Action {
        match method {
            "GET" | "HEAD" | "OPTIONS" => Action::Read,
            _ => Action::Write,
        }
    }

    fn writes(self) -> bool {
        matches!(self, Action::Write | Action::ManageUsers)
    }
}

/// One node of the resource tree below an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Team(TeamId),
    Collection(CollectionId),
    Device(DeviceId),
    Variable(VariableId),
}

/// What a request touches: a node of one account's tree, given by its full path from the account down
/// (`[]` is the account itself, `[Collection, Device]` a device). The caller builds the path from the store's
/// current parent chain, never from the text of a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    account: AccountId,
    path: Vec<Node>,
}

impl Target {
    pub fn account(account: AccountId) -> Target {
        Target { account, path: Vec::new() }
    }

    pub fn team(account: AccountId, team: TeamId) -> Target {
        Target { account, path: vec![Node::Team(team)] }
    }

    pub fn collection(account: AccountId, collection: CollectionId) -> Target {
        Target { account, path: vec![Node::Collection(collection)] }
    }

    pub fn device(account: AccountId, collection: CollectionId, device: DeviceId) -> Target {
        Target { account, path: vec![Node::Collection(collection), Node::Device(device)] }
    }

    pub fn variable(account: AccountId, collection: CollectionId, device: DeviceId, variable: VariableId) -> Target {
        Target { account, path: vec![Node::Collection(collection), Node::Device(device), Node::Variable(variable)] }
    }

    pub fn account_id(&self) -> AccountId {
        self.account
    }

    pub fn path(&self) -> &[Node] {
        &self.path
    }

    /// The collection the target lies in, if any.
    pub fn collection_id(&self) -> Option<CollectionId> {
        self.path.iter().find_map(|node| match node {
            Node::Collection(id) => Some(*id),
            _ => None,
        })
    }

    fn team_id(&self) -> Option<TeamId> {
        self.path.iter().find_map(|node| match node {
            Node::Team(id) => Some(*id),
            _ => None,
        })
    }

    /// Whether the target is a device or something inside one (variables, readings, commands).
    fn is_device_data(&self) -> bool {
        self.path.iter().any(|node| matches!(node, Node::Device(_)))
    }

    fn contains(&self, node: Node) -> bool {
        self.path.contains(&node)
    }
}

/// The node a token reaches, with everything under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole account (still bounded by what the creator reaches).
    Account,
    Team(TeamId),
    Collection(CollectionId),
    Device(DeviceId),
    /// Every team of the creator (Horde `/teams`).
    AllTeams,
    /// Every collection of the creator (Horde `/collections`).
    AllCollections,
}

impl Scope {
    /// Ancestor-or-self, node by node: ids are compared as values, so no id can reach another that merely starts
    /// with the same characters.
    pub fn covers(self, target: &Target) -> bool {
        match self {
            Scope::Account => true,
            Scope::Team(team) => target.contains(Node::Team(team)),
            Scope::Collection(collection) => target.contains(Node::Collection(collection)),
            Scope::Device(device) => target.contains(Node::Device(device)),
            Scope::AllTeams => target.team_id().is_some(),
            Scope::AllCollections => target.collection_id().is_some(),
        }
    }
}

/// What a token's creator reaches at the moment of the request, computed by the caller from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The whole account, people included (an account administrator).
    Account(Rights),
    /// The whole account's data, but not its teams: people are managed by people (an API key and the tokens it
    /// mints).
    AccountData(Rights),
    /// Some teams and collections (a user, through their teams' memberships).
    Limited { teams: BTreeMap<TeamId, Rights>, collections: BTreeMap<CollectionId, Rights> },
    /// Nothing any more (the creator was removed or its key revoked).
    Nothing,
}

impl Reach {
    /// Whether this reach may change anything at all: a token it makes at the account's root may write, and its
    /// holder may administer (and so manage) tokens others made somewhere. `None` for `Nothing`.
    pub fn writes_somewhere(&self) -> Option<bool> {
        match self {
            Reach::Account(rights) | Reach::AccountData(rights) => Some(rights.can_write()),
            Reach::Limited { teams, collections } => {
                Some(teams.values().chain(collections.values()).any(|rights| rights.can_write()))
            }
            Reach::Nothing => None,
        }
    }

    fn rights_over(&self, target: &Target) -> Option<Rights> {
        match self {
            Reach::Account(rights) => Some(*rights),
            Reach::AccountData(rights) => target.team_id().is_none().then_some(*rights),
            Reach::Limited { teams, collections } => {
                if let Some(collection) = target.collection_id() {
                    collections.get(&collection).copied()
                } else if let Some(team) = target.team_id() {
                    teams.get(&team).copied()
                } else {
                    None
                }
            }
            Reach::Nothing => None,
        }
    }
}

/// Who made a token; the token never reaches further than its creator does now. For a user's session this is the
/// user, so it also says who the caller is when a token's owner is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Creator {
    /// Made by Tessera itself (the bootstrap API key).
    System,
    /// Minted with another credential, an API key.
    Token(TokenId),
    User(UserId),
}

/// Everything `authorize` needs to know about a credential: its token record's access fields and its creator's
/// current reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub account: AccountId,
    pub token: TokenId,
    pub kind: TokenKind,
    pub scope: Scope,
    pub rights: Rights,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
    /// A disabled token is refused like a revoked one until it is enabled again.
    pub disabled: bool,
    pub creator: Creator,
    pub creator_reach: Reach,
}

/// Why access was refused. [`Denial::is_unauthenticated`] tells 401 from 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token has expired")]
    Expired,
    #[error("the token is disabled")]
    Disabled,
    /// The secret presented is one a rotation replaced, and its overlap is over.
    #[error("this secret was replaced by a rotation of the token, and no longer works")]
    SecretReplaced,
    #[error("the target is outside the token's scope")]
    OutOfScope,
    #[error("the token is read-only")]
    ReadOnly,
    #[error("a device-level token reaches only devices and their data")]
    DeviceLevelOnly,
    #[error("an API key only mints and manages tokens")]
    ApiKeyOnlyManagesTokens,
    #[error("a refresh token only obtains new access tokens")]
    RefreshTokenOnlyRefreshes,
    #[error("tokens are managed only with an API key or by a logged-in user, never with another token")]
    TokenCannotManageTokens,
    #[error("only a logged-in user may do this")]
    UsersOnly,
    #[error("the token's creator no longer reaches the target")]
    CreatorLostAccess,
    #[error("the token's creator may no longer change the target")]
    CreatorReadOnly,
    /// Not a token the caller manages. Answered as "not found": another user's token does not exist as far as
    /// this user can tell.
    #[error("no such token among those this credential manages")]
    NotYourToken,
    #[error("managing tokens here is a change, and this credential's holder may only read here")]
    ManagingTokensNeedsWrite,
    #[error("a token cannot have more rights than the one who makes it")]
    RightsBeyondCreator,
    #[error("a token in a URL is accepted only when it is read-only, to read; send it in a header")]
    UrlTokenNotReadOnly,
    #[error("this takes the account's API key, not a token")]
    NotAnApiKey,
    #[error("this is done only in a logged-in user's session, never with a token")]
    UserSessionOnly,
    #[error("an admin cannot change their own membership")]
    OwnMembership,
    #[error("a token is rotated only by the one who made it or by an account administrator")]
    RotationByItsMaker,
}

impl Denial {
    /// Revoked and expired credentials are no credentials at all (401); every other denial is a known credential
    /// that does not reach the target (403).
    pub fn is_unauthenticated(self) -> bool {
        matches!(
            self,
            Denial::Revoked
                | Denial::Expired
                | Denial::Disabled
                | Denial::SecretReplaced
                | Denial::UrlTokenNotReadOnly
                | Denial::NotAnApiKey
                | Denial::UserSessionOnly
        )
    }

    /// A denial that is answered as if the thing asked for did not exist (404), because saying "forbidden" would
    /// tell that it exists.
    pub fn hides_existence(self) -> bool {
        self == Denial::NotYourToken
    }
}

/// Proof that one action on one target was authorized. Only [`authorize`] makes one, so an operation that takes a
/// `&Permit` cannot run without the check having passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    token: TokenId,
    action: Action,
    target: Target,
}

impl Permit {
    pub fn token(&self) -> TokenId {
        self.token
    }

    pub fn action(&self) -> Action {
        self.action
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn account(&self) -> AccountId {
        self.target.account
    }

    /// Whether this permit allows `action` on `target`: the same action, on the permitted node or below it. An
    /// operation handed a permit checks it with this, so a permit for one device cannot be used on another.
    pub fn covers(&self, action: Action, target: &Target) -> bool {
        self.action == action && self.target.account == target.account && target.path.starts_with(&self.target.path)
    }
}

fn is_device_level(kind: TokenKind) -> bool {
    matches!(kind, TokenKind::Device | TokenKind::Ground)
}

/// Whether the credential is alive at `now_ms`: neither revoked nor expired. `authorize` begins with this; callers
/// that verify a credential before they know their target (a listing, a connection) check it at once too.
pub fn check_live(grant: &Grant, now_ms: i64) -> Result<(), Denial> {
    if grant.revoked {
        return Err(Denial::Revoked);
    }
    if grant.expires_at_ms.is_some_and(|expires| now_ms >= expires) {
        return Err(Denial::Expired);
    }
    if grant.disabled {
        return Err(Denial::Disabled);
    }
    Ok(())
}

/// How a credential arrived, for the rules about *how* rather than *what*: inputs to the one path, decided here
/// and not in the dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// In a header (`X-Auth-Token`, `X-API-Token`, `Authorization: Bearer`): anything goes.
    Header,
    /// In the URL (Ubidots `?token=`, Horde `?api_token=`), for `action`: URLs end up in logs, proxies and
    /// browser histories, so such a token may only be a read-only one, reading.
    InUrl(Action),
    /// Where a dialect takes the account's API key and nothing else (Ubidots `X-Ubidots-ApiKey`).
    ApiKeyOnly,
    /// Where only a logged-in user's session is taken (Horde `/tokens`: "token management only from a logged-in
    /// user, never with another token").
    UserSessionOnly,
}

/// Whether a credential may be presented the way it was. Refusals are 401s: the credential as sent is no
/// credential here.
pub fn check_presentation(grant: &Grant, presentation: Presentation) -> Result<(), Denial> {
    match presentation {
        Presentation::Header => Ok(()),
        Presentation::InUrl(action) if action != Action::Read || grant.rights.can_write() => {
            Err(Denial::UrlTokenNotReadOnly)
        }
        Presentation::InUrl(_) => Ok(()),
        Presentation::ApiKeyOnly if grant.kind != TokenKind::ApiKey => Err(Denial::NotAnApiKey),
        Presentation::UserSessionOnly if grant.kind != TokenKind::UserAccess => Err(Denial::UserSessionOnly),
        Presentation::ApiKeyOnly | Presentation::UserSessionOnly => Ok(()),
    }
}

/// Whether `grant` could take `action` anywhere, for a request that names no target (a method no route has): a
/// dead token is refused as everywhere, and a read-only one every write. Grants nothing: such a request is refused
/// either way, and this decides only which refusal it gets.
pub fn authorize_untargeted(grant: &Grant, now_ms: i64, action: Action) -> Result<(), Denial> {
    check_live(grant, now_ms)?;
    if action.writes() && !grant.rights.can_write() {
        return Err(Denial::ReadOnly);
    }
    Ok(())
}

/// Whether `grant` may list what its scope holds, and which scope that is. A listing still authorizes every item
/// it shows; this first step keeps a credential that may read no data at all (an API key, a refresh token, a token
/// whose creator reaches nothing any more) from learning even how many items there are.
pub fn authorize_listing(grant: &Grant, now_ms: i64) -> Result<Scope, Denial> {
    check_live(grant, now_ms)?;
    match grant.kind {
        TokenKind::ApiKey => return Err(Denial::ApiKeyOnlyManagesTokens),
        TokenKind::Refresh => return Err(Denial::RefreshTokenOnlyRefreshes),
        _ => {}
    }
    if grant.creator_reach == Reach::Nothing {
        return Err(Denial::CreatorLostAccess);
    }
    Ok(grant.scope)
}

/// A listing of a whole branch of the tree rather than of one node's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The account's root (Horde `GET /`): only a scope holding everything the creator reaches.
    Root,
    /// Every team of the creator (Horde `GET /teams`).
    Teams,
    /// The collections (Horde `GET /collections`, native `GET /v1/collections`): any scope may list the ones it
    /// reaches, but a device-level token reaches no collection at all, so it is refused as on every group resource
    /// (AllThingsTalk: "if you try to access user or ground resources using a device token, your request will be
    /// blocked"), not answered with an empty list.
    Collections,
}

/// Whether `grant` may list a whole branch: the listing rule, and a scope that holds the branch.
pub fn authorize_listing_of(grant: &Grant, now_ms: i64, listing: Listing) -> Result<Scope, Denial> {
    let scope = authorize_listing(grant, now_ms)?;
    if is_device_level(grant.kind) {
        return Err(Denial::DeviceLevelOnly);
    }
    let holds = match listing {
        Listing::Root => scope == Scope::Account,
        Listing::Teams => matches!(scope, Scope::Account | Scope::AllTeams),
        Listing::Collections => true,
    };
    if holds { Ok(scope) } else { Err(Denial::OutOfScope) }
}

// Token management: one rule for every token route of every dialect.
//
// - Only an API key or a logged-in user manages tokens (a refresh token only refreshes; any other token never
//   manages tokens).
// - Who sees and manages which existing token: the API key and an account administrator every token of the
//   account; a user the tokens they made (even once those reach nothing, so they can always clean up), and, as an
//   admin of a team, every token scoped to one of the team's collections or their devices (or to the team).
//   Anyone else is told the token does not exist.
// - Minting is a change: a token scoped to a node needs its maker to reach that node read-write; a token for the
//   account's root (Horde "/", "/teams", "/collections") reaches at each use only what its maker reaches then,
//   and may not ask for writes when its maker may write nowhere.

/// A token as the management rule sees it: its account, who made it, and the node its scope names (built by the
/// caller from the store's parent chain; the account itself for scopes at the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedToken {
    pub account: AccountId,
    pub creator: Creator,
    pub scope_target: Target,
}

/// Which tokens a listing may show: every token at the node, or only the caller's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedTokens {
    Everyones,
    MadeBy(Creator),
}

/// The kinds of credential that manage tokens at all.
fn check_token_manager(grant: &Grant, now_ms: i64, account: AccountId) -> Result<(), Denial> {
    check_live(grant, now_ms)?;
    match grant.kind {
        TokenKind::ApiKey | TokenKind::UserAccess => {}
        TokenKind::Refresh => return Err(Denial::RefreshTokenOnlyRefreshes),
        _ => return Err(Denial::TokenCannotManageTokens),
    }
    if grant.account != account {
        return Err(Denial::NotYourToken);
    }
    Ok(())
}

/// The API key, or an account administrator's session.
fn manages_whole_account(grant: &Grant) -> bool {
    grant.kind == TokenKind::ApiKey || grant.creator_reach == Reach::Account(Rights::ReadWrite)
}

/// Whether the caller may change `target` (a team admin over the team's collections, say).
fn administers(grant: &Grant, target: &Target) -> bool {
    !target.path.is_empty() && grant.creator_reach.rights_over(target) == Some(Rights::ReadWrite)
}

fn token_permit(grant: &Grant, target: &Target) -> Permit {
    Permit { token: grant.token, action: Action::ManageTokens, target: target.clone() }
}

/// Whether `grant` may see, change or revoke an existing `token`. The permit's target is the token's scope node.
pub fn authorize_token_management(grant: &Grant, now_ms: i64, token: &ManagedToken) -> Result<Permit, Denial> {
    check_token_manager(grant, now_ms, token.account)?;
    if manages_whole_account(grant) || token.creator == grant.creator || administers(grant, &token.scope_target) {
        return Ok(token_permit(grant, &token.scope_target));
    }
    Err(Denial::NotYourToken)
}

/// Whether `grant` may change an existing token it manages (`before`) into `after`, with `rights`: what the token
/// becomes is judged as a new token would be (`authorize_mint`), and the caller must still manage it afterwards
/// with its original maker. Without the second half a team admin could move a token an account administrator
/// made for one of her collections to the account's root, where it would reach everything its maker reaches.
pub fn authorize_token_change(
    grant: &Grant,
    now_ms: i64,
    before: &ManagedToken,
    after: &ManagedToken,
    rights: Rights,
) -> Result<Permit, Denial> {
    let permit = authorize_token_management(grant, now_ms, before)?;
    authorize_mint(grant, now_ms, &after.scope_target, rights)?;
    authorize_token_management(grant, now_ms, after)?;
    Ok(permit)
}

/// Whether `grant` may give an existing token a new secret. A rotation hands its caller a working secret of the
/// token, which reaches what the token's *creator* reaches: so only the creator and those who manage the whole
/// account (who reach at least as much) rotate it. A team admin manages (lists, revokes) the tokens others made
/// for her collections, but rotating one would give her a secret with their reach that outlives her own (a probe
/// of issue 15 found exactly that). Nor when the creator, who reaches `creator_reach` now, no longer reaches the
/// token's node with its rights: renewing a token that no longer works would hand out a secret that only looks
/// alive.
pub fn authorize_token_rotation(
    grant: &Grant,
    now_ms: i64,
    token: &ManagedToken,
    token_rights: Rights,
    creator_reach: &Reach,
) -> Result<Permit, Denial> {
    let permit = authorize_token_management(grant, now_ms, token)?;
    if token.creator != grant.creator && !manages_whole_account(grant) {
        return Err(Denial::RotationByItsMaker);
    }
    let still_granted = if token.scope_target.path.is_empty() {
        creator_reach.writes_somewhere().ok_or(Denial::CreatorLostAccess)? || !token_rights.can_write()
    } else {
        match creator_reach.rights_over(&token.scope_target) {
            None => return Err(Denial::CreatorLostAccess),
            Some(rights) => rights.can_write() || !token_rights.can_write(),
        }
    };
    if !still_granted {
        return Err(Denial::CreatorReadOnly);
    }
    Ok(permit)
}

/// Whether `grant` may list the tokens scoped at `at` (the account itself for every token), and which of them.
/// Every listed token is still passed through [`authorize_token_management`] by the caller.
pub fn authorize_token_listing(grant: &Grant, now_ms: i64, at: &Target) -> Result<(Permit, ListedTokens), Denial> {
    check_token_manager(grant, now_ms, at.account)?;
    let listed = if manages_whole_account(grant) || administers(grant, at) {
        ListedTokens::Everyones
    } else {
        ListedTokens::MadeBy(grant.creator)
    };
    Ok((token_permit(grant, at), listed))
}

/// Whether `grant` may mint a token with `rights` whose scope names `scope_target`.
pub fn authorize_mint(grant: &Grant, now_ms: i64, scope_target: &Target, rights: Rights) -> Result<Permit, Denial> {
    check_token_manager(grant, now_ms, scope_target.account)?;
    if scope_target.path.is_empty() {
        let may_write_somewhere = grant.creator_reach.writes_somewhere().ok_or(Denial::CreatorLostAccess)?;
        if rights.can_write() && !may_write_somewhere {
            return Err(Denial::RightsBeyondCreator);
        }
        return Ok(token_permit(grant, scope_target));
    }
    match grant.creator_reach.rights_over(scope_target) {
        None => Err(Denial::CreatorLostAccess),
        Some(Rights::Read) => Err(Denial::ManagingTokensNeedsWrite),
        Some(Rights::ReadWrite) => Ok(token_permit(grant, scope_target)),
    }
}

/// Decides whether `grant` may perform `action` on `target` at `now_ms` (milliseconds since the Unix epoch).
/// Token management (`Action::ManageTokens`) at `target` is the token rule above: the permit to list, at least,
/// one's own tokens there.
pub fn authorize(grant: &Grant, now_ms: i64, action: Action, target: &Target) -> Result<Permit, Denial> {
    if action == Action::ManageTokens {
        return authorize_token_listing(grant, now_ms, target).map(|(permit, _)| permit);
    }
    check_live(grant, now_ms)?;
    if grant.account != target.account {
        return Err(Denial::OutOfScope);
    }
    match (grant.kind, action) {
        (TokenKind::Refresh, _) => return Err(Denial::RefreshTokenOnlyRefreshes),
        (TokenKind::ApiKey, _) => return Err(Denial::ApiKeyOnlyManagesTokens),
        (TokenKind::UserAccess, _) => {}
        // A Horde token for "/" or "/teams" that may write acts as its owner in creating and joining teams.
        (TokenKind::Resource, Action::SelfService)
            if matches!(grant.scope, Scope::Account | Scope::AllTeams) && grant.rights.can_write() => {}
        (_, Action::ManageUsers | Action::SelfService | Action::ManageOwnLogin) => return Err(Denial::UsersOnly),
        _ => {}
    }
    if is_device_level(grant.kind) && !target.is_device_data() {
        return Err(Denial::DeviceLevelOnly);
    }
    // A person acting for themselves needs only to still be someone in the account.
    let personal = target.path.is_empty() && matches!(action, Action::SelfService | Action::ManageOwnLogin);
    if personal {
        if grant.creator_reach == Reach::Nothing {
            return Err(Denial::CreatorLostAccess);
        }
        return Ok(Permit { token: grant.token, action, target: target.clone() });
    }
    if !grant.scope.covers(target) {
        return Err(Denial::OutOfScope);
    }
    if action.writes() && !grant.rights.can_write() {
        return Err(Denial::ReadOnly);
    }
    match grant.creator_reach.rights_over(target) {
        None => return Err(Denial::CreatorLostAccess),
        Some(rights) if action.writes() && !rights.can_write() => return Err(Denial::CreatorReadOnly),
        Some(_) => {}
    }
    Ok(Permit { token: grant.token, action, target: target.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn id(n: i64) -> Id {
        Id::from_i64(n)
    }
    const NOW: i64 = 1_800_000_000_000;

    fn account() -> AccountId {
        AccountId(id(1))
    }

    fn grant(kind: TokenKind, scope: Scope, rights: Rights) -> Grant {
        Grant {
            account: account(),
            token: TokenId(id(99)),
            kind,
            scope,
            rights,
            expires_at_ms: None,
            revoked: false,
            disabled: false,
            creator: Creator::User(UserId(id(98))),
            creator_reach: Reach::Account(Rights::ReadWrite),
        }
    }

    fn org(n: i64) -> CollectionId {
        CollectionId(id(n))
    }

    fn device_in(collection: i64, device: i64) -> Target {
        Target::device(account(), org(collection), DeviceId(id(device)))
    }

    #[test]
    fn the_rule_table() {
        use Action::*;
        let rw = Rights::ReadWrite;
        let ro = Rights::Read;
        let org_token = grant(TokenKind::Collection, Scope::Collection(org(10)), rw);
        let read_only = grant(TokenKind::Resource, Scope::Collection(org(10)), ro);
        let account_token = grant(TokenKind::Account, Scope::Account, rw);
        let api_key = grant(TokenKind::ApiKey, Scope::Account, rw);
        let device_token = grant(TokenKind::Device, Scope::Device(DeviceId(id(500))), rw);
        let ground_token = grant(TokenKind::Ground, Scope::Collection(org(10)), rw);
        let user = grant(TokenKind::UserAccess, Scope::Account, rw);
        let refresh = grant(TokenKind::Refresh, Scope::Account, rw);
        let teams_writer = grant(TokenKind::Resource, Scope::AllTeams, rw);
        let teams_reader = grant(TokenKind::Resource, Scope::AllTeams, ro);
        let collection_writer = grant(TokenKind::Resource, Scope::Collection(org(10)), rw);
        let variable = Target::variable(account(), org(10), DeviceId(id(500)), VariableId(id(7)));
        let other_account = Target::collection(AccountId(id(2)), org(10));

        type Case<'a> = (&'a str, &'a Grant, Action, Target, Result<(), Denial>);
        let cases: Vec<Case> = vec![
            ("org token writes its own device", &org_token, Write, device_in(10, 500), Ok(())),
            ("org token reads its collection", &org_token, Read, Target::collection(account(), org(10)), Ok(())),
            ("org token writes a variable of its device", &org_token, Write, variable.clone(), Ok(())),
            ("org token and another org's device", &org_token, Write, device_in(11, 501), Err(Denial::OutOfScope)),
            ("org token reads another org's device", &org_token, Read, device_in(11, 501), Err(Denial::OutOfScope)),
            ("org token at the account root", &org_token, Read, Target::account(account()), Err(Denial::OutOfScope)),
            (
                "org token manages tokens",
                &org_token,
                ManageTokens,
                Target::collection(account(), org(10)),
                Err(Denial::TokenCannotManageTokens),
            ),
            ("read-only token reads", &read_only, Read, device_in(10, 500), Ok(())),
            ("read-only token writes", &read_only, Write, device_in(10, 500), Err(Denial::ReadOnly)),
            ("account token anywhere in its account", &account_token, Write, device_in(11, 501), Ok(())),
            ("account token in another account", &account_token, Read, other_account.clone(), Err(Denial::OutOfScope)),
            ("api key mints tokens", &api_key, ManageTokens, Target::collection(account(), org(10)), Ok(())),
            ("api key reads data", &api_key, Read, device_in(10, 500), Err(Denial::ApiKeyOnlyManagesTokens)),
            ("api key of another account", &api_key, ManageTokens, other_account, Err(Denial::NotYourToken)),
            ("device token writes its device", &device_token, Write, variable.clone(), Ok(())),
            ("device token and another device", &device_token, Write, device_in(10, 501), Err(Denial::OutOfScope)),
            (
                "device token reads its collection",
                &device_token,
                Read,
                Target::collection(account(), org(10)),
                Err(Denial::DeviceLevelOnly),
            ),
            ("ground token writes a device of its ground", &ground_token, Write, device_in(10, 777), Ok(())),
            (
                "ground token and another ground's device",
                &ground_token,
                Read,
                device_in(11, 777),
                Err(Denial::OutOfScope),
            ),
            (
                "ground token reads the ground itself",
                &ground_token,
                Read,
                Target::collection(account(), org(10)),
                Err(Denial::DeviceLevelOnly),
            ),
            (
                "ground token manages tokens",
                &ground_token,
                ManageTokens,
                device_in(10, 777),
                Err(Denial::TokenCannotManageTokens),
            ),
            ("user manages tokens", &user, ManageTokens, Target::account(account()), Ok(())),
            ("refresh token reads", &refresh, Read, device_in(10, 500), Err(Denial::RefreshTokenOnlyRefreshes)),
            (
                "refresh token manages tokens",
                &refresh,
                ManageTokens,
                Target::account(account()),
                Err(Denial::RefreshTokenOnlyRefreshes),
            ),
            ("user manages users", &user, ManageUsers, Target::account(account()), Ok(())),
            (
                "account token manages users",
                &account_token,
                ManageUsers,
                Target::account(account()),
                Err(Denial::UsersOnly),
            ),
            (
                "api key manages users",
                &api_key,
                ManageUsers,
                Target::account(account()),
                Err(Denial::ApiKeyOnlyManagesTokens),
            ),
            ("user acts for themselves", &user, SelfService, Target::account(account()), Ok(())),
            (
                "account token acts as a person",
                &account_token,
                SelfService,
                Target::account(account()),
                Err(Denial::UsersOnly),
            ),
            ("a /teams write token creates teams", &teams_writer, SelfService, Target::account(account()), Ok(())),
            ("a user changes their own login", &user, ManageOwnLogin, Target::account(account()), Ok(())),
            (
                "a /teams write token never changes its owner's login",
                &teams_writer,
                ManageOwnLogin,
                Target::account(account()),
                Err(Denial::UsersOnly),
            ),
            (
                "a /teams read token does not",
                &teams_reader,
                SelfService,
                Target::account(account()),
                Err(Denial::UsersOnly),
            ),
            (
                "a collection token does not",
                &collection_writer,
                SelfService,
                Target::account(account()),
                Err(Denial::UsersOnly),
            ),
        ];
        for (name, grant, action, target, expected) in cases {
            let outcome = authorize(grant, NOW, action, &target).map(|_| ());
            assert_eq!(outcome, expected, "{name}");
        }
    }

    #[test]
    fn every_method_but_get_head_and_options_is_a_write() {
        let read_only = grant(TokenKind::Resource, Scope::Collection(org(10)), Rights::Read);
        for method in ["GET", "HEAD", "OPTIONS"] {
            let action = Action::for_http_method(method);
            assert_eq!(authorize(&read_only, NOW, action, &device_in(10, 5)).map(|_| ()), Ok(()), "{method}");
        }
        for method in ["PUT", "POST", "PATCH", "DELETE", "CONNECT", "TRACE", "PROPFIND", "get", "MERGE"] {
            let action = Action::for_http_method(method);
            assert_eq!(action, Action::Write, "{method}");
            assert_eq!(authorize(&read_only, NOW, action, &device_in(10, 5)), Err(Denial::ReadOnly), "{method}");
            // The same for a request that names no target (a method no route has).
            assert_eq!(authorize_untargeted(&read_only, NOW, action), Err(Denial::ReadOnly), "{method}");
        }
        assert_eq!(authorize_untargeted(&read_only, NOW, Action::Read), Ok(()));
        let writer = grant(TokenKind::Resource, Scope::Collection(org(10)), Rights::ReadWrite);
        assert_eq!(authorize_untargeted(&writer, NOW, Action::Write), Ok(()));
    }

    #[test]
    fn scopes_match_ids_not_text_prefixes() {
        // 0x10 and 0x100 print as ids that share a prefix once rendered; only equal ids match.
        let token = grant(TokenKind::Collection, Scope::Collection(org(0x10)), Rights::ReadWrite);
        assert_eq!(authorize(&token, NOW, Action::Read, &device_in(0x100, 1)), Err(Denial::OutOfScope));
        assert_eq!(authorize(&token, NOW, Action::Read, &device_in(0x1, 1)), Err(Denial::OutOfScope));
        let team_token = grant(TokenKind::Resource, Scope::Team(TeamId(id(0xab))), Rights::ReadWrite);
        let other_team = Target::team(account(), TeamId(id(0xabc)));
        assert_eq!(authorize(&team_token, NOW, Action::Read, &other_team), Err(Denial::OutOfScope));
    }

    #[test]
    fn expiry_is_checked_on_every_use() {
        let mut token = grant(TokenKind::Collection, Scope::Collection(org(10)), Rights::ReadWrite);
        token.expires_at_ms = Some(NOW + 1);
        assert!(authorize(&token, NOW, Action::Read, &device_in(10, 5)).is_ok());
        assert_eq!(authorize(&token, NOW + 1, Action::Read, &device_in(10, 5)), Err(Denial::Expired));
        assert!(Denial::Expired.is_unauthenticated());
    }

    #[test]
    fn rotation_needs_a_manager_and_a_creator_who_still_grants_the_token() {
        let alice = Creator::User(UserId(id(21)));
        let team_reach = |rights| Reach::Limited {
            teams: BTreeMap::from([(TeamId(id(3)), rights)]),
            collections: BTreeMap::from([(org(10), rights)]),
        };
        let admin = Grant {
            creator: alice,
            creator_reach: team_reach(Rights::ReadWrite),
            ..grant(TokenKind::UserAccess, Scope::Account, Rights::ReadWrite)
        };
        let token = ManagedToken { account: account(), creator: alice, scope_target: device_in(10, 5) };
        let rw = Rights::ReadWrite;
        assert!(authorize_token_rotation(&admin, NOW, &token, rw, &team_reach(rw)).is_ok());
        assert_eq!(
            authorize_token_rotation(&admin, NOW, &token, rw, &team_reach(Rights::Read)),
            Err(Denial::CreatorReadOnly),
            "the creator may only read there now: a writing token is not renewed"
        );
        assert!(authorize_token_rotation(&admin, NOW, &token, Rights::Read, &team_reach(Rights::Read)).is_ok());
        assert_eq!(authorize_token_rotation(&admin, NOW, &token, rw, &Reach::Nothing), Err(Denial::CreatorLostAccess));
        let elsewhere = ManagedToken { scope_target: device_in(11, 5), ..token.clone() };
        assert_eq!(
            authorize_token_rotation(&admin, NOW, &elsewhere, Rights::Read, &team_reach(rw)),
            Err(Denial::CreatorLostAccess)
        );
        let root = ManagedToken { scope_target: Target::account(account()), ..token.clone() };
        assert!(authorize_token_rotation(&admin, NOW, &root, rw, &team_reach(rw)).is_ok());
        assert_eq!(
            authorize_token_rotation(&admin, NOW, &root, rw, &team_reach(Rights::Read)),
            Err(Denial::CreatorReadOnly)
        );
        // Issue 15's probe: a team admin manages a token another made for her collection, but does not rotate it
        // (its secret would carry its maker's reach and outlive hers); an account administrator does.
        let made_by_another = ManagedToken { creator: Creator::User(UserId(id(40))), ..token.clone() };
        assert!(authorize_token_management(&admin, NOW, &made_by_another).is_ok(), "she manages it");
        assert_eq!(
            authorize_token_rotation(&admin, NOW, &made_by_another, rw, &team_reach(rw)),
            Err(Denial::RotationByItsMaker)
        );
        let account_admin = Grant { creator_reach: Reach::Account(rw), ..admin.clone() };
        assert!(authorize_token_rotation(&account_admin, NOW, &made_by_another, rw, &team_reach(rw)).is_ok());
        let stranger = Grant { creator: Creator::User(UserId(id(30))), creator_reach: Reach::Nothing, ..admin.clone() };
        let others = ManagedToken { creator: Creator::User(UserId(id(31))), ..token };
        assert_eq!(
            authorize_token_rotation(&stranger, NOW, &others, rw, &team_reach(rw)),
            Err(Denial::NotYourToken),
            "only a manager of the token rotates it"
        );
    }

    #[test]
    fn a_disabled_token_is_refused_until_enabled_again() {
        let mut token = grant(TokenKind::Device, Scope::Device(DeviceId(id(5))), Rights::ReadWrite);
        token.disabled = true;
        assert_eq!(authorize(&token, NOW, Action::Read, &device_in(10, 5)), Err(Denial::Disabled));
        assert!(Denial::Disabled.is_unauthenticated());
        token.disabled = false;
        assert!(authorize(&token, NOW, Action::Read, &device_in(10, 5)).is_ok());
    }

    #[test]
    fn revocation_wins_over_everything() {
        let mut token = grant(TokenKind::Account, Scope::Account, Rights::ReadWrite);
        token.revoked = true;
        for action in [Action::Read, Action::Write, Action::ManageTokens] {
            assert_eq!(authorize(&token, NOW, action, &device_in(10, 5)), Err(Denial::Revoked));
        }
        assert!(Denial::Revoked.is_unauthenticated());
        assert!(!Denial::OutOfScope.is_unauthenticated());
    }

    #[test]
    fn a_token_never_reaches_further_than_its_creator_now() {
        let mut token = grant(TokenKind::Resource, Scope::AllCollections, Rights::ReadWrite);
        let member_of =
            |rights| Reach::Limited { teams: BTreeMap::new(), collections: BTreeMap::from([(org(10), rights)]) };
        token.creator_reach = member_of(Rights::ReadWrite);
        assert!(authorize(&token, NOW, Action::Write, &device_in(10, 5)).is_ok());
        assert_eq!(authorize(&token, NOW, Action::Read, &device_in(11, 5)), Err(Denial::CreatorLostAccess));

        // Demoted to a plain member: reads still pass, writes do not.
        token.creator_reach = member_of(Rights::Read);
        assert!(authorize(&token, NOW, Action::Read, &device_in(10, 5)).is_ok());
        assert_eq!(authorize(&token, NOW, Action::Write, &device_in(10, 5)), Err(Denial::CreatorReadOnly));

        // Removed from the team, or the API key that minted the token revoked.
        token.creator_reach = Reach::Nothing;
        assert_eq!(authorize(&token, NOW, Action::Read, &device_in(10, 5)), Err(Denial::CreatorLostAccess));
    }

    #[test]
    fn tokens_of_an_api_key_reach_the_data_but_not_the_teams() {
        let mut token = grant(TokenKind::Account, Scope::Account, Rights::ReadWrite);
        token.creator_reach = Reach::AccountData(Rights::ReadWrite);
        assert!(authorize(&token, NOW, Action::Write, &device_in(10, 5)).is_ok());
        assert!(authorize(&token, NOW, Action::Write, &Target::account(account())).is_ok());
        let team = Target::team(account(), TeamId(id(3)));
        assert_eq!(authorize(&token, NOW, Action::Read, &team), Err(Denial::CreatorLostAccess));
    }

    #[test]
    fn only_account_administrators_manage_users() {
        let mut user = grant(TokenKind::UserAccess, Scope::Account, Rights::ReadWrite);
        user.creator_reach = Reach::Limited {
            teams: BTreeMap::from([(TeamId(id(3)), Rights::ReadWrite)]),
            collections: BTreeMap::new(),
        };
        let root = Target::account(account());
        assert_eq!(authorize(&user, NOW, Action::ManageUsers, &root), Err(Denial::CreatorLostAccess));
        assert!(authorize(&user, NOW, Action::SelfService, &root).is_ok(), "but they still act for themselves");
        assert!(authorize(&user, NOW, Action::Write, &Target::team(account(), TeamId(id(3)))).is_ok());
        assert!(
            authorize(&user, NOW, Action::ManageTokens, &root).is_ok(),
            "their own tokens, for everything they reach"
        );
        user.creator_reach = Reach::Nothing;
        assert_eq!(authorize(&user, NOW, Action::SelfService, &root), Err(Denial::CreatorLostAccess));
    }

    #[test]
    fn listings_are_refused_to_credentials_that_read_nothing() {
        let org_token = grant(TokenKind::Collection, Scope::Collection(org(10)), Rights::Read);
        assert_eq!(authorize_listing(&org_token, NOW), Ok(Scope::Collection(org(10))));
        let api_key = grant(TokenKind::ApiKey, Scope::Account, Rights::ReadWrite);
        assert_eq!(authorize_listing(&api_key, NOW), Err(Denial::ApiKeyOnlyManagesTokens));
        let refresh = grant(TokenKind::Refresh, Scope::Account, Rights::ReadWrite);
        assert_eq!(authorize_listing(&refresh, NOW), Err(Denial::RefreshTokenOnlyRefreshes));
        let mut orphaned = org_token.clone();
        orphaned.creator_reach = Reach::Nothing;
        assert_eq!(authorize_listing(&orphaned, NOW), Err(Denial::CreatorLostAccess));
        let mut revoked = org_token;
        revoked.revoked = true;
        assert_eq!(authorize_listing(&revoked, NOW), Err(Denial::Revoked));
    }

    #[test]
    fn branches_are_listed_only_by_scopes_that_hold_them() {
        let root = grant(TokenKind::Resource, Scope::Account, Rights::Read);
        let teams = grant(TokenKind::Resource, Scope::AllTeams, Rights::Read);
        let one = grant(TokenKind::Resource, Scope::Collection(org(10)), Rights::Read);
        assert!(authorize_listing_of(&root, NOW, Listing::Root).is_ok());
        assert!(authorize_listing_of(&root, NOW, Listing::Teams).is_ok());
        assert_eq!(authorize_listing_of(&teams, NOW, Listing::Root), Err(Denial::OutOfScope));
        assert!(authorize_listing_of(&teams, NOW, Listing::Teams).is_ok());
        assert_eq!(authorize_listing_of(&one, NOW, Listing::Teams), Err(Denial::OutOfScope));
        let api_key = grant(TokenKind::ApiKey, Scope::Account, Rights::ReadWrite);
        assert_eq!(authorize_listing_of(&api_key, NOW, Listing::Root), Err(Denial::ApiKeyOnlyManagesTokens));
        assert!(authorize_listing_of(&one, NOW, Listing::Collections).is_ok());
        let device = grant(TokenKind::Device, Scope::Device(DeviceId(id(5))), Rights::ReadWrite);
        let ground = grant(TokenKind::Ground, Scope::Collection(org(10)), Rights::ReadWrite);
        for listing in [Listing::Root, Listing::Teams, Listing::Collections] {
            assert_eq!(authorize_listing_of(&device, NOW, listing), Err(Denial::DeviceLevelOnly), "{listing:?}");
            assert_eq!(authorize_listing_of(&ground, NOW, listing), Err(Denial::DeviceLevelOnly), "{listing:?}");
        }
    }

    #[test]
    fn the_permit_names_what_was_authorized() {
        let token = grant(TokenKind::Account, Scope::Account, Rights::ReadWrite);
        let permit = authorize(&token, NOW, Action::Write, &device_in(10, 5)).unwrap();
        assert_eq!(permit.action(), Action::Write);
        assert_eq!(permit.target(), &device_in(10, 5));
        assert_eq!(permit.account(), account());
        assert_eq!(permit.token(), TokenId(id(99)));
        assert!(permit.covers(Action::Write, &device_in(10, 5)));
        let variable = Target::variable(account(), org(10), DeviceId(id(5)), VariableId(id(1)));
        assert!(permit.covers(Action::Write, &variable));
        assert!(!permit.covers(Action::Read, &device_in(10, 5)));
        assert!(!permit.covers(Action::Write, &device_in(10, 6)));
        assert!(!permit.covers(Action::Write, &Target::collection(account(), org(10))));
    }

    /// Issue 13: a read-only member (Bob) listed, revoked and minted tokens of a collection his admin (Alice)
    /// manages. One rule now decides, for every token route.
    #[test]
    fn the_token_management_rule() {
        let (alice, bob, carol) =
            (Creator::User(UserId(id(21))), Creator::User(UserId(id(22))), Creator::User(UserId(id(23))));
        let team_reach = |rights| Reach::Limited {
            teams: BTreeMap::from([(TeamId(id(3)), rights)]),
            collections: BTreeMap::from([(org(10), rights)]),
        };
        let session = |creator, reach| Grant {
            creator,
            creator_reach: reach,
            ..grant(TokenKind::UserAccess, Scope::Account, Rights::ReadWrite)
        };
        let admin_of_team = session(alice, team_reach(Rights::ReadWrite));
        let member = session(bob, team_reach(Rights::Read));
        let outsider = session(carol, Reach::Limited { teams: BTreeMap::new(), collections: BTreeMap::new() });
        let account_admin = session(Creator::User(UserId(id(24))), Reach::Account(Rights::ReadWrite));
        let api_key = Grant {
            creator: Creator::System,
            creator_reach: Reach::AccountData(Rights::ReadWrite),
            ..grant(TokenKind::ApiKey, Scope::Account, Rights::ReadWrite)
        };
        let device_token = grant(TokenKind::Device, Scope::Device(DeviceId(id(500))), Rights::ReadWrite);
        let resource_token = grant(TokenKind::Resource, Scope::Account, Rights::ReadWrite);

        let on_device = |creator| ManagedToken { account: account(), creator, scope_target: device_in(10, 500) };
        let alices = on_device(alice);
        let bobs = on_device(bob);
        let alices_personal =
            ManagedToken { account: account(), creator: alice, scope_target: Target::account(account()) };
        let manage = |grant: &Grant, token: &ManagedToken| authorize_token_management(grant, NOW, token).map(|_| ());

        assert_eq!(manage(&admin_of_team, &alices), Ok(()), "her own");
        assert_eq!(manage(&admin_of_team, &bobs), Ok(()), "a team admin manages the team's collection's tokens");
        assert_eq!(manage(&member, &alices), Err(Denial::NotYourToken), "a member does not see the admin's");
        assert_eq!(manage(&member, &bobs), Ok(()), "but does his own, to clean up");
        assert_eq!(manage(&outsider, &alices), Err(Denial::NotYourToken));
        assert_eq!(manage(&admin_of_team, &alices_personal), Ok(()));
        assert_eq!(manage(&member, &alices_personal), Err(Denial::NotYourToken), "a personal token is its maker's");
        assert_eq!(manage(&account_admin, &alices_personal), Ok(()));
        assert_eq!(manage(&api_key, &alices_personal), Ok(()));
        assert_eq!(manage(&device_token, &alices), Err(Denial::TokenCannotManageTokens));
        assert_eq!(manage(&resource_token, &alices), Err(Denial::TokenCannotManageTokens));
        let elsewhere = ManagedToken { account: AccountId(id(2)), ..alices.clone() };
        assert_eq!(manage(&api_key, &elsewhere), Err(Denial::NotYourToken), "another account's");
        let revoked = Grant { revoked: true, ..admin_of_team.clone() };
        assert_eq!(manage(&revoked, &alices), Err(Denial::Revoked));

        let device = device_in(10, 500);
        let mint = |grant: &Grant, target: &Target, rights| authorize_mint(grant, NOW, target, rights).map(|_| ());
        assert_eq!(mint(&admin_of_team, &device, Rights::ReadWrite), Ok(()));
        assert_eq!(mint(&member, &device, Rights::ReadWrite), Err(Denial::ManagingTokensNeedsWrite));
        assert_eq!(mint(&member, &device, Rights::Read), Err(Denial::ManagingTokensNeedsWrite), "minting is a change");
        assert_eq!(mint(&outsider, &device, Rights::Read), Err(Denial::CreatorLostAccess));
        let root = Target::account(account());
        assert_eq!(mint(&member, &root, Rights::Read), Ok(()), "a personal read token reaches what he reads");
        assert_eq!(mint(&member, &root, Rights::ReadWrite), Err(Denial::RightsBeyondCreator));
        assert_eq!(mint(&admin_of_team, &root, Rights::ReadWrite), Ok(()));
        let nobody = session(carol, Reach::Nothing);
        assert_eq!(mint(&nobody, &root, Rights::Read), Err(Denial::CreatorLostAccess));
        assert_eq!(mint(&api_key, &device, Rights::ReadWrite), Ok(()));
        assert_eq!(
            mint(&api_key, &Target::team(account(), TeamId(id(3))), Rights::Read),
            Err(Denial::CreatorLostAccess),
            "people are managed by people"
        );
        assert_eq!(mint(&device_token, &device, Rights::Read), Err(Denial::TokenCannotManageTokens));

        let list = |grant: &Grant, at: &Target| authorize_token_listing(grant, NOW, at).map(|(_, listed)| listed);
        let collection = Target::collection(account(), org(10));
        assert_eq!(list(&admin_of_team, &collection), Ok(ListedTokens::Everyones));
        assert_eq!(list(&member, &collection), Ok(ListedTokens::MadeBy(bob)));
        assert_eq!(list(&outsider, &collection), Ok(ListedTokens::MadeBy(carol)));
        assert_eq!(list(&admin_of_team, &root), Ok(ListedTokens::MadeBy(alice)), "a team admin's root is her own");
        assert_eq!(list(&account_admin, &root), Ok(ListedTokens::Everyones));
        assert_eq!(list(&api_key, &root), Ok(ListedTokens::Everyones));
        assert_eq!(list(&resource_token, &root), Err(Denial::TokenCannotManageTokens));
        assert!(Denial::NotYourToken.hides_existence() && !Denial::ManagingTokensNeedsWrite.hides_existence());
    }

    #[test]
    fn how_a_credential_arrived_is_judged_here() {
        let read_only = grant(TokenKind::Resource, Scope::Collection(org(10)), Rights::Read);
        let writer = grant(TokenKind::Resource, Scope::Collection(org(10)), Rights::ReadWrite);
        let api_key = grant(TokenKind::ApiKey, Scope::Account, Rights::ReadWrite);
        let user = grant(TokenKind::UserAccess, Scope::Account, Rights::ReadWrite);
        let url = |action| Presentation::InUrl(action);
        assert_eq!(check_presentation(&read_only, url(Action::Read)), Ok(()));
        assert_eq!(check_presentation(&read_only, url(Action::Write)), Err(Denial::UrlTokenNotReadOnly));
        assert_eq!(check_presentation(&writer, url(Action::Read)), Err(Denial::UrlTokenNotReadOnly));
        assert_eq!(check_presentation(&writer, Presentation::Header), Ok(()));
        assert_eq!(check_presentation(&api_key, Presentation::ApiKeyOnly), Ok(()));
        assert_eq!(check_presentation(&user, Presentation::ApiKeyOnly), Err(Denial::NotAnApiKey));
        assert_eq!(check_presentation(&user, Presentation::UserSessionOnly), Ok(()));
        assert_eq!(check_presentation(&api_key, Presentation::UserSessionOnly), Err(Denial::UserSessionOnly));
        assert_eq!(check_presentation(&writer, Presentation::UserSessionOnly), Err(Denial::UserSessionOnly));
        assert!(Denial::UserSessionOnly.is_unauthenticated());
    }

    /// A review found a team admin widening an account administrator's token for her collection to "/".
    #[test]
    fn a_changed_token_must_stay_within_what_its_changer_manages() {
        let alice = Creator::User(UserId(id(21)));
        let dan = Creator::User(UserId(id(24)));
        let team_admin = Grant {
            creator: alice,
            creator_reach: Reach::Limited {
                teams: BTreeMap::from([(TeamId(id(3)), Rights::ReadWrite)]),
                collections: BTreeMap::from([(org(10), Rights::ReadWrite)]),
            },
            ..grant(TokenKind::UserAccess, Scope::Account, Rights::ReadWrite)
        };
        let on = |creator, scope_target| ManagedToken { account: account(), creator, scope_target };
        let dans_on_collection = on(dan, Target::collection(account(), org(10)));
        let dans_at_root = on(dan, Target::account(account()));
        let change = |before: &ManagedToken, after: &ManagedToken, rights| {
            authorize_token_change(&team_admin, NOW, before, after, rights).map(|_| ())
        };
        assert_eq!(change(&dans_on_collection, &dans_at_root, Rights::ReadWrite), Err(Denial::NotYourToken));
        assert_eq!(change(&dans_on_collection, &dans_at_root, Rights::Read), Err(Denial::NotYourToken));
        let dans_on_device = on(dan, device_in(10, 500));
        assert_eq!(change(&dans_on_collection, &dans_on_device, Rights::Read), Ok(()), "within her collection");
        let alices = on(alice, Target::collection(account(), org(10)));
        let alices_at_root = on(alice, Target::account(account()));
        assert_eq!(change(&alices, &alices_at_root, Rights::ReadWrite), Ok(()), "her own token, her own reach");
        let elsewhere = on(dan, Target::collection(account(), org(11)));
        assert_eq!(change(&dans_on_collection, &elsewhere, Rights::Read), Err(Denial::CreatorLostAccess));
    }
}
