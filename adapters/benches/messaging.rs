//! Placeholder until the messaging benchmark lands.
fn main() {}
