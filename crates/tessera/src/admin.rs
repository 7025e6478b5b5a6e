//! The operator's commands: tokens, users' second factors, devices, variables' values, readings' export and the
//! store's figures, straight from the data directory or the database (`tessera_server::operator`), as aligned
//! tables for people or JSON for scripts, with exit codes scripts can rely on ([`EXIT_CODES`]).

use std::io::Write;

use base64::Engine;
use serde_json::{Value, json};
use tessera_core::time::{parse_iso8601, rfc3339};
use tessera_core::{AccountId, CollectionId, Creator, QuotaSetting, Reading, TokenId, TokenKind};
use tessera_server::operator::{self, Access, Operator, OperatorError, ServerPresence};
use tessera_store::{Device, DeviceFilter, TimeRange, TokenRecord, TokenSelection, User, Variable};

use crate::settings::{CommonArgs, Settings};

/// What `--help` says of the exit codes; the README has the same table.
pub const EXIT_CODES: &str = "Exit codes of the operator's commands (token, user list|reset-second-factor, device, \
variable, readings, status): 0 done; 1 failed; 2 usage error (a flag or value refused, named); 3 not found (the \
id, email or label is named); 4 refused because a running server holds the SQLite data directory (its process is \
named; nothing was changed); 5 the store is unreachable (no database there, or PostgreSQL does not answer).";

/// Where the store is, which account, and how to print: what every operator's command takes.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The account to work in, when the store holds several
    #[arg(long, value_name = "ID")]
    pub account: Option<AccountId>,
    /// Print JSON (one object or array) instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Which live tokens a listing or a revocation takes; every flag given must match.
#[derive(Debug, Default, clap::Args)]
pub struct TokenSelectionArgs {
    /// Made by this user (email or id): their sessions and the tokens they minted
    #[arg(long, value_name = "EMAIL|ID")]
    pub user: Option<String>,
    /// Scoped to this collection, or to a device in it
    #[arg(long, value_name = "ID")]
    pub collection: Option<CollectionId>,
    /// Scoped to this device (id or label)
    #[arg(long, value_name = "ID|LABEL")]
    pub device: Option<String>,
    /// Of this kind: api_key, account, collection, device, ground, user_access, refresh, resource
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<TokenKind>,
}

impl TokenSelectionArgs {
    fn is_empty(&self) -> bool {
        self.user.is_none() && self.collection.is_none() && self.device.is_none() && self.kind.is_none()
    }

    async fn selection(&self, operator: &Operator) -> Result<TokenSelection, OperatorError> {
        let mut selection = TokenSelection { kind: self.kind, ..TokenSelection::default() };
        if let Some(user) = &self.user {
            selection.creator = Some(Creator::User(operator.user(user).await?.id));
        }
        if let Some(collection) = self.collection {
            selection.collection = Some(operator.collection(collection).await?.id);
        }
        if let Some(device) = &self.device {
            selection.device = Some(operator.device(device).await?.id);
        }
        Ok(selection)
    }
}

fn parse_kind(text: &str) -> Result<TokenKind, String> {
    TokenKind::from_name(text).ok_or_else(|| {
        let known: Vec<&str> = TokenKind::ALL.iter().map(|kind| kind.as_str()).collect();
        format!("'{text}' is no token kind; one of {}", known.join(", "))
    })
}

