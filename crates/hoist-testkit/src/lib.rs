//! hoist's test kit: what hoist's tests (and benchmarks) use to judge it, kept out of the
//! library so that hoist itself has no test-only code or dependencies.
//!
//! - [`proxy`]: a fault-injecting HTTP/1.1 reverse proxy with a rules language (also the
//!   `hoist-faultproxy` binary), which also emulates the OCI referrers API.
//! - [`registry`], [`token`]: a throwaway CNCF distribution registry per test (plain, basic
//!   auth, bearer tokens from a [`token::TokenServer`], TLS).
//! - [`forward_proxy`]: a tiny CONNECT/HTTP forward proxy for proxy-environment tests.
//! - [`hfhub`]: a test server speaking the Hugging Face hub's HTTP API.
//! - [`webfiles`]: a plain web server (files with `ETag`/`Last-Modified`, `304`s, git over
//!   `git http-backend`), logging every request.
//! - [`fixtures`]: OCI layouts written by hand, the sample layout, file trees.
//! - [`tools`]: one sha256 helper, one skopeo helper, and [`require!`] / [`skip!`], which make a
//!   test that cannot run here say `SKIP <test>: why` instead of passing silently.
//!
//! - [`relay`]: a TCP relay adding delay, a per-connection window and a shared rate limit
//!   (also the `hoist-relay` binary), so that benchmarks see what a WAN does.
//! - [`conformance`]: the transport conformance suite; a transport runs it in one line.
//! - [`containerd`]: a throwaway containerd on a private socket (root only).
//! - [`gojudge`]: small judges built offline from Debian's Go library sources (Masterminds semver).
//!
//! Not for: use outside hoist's own tests; nothing here is a stable API (`publish = false`).
#![warn(missing_docs)]

pub mod conformance;
pub mod containerd;
pub mod dockerd;
pub mod fixtures;
pub mod forward_proxy;
pub mod gojudge;
pub mod hfhub;
pub mod hostile;
pub mod proxy;
pub mod registry;
pub mod relay;
pub mod schemas;
pub mod token;
pub mod tools;
pub mod webfiles;
