//! The store conformance suite: every `Store` implementation must pass each case. Cases take a fresh, empty
//! store; `store_cases!` runs them against SQLite (in memory and on disk), and against PostgreSQL when
//! `TESSERA_TEST_POSTGRES_URL` is set, each case in a schema of its own.

use std::collections::BTreeMap;

use serde_json::json;
use tessera_core::{
    AccountId, CollectionId, DeviceId, Id, Label, Reach, Reading, Rights, Role, Scope, SecretDigest, TeamId, TokenId,
    TokenKind, UserId, Value, VariableId,
};
use tessera_store::{
    Account, Actor, AuditEntry, AuditQuery, Bootstrap, Collection, Creator, Device, DeviceFilter, DeviceOrder,
    DeviceQuery, Downlink, Invite, LoginChallenge, Outcome, Page, ReadingBucket, Store, StoreError, Team, TimeRange,
    TokenFilter, TokenPolicy, TokenRecord, TokenSelection, TokenUsage, User, UserTotp, Variable,
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
        name: format!("token {n}"),
        tags: BTreeMap::from([("name".to_owned(), format!("t{n}"))]),
        ..TokenRecord::new(
            TokenId(id(1000 + n)),
            account,
            kind,
            SecretDigest([n as u8; 32]),
            scope,
            Creator::System,
            NOW,
        )
    }
}

fn scoped(scope: Scope) -> TokenFilter {
    TokenFilter { scope: Some(scope), ..TokenFilter::default() }
}

fn private_team(account: AccountId, n: u32, user: UserId) -> Team {
    Team { id: TeamId(id(n)), account, tags: Default::default(), private_of: Some(user), created_at_ms: NOW }
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
                team: None,
                created_at_ms: NOW,
                tags: Default::default(),
            },
            api_key: api_key.clone(),
            admin: User {
                id: UserId(id(n + 2)),
                account,
                email: "admin@example.com".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                display_name: "Admin".into(),
                phone: String::new(),
                is_admin: true,
                totp: None,
                created_at_ms: NOW,
            },
            admin_team: private_team(account, n + 3, UserId(id(n + 2))),
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
            imsi: None,
            imei: None,
            tags: Default::default(),
            last_seen_at_ms: None,
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
            title: String::new(),
            description: String::new(),
            kind: "sensor".into(),
            profile: None,
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
            team: None,
            created_at_ms: NOW,
            tags: Default::default(),
        },
        api_key: second,
        admin: User {
            id: UserId(id(502)),
            account: AccountId(id(500)),
            email: "x@example.com".into(),
            password_hash: "h".into(),
            display_name: String::new(),
            phone: String::new(),
            is_admin: true,
            totp: None,
            created_at_ms: NOW,
        },
        admin_team: private_team(AccountId(id(500)), 503, UserId(id(502))),
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
    store.insert_token(&org_token, &[]).await.unwrap();
    store.insert_token(&other_org_token, &[]).await.unwrap();

    let duplicate = TokenRecord { id: TokenId(id(4000)), ..org_token.clone() };
    assert!(matches!(store.insert_token(&duplicate, &[]).await, Err(StoreError::Conflict(_))));

    let listed = store.list_tokens(world.account, scoped(Scope::Collection(collection)), NOW, Page::ALL).await.unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.items, vec![org_token.clone()]);
    let account_wide = store.list_tokens(world.account, scoped(Scope::Account), NOW, Page::ALL).await.unwrap();
    assert_eq!(account_wide.items, vec![world.api_key.clone()]);
    let everything =
        store.list_tokens(world.account, TokenFilter::default(), NOW, Page { number: 2, size: 2 }).await.unwrap();
    assert_eq!(everything.total, 3);
    assert_eq!(everything.items.len(), 1);

    let revoked = store.revoke_token(world.account, org_token.id, NOW + 5, &[]).await.unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(NOW + 5));
    assert!(matches!(store.revoke_token(world.account, org_token.id, NOW + 6, &[]).await, Err(StoreError::NotFound)));
    assert_eq!(store.token_by_digest(&org_token.digest).await.unwrap().revoked_at_ms, Some(NOW + 5));
    let listed = store.list_tokens(world.account, scoped(Scope::Collection(collection)), NOW, Page::ALL).await.unwrap();
    assert_eq!(listed.total, 0);

    // Another account cannot revoke or read the token.
    assert!(matches!(store.token(AccountId(id(77)), other_org_token.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.revoke_token(AccountId(id(77)), other_org_token.id, NOW, &[]).await,
        Err(StoreError::NotFound)
    ));
}

