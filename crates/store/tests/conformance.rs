//! The store conformance suite: every `Store` implementation must pass each case. Cases take a fresh, empty
//! store; `store_cases!` runs them against SQLite (in memory and on disk).

use std::collections::BTreeMap;

use serde_json::json;
use tessera_core::{
    AccountId, CollectionId, DeviceId, Id, Label, Reading, Rights, Scope, SecretDigest, TokenId, TokenKind, UserId,
    Value, VariableId,
};
use tessera_store::{
    Account, Bootstrap, Collection, Creator, Device, DeviceFilter, Page, Store, StoreError, TimeRange, TokenRecord,
    TokenUsage, User, Variable,
};

const NOW: i64 = 1_800_000_000_000;

fn id(n: u32) -> Id {
    Id::generate(NOW, n)
}

fn label(text: &str) -> Label {
    Label::parse(text).unwrap()
}

fn token(n: u32, account: AccountId, kind: TokenKind, scope: Scope) -> TokenRecord {
    TokenRecord {
        id: TokenId(id(1000 + n)),
        account,
        kind,
        digest: SecretDigest([n as u8; 32]),
        scope,
        rights: Rights::ReadWrite,
        creator: Creator::System,
        name: format!("token {n}"),
        tags: BTreeMap::from([("name".to_owned(), format!("t{n}"))]),
        created_at_ms: NOW,
        expires_at_ms: None,
        revoked_at_ms: None,
        last_used_at_ms: None,
        uses: 0,
    }
}

struct World {
    account: AccountId,
    default_collection: CollectionId,
    api_key: TokenRecord,
}

async fn bootstrap(store: &dyn Store, n: u32) -> World {
    let account = AccountId(id(n));
    let default_collection = CollectionId(id(n + 1));
    let api_key = token(n, account, TokenKind::ApiKey, Scope::Account);
    let created = store
        .bootstrap(&Bootstrap {
            account: Account { id: account, name: "acme".into(), created_at_ms: NOW },
            default_collection: Collection {
                id: default_collection,
                account,
                name: "Default".into(),
                is_default: true,
                created_at_ms: NOW,
            },
            api_key: api_key.clone(),
            admin: User {
                id: UserId(id(n + 2)),
                account,
                email: "admin@example.com".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                display_name: "Admin".into(),
                is_admin: true,
                created_at_ms: NOW,
            },
        })
        .await
        .unwrap();
    assert!(created);
    World { account, default_collection, api_key }
}

async fn device(store: &dyn Store, world: &World, n: u32, collection: CollectionId, text: &str) -> Device {
    store
        .insert_device_if_absent(&Device {
            id: DeviceId(id(n)),
            account: world.account,
            collection,
            label: label(text),
            name: text.into(),
            created_at_ms: NOW,
        })
        .await
        .unwrap()
}

async fn variable(store: &dyn Store, device: &Device, n: u32, text: &str) -> Variable {
    store
        .insert_variable_if_absent(&Variable {
            id: VariableId(id(n)),
            account: device.account,
            device: device.id,
            collection: device.collection,
            label: label(text),
            name: text.into(),
            unit: "°C".into(),
            created_at_ms: NOW,
        })
        .await
        .unwrap()
}

fn reading(variable: VariableId, timestamp_ms: i64, value: Value) -> Reading {
    Reading { variable, timestamp_ms, value, context: serde_json::Map::new(), received_at_ms: NOW }
}

