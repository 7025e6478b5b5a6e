//! Teams own collections: admins reach them read-write, members read-only, and a token a user makes never
//! reaches further than the user does at the time of each use.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestServer;

#[tokio::test]
async fn a_member_reads_the_teams_collections_and_loses_them_when_removed() {
    let tessera = TestServer::start().await;
    let (ada, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let (bob, bob_id) = tessera.user("bob@example.com", "correct horse battery").await;

    let (status, team) = tessera
        .call(
            Method::POST,
            "/teams",
            &[("authorization", &format!("Bearer {ada}"))],
            Some(json!({"tags": {"Name": "Plant"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    assert_eq!(team["tags"], json!({"name": "Plant"}), "tag names are lower-cased");
    assert_eq!(team["members"][0]["role"], "Admin");
    let team_id = team["teamId"].as_str().unwrap();

    let (status, collection) =
        tessera.native(Method::POST, "/collections", &ada, Some(json!({"name": "Line 1", "team": team_id}))).await;
    assert_eq!(status, StatusCode::CREATED, "{collection}");
    let collection_id = collection["id"].as_str().unwrap();
    let (status, _) = tessera.native(Method::GET, &format!("/collections/{collection_id}"), &bob, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not a member yet");

    let bearer = |token: &str| format!("Bearer {token}");
    let (status, invite) = tessera
        .call(Method::POST, &format!("/teams/{team_id}/invites"), &[("authorization", &bearer(&ada))], None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    let (status, _) = tessera
        .call(Method::POST, &format!("/teams/{team_id}/invites"), &[("authorization", &bearer(&bob))], None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins invite");
    let (status, joined) = tessera
        .call(Method::POST, "/teams/accept", &[("authorization", &bearer(&bob))], Some(json!({"code": invite["code"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["members"].as_array().unwrap().len(), 2);
    let (status, _) = tessera
        .call(Method::POST, "/teams/accept", &[("authorization", &bearer(&bob))], Some(json!({"code": invite["code"]})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an invite serves once");
    let (_, withdrawn) = tessera
        .call(Method::POST, &format!("/teams/{team_id}/invites"), &[("authorization", &bearer(&ada))], None)
        .await;
    let code = withdrawn["code"].as_str().unwrap();
    let path = format!("/teams/{team_id}/invites/{code}");
    let (status, _) = tessera.call(Method::DELETE, &path, &[("authorization", &bearer(&bob))], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member cannot withdraw invites");
    let (status, _) = tessera.call(Method::DELETE, &path, &[("authorization", &bearer(&ada))], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, invites) = tessera
        .call(Method::GET, &format!("/teams/{team_id}/invites"), &[("authorization", &bearer(&ada))], None)
        .await;
    assert_eq!(invites["invites"].as_array().unwrap().len(), 1, "the accepted one remains listed: {invites}");

    // Bob reads the collection with his session and with a token he makes, and writes with neither. Minting a
    // token scoped to the collection is a change to it, which a member may not make; a token for everything he
    // reaches is his own business and reaches, at each use, what he reaches then.
    let (status, _) = tessera.native(Method::GET, &format!("/collections/{collection_id}"), &bob, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = tessera
        .native(Method::POST, "/tokens", &bob, Some(json!({"kind": "collection", "collection": collection_id})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, minted) = tessera.native(Method::POST, "/tokens", &bob, Some(json!({"kind": "account"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let bob_token = minted["secret"].as_str().unwrap();
    let (status, _) = tessera.ubidots(Method::GET, "/datasources", bob_token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = tessera.ubidots(Method::POST, "/devices/sensor", bob_token, Some(json!({"t": 1}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member's token cannot write");
    let (status, _) = tessera.native(Method::DELETE, &format!("/collections/{collection_id}"), &bob, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Ada's own token writes; an admin cannot change their own membership.
    let (_, ada_minted) = tessera
        .native(Method::POST, "/tokens", &ada, Some(json!({"kind": "collection", "collection": collection_id})))
        .await;
    let (status, _) = tessera
        .ubidots(Method::POST, "/devices/sensor", ada_minted["secret"].as_str().unwrap(), Some(json!({"t": 1})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ada_id = team["members"][0]["userId"].as_str().unwrap();
    let (status, _) = tessera
        .call(Method::DELETE, &format!("/teams/{team_id}/members/{ada_id}"), &[("authorization", &bearer(&ada))], None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Promoted, Bob's token writes at once; removed, it reaches nothing.
    let (status, member) = tessera
        .call(
            Method::PATCH,
            &format!("/teams/{team_id}/members/{bob_id}"),
            &[("authorization", &bearer(&ada))],
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["role"], "Admin");
    let (status, _) = tessera.ubidots(Method::POST, "/devices/sensor", bob_token, Some(json!({"t": 2}))).await;
    assert_eq!(status, StatusCode::OK);
    // Listings show a user only what their teams own, counts included.
    let account_token = tessera.account_token().await;
    tessera.ubidots(Method::POST, "/devices/elsewhere", &account_token, Some(json!({"t": 1}))).await;
    let (_, listed) = tessera.ubidots(Method::GET, "/datasources", &bob, None).await;
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["results"][0]["label"], "sensor");
    let (status, _) = tessera
        .call(Method::DELETE, &format!("/teams/{team_id}/members/{bob_id}"), &[("authorization", &bearer(&ada))], None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tessera.ubidots(Method::GET, "/devices/sensor/t/values", bob_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = tessera.native(Method::GET, &format!("/collections/{collection_id}"), &bob, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another user's token is not Bob's to see.
    let (status, _) =
        tessera.native(Method::GET, &format!("/tokens/{}", ada_minted["id"].as_str().unwrap()), &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn teams_list_update_and_delete_with_horde_shapes() {
    let tessera = TestServer::start().await;
    let (ada, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let auth = [("authorization", format!("Bearer {ada}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let (_, listed) = tessera.call(Method::GET, "/teams", &auth, None).await;
    assert_eq!(listed["teams"].as_array().unwrap().len(), 1, "the private team");
    let private = listed["teams"][0]["teamId"].as_str().unwrap().to_owned();
    assert!(listed["teams"][0].get("tags").is_none(), "empty tags are omitted");

    let (_, team) = tessera.call(Method::POST, "/teams", &auth, Some(json!({"tags": {"a": "1", "b": "2"}}))).await;
    let id = team["teamId"].as_str().unwrap();
    let (status, updated) =
        tessera.call(Method::PATCH, &format!("/teams/{id}"), &auth, Some(json!({"tags": {"a": "", "C": "3"}}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["tags"], json!({"b": "2", "c": "3"}));
    let (status, members) = tessera.call(Method::GET, &format!("/teams/{id}/members"), &auth, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(members["members"][0]["email"], "ada@example.com");

    let (status, error) = tessera.call(Method::DELETE, &format!("/teams/{private}"), &auth, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["status"], 409);
    let (status, _) = tessera.call(Method::DELETE, &format!("/teams/{id}"), &auth, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, error) = tessera.call(Method::GET, &format!("/teams/{id}"), &auth, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");

    let (status, error) = tessera.call(Method::GET, "/teams", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error, json!({"status": 401, "message": "Missing API Token"}));
}

#[tokio::test]
async fn teams_keep_an_admin_and_tokens_of_the_api_key_do_not_administer_them() {
    let tessera = TestServer::start().await;
    let (ada, ada_id) = tessera.user("ada@example.com", "correct horse battery").await;
    let (bob, bob_id) = tessera.user("bob@example.com", "correct horse battery").await;
    let ada_auth = [("authorization", format!("Bearer {ada}"))];
    let ada_auth: Vec<(&str, &str)> = ada_auth.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let bob_auth = [("authorization", format!("Bearer {bob}"))];
    let bob_auth: Vec<(&str, &str)> = bob_auth.iter().map(|(a, b)| (*a, b.as_str())).collect();

    // Ada invites Bob into her private team and makes him an admin; he still cannot demote her.
    let (_, teams) = tessera.call(Method::GET, "/teams", &ada_auth, None).await;
    let private = teams["teams"][0]["teamId"].as_str().unwrap().to_owned();
    let (_, invite) = tessera.call(Method::POST, &format!("/teams/{private}/invites"), &ada_auth, None).await;
    tessera.call(Method::POST, "/teams/accept", &bob_auth, Some(json!({"code": invite["code"]}))).await;
    let (status, _) = tessera
        .call(Method::PATCH, &format!("/teams/{private}/members/{bob_id}"), &ada_auth, Some(json!({"role": "admin"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = tessera
        .call(Method::PATCH, &format!("/teams/{private}/members/{ada_id}"), &bob_auth, Some(json!({"role": "member"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    let (status, _) =
        tessera.call(Method::DELETE, &format!("/teams/{private}/members/{ada_id}"), &bob_auth, None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A shared team keeps its last admin.
    let (_, team) = tessera.call(Method::POST, "/teams", &ada_auth, Some(json!({}))).await;
    let team_id = team["teamId"].as_str().unwrap();
    let (_, invite) = tessera.call(Method::POST, &format!("/teams/{team_id}/invites"), &ada_auth, None).await;
    tessera.call(Method::POST, "/teams/accept", &bob_auth, Some(json!({"code": invite["code"]}))).await;
    tessera
        .call(Method::PATCH, &format!("/teams/{team_id}/members/{bob_id}"), &ada_auth, Some(json!({"role": "admin"})))
        .await;
    let (status, _) = tessera
        .call(Method::PATCH, &format!("/teams/{team_id}/members/{ada_id}"), &bob_auth, Some(json!({"role": "member"})))
        .await;
    assert_eq!(status, StatusCode::OK, "two admins: one may go");
    let (status, error) = tessera
        .call(Method::PATCH, &format!("/teams/{team_id}/members/{bob_id}"), &ada_auth, Some(json!({"role": "member"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "ada is no longer an admin: {error}");

    // A token minted with the API key reaches the account's data, not its people.
    let account_token = tessera.account_token().await;
    let token_auth = [("x-api-token", account_token.as_str())];
    let (status, _) = tessera.call(Method::GET, &format!("/teams/{team_id}/members"), &token_auth, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = tessera
        .call(
            Method::PATCH,
            &format!("/teams/{team_id}/members/{bob_id}"),
            &token_auth,
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
