//! A route cannot exist without its description in the OpenAPI document: `openapi::Api` is the
//! only place that mounts one, since it documents what it mounts. This test fails when code
//! anywhere else in the crate adds a route past it (axum's `.route`, `.nest`, `.merge`, or a
//! `MethodRouter` built with `get(...)`/`post(...)`).

use std::path::Path;

#[test]
fn routes_are_only_mounted_by_the_documenting_builder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".merge(",
        "routing::get(",
        "routing::post(",
        "routing::put(",
        "routing::patch(",
        "routing::delete(",
        "routing::any(",
        "routing::on(",
    ];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "openapi.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for pattern in forbidden {
                if line.contains(pattern) {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "routes mounted outside openapi::Api, so missing from the document:\n{}", found.join("\n"));
}

#[test]
fn the_document_is_complete_and_consistent() {
    let document = corral_http::openapi();
    let paths = document["paths"].as_object().unwrap();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(!summary.is_empty() && summary != "TODO", "{method} {path} has no summary");
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.keys().any(|s| s.starts_with('2') || s == "101"), "{method} {path} documents no success");
        }
    }
    // Every reference points at a schema the document has.
    let text = document.to_string();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("reference {target}"));
        assert!(schemas.contains_key(name), "reference to a missing schema {target}");
    }
}
