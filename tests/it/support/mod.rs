//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod action;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The local stack's settings, from `.stack/env` written by
/// `scripts/stack/up`. Panics with the fix when the stack is not up: the
/// tests never skip silently.
pub fn stack() -> &'static HashMap<String, String> {
    static STACK: OnceLock<HashMap<String, String>> = OnceLock::new();
    STACK.get_or_init(|| {
        let dir = std::env::var("STACK_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".stack"));
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("the local stack is not up ({}: {e}); run scripts/stack/up or the README's test command", path.display())
        });
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    })
}

/// One value of the stack's env file.
pub fn stack_var(key: &str) -> String {
    stack().get(key).cloned().unwrap_or_else(|| panic!("{key} missing from .stack/env"))
}
