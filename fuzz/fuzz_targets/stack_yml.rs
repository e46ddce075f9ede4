//! The `stack.yml` parser (`stack::parse_stack_in`) on arbitrary text.
//!
//! Asserts, besides never panicking: what it accepts is a list of deployments sorted by
//! function name, without duplicates, each with a valid name and namespace, each
//! round-tripping through JSON (the API's wire form) unchanged; and each renders to a Nomad
//! job or fails with an error (never a panic). `environment_file` entries are resolved in a
//! scratch directory holding `common.yml`; an input that could name a file outside it (a
//! `/` or `\` anywhere, once it mentions `environment_file`) is skipped, so a fuzzed path
//! never reads a device such as `/dev/zero`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use faasgate::control::nomad::render::{render_job, RenderOptions};
use faasgate::model::names::FunctionKey;
use faasgate::model::stack::parse_stack_in;
use faasgate::model::types::FunctionDeployment;
use libfuzzer_sys::fuzz_target;

/// The scratch directory.
fn base_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // One fixed directory: runs rewrite the same file, nothing piles up.
        let dir = std::env::temp_dir().join("faasgate-fuzz-stack");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        std::fs::write(
            dir.join("common.yml"),
            "environment:\n  shared: \"yes\"\n  mode: http\n",
        )
        .expect("env file");
        dir
    })
}

/// The environment `${VAR}` reads.
fn env(name: &str) -> Option<String> {
    match name {
        "TAG" => Some("1.2.3".into()),
        "EMPTY" => Some(String::new()),
        "REGISTRY" => Some("ghcr.io/openfaas".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("environment_file") && text.contains(['/', '\\']) {
        return;
    }
    let Ok(deployments) = parse_stack_in(text, env, base_dir()) else {
        return;
    };
    let names: Vec<&str> = deployments.iter().map(|d| d.service.as_str()).collect();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "not sorted and unique: {names:?}"
    );
    let opts = RenderOptions::default();
    for d in &deployments {
        FunctionKey::new(&d.service, &d.namespace).expect("a valid function key");
        let json = serde_json::to_string(d).expect("serialises");
        let back: FunctionDeployment = serde_json::from_str(&json).expect("parses back");
        assert_eq!(&back, d, "the JSON round trip changed the deployment");
        let _ = render_job(d, 1, &opts);
    }
});