/// An instant as ISO 8601 / RFC 3339 (`2026-12-04T10:00:00Z`, an offset, or none for UTC).
pub fn parse_instant(text: &str) -> Result<i64, String> {
    parse_iso8601(text).map_err(|error| error.to_string())
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// List the live tokens (neither revoked nor expired), oldest first; never their secrets.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        select: TokenSelectionArgs,
    },
    /// Show one token, live or not.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// The token's id
        id: TokenId,
    },
    /// Revoke one token by id, or every live token the selection flags take. Refused (exit 4) on a SQLite data
    /// directory a running server holds: it would keep honouring a cached token for 10 minutes.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The token's id (or give selection flags instead)
        #[arg(required_unless_present_any = ["user", "collection", "device", "kind"], conflicts_with_all = ["user", "collection", "device", "kind"])]
        id: Option<TokenId>,
        #[command(flatten)]
        select: TokenSelectionArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// List the devices of the account, or of one collection.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "ID")]
        collection: Option<CollectionId>,
    },
    /// Show one device (id or label) with its variables and each one's last value.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(value_name = "ID|LABEL")]
        device: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum VariableCommand {
    /// A variable's last values, newest first.
    Values {
        #[command(flatten)]
        store: StoreArgs,
        /// The device (id or label)
        #[arg(long, value_name = "ID|LABEL")]
        device: String,
        /// The variable (label or id)
        #[arg(long, value_name = "LABEL|ID")]
        variable: String,
        /// How many values, 1 to 10000
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
}

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReadingsCommand {
    /// Write a device's readings (or one variable's) within a time range to standard output, newest first per
    /// variable, as CSV or JSON Lines; streamed a page at a time, so memory stays small however large the range.
    Export {
        #[command(flatten)]
        common: CommonArgs,
        /// The account to work in, when the store holds several
        #[arg(long, value_name = "ID")]
        account: Option<AccountId>,
        /// The device (id or label)
        #[arg(long, value_name = "ID|LABEL")]
        device: String,
        /// Only this variable (label or id) [default: every variable of the device, by label]
        #[arg(long, value_name = "LABEL|ID")]
        variable: Option<String>,
        /// The range's first instant, inclusive (ISO 8601, e.g. 2026-12-01T00:00:00Z) [default: the beginning]
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        from: Option<i64>,
        /// The range's last instant, inclusive [default: the end of time]
        #[arg(long, value_name = "TIME", value_parser = parse_instant)]
        to: Option<i64>,
        /// csv (a header line, then one line per reading) or jsonl (one JSON object per line)
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// The same as --format jsonl
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
}

/// What a finished command failed with: the store's answer, or a usage error found after parsing.
#[derive(Debug)]
pub enum Failure {
    Operator(OperatorError),
    Usage(String),
    Other(anyhow::Error),
}

impl Failure {
    /// Whether the command stopped only because the reader of its output went away, which is no failure: a
    /// script that takes the first lines of an export (`| head`) stops it on purpose, as `cat` is stopped.
    pub fn is_output_closed(&self) -> bool {
        matches!(self, Failure::Operator(OperatorError::Failed(message)) if message == OUTPUT_CLOSED)
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Operator(error) => error.exit_code(),
            Failure::Usage(_) => 2,
            Failure::Other(_) => 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Operator(error) => write!(f, "{error}"),
            Failure::Usage(message) => write!(f, "{message}"),
            Failure::Other(error) => write!(f, "{error:#}"),
        }
    }
}

impl From<OperatorError> for Failure {
    fn from(error: OperatorError) -> Failure {
        Failure::Operator(error)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Other(error)
    }
}

/// The message of an output whose reader went away (`tessera readings export | head`).
const OUTPUT_CLOSED: &str = "the output was closed by its reader";

fn output_error(error: std::io::Error) -> OperatorError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return OperatorError::Failed(OUTPUT_CLOSED.into());
    }
    OperatorError::Failed(format!("cannot write the output: {error}"))
}

async fn open(common: &CommonArgs, account: Option<AccountId>, access: Access) -> Result<Operator, Failure> {
    let config = Settings::load(common)?.into_config();
    Ok(operator::open(&config, account, access).await?)
}

/// Runs `work` on the opened store and closes it whatever the outcome.
async fn with_store<T>(
    store: &StoreArgs,
    access: Access,
    work: impl AsyncFnOnce(&Operator) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let operator = open(&store.common, store.account, access).await?;
    let result = work(&operator).await;
    operator.close().await;
    result
}

