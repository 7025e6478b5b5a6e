//! Collections (Ubidots' organizations, AllThingsTalk's grounds): the list, one collection's page with its
//! devices (searched, filtered by silence, sorted by activity, a page at a time, updated live) and its tokens,
//! and the forms that create and delete them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tessera_core::{Action, CollectionId, DeviceId, Label, Rights, Scope, Target, TeamId, TokenKind, UserId};
use tessera_store::{Collection, Device, DeviceOrder, DeviceQuery, Page, Team, TokenSelection};

use super::format::{self, Chrome, FormState, TokenRow};
use super::session::{Form, Signed, SignedIn};
use super::tokens::{Shown, expiry_from_form, mint_and_show, token_notice, token_rows};
use super::{Failure, PREFIX, PageResult, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::time::now_ms;
use crate::tokens::{Caller, NewToken};

/// Devices shown per page of a collection.
const DEVICES_PER_PAGE: u64 = 50;

#[derive(Debug, Clone)]
struct CollectionRow {
    id: String,
    name: String,
    owner: String,
    created: String,
    is_default: bool,
}

#[derive(Debug, Clone)]
struct OwnerChoice {
    value: String,
    label: String,
}

#[derive(Debug, Template)]
#[template(path = "console/collections.html")]
struct CollectionsPage {
    chrome: Chrome,
    collections: Vec<CollectionRow>,
    owners: Vec<OwnerChoice>,
    notice: &'static str,
    form: FormState,
}

/// How a team is called on a page: its `name` tag, else its id.
pub(super) fn team_name(team: &Team, own_user: Option<tessera_core::UserId>) -> String {
    if team.private_of.is_some() && team.private_of == own_user {
        return "your private team".into();
    }
    match team.tags.get("name") {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("team {}", team.id),
    }
}

async fn owner_names(app: &App, caller: &Caller, own_user: UserId) -> (HashMap<TeamId, String>, Vec<OwnerChoice>) {
    let own_user = Some(own_user);
    let teams = app.teams.teams_of(caller).await.unwrap_or_default();
    let names: HashMap<TeamId, String> = teams.iter().map(|team| (team.id, team_name(team, own_user))).collect();
    let mut owners: Vec<OwnerChoice> = teams
        .iter()
        .filter(|team| caller.authorize(Action::Write, &Target::team(caller.account(), team.id)).is_ok())
        .map(|team| OwnerChoice { value: team.id.to_string(), label: team_name(team, own_user) })
        .collect();
    // The private team first: it is where a person's own things go.
    owners.sort_by_key(|choice| choice.label != "your private team");
    if caller.authorize(Action::Write, &Target::account(caller.account())).is_ok() {
        owners.push(OwnerChoice { value: "account".into(), label: "the account (its administrators)".into() });
    }
    (names, owners)
}

async fn collections_page(app: &App, signed: &SignedIn, notice: &'static str, form: FormState) -> PageResult {
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "collections");
    let (team_names, owners) = owner_names(app, &signed.caller, user.id).await;
    let collections = app
        .readable_collections(&signed.caller)
        .await?
        .into_iter()
        .map(|collection| CollectionRow {
            id: collection.id.to_string(),
            owner: match collection.team {
                Some(team) => team_names.get(&team).cloned().unwrap_or_else(|| format!("team {team}")),
                None => "the account".into(),
            },
            name: collection.name,
            created: format::when(collection.created_at_ms),
            is_default: collection.is_default,
        })
        .collect();
    let status = form.status();
    render_with(status, CollectionsPage { chrome, collections, owners, notice, form })
}

pub(super) async fn list(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let notice = match query.text("done") {
        Some("deleted") => "The collection is deleted.",
        _ => "",
    };
    collections_page(&app, &signed, notice, FormState::default()).await
}

