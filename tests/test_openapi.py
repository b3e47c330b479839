"""OpenAPI 3 at /openapi.json, from the schemas that validate requests; docs at /docs."""

from __future__ import annotations

import re

from workerrmq.api import schemas
from workerrmq.services.names import NAME_PATTERN


def spec_path(rule: str) -> str:
    """Flask's ``/a/<int:x>`` as OpenAPI's ``/a/{x}``."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_openapi_is_version_3_and_public(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "WorkerRMQ"
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]


def test_every_api_route_is_documented_with_its_methods(app, client):
    paths = client.get("/openapi.json").json["paths"]
    expected: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") or rule.endpoint.startswith("seed."):
            methods = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
            expected.setdefault(spec_path(rule.rule), set()).update(methods)
    assert len(expected) >= 15
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from /openapi.json"
        documented = set(paths[path]) - {"parameters"}
        assert methods <= documented, (path, methods, documented)


def test_request_schemas_are_the_validating_ones(client):
    spec = client.get("/openapi.json").json
    components = spec["components"]["schemas"]

    def body_schema(path: str, method: str = "post") -> dict:
        ref = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        return components[ref["$ref"].rsplit("/", 1)[1]]

    queue_create = body_schema("/api/v1/queues")
    assert queue_create["required"] == ["name"]
    assert set(queue_create["properties"]) == set(schemas.QueueCreate().fields)
    assert queue_create["properties"]["type"]["enum"] == ["classic", "quorum"]
    name = queue_create["properties"]["name"]
    assert (name["minLength"], name["maxLength"]) == (1, 255)
    assert name["pattern"] == NAME_PATTERN

    publish = body_schema("/api/v1/queues/{name}/messages")
    assert set(publish["properties"]) == set(schemas.PublishRequest().fields)
    assert publish["properties"]["priority"]["maximum"] == 255

    key_create = body_schema("/api/v1/keys")
    assert key_create["properties"]["scope"]["enum"] == ["read", "publish", "admin"]

    seed_publish = body_schema("/messagePublish")
    assert set(seed_publish["required"]) == {"queueName", "message"}
    assert seed_publish["properties"]["queueName"]["pattern"] == NAME_PATTERN


def test_responses_and_errors_are_documented(client):
    spec = client.get("/openapi.json").json
    create = spec["paths"]["/api/v1/queues"]["post"]["responses"]
    assert {"200", "201", "409"} <= set(create)
    publish = spec["paths"]["/api/v1/queues/{name}/messages"]["post"]["responses"]
    assert {"200", "201", "404"} <= set(publish)
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]


def test_query_parameters_are_documented(client):
    spec = client.get("/openapi.json").json
    params = {p["name"] for p in spec["paths"]["/api/v1/queues"]["get"]["parameters"]}
    assert {"name", "page", "page_size"} <= params


def test_docs_serve_html(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger" in page.lower()
    assert "openapi.json" in page
