//! The `hoist-faultproxy` binary, run as the benchmarks run it (`env!("CARGO_BIN_EXE_…")`
//! names only a package's own binaries, so this test lives beside the binary, not in hoist's
//! test binary).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hoist_testkit::registry::TestRegistry;

#[test]
fn faultproxy_binary_serves_and_reports() {
    let reg = TestRegistry::plain();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoist-faultproxy"))
        .args(["--listen", "127.0.0.1:0", "--upstream", &reg.url(), "--log-requests"])
        .args(["--rules", "method=GET path=/v2/ nth=2 status=429"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addr = String::new();
    out.read_line(&mut addr).unwrap();
    let addr = addr.trim().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let codes: Vec<u16> = (0..3)
        .map(|_| {
            let o = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://{addr}/v2/"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).parse().unwrap()
        })
        .collect();
    assert_eq!(codes, [200, 429, 200]);

    // SAFETY: SIGTERM to the child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let mut summary = String::new();
    out.read_line(&mut summary).unwrap();
    assert!(child.wait().unwrap().success());
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["requests"], 3);
    assert_eq!(v["methods"]["GET"], 3);
    assert_eq!(v["rules"][0]["fired"], 1);
    assert_eq!(v["exchanges"][1], serde_json::json!(["GET", "/v2/", 429]));
}
