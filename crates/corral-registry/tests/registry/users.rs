//! Console users: argon2id passwords, sessions with CSRF secrets, the bootstrap administrator.

use crate::common::*;
use corral_registry::prelude::*;
use corral_registry::{Role, SqliteRegistry};
use sqlx::Row;

#[tokio::test]
async fn users_sign_in_with_argon2id_passwords_and_sessions_end_with_a_new_password() {
    let f = fixture().await;
    let user = f.reg.create_user(&f.admin, "alice", "correct horse battery", Role::Operator, None).await.unwrap();
    assert_eq!((user.role, user.tenant), (Role::Operator, None));
    assert_bad_input(f.reg.create_user(&f.admin, "bob", "short", Role::Viewer, None).await);
    assert_bad_input(f.reg.create_user(&f.admin, "bad name", "long enough password", Role::Viewer, None).await);
    assert!(matches!(
        f.reg.create_user(&f.admin, "alice", "another long password", Role::Viewer, None).await,
        Err(corral_registry::RegistryError::Conflict(_))
    ));
    let stored: String =
        sqlx::query("SELECT password_hash FROM users WHERE name = 'alice'").fetch_one(&f.raw().await).await.unwrap().get(0);
    assert!(stored.starts_with("$argon2id$"), "{stored}");

    // Wrong password and unknown user: the same refusal.
    let wrong = f.reg.sign_in("alice", "wrong password!!").await.unwrap_err().to_string();
    let nobody = f.reg.sign_in("nobody", "wrong password!!").await.unwrap_err().to_string();
    assert_eq!(wrong, nobody);
    let session = f.reg.sign_in("alice", "correct horse battery").await.unwrap();
    let (principal, csrf) = f.reg.session(&session.secret).await.unwrap();
    assert_eq!((principal.name.as_str(), principal.role, csrf), ("alice", Role::Operator, session.csrf.clone()));
    // A new password ends every session; so does removing the user.
    // Changing one's own password from a session takes the current one.
    assert!(matches!(
        f.reg.set_user_password(&principal, "alice", "a brand new passphrase", None).await,
        Err(corral_registry::RegistryError::BadInput(_))
    ));
    assert_forbidden(f.reg.set_user_password(&principal, "alice", "a brand new passphrase", Some("not the password")).await);
    f.reg.session(&session.secret).await.expect("a refused change ends nothing");
    f.reg.set_user_password(&principal, "alice", "a brand new passphrase", Some("correct horse battery")).await.unwrap();
    assert_unauthenticated(f.reg.session(&session.secret).await);
    let again = f.reg.sign_in("alice", "a brand new passphrase").await.unwrap();
    f.reg.sign_out(&again.secret).await.unwrap();
    assert_unauthenticated(f.reg.session(&again.secret).await);

    // Only admins manage users; a tenant-scoped admin only its tenant's.
    let viewer = f.principal(Role::Viewer, None).await;
    assert_forbidden(f.reg.create_user(&viewer, "eve", "long enough password", Role::Admin, None).await);
    assert_forbidden(f.reg.set_user_password(&viewer, "alice", "long enough password", None).await);
    let acme_admin = f.principal(Role::Admin, Some("acme")).await;
    let scoped = f.reg.create_user(&acme_admin, "carol", "long enough password", Role::Viewer, None).await.unwrap();
    assert_eq!(scoped.tenant, Some(tenant_id("acme")));
    assert_eq!(f.reg.list_users(&acme_admin).await.unwrap().iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["carol"]);
    assert_not_found(f.reg.remove_user(&acme_admin, "alice").await);
    f.reg.remove_user(&f.admin, "alice").await.unwrap();
    assert_unauthenticated(f.reg.sign_in("alice", "a brand new passphrase").await);
    let log = f.reg.audit_log(&f.admin, 100).await.unwrap();
    for action in ["user.create", "user.password", "user.remove", "user.sign_in"] {
        assert!(log.iter().any(|e| e.action == action), "{action}");
    }
}

#[tokio::test]
async fn the_first_administrator_signs_in_with_the_bootstrap_token() {
    let reg = SqliteRegistry::open_in_memory().await.unwrap();
    let token = reg.bootstrap_admin(Some("bootstrap-secret-0001")).await.unwrap().unwrap();
    let session = reg.sign_in("admin", &token).await.unwrap();
    assert_eq!(session.principal.role, Role::Admin);
    assert!(reg.sign_in("admin", "anything else at all").await.is_err());

    // Revoking the bootstrap token (leaked, say) stops the same secret in the console too.
    let admin = reg.authenticate_api(&token).await.unwrap();
    let (_, other) = reg
        .create_api_token(&admin, corral_registry::NewApiToken { name: "ops".into(), role: Role::Admin, tenant: None })
        .await
        .unwrap();
    reg.revoke_api_token(&admin, admin.token_id).await.unwrap();
    assert!(reg.sign_in("admin", &token).await.is_err());
    assert!(reg.session(&session.secret).await.is_err(), "its sessions ended");
    // Another administrator sets a new password; it works.
    let ops = reg.authenticate_api(&other).await.unwrap();
    reg.set_user_password(&ops, "admin", "a fresh admin passphrase", None).await.unwrap();
    assert!(reg.sign_in("admin", "a fresh admin passphrase").await.is_ok());
}