pub(super) async fn create(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    let name = form.trimmed("name");
    let owner = form.trimmed("owner");
    let failed =
        |field, message: String| FormState::failed("create", field, message).keep("name", name).keep("owner", owner);
    if name.is_empty() || name.chars().count() > 200 {
        let state = failed("name", "A name of 1 to 200 characters is needed.".into());
        return collections_page(&app, &signed, "", state).await;
    }
    let team = match owner {
        "account" => None,
        "" => match app.people.private_team(&signed.caller).await {
            Ok(team) => Some(team),
            Err(AppError::Internal(_)) => {
                let state = failed("owner", "You have no private team: choose a team as the owner.".into());
                return collections_page(&app, &signed, "", state).await;
            }
            Err(other) => return Err(other.into()),
        },
        text => match text.parse::<TeamId>() {
            Ok(team) => Some(team),
            Err(_) => return collections_page(&app, &signed, "", failed("owner", "Choose an owner.".into())).await,
        },
    };
    let owner_target = match team {
        Some(team) => Target::team(signed.caller.account(), team),
        None => Target::account(signed.caller.account()),
    };
    let created = match signed.caller.authorize(Action::Write, &owner_target) {
        Ok(permit) => app.create_collection(&permit, name.to_owned(), team, Default::default()).await,
        Err(denial) => Err(AppError::Denied(denial)),
    };
    match created {
        Ok(collection) => Ok(see_other(format!("{PREFIX}/collections/{}", collection.id))),
        Err(
            error @ (AppError::Denied(_) | AppError::BadRequest(_) | AppError::Conflict(_) | AppError::NotFound(_)),
        ) => collections_page(&app, &signed, "", failed("owner", super::explain(&error))).await,
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Clone)]
struct DeviceRow {
    id: String,
    label: String,
    name: String,
    last_seen: String,
    last_seen_machine: String,
    values: Vec<(String, String)>,
}

#[derive(Debug, Template)]
#[template(path = "console/collection.html")]
struct CollectionPage {
    chrome: Chrome,
    id: String,
    name: String,
    owner: String,
    owner_link: String,
    created: String,
    is_default: bool,
    can_write: bool,
    devices: Vec<DeviceRow>,
    total: u64,
    first_shown: u64,
    last_shown: u64,
    previous_page: String,
    next_page: String,
    search: String,
    quiet_minutes: String,
    sort: &'static str,
    tokens: Vec<TokenRow>,
    tokens_note: String,
    back: String,
    notice: String,
    form: FormState,
}

/// The device listing a collection page asks for, from its query string.
#[derive(Debug, Clone)]
struct Listing {
    search: String,
    quiet_minutes: Option<i64>,
    order: DeviceOrder,
    page: u64,
}

impl Listing {
    fn from_query(query: &QueryParams) -> Result<Listing, AppError> {
        let search = query.text("q").unwrap_or("").trim().to_owned();
        if search.chars().count() > 64 {
            return Err(AppError::BadRequest("a label search has at most 64 characters".into()));
        }
        let quiet_minutes = match query.text("quiet").map(str::trim) {
            None | Some("") => None,
            Some(_) => query.integer_in("quiet", 1, 525_600)?,
        };
        let order = match query.text("sort") {
            Some("label") => DeviceOrder::Label,
            _ => DeviceOrder::LastActivity,
        };
        let page = query.integer_in("page", 1, 1_000_000)?.unwrap_or(1) as u64;
        Ok(Listing { search, quiet_minutes, order, page })
    }

    fn link(&self, collection: CollectionId, page: u64) -> String {
        let mut link = format!("{PREFIX}/collections/{collection}?page={page}");
        if !self.search.is_empty() {
            link.push_str("&q=");
            link.push_str(&crate::http::percent_encode(&self.search));
        }
        if let Some(minutes) = self.quiet_minutes {
            link.push_str(&format!("&quiet={minutes}"));
        }
        if self.order == DeviceOrder::Label {
            link.push_str("&sort=label");
        }
        link
    }
}