pub async fn token(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::List { store, select } => {
            let json = store.json;
            with_store(&store, Access::Shared, async |operator| {
                let selection = select.selection(operator).await?;
                let headers =
                    ["ID", "KIND", "SCOPE", "MADE BY", "CREATED", "EXPIRES", "LAST USED", "USES", "STATE", "NAME"];
                let mut listing = Listing::new(json, &headers);
                operator
                    .each_token(selection, |token| {
                        listing.push(
                            || token_json(token),
                            || {
                                vec![
                                    token.id.to_string(),
                                    token.kind.as_str().to_owned(),
                                    scope_text(token),
                                    creator_text(token.creator),
                                    readable(Some(token.created_at_ms)),
                                    readable(token.expires_at_ms),
                                    readable(token.last_used_at_ms),
                                    token.uses.to_string(),
                                    state(token).to_owned(),
                                    token.name.clone(),
                                ]
                            },
                        )
                    })
                    .await?;
                Ok(listing.finish()?)
            })
            .await
        }
        TokenCommand::Show { store, id } => {
            let json = store.json;
            with_store(&store, Access::Shared, async |operator| {
                let token = operator.token(id).await?;
                if json { print_json(&token_json(&token)) } else { print_fields(&fields_of(&token_json(&token))) }
            })
            .await
        }
        TokenCommand::Revoke { store, id, select } => {
            let json = store.json;
            if id.is_none() && select.is_empty() {
                return Err(Failure::Usage(
                    "name the token (its id) or a selection: --user, --collection, --device, --kind".into(),
                ));
            }
            with_store(&store, Access::Exclusive, async |operator| {
                let (revoked, ids) = match id {
                    Some(id) => {
                        let gone = operator.revoke_token(id).await?;
                        let asked = gone.iter().filter(|token| token.id == id).count() as u64;
                        (asked, gone.iter().map(|token| token.id.to_string()).collect::<Vec<_>>())
                    }
                    None => {
                        let selection = select.selection(operator).await?;
                        (operator.revoke_selection(selection).await?, Vec::new())
                    }
                };
                if json {
                    let mut answer = json!({"revoked": revoked});
                    if id.is_some() {
                        answer["tokens"] = json!(ids);
                    }
                    print_json(&answer)
                } else {
                    let line = match (id, revoked) {
                        (Some(id), 0) => {
                            format!("Token {id} was not live (revoked or expired already); nothing changed.")
                        }
                        (Some(id), _) => format!("Revoked token {id}."),
                        (None, count) => format!("Revoked {count} token{}.", if count == 1 { "" } else { "s" }),
                    };
                    print_line(&line)
                }
            })
            .await
        }
    }
}

pub async fn list_users(store: StoreArgs) -> Result<(), Failure> {
    let json = store.json;
    with_store(&store, Access::Shared, async |operator| {
        let users = operator.users().await?;
        if json {
            print_json(&Value::Array(users.iter().map(user_json).collect()))
        } else {
            let rows = users
                .iter()
                .map(|user| {
                    vec![
                        user.id.to_string(),
                        user.email.clone(),
                        user.display_name.clone(),
                        if user.is_admin { "yes" } else { "no" }.to_owned(),
                        second_factor(user).to_owned(),
                        readable(Some(user.created_at_ms)),
                    ]
                })
                .collect();
            print_table(&["ID", "EMAIL", "NAME", "ADMIN", "SECOND FACTOR", "CREATED"], rows)
        }
    })
    .await
}

pub async fn reset_second_factor(store: StoreArgs, user: String) -> Result<(), Failure> {
    let json = store.json;
    with_store(&store, Access::Shared, async |operator| {
        let found = operator.user(&user).await?;
        let reset = operator.reset_second_factor(&found).await?;
        if json {
            print_json(&json!({"user": found.id.to_string(), "email": found.email, "reset": reset}))
        } else if reset {
            print_line(&format!(
                "Removed the second factor of {} ({}); recorded in the audit trail. They sign in with their \
                 password alone until they enrol again.",
                found.email, found.id
            ))
        } else {
            print_line(&format!("{} ({}) has no second factor; nothing changed.", found.email, found.id))
        }
    })
    .await
}

