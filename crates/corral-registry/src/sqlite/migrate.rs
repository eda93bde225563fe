//! The registry's schema steps, embedded so the binary carries its schema; applied by
//! [`corral_sqlite::migrate`] (all pending ones in one transaction, foreign keys checked).

use corral_sqlite::Migration;

/// Append only: a released migration is never edited, a change is a new file.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") },
    Migration { version: 2, sql: include_str!("../../migrations/0002_certificates.sql") },
    Migration { version: 3, sql: include_str!("../../migrations/0003_psk.sql") },
    Migration { version: 4, sql: include_str!("../../migrations/0004_users.sql") },
    Migration { version: 5, sql: include_str!("../../migrations/0005_device_indexes.sql") },
    Migration { version: 6, sql: include_str!("../../migrations/0006_broker_users.sql") },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.first().is_some_and(|m| m.version == 1));
    }
}