/// The rows of a page of devices, each with its variables' last values.
async fn device_rows(app: &App, caller: &Caller, devices: &[Device]) -> Result<Vec<DeviceRow>, AppError> {
    let ids: Vec<DeviceId> = devices.iter().map(|device| device.id).collect();
    let mut values: HashMap<DeviceId, Vec<(String, String)>> = HashMap::new();
    for (variable, last) in app.data.variables_with_last(caller, &ids).await? {
        let text = last.map(|reading| format::value_text(&reading.value)).unwrap_or_else(|| "–".into());
        values.entry(variable.device).or_default().push((variable.label.to_string(), text));
    }
    Ok(devices
        .iter()
        .map(|device| DeviceRow {
            id: device.id.to_string(),
            label: device.label.to_string(),
            name: device.name.clone(),
            last_seen: device.last_seen_at_ms.map(format::when).unwrap_or_else(|| "never".into()),
            last_seen_machine: device.last_seen_at_ms.map(format::machine_time).unwrap_or_default(),
            values: values.remove(&device.id).unwrap_or_default(),
        })
        .collect())
}

async fn owner_of(app: &App, caller: &Caller, collection: &Collection, own_user: UserId) -> (String, String) {
    match collection.team {
        None => ("the account".into(), String::new()),
        Some(team) => {
            let name = match app.teams.team(caller, Action::Read, team).await {
                Ok((team, _)) => team_name(&team, Some(own_user)),
                Err(_) => format!("team {team}"),
            };
            (name, format!("{PREFIX}/teams/{team}"))
        }
    }
}

async fn collection_page(
    app: &App,
    signed: &SignedIn,
    id: CollectionId,
    query: &QueryParams,
    notice: String,
    form: FormState,
) -> PageResult {
    let caller = &signed.caller;
    let (collection, permit) = app.data.collection(caller, Action::Read, id).await?;
    // The visitor is read once and handed to what needs them (the chrome, the owner's name, the token table).
    let user = app.people.user_of(caller).await?;
    let chrome = Chrome::for_user(&user, signed, "collections");
    let listing = Listing::from_query(query)?;
    let device_query = DeviceQuery {
        label_contains: (!listing.search.is_empty()).then(|| listing.search.clone()),
        not_seen_since_ms: listing.quiet_minutes.map(|minutes| now_ms() - minutes * 60_000),
        order: listing.order,
    };
    let page = Page { number: listing.page, size: DEVICES_PER_PAGE };
    let devices = app.data.device_overview(&permit, &device_query, page).await?;
    let rows = device_rows(app, caller, &devices.items).await?;
    // A page past the last shows nothing, and says so (not "7451–7450 of 60").
    let first_shown = if rows.is_empty() { 0 } else { page.offset() + 1 };
    let last_shown = if rows.is_empty() { 0 } else { page.offset() + rows.len() as u64 };
    let (owner, owner_link) = owner_of(app, caller, &collection, user.id).await;
    let names = format::names_for(app, signed, &user).await;
    let (tokens, tokens_note) =
        match token_rows(app, signed, Some(Scope::Collection(id)), Default::default(), &names).await {
            Ok(table) => table,
            Err(error) => (Vec::new(), super::explain(&error)),
        };
    let status = form.status();
    render_with(
        status,
        CollectionPage {
            chrome,
            id: id.to_string(),
            name: collection.name.clone(),
            owner,
            owner_link,
            created: format::when(collection.created_at_ms),
            is_default: collection.is_default,
            can_write: caller.authorize(Action::Write, &Target::collection(caller.account(), id)).is_ok(),
            devices: rows,
            total: devices.total,
            first_shown,
            last_shown,
            previous_page: if listing.page > 1 { listing.link(id, listing.page - 1) } else { String::new() },
            next_page: if last_shown < devices.total { listing.link(id, listing.page + 1) } else { String::new() },
            search: listing.search.clone(),
            quiet_minutes: listing.quiet_minutes.map(|minutes| minutes.to_string()).unwrap_or_default(),
            sort: if listing.order == DeviceOrder::Label { "label" } else { "activity" },
            tokens,
            tokens_note,
            back: format!("{PREFIX}/collections/{id}"),
            notice,
            form,
        },
    )
}