pub async fn device(command: DeviceCommand) -> Result<(), Failure> {
    match command {
        DeviceCommand::List { store, collection } => {
            let json = store.json;
            with_store(&store, Access::Shared, async |operator| {
                let filter = match collection {
                    Some(collection) => DeviceFilter::collection(operator.collection(collection).await?.id),
                    None => DeviceFilter::default(),
                };
                let mut listing = Listing::new(json, &["ID", "LABEL", "COLLECTION", "LAST SEEN", "CREATED", "NAME"]);
                operator
                    .each_device(&filter, |device| {
                        listing.push(
                            || device_json(device),
                            || {
                                vec![
                                    device.id.to_string(),
                                    device.label.as_str().to_owned(),
                                    device.collection.to_string(),
                                    readable(device.last_seen_at_ms),
                                    readable(Some(device.created_at_ms)),
                                    device.name.clone(),
                                ]
                            },
                        )
                    })
                    .await?;
                Ok(listing.finish()?)
            })
            .await
        }
        DeviceCommand::Show { store, device } => {
            let json = store.json;
            with_store(&store, Access::Shared, async |operator| {
                let device = operator.device(&device).await?;
                let variables = operator.variables(&device).await?;
                let mut shown = device_json(&device);
                shown["variables"] = Value::Array(
                    variables
                        .iter()
                        .map(|(variable, last)| {
                            let mut object = variable_json(variable);
                            object["last"] = last.as_ref().map(reading_json).unwrap_or(Value::Null);
                            object
                        })
                        .collect(),
                );
                if json {
                    return print_json(&shown);
                }
                let mut fields = fields_of(&device_json(&device));
                fields.push(("variables".into(), variables.len().to_string()));
                print_fields(&fields)?;
                if variables.is_empty() {
                    return Ok(());
                }
                print_line("")?;
                let rows = variables
                    .iter()
                    .map(|(variable, last)| {
                        vec![
                            variable.id.to_string(),
                            variable.label.as_str().to_owned(),
                            variable.unit.clone(),
                            last.as_ref().map(value_text).unwrap_or_default(),
                            readable(last.as_ref().map(|reading| reading.timestamp_ms)),
                        ]
                    })
                    .collect();
                print_table(&["VARIABLE", "LABEL", "UNIT", "LAST VALUE", "AT"], rows)
            })
            .await
        }
    }
}

pub async fn variable(command: VariableCommand) -> Result<(), Failure> {
    let VariableCommand::Values { store, device, variable, limit } = command;
    let json = store.json;
    with_store(&store, Access::Shared, async |operator| {
        let device = operator.device(&device).await?;
        let variable = operator.variable(&device, &variable).await?;
        let mut readings = Vec::new();
        operator
            .each_reading(variable.id, TimeRange::ALL, |reading| {
                readings.push(reading.clone());
                Ok(readings.len() < limit as usize)
            })
            .await?;
        if json {
            print_json(&Value::Array(readings.iter().map(reading_json).collect()))
        } else {
            let rows = readings
                .iter()
                .map(|reading| vec![rfc3339(reading.timestamp_ms), value_text(reading), context_text(reading)])
                .collect();
            print_table(&["TIMESTAMP", "VALUE", "CONTEXT"], rows)
        }
    })
    .await
}

pub async fn readings(command: ReadingsCommand) -> Result<(), Failure> {
    let ReadingsCommand::Export { common, account, device, variable, from, to, format, json } = command;
    let format = if json { ExportFormat::Jsonl } else { format };
    let range = TimeRange { start_ms: from.unwrap_or(i64::MIN), end_ms: to.unwrap_or(i64::MAX) };
    if range.start_ms > range.end_ms {
        return Err(Failure::Usage(format!(
            "--from ({}) is after --to ({}): the range would be empty",
            rfc3339(range.start_ms),
            rfc3339(range.end_ms)
        )));
    }
    let operator = open(&common, account, Access::Shared).await?;
    let result = export(&operator, &device, variable.as_deref(), range, format).await;
    operator.close().await;
    result.map_err(Failure::from)
}

