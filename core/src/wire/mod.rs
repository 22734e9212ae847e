//! Versioned wire formats. A field or enum value, once shipped, is never
//! renumbered or reused: new versions get a new module.

pub mod v1;