/// The collection's page shown again after one of its forms failed: the error by its field, what was typed kept.
pub(super) async fn form_again(app: &App, signed: &SignedIn, id: CollectionId, form: FormState) -> PageResult {
    collection_page(app, signed, id, &QueryParams::default(), String::new(), form).await
}

fn collection_id(text: &str) -> Result<CollectionId, Failure> {
    text.parse().map_err(|_| Failure::App(AppError::NotFound("collection")))
}

pub(super) async fn page(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    query: QueryParams,
) -> PageResult {
    let notice = match query.text("done") {
        Some("device-deleted") => "The device is deleted.".into(),
        _ => token_notice(&query),
    };
    collection_page(&app, &signed, collection_id(&id)?, &query, notice, FormState::default()).await
}

/// `POST /console/collections/{id}/tokens/revoke`: every token of the collection and of its devices that the
/// visitor manages, revoked at once (`TokenService::revoke_selection` judges each); the page says how many.
pub(super) async fn revoke_tokens(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
) -> PageResult {
    let id = collection_id(&id)?;
    app.data.collection(&signed.caller, Action::Read, id).await?;
    let selection = TokenSelection { collection: Some(id), ..TokenSelection::default() };
    match app.tokens.revoke_selection(&signed.caller, selection).await.map_err(AppError::from) {
        Ok(count) => Ok(see_other(format!("{PREFIX}/collections/{id}?done=tokens-revoked&count={count}"))),
        Err(error @ (AppError::Denied(_) | AppError::BadRequest(_) | AppError::NotFound(_))) => {
            form_again(&app, &signed, id, FormState::failed("revoke", "tokens", super::explain(&error))).await
        }
        Err(other) => Err(other.into()),
    }
}

pub(super) async fn delete(State(app): State<App>, Signed(signed): Signed, Path(id): Path<String>) -> PageResult {
    let id = collection_id(&id)?;
    let deleted = match signed.caller.authorize(Action::Write, &Target::collection(signed.caller.account(), id)) {
        Ok(permit) => app.delete_collection(&signed.caller, &permit, id).await,
        Err(denial) => Err(AppError::Denied(denial)),
    };
    match deleted {
        Ok(()) => Ok(see_other(format!("{PREFIX}/collections?done=deleted"))),
        Err(error @ (AppError::Conflict(_) | AppError::Denied(_) | AppError::BadRequest(_))) => {
            let state = FormState::failed("delete", "collection", super::explain(&error));
            form_again(&app, &signed, id, state).await
        }
        Err(other) => Err(other.into()),
    }
}

pub(super) async fn create_device(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let id = collection_id(&id)?;
    let label_text = form.trimmed("label");
    let name = form.trimmed("name");
    let failed = |field, message: String| {
        FormState::failed("device", field, message).keep("label", label_text).keep("name", name)
    };
    let label = match Label::parse(label_text) {
        Ok(label) => label,
        Err(error) => {
            let state = failed("label", format!("Not a device label: {error}."));
            return form_again(&app, &signed, id, state).await;
        }
    };
    if name.chars().count() > 200 {
        let state = failed("name", "A name has at most 200 characters.".into());
        return form_again(&app, &signed, id, state).await;
    }
    let account = signed.caller.account();
    let created = match signed.caller.authorize(Action::Write, &Target::collection(account, id)) {
        Ok(permit) => {
            let device = Device {
                id: DeviceId(crate::entropy::new_id()),
                account,
                collection: id,
                label: label.clone(),
                name: if name.is_empty() { label.to_string() } else { name.to_owned() },
                imsi: None,
                imei: None,
                tags: Default::default(),
                created_at_ms: now_ms(),
                last_seen_at_ms: None,
            };
            app.data.insert_device(&permit, &device).await
        }
        Err(denial) => Err(AppError::Denied(denial)),
    };
    match created {
        Ok(device) => Ok(see_other(format!("{PREFIX}/devices/{}", device.id))),
        Err(AppError::Conflict(_)) => {
            let state = failed("label", format!("A device labelled '{label}' exists already in this account."));
            form_again(&app, &signed, id, state).await
        }
        Err(error @ (AppError::Denied(_) | AppError::BadRequest(_))) => {
            let state = failed("label", super::explain(&error));
            form_again(&app, &signed, id, state).await
        }
        Err(other) => Err(other.into()),
    }
}

