//! `/openapi.json` is a document client generators accept: valid OpenAPI 3.1 (checked
//! by `openapi-spec-validator`), unique operation ids, the bearer scheme on every `/v1`
//! operation, the error schema on every error answer, the batch answer as it is sent.
//! `make api-fuzz` sends generated requests from it to a live instance.

use std::collections::BTreeSet;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::keys::{ADMIN_KEY, Keyed, spawn_keyed_app};
use crate::common::verify::python;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

#[tokio::test]
async fn the_openapi_document_is_valid_and_complete() {
    let app = spawn_keyed_app().await;
    let (status, doc) = Keyed::new(&app, None).get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{doc}");

    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let name = format!("{method} {path}");
            match op["operationId"].as_str() {
                Some(id) if ids.insert(id.to_string()) => {}
                other => {
                    problems.push(format!("{name}: operationId {other:?} missing or repeated"))
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            if path.starts_with("/v1/") {
                if op["security"] != json!([{"bearer": []}]) {
                    problems.push(format!("{name}: security {}", op["security"]));
                }
                for status in ["400", "401", "403", "503"] {
                    if !responses.contains_key(status) {
                        problems.push(format!("{name}: no {status} answer"));
                    }
                }
            }
            for (status, response) in responses {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if status.starts_with('4') && schema != "#/components/schemas/ErrorBody" {
                    problems.push(format!("{name}: {status} without the error schema"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for route in ["/v1/api-keys", "/v1/api-keys/{id}"] {
        assert!(
            doc["paths"].get(route).is_some(),
            "{route} is not documented"
        );
    }
    let batch = &doc["paths"]["/v1/events/batch"]["post"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(batch, "#/components/schemas/BatchAnswer");
    assert!(doc["components"]["schemas"]["BatchAnswer"]["properties"]["results"].is_object());

    // The batch answer is what the document says: {"results": [...]}.
    let (status, answer) = Keyed::new(&app, Some(ADMIN_KEY))
        .post(
            "/v1/events/batch",
            json!({"events": [{"type": "a.b", "data": {}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"][0]["status"], 202, "{answer}");

    // And an independent validator accepts it.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap()).expect("write the document");
    let output = tokio::process::Command::new(python())
        .arg("-c")
        .arg(
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))\n",
        )
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run openapi-spec-validator");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true)
    );
}