async fn bootstrap_happens_once(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    assert_eq!(store.account(world.account).await.unwrap().name, "acme");
    assert_eq!(store.default_collection(world.account).await.unwrap().id, world.default_collection);
    let mut second = token(99, AccountId(id(500)), TokenKind::ApiKey, Scope::Account);
    second.digest = SecretDigest([200; 32]);
    let again = Bootstrap {
        account: Account { id: AccountId(id(500)), name: "other".into(), created_at_ms: NOW },
        default_collection: Collection {
            id: CollectionId(id(501)),
            account: AccountId(id(500)),
            name: "Default".into(),
            is_default: true,
            created_at_ms: NOW,
        },
        api_key: second,
        admin: User {
            id: UserId(id(502)),
            account: AccountId(id(500)),
            email: "x@example.com".into(),
            password_hash: "h".into(),
            display_name: String::new(),
            is_admin: true,
            created_at_ms: NOW,
        },
    };
    assert!(!store.bootstrap(&again).await.unwrap());
    assert!(matches!(store.account(AccountId(id(500))).await, Err(StoreError::NotFound)));
}

async fn tokens_are_found_by_digest_listed_and_revoked(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let found = store.token_by_digest(&world.api_key.digest).await.unwrap();
    assert_eq!(found, world.api_key);

    let collection = CollectionId(id(50));
    let org_token = token(1, world.account, TokenKind::Collection, Scope::Collection(collection));
    let other_org_token = token(2, world.account, TokenKind::Collection, Scope::Collection(CollectionId(id(51))));
    store.insert_token(&org_token).await.unwrap();
    store.insert_token(&other_org_token).await.unwrap();

    let duplicate = TokenRecord { id: TokenId(id(4000)), ..org_token.clone() };
    assert!(matches!(store.insert_token(&duplicate).await, Err(StoreError::Conflict(_))));

    let listed = store.list_tokens(world.account, Some(Scope::Collection(collection)), NOW, Page::ALL).await.unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.items, vec![org_token.clone()]);
    let account_wide = store.list_tokens(world.account, Some(Scope::Account), NOW, Page::ALL).await.unwrap();
    assert_eq!(account_wide.items, vec![world.api_key.clone()]);
    let everything = store.list_tokens(world.account, None, NOW, Page { number: 2, size: 2 }).await.unwrap();
    assert_eq!(everything.total, 3);
    assert_eq!(everything.items.len(), 1);

    let revoked = store.revoke_token(world.account, org_token.id, NOW + 5).await.unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(NOW + 5));
    assert!(matches!(store.revoke_token(world.account, org_token.id, NOW + 6).await, Err(StoreError::NotFound)));
    assert_eq!(store.token_by_digest(&org_token.digest).await.unwrap().revoked_at_ms, Some(NOW + 5));
    let listed = store.list_tokens(world.account, Some(Scope::Collection(collection)), NOW, Page::ALL).await.unwrap();
    assert_eq!(listed.total, 0);

    // Another account cannot revoke or read the token.
    assert!(matches!(store.token(AccountId(id(77)), other_org_token.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.revoke_token(AccountId(id(77)), other_org_token.id, NOW).await, Err(StoreError::NotFound)));
}

async fn token_usage_accumulates(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let usage = |uses, at| TokenUsage { token: world.api_key.id, last_used_at_ms: at, uses };
    store.record_token_usage(&[usage(3, NOW + 10)]).await.unwrap();
    store.record_token_usage(&[usage(2, NOW + 5)]).await.unwrap();
    let record = store.token(world.account, world.api_key.id).await.unwrap();
    assert_eq!(record.uses, 5);
    assert_eq!(record.last_used_at_ms, Some(NOW + 10));
}