pub(super) async fn create_token(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let id = collection_id(&id)?;
    let (collection, _) = app.data.collection(&signed.caller, Action::Read, id).await?;
    let name = form.trimmed("name");
    let kind_text = form.trimmed("kind");
    let failed = |field, message: String| {
        FormState::failed("token", field, message)
            .keep("name", name)
            .keep("kind", kind_text)
            .keep("rights", form.trimmed("rights"))
            .keep("expires_days", form.trimmed("expires_days"))
    };
    let kind = match kind_text {
        "ground" => TokenKind::Ground,
        "organization" | "" => TokenKind::Collection,
        _ => {
            let state = failed("kind", "Choose an organization token or a ground token.".into());
            return form_again(&app, &signed, id, state).await;
        }
    };
    // A ground token reaches its devices' data to read and write; an organization token may be read-only.
    let rights = match (kind, form.trimmed("rights")) {
        (TokenKind::Ground, _) | (_, "read_write" | "") => Rights::ReadWrite,
        (_, "read") => Rights::Read,
        _ => {
            let state = failed("rights", "Choose read, or read and write.".into());
            return form_again(&app, &signed, id, state).await;
        }
    };
    if name.chars().count() > 200 {
        let state = failed("name", "A name has at most 200 characters.".into());
        return form_again(&app, &signed, id, state).await;
    }
    let expires_at_ms = match expiry_from_form(&form) {
        Ok(expiry) => expiry,
        Err(message) => {
            let state = failed("expires_days", message);
            return form_again(&app, &signed, id, state).await;
        }
    };
    let new = NewToken::new(kind, Scope::Collection(id), rights, name.to_owned(), expires_at_ms);
    let shown = Shown {
        section: "collections",
        scope: format!("collection {}", collection.name),
        back: format!("{PREFIX}/collections/{id}"),
        back_label: format!("Back to {}", collection.name),
    };
    match mint_and_show(&app, &signed, new, shown).await? {
        Ok(page) => Ok(page),
        Err(refusal) => form_again(&app, &signed, id, failed("name", refusal)).await,
    }
}