async fn export(
    operator: &Operator,
    device: &str,
    variable: Option<&str>,
    range: TimeRange,
    format: ExportFormat,
) -> Result<(), OperatorError> {
    let device = operator.device(device).await?;
    let variables: Vec<Variable> = match variable {
        Some(variable) => vec![operator.variable(&device, variable).await?],
        None => operator.variables(&device).await?.into_iter().map(|(variable, _)| variable).collect(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if format == ExportFormat::Csv {
        writeln!(out, "device,variable,timestamp,value,bytes_base64,context,received_at").map_err(output_error)?;
    }
    for variable in &variables {
        operator
            .each_reading(variable.id, range, |reading| {
                let line = match format {
                    ExportFormat::Jsonl => {
                        let mut object = reading_json(reading);
                        object["device"] = json!(device.label.as_str());
                        object["variable"] = json!(variable.label.as_str());
                        object.to_string()
                    }
                    ExportFormat::Csv => [
                        csv_field(device.label.as_str()),
                        csv_field(variable.label.as_str()),
                        rfc3339(reading.timestamp_ms),
                        csv_field(&csv_value(reading)),
                        bytes_base64(reading).unwrap_or_default(),
                        csv_field(&context_text(reading)),
                        rfc3339(reading.received_at_ms),
                    ]
                    .join(","),
                };
                writeln!(out, "{line}").map_err(output_error)?;
                Ok(true)
            })
            .await?;
    }
    out.flush().map_err(output_error)
}

pub async fn status(store: StoreArgs) -> Result<(), Failure> {
    let json = store.json;
    with_store(&store, Access::Shared, async |operator| {
        let figures = operator.figures().await?;
        let server = operator.server();
        let live: serde_json::Map<String, Value> =
            figures.live_tokens.iter().map(|(kind, count)| (kind.as_str().to_owned(), json!(count))).collect();
        let (running, pid) = match server {
            ServerPresence::Running { pid } => (json!(true), json!(pid)),
            ServerPresence::NotRunning => (json!(false), Value::Null),
            ServerPresence::Unknown => (Value::Null, Value::Null),
        };
        if json {
            return print_json(&json!({
                "account": operator.account.id.to_string(),
                "server_running": running,
                "server_pid": pid,
                "accounts": figures.accounts,
                "users": figures.users,
                "collections": figures.collections,
                "devices": figures.devices,
                "variables": figures.variables,
                "readings": figures.readings,
                "live_tokens": live,
                "database_bytes": figures.database_bytes,
            }));
        }
        let server_line = match server {
            ServerPresence::Running { pid: Some(pid) } => format!("running (process {pid})"),
            ServerPresence::Running { pid: None } => "running (process id unreadable)".to_owned(),
            ServerPresence::NotRunning => "not running".to_owned(),
            ServerPresence::Unknown => "cannot tell (PostgreSQL: nodes take no lock)".to_owned(),
        };
        let total: u64 = figures.live_tokens.iter().map(|(_, count)| count).sum();
        let kinds =
            figures.live_tokens.iter().map(|(kind, count)| format!("{} {count}", kind.as_str())).collect::<Vec<_>>();
        let mut fields = vec![
            ("server".to_owned(), server_line),
            ("account".to_owned(), operator.account.id.to_string()),
            ("accounts".to_owned(), figures.accounts.to_string()),
            ("users".to_owned(), figures.users.to_string()),
            ("collections".to_owned(), figures.collections.to_string()),
            ("devices".to_owned(), figures.devices.to_string()),
            ("variables".to_owned(), figures.variables.to_string()),
            ("readings".to_owned(), figures.readings.to_string()),
            ("live tokens".to_owned(), format!("{total} ({})", kinds.join(", "))),
        ];
        fields.push((
            "database size".to_owned(),
            format!("{} bytes ({})", figures.database_bytes, mib(figures.database_bytes)),
        ));
        print_fields(&fields)
    })
    .await
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn readable(ms: Option<i64>) -> String {
    ms.map(tessera_core::time::readable_utc).unwrap_or_else(|| "-".to_owned())
}

fn state(token: &TokenRecord) -> &'static str {
    if token.revoked_at_ms.is_some() {
        "revoked"
    } else if token.expires_at_ms.is_some_and(|at| at <= tessera_server::time::now_ms()) {
        "expired"
    } else if token.disabled_at_ms.is_some() {
        "disabled"
    } else {
        "live"
    }
}

fn scope_text(token: &TokenRecord) -> String {
    match tessera_server::tokens::scope_parts(token.scope) {
        (kind, Some(id)) => format!("{kind}:{id}"),
        (kind, None) => kind.to_owned(),
    }
}

fn creator_text(creator: Creator) -> String {
    match creator {
        Creator::System => "system".to_owned(),
        Creator::Token(token) => format!("token:{token}"),
        Creator::User(user) => format!("user:{user}"),
    }
}

fn second_factor(user: &User) -> &'static str {
    match &user.totp {
        Some(totp) if totp.enabled => "enabled",
        Some(_) => "enrolling",
        None => "none",
    }
}

fn token_json(token: &TokenRecord) -> Value {
    let (scope, scope_id) = tessera_server::tokens::scope_parts(token.scope);
    let time = |ms: Option<i64>| ms.map(rfc3339);
    json!({
        "id": token.id.to_string(),
        "kind": token.kind.as_str(),
        "name": token.name,
        "state": state(token),
        "scope": scope,
        "scope_id": scope_id,
        "rights": if token.rights.can_write() { "read_write" } else { "read" },
        "made_by": creator_text(token.creator),
        "resource": token.resource,
        "created_at": rfc3339(token.created_at_ms),
        "expires_at": time(token.expires_at_ms),
        "revoked_at": time(token.revoked_at_ms),
        "disabled_at": time(token.disabled_at_ms),
        "rotated_at": time(token.rotated_at_ms),
        "previous_secret_valid_until": time(token.previous_valid_until_ms),
        "last_used_at": time(token.last_used_at_ms),
        "last_used_from": token.last_used_from.map(|address| address.to_string()),
        "uses": token.uses,
        "throttled": token.throttled,
        "quota": match token.quota {
            QuotaSetting::KindDefault => json!("kind default"),
            QuotaSetting::Unlimited => json!("unlimited"),
            QuotaSetting::Limited(quota) => json!(format!("{}/{}", quota.requests, quota.window_seconds)),
        },
        "session": token.family.map(|family| family.to_string()),
        "tags": token.tags,
    })
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id.to_string(),
        "email": user.email,
        "name": user.display_name,
        "admin": user.is_admin,
        "second_factor": second_factor(user),
        "created_at": rfc3339(user.created_at_ms),
    })
}

