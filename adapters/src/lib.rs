//! # hedgerow
//!
//! Membership and leader election for the instances of one service, built
//! on a lease in a shared store that stays safe under bounded clock
//! uncertainty. This crate is the facade over the sans-IO
//! [`hedgerow_core`]: for now it holds the lease stores ([`store`]); the
//! driver that runs a node over an async runtime, the transport and the
//! public API arrive in later releases.
#![deny(missing_docs)]

pub mod store;
