//! Registry behaviour against a real SQLite file in a temporary directory.

mod access;
mod common;
mod devices;
mod lifecycle;
mod tokens;
mod users;