fn device_json(device: &Device) -> Value {
    json!({
        "id": device.id.to_string(),
        "label": device.label.as_str(),
        "name": device.name,
        "collection": device.collection.to_string(),
        "imsi": device.imsi,
        "imei": device.imei,
        "tags": device.tags,
        "created_at": rfc3339(device.created_at_ms),
        "last_seen_at": device.last_seen_at_ms.map(rfc3339),
    })
}

fn variable_json(variable: &Variable) -> Value {
    json!({
        "id": variable.id.to_string(),
        "label": variable.label.as_str(),
        "name": variable.name,
        "unit": variable.unit,
        "created_at": rfc3339(variable.created_at_ms),
    })
}

/// A reading as JSON: the value as JSON (a number or the JSON stored), bytes as base64 beside a null value.
fn reading_json(reading: &Reading) -> Value {
    let mut object = json!({
        "timestamp": rfc3339(reading.timestamp_ms),
        "timestamp_ms": reading.timestamp_ms,
        "value": match &reading.value {
            tessera_core::Value::Bytes(_) => Value::Null,
            other => other.to_json(),
        },
        "context": reading.context,
        "received_at": rfc3339(reading.received_at_ms),
    });
    if let Some(bytes) = bytes_base64(reading) {
        object["bytes_base64"] = json!(bytes);
    }
    object
}

fn bytes_base64(reading: &Reading) -> Option<String> {
    match &reading.value {
        tessera_core::Value::Bytes(bytes) => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        _ => None,
    }
}

/// The value in a CSV cell: a number as JSON writes it, JSON as its text, bytes empty (their column has them).
fn csv_value(reading: &Reading) -> String {
    match &reading.value {
        tessera_core::Value::Bytes(_) => String::new(),
        other => other.to_json().to_string(),
    }
}

fn value_text(reading: &Reading) -> String {
    match bytes_base64(reading) {
        Some(bytes) => format!("bytes:{bytes}"),
        None => csv_value(reading),
    }
}

fn context_text(reading: &Reading) -> String {
    if reading.context.is_empty() { String::new() } else { Value::Object(reading.context.clone()).to_string() }
}

/// RFC 4180: a field with a comma, a quote or a line break is quoted, its quotes doubled.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

