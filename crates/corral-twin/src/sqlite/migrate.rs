//! The twin database's schema steps, embedded so the binary carries its schema; applied by
//! [`corral_sqlite::migrate`].

use corral_sqlite::Migration;

/// Append only: a released migration is never edited, a change is a new file.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration { version: 1, sql: include_str!("../../migrations/0001_init.sql") }];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.first().is_some_and(|m| m.version == 1));
    }
}
