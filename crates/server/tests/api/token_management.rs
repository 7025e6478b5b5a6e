//! Issue 13, hole 1: one rule for every token route. A user sees and manages the tokens they made; a team admin
//! also those scoped to the team's collections and their devices; an account administrator and the API key all
//! of the account's; anyone else is told they do not exist. Minting is a change, so read-only reach mints nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestServer;

/// Alice administers a team that owns collection C with device D; Bob is a (read-only) member.
struct Team {
    alice: String,
    bob: String,
    collection: String,
    device: String,
}

async fn team_with_a_member(tessera: &TestServer) -> Team {
    let (alice, _) = tessera.user("alice@example.com", "correct horse battery").await;
    let (bob, _) = tessera.user("bob@example.com", "correct horse battery").await;
    let as_user = |token: &str| vec![("authorization".to_owned(), format!("Bearer {token}"))];
    let call = async |token: &str, method: Method, path: &str, body: Option<Value>| {
        let headers = as_user(token);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        tessera.call(method, path, &headers, body).await
    };
    let (_, team) = call(&alice, Method::POST, "/teams", Some(json!({}))).await;
    let team_id = team["teamId"].as_str().unwrap().to_owned();
    let (_, invite) = call(&alice, Method::POST, &format!("/teams/{team_id}/invites"), None).await;
    let (status, _) = call(&bob, Method::POST, "/teams/accept", Some(json!({"code": invite["code"]}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, collection) =
        tessera.native(Method::POST, "/collections", &alice, Some(json!({"name": "C", "team": team_id}))).await;
    let collection = collection["id"].as_str().unwrap().to_owned();
    let (status, org_token) = tessera
        .native(Method::POST, "/tokens", &alice, Some(json!({"kind": "collection", "collection": collection})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{org_token}");
    let org_secret = org_token["secret"].as_str().unwrap();
    tessera.ubidots(Method::POST, "/devices/d", org_secret, Some(json!({"t": 1}))).await;
    let (_, sources) = tessera.ubidots(Method::GET, "/datasources", org_secret, None).await;
    let device = sources["results"][0]["id"].as_str().unwrap().to_owned();
    Team { alice, bob, collection, device }
}

fn ids(listing: &Value) -> Vec<String> {
    listing["tokens"].as_array().unwrap().iter().map(|token| token["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_read_only_member_neither_sees_nor_revokes_nor_mints_device_and_ground_tokens() {
    let tessera = TestServer::start().await;
    let team = team_with_a_member(&tessera).await;
    let routes = [
        (format!("/devices/{}/tokens", team.device), "device"),
        (format!("/collections/{}/ground-tokens", team.collection), "ground"),
    ];
    for (route, kind) in &routes {
        let (status, minted) = tessera.native(Method::POST, route, &team.alice, Some(json!({"name": "a"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {minted}");
        let (id, secret) = (minted["id"].as_str().unwrap(), minted["secret"].as_str().unwrap());

        // Bob lists: not Alice's token.
        let (status, listed) = tessera.native(Method::GET, route, &team.bob, None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {listed}");
        assert!(ids(&listed).is_empty(), "{kind}: a member sees only his own: {listed}");
        // Bob revokes: it does not exist for him, and Alice's device keeps working.
        let (status, _) = tessera.native(Method::DELETE, &format!("{route}/{id}"), &team.bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        let (status, _) = tessera.native(Method::GET, &format!("/tokens/{id}"), &team.bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        let (status, _) = tessera
            .call(
                Method::GET,
                &format!("/device/{}/assets", team.device),
                &[("authorization", &format!("Bearer {secret}"))],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{kind}: Alice's token still works");
        // Bob mints: refused with a reason, and nothing is minted.
        let (status, refused) = tessera.native(Method::POST, route, &team.bob, Some(json!({"name": "b"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: {refused}");
        assert!(refused["detail"].as_str().unwrap().contains("only read"), "{kind}: {refused}");
        let (_, listed) = tessera.native(Method::GET, route, &team.alice, None).await;
        assert_eq!(ids(&listed), [id], "{kind}: the admin sees the one token there is");
    }
}

#[tokio::test]
async fn admins_manage_the_tokens_of_what_they_administer_and_users_their_own() {
    let tessera = TestServer::start().await;
    let team = team_with_a_member(&tessera).await;
    let route = format!("/devices/{}/tokens", team.device);
    let (_, alices) = tessera.native(Method::POST, &route, &team.alice, Some(json!({}))).await;
    let alices = alices["id"].as_str().unwrap().to_owned();

    // Bob's personal read token (his own business) is his to see and revoke, and Alice's is not his.
    let (status, bobs) =
        tessera.native(Method::POST, "/tokens", &team.bob, Some(json!({"kind": "account", "rights": "read"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{bobs}");
    let bobs = bobs["id"].as_str().unwrap().to_owned();
    let (_, listed) = tessera.native(Method::GET, "/tokens", &team.bob, None).await;
    assert!(ids(&listed).contains(&bobs) && !ids(&listed).contains(&alices), "{listed}");
    let (status, _) = tessera.native(Method::GET, &format!("/tokens/{alices}"), &team.bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An account administrator and the API key see and may revoke every token of the account.
    let admin = tessera.admin_session().await;
    for manager in [&admin, &tessera.api_key] {
        let (status, _) = tessera.native(Method::GET, &format!("/tokens/{alices}"), manager, None).await;
        assert_eq!(status, StatusCode::OK);
        let (_, listed) = tessera.native(Method::GET, &route, manager, None).await;
        assert_eq!(ids(&listed), [alices.as_str()]);
    }
    // Alice, a team admin, does not see Bob's personal token (it is not scoped to her team's collections).
    let (status, _) = tessera.native(Method::GET, &format!("/tokens/{bobs}"), &team.alice, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = tessera.native(Method::DELETE, &format!("/tokens/{bobs}"), &team.bob, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "his own token is his to revoke");
    let (status, _) = tessera.native(Method::DELETE, &format!("{route}/{alices}"), &admin, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the account administrator revokes Alice's");

    // A read-only member asks for more than he has: refused by name.
    let (status, refused) = tessera
        .native(Method::POST, "/tokens", &team.bob, Some(json!({"kind": "collection", "collection": team.collection})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
}

#[tokio::test]
async fn horde_resource_tokens_follow_the_same_rule() {
    let tessera = TestServer::start().await;
    let team = team_with_a_member(&tessera).await;
    let horde = async |token: &str, method: Method, path: &str, body: Option<Value>| {
        tessera.call(method, path, &[("authorization", &format!("Bearer {token}"))], body).await
    };
    let resource = format!("/collections/{}", team.collection);
    let (status, refused) =
        horde(&team.bob, Method::POST, "/tokens", Some(json!({"resource": resource, "write": false}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member mints nothing on the collection: {refused}");
    let (status, alices) =
        horde(&team.alice, Method::POST, "/tokens", Some(json!({"resource": resource, "write": true}))).await;
    assert_eq!(status, StatusCode::CREATED, "{alices}");
    let id = {
        let (_, listed) = horde(&team.alice, Method::GET, "/tokens", None).await;
        listed["tokens"][0]["token"].as_str().unwrap().to_owned()
    };
    for method in [Method::GET, Method::DELETE] {
        let (status, _) = horde(&team.bob, method.clone(), &format!("/tokens/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    let (status, _) = horde(&team.bob, Method::PATCH, &format!("/tokens/{id}"), Some(json!({"write": false}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Alice may not turn her token into one for a node she does not reach.
    let (status, _) = horde(&team.alice, Method::PATCH, &format!("/tokens/{id}"), Some(json!({"resource": "/"}))).await;
    assert_eq!(status, StatusCode::OK, "a personal token for everything she reaches is hers to have");
    let (_, private) = horde(&team.bob, Method::GET, "/teams", None).await;
    let bobs_team = private["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["members"].as_array().unwrap().len() == 1)
        .expect("Bob's private team");
    let path = format!("/teams/{}", bobs_team["teamId"].as_str().unwrap());
    let (status, _) =
        horde(&team.alice, Method::PATCH, &format!("/tokens/{id}"), Some(json!({"resource": path}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "Bob's private team is not hers");
    // The API key is not a user's session: 401 on Horde's /tokens, whatever it could manage elsewhere; nor is a
    // session's secret sent as a token, in X-API-Token.
    let (status, _) = tessera.call(Method::GET, "/tokens", &[("x-api-token", &tessera.api_key)], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for method in [Method::GET, Method::POST] {
        let body = (method == Method::POST).then(|| json!({"resource": "/", "write": false}));
        let (status, _) = tessera.call(method.clone(), "/tokens", &[("x-api-token", &team.alice)], body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} with a session in X-API-Token");
    }
}

/// A device or collection the caller cannot read is, at its token routes, one that does not exist.
#[tokio::test]
async fn token_listings_do_not_confirm_nodes_the_caller_cannot_read() {
    let tessera = TestServer::start().await;
    let team = team_with_a_member(&tessera).await;
    let (carol, _) = tessera.user("carol@example.com", "correct horse battery").await;
    for route in [format!("/devices/{}/tokens", team.device), format!("/collections/{}/ground-tokens", team.collection)]
    {
        let (status, body) = tessera.native(Method::GET, &route, &carol, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{route}: {body}");
    }
    let (made_up, _) = tessera.native(Method::GET, "/devices/0000000000001/tokens", &carol, None).await;
    assert_eq!(made_up, StatusCode::NOT_FOUND, "the same answer as for a device that does not exist");
    let (status, _) = tessera.native(Method::GET, &format!("/devices/{}/tokens", team.device), &team.bob, None).await;
    assert_eq!(status, StatusCode::OK, "a member reads the device, so its listing is his (his own tokens)");
}

/// A review's find: a team admin widened, through a Horde PATCH, a token an account administrator made for her
/// collection to "/", where it reached all the administrator reaches. What a token becomes must stay within what
/// its changer manages.
#[tokio::test]
async fn a_team_admin_cannot_widen_an_administrators_token_beyond_her_collection() {
    let tessera = TestServer::start().await;
    let team = team_with_a_member(&tessera).await;
    let admin = tessera.admin_session().await;
    let horde = async |token: &str, method: Method, path: &str, body: Option<Value>| {
        tessera.call(method, path, &[("authorization", &format!("Bearer {token}"))], body).await
    };
    let resource = format!("/collections/{}", team.collection);
    let (status, minted) =
        horde(&admin, Method::POST, "/tokens", Some(json!({"resource": resource, "write": false}))).await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let secret = minted["token"].as_str().unwrap();
    for change in [
        json!({"resource": "/", "write": true}),
        json!({"resource": "/", "write": false}),
        json!({"resource": "/teams"}),
    ] {
        let (status, body) =
            horde(&team.alice, Method::PATCH, &format!("/tokens/{secret}"), Some(change.clone())).await;
        assert!(status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN, "{change}: {status} {body}");
    }
    let (_, fetched) = horde(&admin, Method::GET, &format!("/tokens/{secret}"), None).await;
    assert_eq!((&fetched["resource"], &fetched["write"]), (&json!(resource), &json!(false)), "unchanged: {fetched}");
    // Within her collection she may still change it (its tags, its write flag, a device of it).
    let (status, body) = horde(
        &team.alice,
        Method::PATCH,
        &format!("/tokens/{secret}"),
        Some(json!({"tags": {"name": "dashboard"}, "write": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