/// `GET /console/collections/{id}/live[?device=ID]`: the collection's new readings (or one device's) as
/// Server-Sent Events for the page's script, each authorized for the viewer, with the device's and variable's
/// labels (from the node's shared live descriptions). A person holds at most `STREAMS_PER_PERSON` at once.
pub(super) async fn live(
    State(app): State<App>,
    axum::Extension(console): axum::Extension<super::session::Console>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    query: QueryParams,
) -> PageResult {
    let id = collection_id(&id)?;
    app.data.collection(&signed.caller, Action::Read, id).await?;
    let device = match query.text("device") {
        Some(text) => Some(text.parse::<DeviceId>().map_err(|_| Failure::App(AppError::NotFound("device")))?),
        None => None,
    };
    let Some(slot) = console.open_stream(&signed.caller) else {
        return Err(Failure::Page(
            StatusCode::TOO_MANY_REQUESTS,
            format!("You have {} live pages open already. Close some and reload.", super::session::STREAMS_PER_PERSON),
        ));
    };
    let stream = live_events(app, signed.caller, id, device, slot);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

struct Follow {
    app: App,
    caller: Caller,
    collection: CollectionId,
    /// Only this device's readings, for a device's page.
    device: Option<DeviceId>,
    _slot: super::session::StreamSlot,
    subscription: crate::hub::Subscription,
    recheck: crate::tokens::RecheckSchedule,
}

fn live_events(
    app: App,
    caller: Caller,
    collection: CollectionId,
    device: Option<DeviceId>,
    slot: super::session::StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let subscription = app.hub.subscribe(crate::hub::Consumer::Console);
    let recheck = app.tokens.recheck_schedule(&caller);
    let follow = Follow { app, caller, collection, device, _slot: slot, subscription, recheck };
    stream::unfold(follow, |mut follow| async move {
        loop {
            tokio::select! {
                live = follow.subscription.next() => {
                    let live = live?;
                    if live.account != follow.caller.account()
                        || live.collection != follow.collection
                        || follow.device.is_some_and(|device| device != live.device)
                    {
                        continue;
                    }
                    let target = Target::device(live.account, live.collection, live.device);
                    if follow.caller.authorize(Action::Read, &target).is_err() {
                        continue;
                    }
                    // Described from the node's shared descriptions, after the reading was found readable.
                    let Some(device) = follow.app.data.live_device(live.account, live.device).await else { continue };
                    let Some(variable) = follow.app.data.live_variable(live.account, live.reading.variable).await
                    else {
                        continue;
                    };
                    let data = json!({
                        "device": live.device.to_string(),
                        "label": device.label.as_str(),
                        "name": device.name,
                        "variable": variable.label.as_str(),
                        "value": format::value_text(&live.reading.value),
                        // The number itself, for the chart (the text above is rounded for reading).
                        "number": match live.reading.value { tessera_core::Value::Number(number) => Some(number), _ => None },
                        "at": format::machine_time(live.reading.timestamp_ms),
                        "seen": format::machine_time(now_ms()),
                        "seen_text": format::when(now_ms()),
                    });
                    return Some((Ok(Event::default().event("reading").data(data.to_string())), follow));
                }
                _ = follow.recheck.due(&follow.caller) => {
                    match follow.app.tokens.reverify(&follow.caller).await {
                        Some(fresh) => follow.caller = fresh,
                        None => return None,
                    }
                }
            }
        }
    })
}

/// The response a failed page load gives a script that asked for data (not a page).
pub(super) fn data_failure(error: AppError) -> Response {
    let status = error.status();
    (status, axum::Json(json!({ "error": super::explain(&error) }))).into_response()
}

impl Listing {
    #[cfg(test)]
    fn of(pairs: &[(&str, &str)]) -> Result<Listing, AppError> {
        let query = QueryParams(pairs.iter().map(|(name, value)| ((*name).into(), (*value).into())).collect());
        Listing::from_query(&query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_its_query_and_links_its_pages() {
        let listing = Listing::of(&[("q", "pump 7&"), ("quiet", "15"), ("sort", "label"), ("page", "2")]).unwrap();
        assert_eq!(listing.quiet_minutes, Some(15));
        assert_eq!(listing.order, DeviceOrder::Label);
        let collection: CollectionId = "0000000000001".parse().unwrap();
        assert_eq!(
            listing.link(collection, 3),
            "/console/collections/0000000000001?page=3&q=pump%207%26&quiet=15&sort=label"
        );
        assert_eq!(Listing::of(&[]).unwrap().order, DeviceOrder::LastActivity);
        assert!(Listing::of(&[("quiet", "0")]).is_err(), "zero minutes of silence is no filter");
        assert!(Listing::of(&[("page", "x")]).is_err());
        assert!(Listing::of(&[("quiet", "")]).unwrap().quiet_minutes.is_none(), "an empty field is no filter");
    }
}
