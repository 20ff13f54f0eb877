//! JSON field selection (being built).