async fn fleets_are_provisioned_in_one_transaction(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let taken = device(store, &world, 100, world.default_collection, "fleet-1").await;
    let fleet: Vec<Device> = (0..3)
        .map(|n| Device {
            id: DeviceId(id(200 + n)),
            account: world.account,
            collection: world.default_collection,
            label: label(&format!("fleet-{n}")),
            name: format!("fleet {n}"),
            created_at_ms: NOW,
            imsi: None,
            imei: None,
            tags: Default::default(),
            last_seen_at_ms: None,
        })
        .collect();
    assert_eq!(store.insert_devices(&fleet).await.unwrap(), 2, "a taken label is skipped");
    assert_eq!(store.device_by_label(world.account, &label("fleet-1")).await.unwrap(), taken);
    assert_eq!(store.device_by_label(world.account, &label("fleet-2")).await.unwrap(), fleet[2]);

    let scope = Scope::Collection(world.default_collection);
    let tokens: Vec<TokenRecord> =
        (0..3).map(|n| token(300 + n, world.account, TokenKind::Collection, scope)).collect();
    store.insert_tokens(&tokens, &[]).await.unwrap();
    assert_eq!(store.list_tokens(world.account, scoped(scope), NOW, Page::ALL).await.unwrap().total, 3);
    // One duplicate digest refuses the whole batch.
    let mut batch: Vec<TokenRecord> =
        (0..3).map(|n| token(310 + n, world.account, TokenKind::Collection, scope)).collect();
    batch[2].digest = tokens[0].digest;
    assert!(matches!(store.insert_tokens(&batch, &[]).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.list_tokens(world.account, scoped(scope), NOW, Page::ALL).await.unwrap().total, 3);
}

async fn token_usage_accumulates(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let usage = |uses, at| TokenUsage {
        token: world.api_key.id,
        last_used_at_ms: at,
        last_used_from: None,
        uses,
        throttled: 0,
    };
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
            team: None,
            created_at_ms: NOW,
            tags: Default::default(),
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

    let listed = store.list_devices(world.account, &DeviceFilter::collection(organization), Page::ALL).await.unwrap();
    assert_eq!(listed.items, vec![first.clone()]);
    let in_default = store
        .list_devices(world.account, &DeviceFilter::collection(world.default_collection), Page::ALL)
        .await
        .unwrap();
    assert_eq!(in_default.total, 0);

    assert!(matches!(
        store.delete_collection(world.account, organization, NOW, &|_| Vec::new()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_collection(world.account, world.default_collection, NOW, &|_| Vec::new()).await,
        Err(StoreError::Conflict(_))
    ));
    let org_token = token(7, world.account, TokenKind::Collection, Scope::Collection(organization));
    store.insert_token(&org_token, &[]).await.unwrap();
    store.delete_device(world.account, first.id).await.unwrap();
    let revoked = store.delete_collection(world.account, organization, NOW + 1, &|_| Vec::new()).await.unwrap();
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
    let listed = store.list_variables(world.account, &DeviceFilter::device(device.id), Page::ALL).await.unwrap();
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
    store.insert_token(&expiring, &[]).await.unwrap();
    let before = store.list_tokens(world.account, scoped(Scope::Account), NOW + 99, Page::ALL).await.unwrap();
    assert_eq!(before.total, 2);
    let after = store.list_tokens(world.account, scoped(Scope::Account), NOW + 100, Page::ALL).await.unwrap();
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
        imsi: None,
        imei: None,
        tags: Default::default(),
        last_seen_at_ms: None,
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
        title: String::new(),
        description: String::new(),
        kind: "sensor".into(),
        profile: None,
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

fn user(n: u32, account: AccountId, email: &str) -> User {
    User {
        id: UserId(id(n)),
        account,
        email: email.into(),
        password_hash: "hash".into(),
        display_name: email.into(),
        phone: String::new(),
        is_admin: false,
        totp: None,
        created_at_ms: NOW,
    }
}

async fn users_are_unique_by_email_in_their_account(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let ada = user(100, world.account, "ada@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    let twin = user(102, world.account, "ada@example.com");
    assert!(matches!(
        store.insert_user(&twin, &private_team(world.account, 103, twin.id)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.users_by_email("ada@example.com").await.unwrap(), vec![ada.clone()]);
    assert_eq!(store.user(world.account, ada.id).await.unwrap(), ada);
    assert_eq!(store.list_users(world.account).await.unwrap().len(), 2, "the bootstrap admin and ada");
    let teams = store.teams_of(ada.id).await.unwrap();
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].0.private_of, Some(ada.id));
    assert_eq!(teams[0].1, Role::Admin);
}

async fn totp_steps_are_accepted_once_and_recovery_codes_once(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let ada = user(100, world.account, "ada@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    let totp = UserTotp { secret: vec![1, 2, 3], enabled: true, last_step: Some(10) };
    let codes = [SecretDigest([1; 32]), SecretDigest([2; 32])];
    store.set_totp(ada.id, None, Some(&totp), &codes, &[]).await.unwrap();
    let stale = UserTotp { secret: vec![9], enabled: false, last_step: None };
    assert!(
        matches!(store.set_totp(ada.id, None, Some(&stale), &[], &[]).await, Err(StoreError::Conflict(_))),
        "a change based on what was there before the last one is refused"
    );
    assert_eq!(store.user(world.account, ada.id).await.unwrap().totp, Some(totp.clone()));
    assert!(!store.accept_totp_step(ada.id, 10).await.unwrap());
    assert!(store.accept_totp_step(ada.id, 11).await.unwrap());
    assert!(!store.accept_totp_step(ada.id, 11).await.unwrap());
    assert!(store.use_recovery_code(ada.id, &codes[0], NOW).await.unwrap());
    assert!(!store.use_recovery_code(ada.id, &codes[0], NOW).await.unwrap());
    assert!(!store.use_recovery_code(ada.id, &SecretDigest([9; 32]), NOW).await.unwrap());
    store.set_totp(ada.id, Some(&totp), None, &[], &[]).await.unwrap();
    assert_eq!(store.user(world.account, ada.id).await.unwrap().totp, None);
    assert!(!store.use_recovery_code(ada.id, &codes[1], NOW).await.unwrap(), "codes go with the factor");
}

async fn team_membership_decides_reach(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let ada = user(100, world.account, "ada@example.com");
    let bob = user(102, world.account, "bob@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    store.insert_user(&bob, &private_team(world.account, 103, bob.id)).await.unwrap();
    let team = Team {
        id: TeamId(id(110)),
        account: world.account,
        tags: Default::default(),
        private_of: None,
        created_at_ms: NOW,
    };
    store.insert_team(&team, ada.id).await.unwrap();
    let owned = Collection {
        id: CollectionId(id(120)),
        account: world.account,
        name: "Plant".into(),
        is_default: false,
        team: Some(team.id),
        created_at_ms: NOW,
        tags: Default::default(),
    };
    store.insert_collection(&owned).await.unwrap();
    assert_eq!(store.collection(world.account, owned.id).await.unwrap().team, Some(team.id));

    let invite = Invite {
        digest: SecretDigest([7; 32]),
        team: team.id,
        created_by: ada.id,
        created_at_ms: NOW,
        expires_at_ms: NOW + 1000,
        accepted_by: None,
        accepted_at_ms: None,
        id: id(440),
    };
    store.insert_invite(&invite).await.unwrap();
    assert_eq!(store.invites(team.id).await.unwrap(), vec![invite.clone()]);
    assert!(
        matches!(store.accept_invite(&invite.digest, bob.id, NOW + 1000).await, Err(StoreError::NotFound)),
        "expired"
    );
    assert_eq!(store.accept_invite(&invite.digest, bob.id, NOW + 1).await.unwrap(), team.id);
    assert!(matches!(store.accept_invite(&invite.digest, bob.id, NOW + 2).await, Err(StoreError::NotFound)), "used");

    let bob_reach = store.user_reach(bob.id).await.unwrap().to_reach();
    let Reach::Limited { collections, .. } = &bob_reach else { panic!("{bob_reach:?}") };
    assert_eq!(collections.get(&owned.id), Some(&Rights::Read));
    assert!(
        matches!(store.set_member_role(team.id, ada.id, Role::Member).await, Err(StoreError::Conflict(_))),
        "the only admin cannot be demoted"
    );
    assert!(matches!(store.remove_member(team.id, ada.id).await, Err(StoreError::Conflict(_))), "nor removed");
    assert!(matches!(store.set_member_role(team.id, UserId(id(999)), Role::Admin).await, Err(StoreError::NotFound)));
    store.set_member_role(team.id, bob.id, Role::Admin).await.unwrap();
    let Reach::Limited { collections, .. } = store.user_reach(bob.id).await.unwrap().to_reach() else { panic!() };
    assert_eq!(collections.get(&owned.id), Some(&Rights::ReadWrite));
    let members = store.members(team.id).await.unwrap();
    assert_eq!(
        members.iter().map(|(_, user)| user.email.as_str()).collect::<Vec<_>>(),
        ["ada@example.com", "bob@example.com"]
    );
    store.remove_member(team.id, bob.id).await.unwrap();
    let Reach::Limited { collections, .. } = store.user_reach(bob.id).await.unwrap().to_reach() else { panic!() };
    assert!(collections.is_empty());
    assert!(matches!(store.remove_member(team.id, bob.id).await, Err(StoreError::NotFound)));

    assert!(
        matches!(store.delete_team(world.account, team.id).await, Err(StoreError::Conflict(_))),
        "owns a collection"
    );
    let ada_private = store.teams_of(ada.id).await.unwrap()[0].0.id;
    assert!(matches!(store.delete_team(world.account, ada_private).await, Err(StoreError::Conflict(_))));
    store.delete_collection(world.account, owned.id, NOW, &|_| Vec::new()).await.unwrap();
    store.delete_team(world.account, team.id).await.unwrap();
    assert!(matches!(store.team(world.account, team.id).await, Err(StoreError::NotFound)));
}

async fn token_families_and_creators_are_revoked_together(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let family = id(900);
    let ada = UserId(id(100));
    let mut access = token(1, world.account, TokenKind::UserAccess, Scope::Account);
    access.family = Some(family);
    access.creator = Creator::User(ada);
    let mut refresh = token(2, world.account, TokenKind::Refresh, Scope::Account);
    refresh.family = Some(family);
    refresh.creator = Creator::User(ada);
    let mut minted = token(3, world.account, TokenKind::Collection, Scope::Collection(CollectionId(id(5))));
    minted.creator = Creator::User(ada);
    for record in [&access, &refresh, &minted] {
        store.insert_token(record, &[]).await.unwrap();
    }
    let mine = TokenFilter { creator: Some(Creator::User(ada)), ..TokenFilter::default() };
    assert_eq!(store.list_tokens(world.account, mine, NOW, Page::ALL).await.unwrap().total, 3);

    let mut rotated = token(4, world.account, TokenKind::Refresh, Scope::Account);
    rotated.family = Some(family);
    rotated.creator = Creator::User(ada);
    assert!(store.rotate_tokens(refresh.id, std::slice::from_ref(&rotated), NOW).await.unwrap());
    assert!(!store.consume_token(refresh.id, NOW).await.unwrap(), "a refresh token is consumed once");
    let mut again = token(5, world.account, TokenKind::Refresh, Scope::Account);
    again.family = Some(family);
    assert!(!store.rotate_tokens(refresh.id, std::slice::from_ref(&again), NOW).await.unwrap());
    assert!(matches!(store.token(world.account, again.id).await, Err(StoreError::NotFound)), "nothing inserted");
    assert!(store.consume_token(rotated.id, NOW).await.unwrap());
    let revoked = store.revoke_family(family, NOW, &[]).await.unwrap();
    assert_eq!(revoked.iter().map(|token| token.id).collect::<Vec<_>>(), vec![access.id]);
    let revoked = store.revoke_tokens_of(world.account, Creator::User(ada), NOW, &[]).await.unwrap();
    assert_eq!(revoked.iter().map(|token| token.id).collect::<Vec<_>>(), vec![minted.id]);
    assert_eq!(store.list_tokens(world.account, mine, NOW, Page::ALL).await.unwrap().total, 0);
}

async fn login_challenges_serve_once_and_expire(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let ada = user(100, world.account, "ada@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    let challenge = LoginChallenge {
        id: id(300),
        user: ada.id,
        client_id: "web".into(),
        created_at_ms: NOW,
        expires_at_ms: NOW + 300_000,
    };
    store.insert_challenge(&challenge).await.unwrap();
    assert_eq!(store.challenge(challenge.id, ada.id, NOW + 1).await.unwrap(), challenge);
    assert!(matches!(store.challenge(challenge.id, UserId(id(5)), NOW).await, Err(StoreError::NotFound)));
    assert!(matches!(store.challenge(challenge.id, ada.id, NOW + 300_000).await, Err(StoreError::NotFound)));
    assert!(store.use_challenge(challenge.id, NOW + 2).await.unwrap());
    assert!(!store.use_challenge(challenge.id, NOW + 3).await.unwrap());
    assert!(matches!(store.challenge(challenge.id, ada.id, NOW + 4).await, Err(StoreError::NotFound)));
}

async fn horde_fields_readings_by_device_and_downlinks(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let mut first = device(store, &world, 100, world.default_collection, "first").await;
    first.imsi = Some("242016000001".into());
    first.imei = Some("357000000000001".into());
    first.tags = BTreeMap::from([("name".into(), "First".into())]);
    store.update_device(&first).await.unwrap();
    assert_eq!(store.device(world.account, first.id).await.unwrap(), first);
    let mut second = device(store, &world, 101, world.default_collection, "second").await;
    second.imsi = first.imsi.clone();
    assert!(matches!(store.update_device(&second).await, Err(StoreError::Conflict(_))), "IMSIs are unique");

    let a = variable(store, &first, 200, "a").await;
    let b = variable(store, &first, 201, "b").await;
    let c = variable(store, &second, 202, "c").await;
    store
        .insert_readings(&[
            reading(a.id, 1000, Value::Number(1.0)),
            reading(b.id, 2000, Value::Number(2.0)),
            reading(c.id, 3000, Value::Number(3.0)),
        ])
        .await
        .unwrap();
    let all = store
        .device_readings(world.account, &DeviceFilter::collection(world.default_collection), TimeRange::ALL, 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|(device, reading)| (*device, reading.timestamp_ms)).collect::<Vec<_>>(),
        vec![(second.id, 3000), (first.id, 2000), (first.id, 1000)]
    );
    let one = store
        .device_readings(world.account, &DeviceFilter::device(first.id), TimeRange { start_ms: 1500, end_ms: 5000 }, 10)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        store.device_readings(world.account, &DeviceFilter::default(), TimeRange::ALL, 2).await.unwrap().len(),
        2
    );

    let downlink = Downlink {
        id: id(300),
        account: world.account,
        device: first.id,
        port: 17,
        payload: vec![1, 2],
        created_at_ms: NOW,
        delivered_at_ms: None,
    };
    store.insert_downlink(&downlink).await.unwrap();
    assert_eq!(store.downlinks(world.account, first.id).await.unwrap(), vec![downlink]);
    assert!(store.downlinks(world.account, second.id).await.unwrap().is_empty());

    let mut scoped = token(1, world.account, TokenKind::Resource, Scope::Collection(world.default_collection));
    store.insert_token(&scoped, &[]).await.unwrap();
    scoped.scope = Scope::AllCollections;
    scoped.rights = Rights::Read;
    scoped.resource = Some("/collections".into());
    store.update_token(&scoped, &[]).await.unwrap();
    assert_eq!(store.token(world.account, scoped.id).await.unwrap(), scoped);

    let mut collection = store.default_collection(world.account).await.unwrap();
    collection.tags = BTreeMap::from([("name".into(), "Main".into())]);
    store.update_collection(&collection).await.unwrap();
    assert_eq!(store.collection(world.account, collection.id).await.unwrap(), collection);
}

async fn shared_secrets_are_agreed_once(store: &dyn Store) {
    let first = store.shared_secret("server_key", &[1; 32]).await.unwrap();
    assert_eq!(first, vec![1; 32]);
    // A second process proposing another secret gets the first one: every node agrees on one key.
    assert_eq!(store.shared_secret("server_key", &[2; 32]).await.unwrap(), vec![1; 32]);
    assert_eq!(store.shared_secret("other", &[3; 4]).await.unwrap(), vec![3; 4]);
}

async fn collection(store: &dyn Store, world: &World, n: u32) -> CollectionId {
    let collection = Collection {
        id: CollectionId(id(n)),
        account: world.account,
        name: format!("collection {n}"),
        is_default: false,
        team: None,
        created_at_ms: NOW,
        tags: Default::default(),
    };
    store.insert_collection(&collection).await.unwrap();
    collection.id
}

async fn last_seen(store: &dyn Store, world: &World, device: DeviceId) -> Option<i64> {
    store.device(world.account, device).await.unwrap().last_seen_at_ms
}

async fn device_activity_keeps_the_latest_time(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let meter = device(store, &world, 100, world.default_collection, "meter").await;
    let other = device(store, &world, 101, world.default_collection, "other").await;
    assert_eq!(meter.last_seen_at_ms, None, "a new device has not been seen");
    // Two nodes flush what each gathered, in either order: the later time stays.
    store.record_device_activity(&[(meter.id, NOW + 10)]).await.unwrap();
    store.record_device_activity(&[(meter.id, NOW + 5), (other.id, NOW + 7)]).await.unwrap();
    assert_eq!(last_seen(store, &world, meter.id).await, Some(NOW + 10));
    assert_eq!(last_seen(store, &world, other.id).await, Some(NOW + 7));
    // One flush naming a device twice keeps the later of its times; a device deleted meanwhile is skipped.
    store
        .record_device_activity(&[(meter.id, NOW + 30), (DeviceId(id(999)), NOW), (meter.id, NOW + 20)])
        .await
        .unwrap();
    assert_eq!(last_seen(store, &world, meter.id).await, Some(NOW + 30));
    store.record_device_activity(&[]).await.unwrap();
    // A flush of more devices than one statement takes.
    let fleet: Vec<Device> = (0..250)
        .map(|n| Device { id: DeviceId(id(2000 + n)), label: label(&format!("fleet-{n}")), ..meter.clone() })
        .collect();
    store.insert_devices(&fleet).await.unwrap();
    let seen: Vec<(DeviceId, i64)> = fleet.iter().map(|device| (device.id, NOW + 40)).collect();
    store.record_device_activity(&seen).await.unwrap();
    assert_eq!(last_seen(store, &world, fleet[249].id).await, Some(NOW + 40));
    // A device's update (from a copy read before the flush, say) leaves its last-seen time alone.
    let mut renamed = meter.clone();
    renamed.name = "Meter".into();
    store.update_device(&renamed).await.unwrap();
    assert_eq!(
        store.device(world.account, meter.id).await.unwrap(),
        Device { last_seen_at_ms: Some(NOW + 30), ..renamed }
    );
}

fn labels(devices: &[Device]) -> Vec<&str> {
    devices.iter().map(|device| device.label.as_str()).collect()
}

async fn device_overview_filters_orders_and_counts(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let plant = collection(store, &world, 50).await;
    let quiet = device(store, &world, 100, plant, "b-quiet").await;
    let underscore = device(store, &world, 101, plant, "ab_c").await;
    let lookalike = device(store, &world, 102, plant, "abxc").await;
    let recent = device(store, &world, 103, plant, "d-recent").await;
    let never = device(store, &world, 104, plant, "c-never").await;
    device(store, &world, 105, world.default_collection, "ab_c-elsewhere").await;
    store
        .record_device_activity(&[
            (quiet.id, NOW - 10_000),
            (underscore.id, NOW),
            (lookalike.id, NOW),
            (recent.id, NOW + 5),
        ])
        .await
        .unwrap();
    let overview = async |query: DeviceQuery, page: Page| {
        let paged = store.device_overview(world.account, plant, &query, page).await.unwrap();
        (paged.total, labels(&paged.items).into_iter().map(str::to_owned).collect::<Vec<_>>())
    };
    let by = |order| DeviceQuery { order, ..DeviceQuery::default() };

    let (total, listed) = overview(by(DeviceOrder::Label), Page::ALL).await;
    assert_eq!((total, listed), (5, ["ab_c", "abxc", "b-quiet", "c-never", "d-recent"].map(String::from).to_vec()));
    // Most recent first, ties by id, the never-seen last.
    let (_, listed) = overview(by(DeviceOrder::LastActivity), Page::ALL).await;
    assert_eq!(listed, ["d-recent", "ab_c", "abxc", "b-quiet", "c-never"]);
    let (total, listed) = overview(by(DeviceOrder::LastActivity), Page { number: 2, size: 2 }).await;
    assert_eq!((total, listed), (5, vec!["abxc".to_owned(), "b-quiet".to_owned()]));

    // `_` and `%` are the text searched for, not wildcards; case does not matter.
    let search = |text: &str| DeviceQuery { label_contains: Some(text.into()), ..DeviceQuery::default() };
    assert_eq!(overview(search("b_c"), Page::ALL).await, (1, vec!["ab_c".to_owned()]));
    assert_eq!(overview(search("B_C"), Page::ALL).await, (1, vec!["ab_c".to_owned()]));
    assert_eq!(overview(search("%"), Page::ALL).await, (0, vec![]));
    assert_eq!(overview(search("a%c"), Page::ALL).await, (0, vec![]));
    assert_eq!(overview(search("!"), Page::ALL).await, (0, vec![]), "the escape character is taken literally too");
    assert_eq!(overview(search("-"), Page::ALL).await.0, 3);
    assert_eq!(overview(search(""), Page::ALL).await.0, 5);

    // Gone quiet: never seen, or last seen before the instant.
    let quiet_since = |since| DeviceQuery {
        not_seen_since_ms: Some(since),
        order: DeviceOrder::LastActivity,
        ..DeviceQuery::default()
    };
    assert_eq!(overview(quiet_since(NOW), Page::ALL).await, (2, vec!["b-quiet".to_owned(), "c-never".to_owned()]));
    let both = DeviceQuery { label_contains: Some("c".into()), ..quiet_since(NOW + 1) };
    assert_eq!(overview(both, Page::ALL).await, (3, ["ab_c", "abxc", "c-never"].map(String::from).to_vec()));
    assert_eq!(never.last_seen_at_ms, None);

    let elsewhere = store.device_overview(AccountId(id(999)), plant, &DeviceQuery::default(), Page::ALL).await.unwrap();
    assert_eq!(elsewhere.total, 0, "another account sees none of it");
}

async fn variables_come_with_their_last_reading(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let first = device(store, &world, 100, world.default_collection, "first").await;
    let second = device(store, &world, 101, world.default_collection, "second").await;
    let b = variable(store, &first, 200, "b").await;
    let a = variable(store, &first, 201, "a").await;
    let c = variable(store, &second, 202, "c").await;
    let latest = reading(b.id, 2000, Value::Json(json!({"on": true})));
    store
        .insert_readings(&[
            reading(b.id, 1000, Value::Number(1.0)),
            latest.clone(),
            reading(c.id, 5, Value::Number(5.0)),
        ])
        .await
        .unwrap();
    let found = store.variables_with_last(world.account, &[second.id, first.id]).await.unwrap();
    assert_eq!(
        found,
        vec![(c.clone(), Some(reading(c.id, 5, Value::Number(5.0)))), (a.clone(), None), (b.clone(), Some(latest))],
        "by device in the order asked, then by label; a variable without readings has none"
    );
    let once = store.variables_with_last(world.account, &[first.id, first.id]).await.unwrap();
    assert_eq!(once.iter().map(|(variable, _)| variable.label.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(store.variables_with_last(world.account, &[]).await.unwrap().is_empty());
    assert!(store.variables_with_last(AccountId(id(999)), &[first.id]).await.unwrap().is_empty());
}

async fn reading_buckets_aggregate_numbers_only(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let device = device(store, &world, 100, world.default_collection, "dev").await;
    let level = variable(store, &device, 200, "level").await;
    let mut readings: Vec<Reading> = (0..10).map(|n| reading(level.id, n, Value::Number(n as f64))).collect();
    readings.push(reading(level.id, 10, Value::Json(json!(99))));
    readings.push(reading(level.id, 12, Value::Bytes(vec![99])));
    readings.push(reading(level.id, 17, Value::Number(-4.0)));
    store.insert_readings(&readings).await.unwrap();
    let bucket = |start_ms, count, min, max, mean, first_ms, last_ms| ReadingBucket {
        start_ms,
        count,
        min,
        max,
        mean,
        first_ms,
        last_ms,
    };
    let range = |start_ms, end_ms| TimeRange { start_ms, end_ms };

    // Ten numbers, then only JSON and bytes (left out: no bucket for 10..=14), then one number.
    assert_eq!(
        store.reading_buckets(level.id, range(0, 19), 5).await.unwrap(),
        vec![
            bucket(0, 5, 0.0, 4.0, 2.0, 0, 4),
            bucket(5, 5, 5.0, 9.0, 7.0, 5, 9),
            bucket(15, 1, -4.0, -4.0, -4.0, 17, 17)
        ]
    );
    // Buckets count from the range's start; the range is inclusive.
    assert_eq!(
        store.reading_buckets(level.id, range(-2, 7), 4).await.unwrap(),
        vec![bucket(-2, 2, 0.0, 1.0, 0.5, 0, 1), bucket(2, 4, 2.0, 5.0, 3.5, 2, 5), bucket(6, 2, 6.0, 7.0, 6.5, 6, 7)]
    );
    assert_eq!(store.reading_buckets(level.id, range(10, 14), 1).await.unwrap(), vec![], "JSON and bytes only");
    assert_eq!(store.reading_buckets(level.id, range(7, 6), 1).await.unwrap(), vec![], "an empty range");
    let silent = variable(store, &device, 201, "silent").await;
    assert_eq!(store.reading_buckets(silent.id, range(0, i64::MAX), 1 << 40).await.unwrap(), vec![], "no readings");

    for refused in [0, -1] {
        assert!(
            matches!(store.reading_buckets(level.id, range(0, 19), refused).await, Err(StoreError::Invalid(_))),
            "a bucket of {refused} ms"
        );
    }
    assert!(
        matches!(store.reading_buckets(level.id, TimeRange::ALL, i64::MAX).await, Err(StoreError::Invalid(_))),
        "a range wider than an i64 of milliseconds"
    );
}

async fn a_password_change_ends_the_users_other_sessions(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let ada = user(100, world.account, "ada@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    let bob = user(102, world.account, "bob@example.com");
    store.insert_user(&bob, &private_team(world.account, 103, bob.id)).await.unwrap();
    let (kept, other) = (id(900), id(901));
    let session = |n, kind, family, who| {
        let mut record = token(n, world.account, kind, Scope::Account);
        record.family = Some(family);
        record.creator = Creator::User(who);
        record.expires_at_ms = Some(NOW + 1000);
        record
    };
    let own = [session(1, TokenKind::UserAccess, kept, ada.id), session(2, TokenKind::Refresh, kept, ada.id)];
    let others = [session(3, TokenKind::UserAccess, other, ada.id), session(4, TokenKind::Refresh, other, ada.id)];
    let mut expired = session(5, TokenKind::UserAccess, other, ada.id);
    expired.expires_at_ms = Some(NOW - 1);
    let bobs = session(6, TokenKind::UserAccess, id(902), bob.id);
    let mut minted = token(7, world.account, TokenKind::Collection, Scope::Collection(world.default_collection));
    minted.creator = Creator::User(ada.id);
    for record in own.iter().chain(&others).chain([&expired, &bobs, &minted]) {
        store.insert_token(record, &[]).await.unwrap();
    }

    let revoked = store.set_password_hash(ada.id, "new hash", Some(kept), NOW, &[]).await.unwrap();
    let mut revoked_ids: Vec<TokenId> = revoked.iter().map(|token| token.id).collect();
    revoked_ids.sort();
    assert_eq!(revoked_ids, vec![others[0].id, others[1].id], "the other session's live tokens only");
    assert!(revoked.iter().all(|token| token.revoked_at_ms == Some(NOW)));
    assert_eq!(store.user(world.account, ada.id).await.unwrap().password_hash, "new hash");
    for untouched in own.iter().chain([&expired, &bobs, &minted]) {
        assert_eq!(store.token(world.account, untouched.id).await.unwrap().revoked_at_ms, None, "{}", untouched.name);
    }
    // Without a session to keep (an operator's reset, say), every one ends.
    let revoked = store.set_password_hash(ada.id, "newer hash", None, NOW + 1, &[]).await.unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(matches!(store.set_password_hash(UserId(id(999)), "x", None, NOW, &[]).await, Err(StoreError::NotFound)));
}

async fn the_admin_flag_decides_reach_and_an_account_keeps_one_admin(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let admin = UserId(id(12));
    let ada = user(100, world.account, "ada@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    assert!(!store.user_reach(ada.id).await.unwrap().is_admin);
    store.set_user_admin(world.account, ada.id, true).await.unwrap();
    assert_eq!(store.user_reach(ada.id).await.unwrap().to_reach(), Reach::Account(Rights::ReadWrite));
    assert!(store.user(world.account, ada.id).await.unwrap().is_admin);
    store.set_user_admin(world.account, admin, false).await.unwrap();
    assert!(
        matches!(store.set_user_admin(world.account, ada.id, false).await, Err(StoreError::Conflict(_))),
        "the last administrator stays one"
    );
    store.set_user_admin(world.account, admin, true).await.unwrap();
    store.set_user_admin(world.account, ada.id, false).await.unwrap();
    assert!(!store.user_reach(ada.id).await.unwrap().is_admin);
    assert!(matches!(store.set_user_admin(AccountId(id(999)), ada.id, true).await, Err(StoreError::NotFound)));
    assert!(matches!(store.set_user_admin(world.account, UserId(id(999)), true).await, Err(StoreError::NotFound)));
}

/// The PostgreSQL server `TESSERA_TEST_POSTGRES_URL` names; `None`, said once past the harness's capture (so it
/// shows in every run's output), when there is none.
fn postgres_url() -> Option<String> {
    let url = std::env::var("TESSERA_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "conformance: PostgreSQL cases skipped (TESSERA_TEST_POSTGRES_URL is not set)"
            );
        });
    }
    url
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
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(base) = super::postgres_url() else { return };
                    let schema = tessera_store::ScratchSchema::create(&base, "conformance").await.unwrap();
                    let store = tessera_store::PostgresStore::connect(schema.url()).await.unwrap();
                    super::$case(&store).await;
                    tessera_store::Store::close(&store).await;
                    schema.drop().await.unwrap();
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
    users_are_unique_by_email_in_their_account,
    totp_steps_are_accepted_once_and_recovery_codes_once,
    team_membership_decides_reach,
    token_families_and_creators_are_revoked_together,
    login_challenges_serve_once_and_expire,
    horde_fields_readings_by_device_and_downlinks,
    shared_secrets_are_agreed_once,
    fleets_are_provisioned_in_one_transaction,
    device_activity_keeps_the_latest_time,
    device_overview_filters_orders_and_counts,
    variables_come_with_their_last_reading,
    reading_buckets_aggregate_numbers_only,
    a_password_change_ends_the_users_other_sessions,
    the_admin_flag_decides_reach_and_an_account_keeps_one_admin,
    an_audit_entry_commits_with_its_change_or_not_at_all,
    a_rotated_secret_is_found_until_a_later_rotation_replaces_it,
    tokens_are_disabled_selected_and_revoked_in_bulk,
    expiries_are_recorded_once_and_sessions_not_at_all,
    the_audit_trail_filters_pages_and_prunes,
    token_policies_are_set_and_removed,
    usage_keeps_the_latest_address_and_adds_throttled_counts,
    an_export_pages_a_range_and_the_figures_count_the_store,
);

/// The operator's reads: `readings_newest` pages a range without a count (moving its end below the last page's
/// oldest reading), `figures` counts what the store holds, and the operator is an actor the trail keeps.
async fn an_export_pages_a_range_and_the_figures_count_the_store(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let device = device(store, &world, 100, world.default_collection, "dev").await;
    let temperature = variable(store, &device, 200, "temperature").await;
    let readings: Vec<Reading> =
        (0..2_500).map(|n| reading(temperature.id, 10_000 + n, Value::Number(n as f64))).collect();
    store.insert_readings(&readings).await.unwrap();

    let mut range = TimeRange { start_ms: 10_100, end_ms: 12_299 };
    let mut paged = Vec::new();
    loop {
        let page = store.readings_newest(temperature.id, range, 1_000).await.unwrap();
        paged.extend(page.iter().map(|reading| reading.timestamp_ms));
        match page.last() {
            Some(last) if page.len() == 1_000 => range.end_ms = last.timestamp_ms - 1,
            _ => break,
        }
    }
    assert_eq!(paged, (10_100..=12_299).rev().collect::<Vec<i64>>(), "each reading once, newest first");
    assert!(store.readings_newest(temperature.id, TimeRange { start_ms: 5, end_ms: 4 }, 10).await.unwrap().is_empty());

    let revoked = token(20, world.account, TokenKind::Device, Scope::Device(device.id));
    store.insert_token(&revoked, &[]).await.unwrap();
    store.revoke_token(world.account, revoked.id, NOW, &[]).await.unwrap();
    let figures = store.figures(NOW).await.unwrap();
    let users = store.list_users(world.account).await.unwrap().len() as u64;
    assert_eq!(
        (figures.accounts, figures.users, figures.collections, figures.devices, figures.variables, figures.readings),
        (1, users, 1, 1, 1, 2_500)
    );
    assert_eq!(figures.live_tokens, vec![(TokenKind::ApiKey, 1)], "the revoked token is not live");
    assert!(figures.database_bytes > 0);

    let by_operator = AuditEntry { actor: Actor::Operator, ..entry(1, world.account, "second_factor.reset", None) };
    store.insert_audit(std::slice::from_ref(&by_operator)).await.unwrap();
    let query = AuditQuery { actor: Some(Actor::Operator), ..everything(10) };
    assert_eq!(store.audit_entries(world.account, &query).await.unwrap(), vec![by_operator]);
}

/// An audit entry of `event` in `account` about `token`.
fn entry(n: u32, account: AccountId, event: &str, token: Option<TokenId>) -> AuditEntry {
    AuditEntry {
        id: id(9000 + n),
        account,
        at_ms: NOW + i64::from(n),
        event: event.to_owned(),
        actor: Actor::User(UserId(id(12))),
        token,
        address: Some("192.0.2.7".parse().unwrap()),
        outcome: Outcome::Ok,
        detail: serde_json::Map::from_iter([("name".to_owned(), json!("n"))]),
        count: 1,
    }
}

fn everything(limit: u32) -> AuditQuery {
    AuditQuery { limit, ..AuditQuery::default() }
}

/// Issue 15: "a write of the audit record and the change it records commit together". An entry the database
/// refuses (another account that does not exist) takes its change down with it.
async fn an_audit_entry_commits_with_its_change_or_not_at_all(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let token = token(1, world.account, TokenKind::Collection, Scope::Collection(world.default_collection));
    let broken = entry(1, AccountId(id(666)), "token.minted", Some(token.id));
    assert!(store.insert_token(&token, std::slice::from_ref(&broken)).await.is_err());
    assert!(
        matches!(store.token_by_digest(&token.digest).await, Err(StoreError::NotFound)),
        "no token without its record"
    );
    let good = entry(2, world.account, "token.minted", Some(token.id));
    store.insert_token(&token, std::slice::from_ref(&good)).await.unwrap();
    assert_eq!(store.audit_entries(world.account, &everything(10)).await.unwrap(), vec![good]);
    assert!(store.revoke_token(world.account, token.id, NOW + 1, std::slice::from_ref(&broken)).await.is_err());
    assert_eq!(store.token(world.account, token.id).await.unwrap().revoked_at_ms, None, "not revoked either");
    assert!(store.set_token_disabled(world.account, token.id, Some(NOW), &[broken]).await.is_err());
    assert_eq!(store.token(world.account, token.id).await.unwrap().disabled_at_ms, None);
}

async fn a_rotated_secret_is_found_until_a_later_rotation_replaces_it(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let token = token(1, world.account, TokenKind::Device, Scope::Device(DeviceId(id(40))));
    store.insert_token(&token, &[]).await.unwrap();
    let (second, third) = (SecretDigest([71; 32]), SecretDigest([72; 32]));
    let rotated = store.rotate_secret(world.account, token.id, &second, NOW + 60_000, NOW, &[]).await.unwrap();
    assert_eq!(
        (rotated.digest, rotated.previous_digest, rotated.previous_valid_until_ms, rotated.rotated_at_ms),
        (second, Some(token.digest), Some(NOW + 60_000), Some(NOW))
    );
    assert_eq!((rotated.id, &rotated.name, rotated.scope), (token.id, &token.name, token.scope), "the same token");
    assert_eq!(store.token_by_digest(&token.digest).await.unwrap(), rotated, "found by the replaced secret");
    assert_eq!(store.token_by_digest(&second).await.unwrap(), rotated, "and by the new one");
    let again = store.rotate_secret(world.account, token.id, &third, NOW + 1, NOW + 5, &[]).await.unwrap();
    assert_eq!(again.previous_digest, Some(second));
    assert!(matches!(store.token_by_digest(&token.digest).await, Err(StoreError::NotFound)), "the first is gone");
    store.revoke_token(world.account, token.id, NOW + 6, &[]).await.unwrap();
    assert!(
        matches!(
            store.rotate_secret(world.account, token.id, &SecretDigest([73; 32]), NOW, NOW, &[]).await,
            Err(StoreError::NotFound)
        ),
        "a revoked token is not rotated"
    );
}

async fn tokens_are_disabled_selected_and_revoked_in_bulk(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let collection = world.default_collection;
    let on_device = device(store, &world, 30, collection, "pump").await;
    let mut device_tokens = Vec::new();
    for n in 1..=3 {
        let token = token(n, world.account, TokenKind::Device, Scope::Device(on_device.id));
        store.insert_token(&token, &[]).await.unwrap();
        device_tokens.push(token);
    }
    let mut of_collection = token(4, world.account, TokenKind::Collection, Scope::Collection(collection));
    of_collection.creator = Creator::User(UserId(id(12)));
    store.insert_token(&of_collection, &[]).await.unwrap();
    let elsewhere = token(5, world.account, TokenKind::Collection, Scope::Collection(CollectionId(id(99))));
    store.insert_token(&elsewhere, &[]).await.unwrap();

    let disabled = store.set_token_disabled(world.account, device_tokens[0].id, Some(NOW), &[]).await.unwrap();
    assert_eq!(disabled.disabled_at_ms, Some(NOW));
    let listed = store.list_tokens(world.account, TokenFilter::default(), NOW, Page::ALL).await.unwrap();
    assert!(listed.items.iter().any(|token| token.id == disabled.id), "a disabled token is still listed");
    let enabled = store.set_token_disabled(world.account, disabled.id, None, &[]).await.unwrap();
    assert_eq!(enabled.disabled_at_ms, None);
    assert!(
        matches!(
            store.set_token_disabled(AccountId(id(77)), disabled.id, Some(NOW), &[]).await,
            Err(StoreError::NotFound)
        ),
        "not across accounts"
    );

    let select = async |selection| {
        let mut ids: Vec<TokenId> =
            store.select_tokens(world.account, selection, NOW, 100).await.unwrap().iter().map(|t| t.id).collect();
        ids.sort();
        ids
    };
    let device_ids: Vec<TokenId> = device_tokens.iter().map(|token| token.id).collect();
    assert_eq!(select(TokenSelection { device: Some(on_device.id), ..Default::default() }).await, device_ids);
    let mut in_collection = device_ids.clone();
    in_collection.push(of_collection.id);
    in_collection.sort();
    assert_eq!(select(TokenSelection { collection: Some(collection), ..Default::default() }).await, in_collection);
    assert_eq!(
        select(TokenSelection { creator: Some(Creator::User(UserId(id(12)))), ..Default::default() }).await,
        vec![of_collection.id]
    );
    assert_eq!(
        select(TokenSelection { kind: Some(TokenKind::Device), after: Some(device_ids[0]), ..Default::default() })
            .await,
        device_ids[1..].to_vec()
    );
    let revoked = store
        .revoke_tokens(world.account, &in_collection, NOW + 1, &|gone: &[TokenRecord]| {
            vec![entry(gone.len() as u32, world.account, "tokens.bulk_revoked", None)]
        })
        .await
        .unwrap();
    assert_eq!(revoked.len(), 4);
    assert!(select(TokenSelection { collection: Some(collection), ..Default::default() }).await.is_empty());
    assert_eq!(store.token(world.account, elsewhere.id).await.unwrap().revoked_at_ms, None, "others are left");
    assert!(
        store.revoke_tokens(world.account, &in_collection, NOW + 2, &|_| Vec::new()).await.unwrap().is_empty(),
        "once"
    );
    assert_eq!(store.audit_entries(world.account, &everything(10)).await.unwrap().len(), 1);
}

async fn expiries_are_recorded_once_and_sessions_not_at_all(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let mut expired = token(1, world.account, TokenKind::Device, Scope::Device(DeviceId(id(40))));
    expired.expires_at_ms = Some(NOW - 1);
    let mut session = token(2, world.account, TokenKind::UserAccess, Scope::Account);
    session.expires_at_ms = Some(NOW - 1);
    let mut later = token(3, world.account, TokenKind::Device, Scope::Device(DeviceId(id(40))));
    later.expires_at_ms = Some(NOW + 1_000);
    for token in [&expired, &session, &later] {
        store.insert_token(token, &[]).await.unwrap();
    }
    let make = |token: &TokenRecord| entry(50, token.account, "token.expired", Some(token.id));
    let recorded = store.record_expiries(NOW, 100, &make).await.unwrap();
    assert_eq!(recorded.iter().map(|token| token.id).collect::<Vec<_>>(), vec![expired.id]);
    assert!(store.record_expiries(NOW, 100, &make).await.unwrap().is_empty(), "each expiry is recorded once");
    let trail = store.audit_entries(world.account, &everything(10)).await.unwrap();
    assert_eq!((trail.len(), trail[0].token), (1, Some(expired.id)));
}

async fn the_audit_trail_filters_pages_and_prunes(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let token_a = Some(TokenId(id(70)));
    let mut entries: Vec<AuditEntry> = (0..5).map(|n| entry(n, world.account, "token.minted", token_a)).collect();
    entries[3].event = "login.failed".into();
    entries[3].actor = Actor::Anonymous;
    entries[3].outcome = Outcome::Refused;
    entries[3].count = 7;
    entries[4].token = None;
    store.insert_audit(&entries).await.unwrap();

    let ids = |found: Vec<AuditEntry>| found.iter().map(|entry| entry.id).collect::<Vec<_>>();
    let all = store.audit_entries(world.account, &everything(100)).await.unwrap();
    assert_eq!(ids(all.clone()), entries.iter().rev().map(|entry| entry.id).collect::<Vec<_>>(), "newest first");
    assert_eq!(all[1], entries[3], "every field round-trips");
    let page = AuditQuery { limit: 2, before: Some(entries[3].id), ..AuditQuery::default() };
    assert_eq!(ids(store.audit_entries(world.account, &page).await.unwrap()), vec![entries[2].id, entries[1].id]);
    let by_event = AuditQuery { events: vec!["login.failed".into()], ..everything(100) };
    assert_eq!(ids(store.audit_entries(world.account, &by_event).await.unwrap()), vec![entries[3].id]);
    let by_actor = AuditQuery { actor: Some(Actor::Anonymous), ..everything(100) };
    assert_eq!(ids(store.audit_entries(world.account, &by_actor).await.unwrap()), vec![entries[3].id]);
    let by_token = AuditQuery { token: token_a, ..everything(100) };
    assert_eq!(store.audit_entries(world.account, &by_token).await.unwrap().len(), 4);
    let by_time = AuditQuery { since_ms: Some(NOW + 1), until_ms: Some(NOW + 3), ..everything(100) };
    assert_eq!(ids(store.audit_entries(world.account, &by_time).await.unwrap()), vec![entries[2].id, entries[1].id]);

    assert!(store.audit_entries(AccountId(id(77)), &everything(100)).await.unwrap().is_empty(), "one account's own");
    assert_eq!(store.prune_audit(NOW + 2, 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(store.prune_audit(NOW + 2, 100).await.unwrap(), 1);
    assert_eq!(store.audit_entries(world.account, &everything(100)).await.unwrap().len(), 3);
}

async fn token_policies_are_set_and_removed(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let device =
        TokenPolicy { kind: TokenKind::Device, max_lifetime_seconds: Some(86_400), default_lifetime_seconds: None };
    let ground =
        TokenPolicy { kind: TokenKind::Ground, max_lifetime_seconds: Some(600), default_lifetime_seconds: Some(60) };
    store
        .set_token_policy(world.account, &device, &[entry(1, world.account, "token_policy.changed", None)])
        .await
        .unwrap();
    store.set_token_policy(world.account, &ground, &[]).await.unwrap();
    assert_eq!(store.token_policies(world.account).await.unwrap(), vec![device, ground]);
    let tighter = TokenPolicy { max_lifetime_seconds: Some(3_600), ..device };
    store.set_token_policy(world.account, &tighter, &[]).await.unwrap();
    let none = TokenPolicy { kind: TokenKind::Ground, max_lifetime_seconds: None, default_lifetime_seconds: None };
    store.set_token_policy(world.account, &none, &[]).await.unwrap();
    assert_eq!(store.token_policies(world.account).await.unwrap(), vec![tighter]);
    assert_eq!(store.audit_entries(world.account, &everything(10)).await.unwrap().len(), 1);
}

async fn usage_keeps_the_latest_address_and_adds_throttled_counts(store: &dyn Store) {
    let world = bootstrap(store, 10).await;
    let usage = |at, from: &str, throttled| TokenUsage {
        token: world.api_key.id,
        last_used_at_ms: at,
        last_used_from: Some(from.parse().unwrap()),
        uses: 1,
        throttled,
    };
    store.record_token_usage(&[usage(NOW + 10, "192.0.2.1", 2)]).await.unwrap();
    store.record_token_usage(&[usage(NOW + 5, "192.0.2.2", 3)]).await.unwrap();
    let token = store.token(world.account, world.api_key.id).await.unwrap();
    assert_eq!(
        (token.uses, token.throttled, token.last_used_at_ms, token.last_used_from),
        (2, 5, Some(NOW + 10), Some("192.0.2.1".parse().unwrap())),
        "an older flush (another node's) adds its counts but not its address"
    );
    store.record_token_usage(&[usage(NOW + 20, "2001:db8::1", 0)]).await.unwrap();
    let token = store.token(world.account, world.api_key.id).await.unwrap();
    assert_eq!(token.last_used_from, Some("2001:db8::1".parse().unwrap()));
}

/// The WAL's checkpoint sequence number (bytes 12..16 of its header, big-endian), which SQLite increments each
/// time a writer starts the WAL over from its beginning.
fn wal_restarts(database: &std::path::Path) -> u32 {
    use std::io::Read;
    let mut header = [0u8; 16];
    let mut wal = std::fs::File::open(database.with_extension("db-wal")).expect("the WAL exists after a commit");
    wal.read_exact(&mut header).expect("the WAL has its header");
    u32::from_be_bytes(header[12..16].try_into().unwrap())
}

/// Under writes that never pause, the background checkpoint must still let the WAL start over (it used to grow
/// without end: a checkpoint beside the writer always ended a few frames behind it). The checkpointer runs every
/// second, so 2.5 s of back-to-back commits see at least one restart.
#[tokio::test]
async fn sqlite_on_disk_rewinds_its_wal_under_steady_writes() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("tessera.db");
    let store = tessera_store::SqliteStore::open(&path).await.unwrap();
    let world = bootstrap(&store, 10).await;
    let device = device(&store, &world, 20, world.default_collection, "d").await;
    let mut variables = Vec::new();
    for n in 0..50 {
        variables.push(variable(&store, &device, 100 + n, &format!("v{n}")).await.id);
    }
    tessera_store::ReadingStore::insert_readings(&store, &[reading(variables[0], 0, Value::Number(0.0))])
        .await
        .unwrap();
    let restarts_before = wal_restarts(&path);
    let started = std::time::Instant::now();
    let mut timestamp = 1;
    while started.elapsed() < std::time::Duration::from_millis(2500) {
        let batch: Vec<Reading> =
            variables.iter().map(|variable| reading(*variable, timestamp, Value::Number(1.0))).collect();
        tessera_store::ReadingStore::insert_readings(&store, &batch).await.unwrap();
        timestamp += 1;
    }
    let restarts_after = wal_restarts(&path);
    assert!(
        restarts_after > restarts_before,
        "the WAL was never started over during {timestamp} back-to-back commits (sequence {restarts_before})"
    );
    tessera_store::Store::close(&store).await;
}

/// Waits until `listener` hears `payload` as an event it can read. Every schema of the database shares the channel,
/// so other suites' events may come first.
async fn hear(listener: &mut tessera_store::PostgresListener, payload: String) {
    let told = tessera_store::ListenEvent::Payload(payload);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut heard = Vec::new();
    while heard.last() != Some(&told) {
        match tokio::time::timeout_at(deadline, listener.next()).await {
            Ok(event) => heard.push(event),
            Err(_) => panic!("{told:?} was not heard; heard {heard:?}"),
        }
    }
}

/// The store's invalidations reach the nodes as the changes they name: one a node cannot read would only make it
/// empty every cache.
#[tokio::test]
async fn postgres_a_revocation_is_told_as_the_change_it_is() {
    use tessera_store::Invalidation;
    let Some(base) = postgres_url() else { return };
    let schema = tessera_store::ScratchSchema::create(&base, "conformance").await.unwrap();
    let postgres = tessera_store::PostgresStore::connect(schema.url()).await.unwrap();
    let store: &dyn Store = &postgres;
    let world = bootstrap(store, 10).await;
    let doomed = token(1, world.account, TokenKind::Account, Scope::Account);
    store.insert_token(&doomed, &[]).await.unwrap();
    let mut listener = postgres.events().listen().await.unwrap();
    store.revoke_token(world.account, doomed.id, NOW, &[]).await.unwrap();
    hear(&mut listener, Invalidation::Token { id: doomed.id, digest: doomed.digest }.payload()).await;
    drop(listener);
    store.close().await;
    schema.drop().await.unwrap();
}

/// A change of a user's admin flag tells every node that the user's reach changed, in the change's own
/// transaction.
#[tokio::test]
async fn postgres_an_admin_flag_change_is_told_with_its_commit() {
    use tessera_store::Invalidation;
    let Some(base) = postgres_url() else { return };
    let schema = tessera_store::ScratchSchema::create(&base, "conformance").await.unwrap();
    let postgres = tessera_store::PostgresStore::connect(schema.url()).await.unwrap();
    let store: &dyn Store = &postgres;
    let world = bootstrap(store, 10).await;
    let ada = user(100, world.account, "ada@example.com");
    store.insert_user(&ada, &private_team(world.account, 101, ada.id)).await.unwrap();
    let mut listener = postgres.events().listen().await.unwrap();
    store.set_user_admin(world.account, ada.id, true).await.unwrap();
    hear(&mut listener, Invalidation::Reach(Creator::User(ada.id)).payload()).await;
    drop(listener);
    store.close().await;
    schema.drop().await.unwrap();
}

/// A node's listener skips its own events stored by reference without fetching them; another node hears them, in
/// order with the inline ones.
#[tokio::test]
async fn postgres_nodes_do_not_fetch_their_own_events_stored_by_reference() {
    use tessera_store::ListenEvent;
    let Some(base) = postgres_url() else { return };
    let schema = tessera_store::ScratchSchema::create(&base, "conformance").await.unwrap();
    let here = tessera_store::PostgresStore::connect(schema.url()).await.unwrap();
    let there = tessera_store::PostgresStore::connect(schema.url()).await.unwrap();
    let (ours, theirs) = (here.events(), there.events());
    let (mut heard_here, mut heard_there) = (ours.listen().await.unwrap(), theirs.listen().await.unwrap());
    let next = async |listener: &mut tessera_store::PostgresListener| {
        tokio::time::timeout(std::time::Duration::from_secs(10), listener.next()).await.expect("an event")
    };

    let large = "x".repeat(10_000);
    ours.publish(&large, 0).await.unwrap();
    ours.publish("small", 0).await.unwrap();
    assert_eq!(next(&mut heard_there).await, ListenEvent::Payload(large.clone()));
    assert_eq!(next(&mut heard_there).await, ListenEvent::Payload("small".into()));
    // With the stored event gone, a listener that fetched it would hear `Missed` first.
    let database = sqlx::PgPool::connect(schema.url()).await.unwrap();
    sqlx::query("DELETE FROM events").execute(&database).await.unwrap();
    database.close().await;
    assert_eq!(next(&mut heard_here).await, ListenEvent::Payload("small".into()), "its own large event is skipped");
    theirs.publish(&large, 0).await.unwrap();
    assert_eq!(next(&mut heard_here).await, ListenEvent::Payload(large), "the other node's large event is fetched");

    drop((heard_here, heard_there));
    tessera_store::Store::close(&here).await;
    tessera_store::Store::close(&there).await;
    schema.drop().await.unwrap();
}
