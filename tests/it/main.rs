//! hoist's integration tests, one binary with a module per area (`cargo test --test it`,
//! `cargo test --test it -- push::` for one area). What they start and judge with (registry,
//! token server, fault proxy, fixtures, tools, the conformance suite) is the test kit,
//! `crates/hoist-testkit`; [`common`] adds the `hoist` binary of this run.

mod common;
mod support;

mod archive;
mod archive_security;
mod attest;
mod bigtransfer;
mod build;
mod carbon_copy;
mod cli_build;
mod cli_export;
mod cli_help;
mod cli_login;
mod cli_new;
mod cli_outputs;
mod cli_progress;
mod cli_store;
mod cli_surprise;
mod cli_trust;
mod cnab;
mod conformance;
mod convert;
mod crash;
mod creds_isolation;
mod dockerfile;
mod dockerfile_buildkit;
mod dockerfile_cache;
mod dockerfile_parity;
mod dockerfile_remote;
mod dockerfile_safety;
mod edit;
mod faults;
mod fuzz_smoke;
mod hostile;
mod index;
mod json_docs;
mod lazy;
mod model;
mod model_convert;
mod model_hf;
mod model_signing;
mod names;
mod push;
mod rebase;
mod referrers_api;
mod referrers_copy;
mod reflink;
mod registry_ops;
mod registry_security;
mod roundtrip;
mod runtime;
mod sbom;
mod schemas;
mod signing;
mod store_security;
mod sync;
mod tls;
mod token_auth;
mod unpack_links;
