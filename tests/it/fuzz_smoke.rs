//! A cheap stand-in for the fuzzers in `fuzz/` (which need nightly and cargo-fuzz): runs each
//! target body over its seed corpus and a few thousand mutated inputs from a fixed seed.
//! Passing means no panic.

#[path = "../../fuzz/bodies.rs"]
mod bodies;

use std::path::Path;

use rand::{Rng, SeedableRng};

const TOKENS: &[&[u8]] = &[
    b"..",
    b"/",
    b":",
    b"@",
    b"sha256:",
    b"sha512:",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"\\u0000",
    b"null",
    b"\"manifests\":",
    b"\"layers\":",
    b"\"size\":-1",
    b"\"size\":18446744073709551616",
    b"\"digest\":",
    b"\0",
    b"\xff",
    b"oci:",
    b"docker://",
    b"oci-archive:",
    b"[::1]",
    b"ustar\0",
    b"././@LongLink",
    b"Bearer ",
    b"realm=",
    b"=\"",
    b"<",
    b">",
    b"; rel=\"next\"",
    b"\"auths\":",
    b"\"auth\":\"",
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    v.push(Vec::new());
    v
}

fn mutate(rng: &mut rand::rngs::StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..6) {
        let len = d.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                d[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let i = rng.gen_range(0..=len);
                d.insert(i, rng.gen());
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                d.drain(a..b);
            }
            3 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                let i = rng.gen_range(0..=len);
                d.splice(i..i, t.iter().copied());
            }
            4 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 512));
                let piece = d[a..b].to_vec();
                let i = rng.gen_range(0..=len);
                d.splice(i..i, piece);
            }
            5 if len > 0 => {
                let i = rng.gen_range(0..len);
                d.truncate(i);
            }
            _ => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let i = rng.gen_range(0..=len);
                d.splice(i..i, other.iter().copied().take(rng.gen_range(0..=other.len())));
            }
        }
    }
    d
}

fn run(target: &str, body: fn(&[u8]), mutations: usize) {
    let seeds = seeds(target);
    for s in &seeds {
        body(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6f75_7a7a ^ target.len() as u64);
    for _ in 0..mutations {
        let input = mutate(&mut rng, &seeds);
        body(&input);
    }
    for _ in 0..mutations / 10 {
        let n = rng.gen_range(0..256);
        let input: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        body(&input);
    }
}

#[test]
fn fuzz_reference() {
    run("reference", bodies::reference, 20_000);
}

#[test]
fn fuzz_document() {
    run("document", bodies::document, 15_000);
}

#[test]
fn fuzz_digest() {
    run("digest", bodies::digest, 20_000);
}

#[test]
fn fuzz_tar() {
    run("tar", bodies::tar, 4000);
}

#[test]
fn fuzz_challenge() {
    run("challenge", bodies::challenge, 20_000);
}

#[test]
fn fuzz_link() {
    run("link", bodies::link, 20_000);
}

#[test]
fn fuzz_config() {
    run("config", bodies::config, 20_000);
}