async fn device_labels_are_claimed_by_the_first_collection(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let organization = CollectionId(id(60));
    store
        .insert_collection(&Collection {
            id: organization,
            account: world.account,
            name: "Org".into(),
            is_default: false,
            created_at_ms: NOW,
        })
        .await
        .unwrap();
    let first = device(store, &world, 100, organization, "new-device").await;
    assert_eq!(first.collection, organization);
    let second = device(store, &world, 101, world.default_collection, "new-device").await;
    assert_eq!(second, first, "the first collection keeps the label");
    assert_eq!(store.device_by_label(world.account, &label("new-device")).await.unwrap(), first);
    assert!(matches!(store.device_by_label(world.account, &label("nope")).await, Err(StoreError::NotFound)));
    assert!(matches!(store.device(AccountId(id(999)), first.id).await, Err(StoreError::NotFound)));

    let listed = store
        .list_devices(world.account, DeviceFilter { collection: Some(organization), device: None }, Page::ALL)
        .await
        .unwrap();
    assert_eq!(listed.items, vec![first.clone()]);
    let in_default = store
        .list_devices(
            world.account,
            DeviceFilter { collection: Some(world.default_collection), device: None },
            Page::ALL,
        )
        .await
        .unwrap();
    assert_eq!(in_default.total, 0);

    assert!(matches!(store.delete_collection(world.account, organization, NOW).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        store.delete_collection(world.account, world.default_collection, NOW).await,
        Err(StoreError::Conflict(_))
    ));
    let org_token = token(7, world.account, TokenKind::Collection, Scope::Collection(organization));
    store.insert_token(&org_token).await.unwrap();
    store.delete_device(world.account, first.id).await.unwrap();
    let revoked = store.delete_collection(world.account, organization, NOW + 1).await.unwrap();
    assert_eq!(revoked.len(), 1, "the collection's tokens are revoked with it");
    assert_eq!(revoked[0].id, org_token.id);
    assert_eq!(store.token(world.account, org_token.id).await.unwrap().revoked_at_ms, Some(NOW + 1));
    assert!(matches!(store.collection(world.account, organization).await, Err(StoreError::NotFound)));
}

async fn readings_round_trip_newest_first(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let device = device(store, &world, 100, world.default_collection, "dev").await;
    let temperature = variable(store, &device, 200, "temperature").await;
    assert_eq!(variable(store, &device, 201, "temperature").await, temperature);
    assert_eq!(temperature.collection, world.default_collection);

    let mut with_context = reading(temperature.id, 3000, Value::Number(23.5));
    with_context.context = json!({"lat": 6.1}).as_object().unwrap().clone();
    let readings = vec![
        reading(temperature.id, 1000, Value::Number(21.0)),
        reading(temperature.id, 2000, Value::Json(json!({"on": true}))),
        with_context.clone(),
        reading(temperature.id, 4000, Value::Bytes(vec![0, 159, 146, 150])),
    ];
    store.insert_readings(&readings).await.unwrap();

    let page = store.readings(temperature.id, TimeRange::ALL, Page { number: 1, size: 2 }).await.unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(page.items, vec![readings[3].clone(), with_context]);
    let ranged = store.readings(temperature.id, TimeRange { start_ms: 1000, end_ms: 2000 }, Page::ALL).await.unwrap();
    assert_eq!(ranged.items, vec![readings[1].clone(), readings[0].clone()]);

    // Same variable and millisecond: the later write replaces the earlier one, within a batch and across batches.
    store
        .insert_readings(&[
            reading(temperature.id, 1000, Value::Number(1.0)),
            reading(temperature.id, 1000, Value::Number(2.0)),
        ])
        .await
        .unwrap();
    let at_1000 = store.readings(temperature.id, TimeRange { start_ms: 1000, end_ms: 1000 }, Page::ALL).await.unwrap();
    assert_eq!(at_1000.items, vec![reading(temperature.id, 1000, Value::Number(2.0))]);

    assert_eq!(store.last_reading(temperature.id).await.unwrap(), Some(readings[3].clone()));
    assert_eq!(store.delete_readings(temperature.id, TimeRange { start_ms: 1500, end_ms: 4000 }).await.unwrap(), 3);
    assert_eq!(store.readings(temperature.id, TimeRange::ALL, Page::ALL).await.unwrap().total, 1);

    store.delete_variable(world.account, temperature.id).await.unwrap();
    assert_eq!(store.last_reading(temperature.id).await.unwrap(), None);
    assert!(matches!(store.variable(world.account, temperature.id).await, Err(StoreError::NotFound)));
}