/// A JSON object's fields as name and text, for a two-column listing.
fn fields_of(object: &Value) -> Vec<(String, String)> {
    object
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(key, value)| {
                    let text = match value {
                        Value::Null => "-".to_owned(),
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    (key.replace('_', " "), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn print_json(value: &Value) -> Result<(), Failure> {
    print_line(&value.to_string())
}

fn print_line(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|error| Failure::Operator(output_error(error)))
}

fn print_fields(fields: &[(String, String)]) -> Result<(), Failure> {
    let width = fields.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, value) in fields {
        text.push_str(&format!("{name:<width$}  {}\n", printable(value)));
    }
    print_line(text.trim_end_matches('\n'))
}

/// Rows a streamed table holds before its column widths are settled: listings of any length (a million tokens)
/// are printed as they are read, in bounded memory.
const TABLE_SETTLES_AFTER: usize = 1_000;

/// A listing printed as the store is paged through: a JSON array written element by element, or a table whose
/// column widths are those of its first [`TABLE_SETTLES_AFTER`] rows (a longer cell after them pushes the rest of
/// its own line only, which is why the unbounded column, the name, comes last).
struct Listing {
    json: bool,
    headers: Vec<String>,
    held: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
    written: usize,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Listing {
    fn new(json: bool, headers: &[&str]) -> Listing {
        Listing {
            json,
            headers: headers.iter().map(|header| (*header).to_owned()).collect(),
            held: Vec::new(),
            widths: None,
            written: 0,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    /// Adds an item: `json` or `row` is made, whichever is printed.
    fn push(&mut self, json: impl FnOnce() -> Value, row: impl FnOnce() -> Vec<String>) -> Result<(), OperatorError> {
        if self.json {
            let separator = if self.written == 0 { "[" } else { "," };
            write!(self.out, "{separator}{}", json()).map_err(output_error)?;
            self.written += 1;
            return Ok(());
        }
        match &self.widths {
            Some(widths) => {
                let line = table_line(widths, &row());
                writeln!(self.out, "{line}").map_err(output_error)
            }
            None => {
                self.held.push(row());
                if self.held.len() == TABLE_SETTLES_AFTER { self.settle() } else { Ok(()) }
            }
        }
    }

    fn settle(&mut self) -> Result<(), OperatorError> {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.chars().count()).collect();
        for row in &self.held {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&self.headers).chain(&self.held) {
            writeln!(self.out, "{}", table_line(&widths, row)).map_err(output_error)?;
        }
        self.held = Vec::new();
        self.widths = Some(widths);
        Ok(())
    }

    fn finish(mut self) -> Result<(), OperatorError> {
        if self.json {
            let end = if self.written == 0 { "[]" } else { "]" };
            writeln!(self.out, "{end}").map_err(output_error)?;
        } else if self.widths.is_none() {
            self.settle()?;
        }
        self.out.flush().map_err(output_error)
    }
}

/// One line of a table: each cell padded to its column's width and two spaces, the last one unpadded.
/// `text` with its control characters escaped (`\n`, `\u{1b}`): names are anyone's to choose, and a name holding
/// a newline or a terminal's escape sequence could forge a row, hide one, or command the operator's terminal.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

fn table_line(widths: &[usize], row: &[String]) -> String {
    let mut line = String::new();
    for (index, cell) in row.iter().enumerate() {
        let cell = printable(cell);
        line.push_str(&cell);
        if index + 1 < row.len() {
            let width = widths.get(index).copied().unwrap_or(0);
            line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 2));
        }
    }
    line.trim_end().to_owned()
}

/// Columns padded to their widest cell (counted in characters), two spaces apart; the last one unpadded. An empty
/// listing prints the header alone, so a script reading the table still finds it.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) -> Result<(), Failure> {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let header: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        writeln!(out, "{}", table_line(&widths, row)).map_err(|error| Failure::Operator(output_error(error)))?;
    }
    out.flush().map_err(|error| Failure::Operator(output_error(error)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_in_a_cell_are_escaped_not_printed() {
        let line = super::table_line(&[4, 4], &["a\u{1b}[2Jb".into(), "x\ny".into()]);
        assert_eq!(line, "a\\u{1b}[2Jb  x\\ny");
        assert_eq!(super::printable("plain é"), "plain é");
    }
}
