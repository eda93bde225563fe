use corral_model::{DeviceId, TenantId};
use corral_registry::prelude::*;
use corral_registry::{NewApiToken, NewDevice, Principal, RegistryError, Role, SqliteRegistry};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::path::PathBuf;
use tempfile::TempDir;

pub struct Fixture {
    // Held so the directory outlives the registry.
    pub _dir: TempDir,
    pub path: PathBuf,
    pub reg: SqliteRegistry,
    pub admin: Principal,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("registry.db");
    let reg = SqliteRegistry::open(&path).await.unwrap();
    let secret = reg.bootstrap_admin(None).await.unwrap().expect("first start creates the admin");
    let admin = reg.authenticate_api(&secret).await.unwrap();
    Fixture { _dir: dir, path, reg, admin }
}

impl Fixture {
    /// A principal with `role`, optionally scoped, created through the API like a real one.
    pub async fn principal(&self, role: Role, tenant: Option<&str>) -> Principal {
        let (_, secret) = self
            .reg
            .create_api_token(
                &self.admin,
                NewApiToken { name: format!("{role}-{tenant:?}"), role, tenant: tenant.map(tenant_id) },
            )
            .await
            .unwrap();
        self.reg.authenticate_api(&secret).await.unwrap()
    }

    /// A second, independent connection to the same file, for reading tables raw.
    pub async fn raw(&self) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(&self.path)).await.unwrap()
    }

    pub async fn device(&self, id: &str, tenant: &str) -> String {
        let mut new = nd(id);
        new.tenant = Some(tenant_id(tenant));
        self.reg.create_device(&self.admin, new).await.unwrap().1
    }
}

pub fn nd(id: &str) -> NewDevice {
    NewDevice::new(DeviceId::new(id).unwrap())
}

pub fn tenant_id(t: &str) -> TenantId {
    TenantId::new(t).unwrap()
}

pub fn did(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

#[track_caller]
pub fn assert_forbidden<T: std::fmt::Debug>(r: Result<T, RegistryError>) {
    assert!(matches!(r, Err(RegistryError::Forbidden(_))), "expected Forbidden, got {r:?}");
}

#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(r: Result<T, RegistryError>) {
    assert!(matches!(r, Err(RegistryError::NotFound(_))), "expected NotFound, got {r:?}");
}

#[track_caller]
pub fn assert_bad_input<T: std::fmt::Debug>(r: Result<T, RegistryError>) {
    assert!(matches!(r, Err(RegistryError::BadInput(_))), "expected BadInput, got {r:?}");
}

#[track_caller]
pub fn assert_unauthenticated<T: std::fmt::Debug>(r: Result<T, RegistryError>) {
    assert!(matches!(r, Err(RegistryError::Unauthenticated(_))), "expected Unauthenticated, got {r:?}");
}