async fn deleting_a_device_removes_its_variables_and_readings(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let device = device(store, &world, 100, world.default_collection, "dev").await;
    let humidity = variable(store, &device, 200, "humidity").await;
    store.insert_readings(&[reading(humidity.id, 1, Value::Number(1.0))]).await.unwrap();
    let listed = store
        .list_variables(world.account, DeviceFilter { collection: None, device: Some(device.id) }, Page::ALL)
        .await
        .unwrap();
    assert_eq!(listed.items, vec![humidity.clone()]);
    store.delete_device(world.account, device.id).await.unwrap();
    assert!(matches!(store.variable(world.account, humidity.id).await, Err(StoreError::NotFound)));
    assert_eq!(store.last_reading(humidity.id).await.unwrap(), None);
    assert!(matches!(store.delete_device(world.account, device.id).await, Err(StoreError::NotFound)));
}

async fn expired_tokens_are_not_listed(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let mut expiring = token(1, world.account, TokenKind::Account, Scope::Account);
    expiring.expires_at_ms = Some(NOW + 100);
    store.insert_token(&expiring).await.unwrap();
    let before = store.list_tokens(world.account, Some(Scope::Account), NOW + 99, Page::ALL).await.unwrap();
    assert_eq!(before.total, 2);
    let after = store.list_tokens(world.account, Some(Scope::Account), NOW + 100, Page::ALL).await.unwrap();
    assert_eq!(after.items, vec![world.api_key.clone()]);
}

async fn rows_of_missing_parents_are_refused_or_dropped(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let orphan_device = Device {
        id: DeviceId(id(300)),
        account: world.account,
        collection: CollectionId(id(999)),
        label: label("orphan"),
        name: "orphan".into(),
        created_at_ms: NOW,
    };
    assert!(matches!(store.insert_device_if_absent(&orphan_device).await, Err(StoreError::NotFound)));
    let device = device(store, &world, 100, world.default_collection, "dev").await;
    let orphan_variable = Variable {
        id: VariableId(id(301)),
        account: world.account,
        device: DeviceId(id(998)),
        collection: device.collection,
        label: label("v"),
        name: "v".into(),
        unit: String::new(),
        created_at_ms: NOW,
    };
    assert!(matches!(store.insert_variable_if_absent(&orphan_variable).await, Err(StoreError::NotFound)));

    // Readings of a variable deleted while they waited are dropped; the rest of the batch is kept.
    let kept = variable(store, &device, 200, "kept").await;
    let deleted = variable(store, &device, 201, "deleted").await;
    store.delete_variable(world.account, deleted.id).await.unwrap();
    store
        .insert_readings(&[reading(kept.id, 1, Value::Number(1.0)), reading(deleted.id, 1, Value::Number(2.0))])
        .await
        .unwrap();
    assert_eq!(store.readings(kept.id, TimeRange::ALL, Page::ALL).await.unwrap().total, 1);
    assert_eq!(store.readings(deleted.id, TimeRange::ALL, Page::ALL).await.unwrap().total, 0);
}

macro_rules! store_cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite_in_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = tessera_store::SqliteStore::open_in_memory().await.unwrap();
                    super::$case(&store).await;
                }
            )*
        }
        mod sqlite_on_disk {
            $(
                #[tokio::test]
                async fn $case() {
                    let directory = tempfile::tempdir().unwrap();
                    let store = tessera_store::SqliteStore::open(&directory.path().join("tessera.db")).await.unwrap();
                    super::$case(&store).await;
                    tessera_store::Store::close(&store).await;
                }
            )*
        }
    };
}

store_cases!(
    bootstrap_happens_once,
    tokens_are_found_by_digest_listed_and_revoked,
    token_usage_accumulates,
    device_labels_are_claimed_by_the_first_collection,
    readings_round_trip_newest_first,
    deleting_a_device_removes_its_variables_and_readings,
    expired_tokens_are_not_listed,
    rows_of_missing_parents_are_refused_or_dropped,
);
