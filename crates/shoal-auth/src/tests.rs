use std::sync::Arc;

use shoal_store::MemoryStore;

use super::*;

const NOW: i64 = 1_700_000_000;
const ISSUER: &str = "https://127.0.0.1:7443/t/v2.0";

fn principal() -> Principal {
    Principal {
        oid: "oid-1".into(),
        tid: "tid-1".into(),
        appid: "app-1".into(),
        kind: PrincipalKind::ServicePrincipal,
    }
}

fn code(r: Result<Principal, VerifyFailure>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(VerifyFailure::Token(e)) => e.arm_code(),
        Err(VerifyFailure::Authority(_)) => "authority",
    }
}

#[tokio::test]
async fn tokens_verify_until_they_expire_and_only_for_arm_audiences() {
    let auth = Authority::new(Arc::new(MemoryStore::new()));
    let t = auth
        .issue(&principal(), ARM_AUDIENCES[0], ISSUER, NOW, 3600)
        .await
        .expect("issue");
    let p = auth
        .verify(&t.token, &ARM_AUDIENCES, NOW + 10)
        .await
        .expect("verify");
    assert_eq!(p, principal());
    // The audience without its trailing slash is the same audience.
    let t2 = auth
        .issue(
            &principal(),
            "https://management.azure.com",
            ISSUER,
            NOW,
            3600,
        )
        .await
        .expect("issue");
    assert_eq!(
        code(auth.verify(&t2.token, &ARM_AUDIENCES, NOW).await),
        "ok"
    );

    assert_eq!(
        code(auth.verify(&t.token, &ARM_AUDIENCES, NOW + 3600 + 31).await),
        "ExpiredAuthenticationToken"
    );
    let other = auth
        .issue(&principal(), "https://vault.azure.net", ISSUER, NOW, 3600)
        .await
        .expect("issue");
    assert_eq!(
        code(auth.verify(&other.token, &ARM_AUDIENCES, NOW).await),
        "InvalidAuthenticationTokenAudience"
    );
    assert_eq!(
        code(auth.verify("not a token", &ARM_AUDIENCES, NOW).await),
        "InvalidAuthenticationToken"
    );
    // A changed payload breaks the signature.
    let mut parts: Vec<String> = t.token.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert_eq!(
        code(auth.verify(&parts.join("."), &ARM_AUDIENCES, NOW).await),
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn tokens_carry_entra_claims_and_a_kid() {
    let auth = Authority::new(Arc::new(MemoryStore::new()));
    let t = auth
        .issue(&principal(), ARM_AUDIENCES[1], ISSUER, NOW, 60)
        .await
        .expect("issue");
    let header = jsonwebtoken::decode_header(&t.token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks = auth.jwks(NOW).await.expect("jwks");
    assert_eq!(jwks["keys"][0]["kid"], header.kid.expect("kid").as_str());
    let c = &t.claims;
    assert_eq!(
        (
            c.tid.as_str(),
            c.oid.as_str(),
            c.appid.as_str(),
            c.azp.as_str()
        ),
        ("tid-1", "oid-1", "app-1", "app-1")
    );
    assert_eq!((c.iat, c.nbf, c.exp), (NOW, NOW, NOW + 60));
}

#[tokio::test]
async fn servers_on_one_store_share_keys_and_rotation_keeps_old_tokens_valid() {
    let store: Arc<dyn shoal_store::Store> = Arc::new(MemoryStore::new());
    let a = Authority::new(store.clone());
    let b = Authority::new(store.clone());
    let old = a
        .issue(&principal(), ARM_AUDIENCES[0], ISSUER, NOW, 3600)
        .await
        .expect("issue");
    assert_eq!(code(b.verify(&old.token, &ARM_AUDIENCES, NOW).await), "ok");

    let ring = a.rotate(NOW + 100).await.expect("rotate");
    assert_eq!(ring.keys.len(), 2);
    let new = a
        .issue(&principal(), ARM_AUDIENCES[0], ISSUER, NOW + 100, 3600)
        .await
        .expect("issue");
    assert_ne!(new.token, old.token);
    // b learns the new key from the store; both tokens verify on both servers.
    for auth in [&a, &b] {
        assert_eq!(
            code(auth.verify(&new.token, &ARM_AUDIENCES, NOW + 200).await),
            "ok"
        );
        assert_eq!(
            code(auth.verify(&old.token, &ARM_AUDIENCES, NOW + 200).await),
            "ok"
        );
    }
    assert_eq!(
        b.jwks(NOW).await.expect("jwks")["keys"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Two rotations later the first key is gone.
    a.rotate(NOW + 300).await.expect("rotate");
    assert_eq!(
        code(a.verify(&old.token, &ARM_AUDIENCES, NOW + 300).await),
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn secrets_are_stored_hashed_and_checked() {
    let store: Arc<dyn shoal_store::Store> = Arc::new(MemoryStore::new());
    let dir = Directory::new(store.clone());
    let tenant = dir.tenant().await.expect("tenant");
    assert_eq!(tenant.default_subscription, directory::DEFAULT_SUBSCRIPTION);
    assert_eq!(dir.tenant().await.expect("again"), tenant);
    let subs = dir.subscriptions().await.expect("subs");
    assert_eq!(subs.len(), 1);

    let cred = dir
        .create_principal("ci", PrincipalKind::ServicePrincipal, NOW)
        .await
        .expect("create");
    let (kvs, _) = store.list("auth/").await.expect("list");
    assert!(kvs
        .iter()
        .all(|kv| !String::from_utf8_lossy(&kv.value).contains(&cred.secret)));
    let app = &cred.record.app_id;
    let ok = dir
        .check_secret(app, &cred.secret, NOW + 1)
        .await
        .expect("check");
    assert_eq!(ok.principal().tid, tenant.tenant_id);
    assert!(dir.check_secret(app, "wrong", NOW).await.is_err());
    assert!(dir
        .check_secret(app, &cred.secret, NOW + directory::SECRET_LIFETIME_SECS)
        .await
        .is_err());

    let reset = dir.reset_secret(app, NOW).await.expect("reset");
    assert!(dir.check_secret(app, &cred.secret, NOW).await.is_err());
    assert!(dir.check_secret(app, &reset.secret, NOW).await.is_ok());
    assert_eq!(
        dir.find_principal(&cred.record.object_id)
            .await
            .expect("find")
            .map(|p| p.app_id),
        Some(app.clone())
    );
    assert!(dir.delete_principal(app).await.expect("delete"));
    assert!(dir.check_secret(app, &reset.secret, NOW).await.is_err());
}
