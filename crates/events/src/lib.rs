//! The seams between coordinator and workers: versioned message types, the `Broker` trait (Kafka,
//! in memory) and the `Store` trait (Redis, in memory). The engine and the distributed mode add
//! them; until then this crate only fixes the dependency direction
//! `agency -> events -> taskgroup -> expansion`.

pub use taskgroup;
