//! Worker integration tests against real RabbitMQ, real Postgres with pgvector and the fake embedder over HTTP.
//! One test binary (compiled once); every test has its own queue prefix and database.

mod dead_letters;
mod end_to_end;
mod helpers;
mod idempotency;
mod limits;
mod ops;
mod provider;
mod reingest;
mod retention;
mod retries;
mod segments;
mod shutdown;
mod startup;
mod tls;
