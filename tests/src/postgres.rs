//! A real PostgreSQL for the tests (see the `txmirror-pg` crate, which the
//! demo uses too).

pub use txmirror_pg::LocalPostgres as TestPostgres;
