"""The OpenAPI 3.1 document of pitstop's HTTP API, served at ``/openapi.json``.

Written by hand, as data: every route the app serves, and for each operation the statuses it can
return (tests/transports/test_openapi.py proves both against a running server, and the fuzz suite
checks every answer against it). The V2 data plane follows KServe's Open Inference Protocol
document (``oip-rest-v2.yaml``); pitstop's extensions (statistics, repository, admin, drift, cost,
OpenAI embeddings) are described the same way. Every error body is ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any, Final

from pitstop.transports.schemas import OBJECT, SCHEMAS, Schema

JSON: Final = "application/json"

ERROR_REASONS: Final = {
    400: "The request is malformed; the message names the field",
    401: "No valid bearer token",
    403: "The token lacks the scope this operation needs",
    404: "No such model, version or resource",
    409: "The operation conflicts with the model's state",
    413: "The body, or the memory it needs to decode, exceeds the server's limit",
    415: "The body's Content-Type is not one the route reads",
    429: "Too many requests wait; retry after the Retry-After header's seconds",
    501: "The request asks for something the model or server does not support",
    503: "Not ready: the model, version or server cannot serve now",
    504: "The request's deadline passed before it was served",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _parameter(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


MODEL: Final = _parameter("model", "The model's name")
VERSION: Final = _parameter("version", "A version number or an alias (production, staging, …)")
ACTION: Final = _parameter("action", "pause, resume or abort")
ALIAS: Final = _parameter("alias", "An alias name (production, staging, …)")
FILE: Final = _parameter("name", "console.js or console.css")


def _operation(
    summary: str,
    tag: str,
    success: Schema | None,
    errors: tuple[int, ...] = (),
    *,
    params: tuple[Schema, ...] = (),
    body: Schema | None = None,
    secured: bool = False,
    success_type: str = JSON,
    extra: dict[int, Schema] | None = None,
    openai: bool = False,
    mlflow: bool = False,
) -> Schema:
    """One operation: ``success`` is the 200 body's schema (None: any JSON object); errors are
    ``{"error": "..."}``, OpenAI's error object when ``openai``, MLflow's when ``mlflow``."""
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {success_type: {"schema": success if success is not None else OBJECT}},
        }
    }
    for status, schema in (extra or {}).items():
        responses[str(status)] = {"description": "Answered", "content": {JSON: {"schema": schema}}}
    for status in errors:
        kind = "OpenAI" if openai else "MLflow" if mlflow else "E"
        responses[str(status)] = {"$ref": f"#/components/responses/{kind}{status}"}
    operation: Schema = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if secured:
        operation["security"] = [{"token": []}]
    return operation


def _v2_data_plane() -> dict[str, Schema]:
    versioned = "/v2/models/{model}/versions/{version}"
    infer_errors = (400, 404, 413, 429, 501, 503, 504)
    generate_errors = (400, 404, 413, 429, 503, 504)  # JSON values: no datatype goes unserved
    paths: dict[str, Schema] = {
        "/v2/health/live": {"get": _operation("Server liveness", "health", _ref("Live"))},
        "/v2/health/ready": {
            "get": _operation(
                "Server readiness", "health", _ref("Ready"), extra={503: _ref("Ready")}
            )
        },
        "/v2": {"get": _operation("Server metadata", "metadata", _ref("ServerMetadata"))},
        "/v2/": {"get": _operation("Server metadata", "metadata", _ref("ServerMetadata"))},
        "/v2/models/stats": {
            "get": _operation("Statistics of every model", "statistics", _ref("Statistics"))
        },
        "/v2/repository/index": {
            "post": _operation(
                "The repository's models and their states",
                "repository",
                _ref("RepositoryIndex"),
                (400,),
            )
        },
    }
    for prefix, params in (("/v2/models/{model}", (MODEL,)), (versioned, (MODEL, VERSION))):
        paths[prefix] = {
            "get": _operation(
                "Model metadata", "metadata", _ref("ModelMetadata"), (404, 503), params=params
            )
        }
        paths[prefix + "/ready"] = {
            "get": _operation(
                "Model readiness: 404 unknown, 503 known but not ready",
                "health",
                _ref("Ready"),
                (404,),
                params=params,
                extra={503: _ref("Ready")},
            )
        }
        paths[prefix + "/config"] = {
            "get": _operation("Model configuration", "metadata", None, (404, 503), params=params)
        }
        paths[prefix + "/infer"] = {
            "post": _operation(
                "Inference",
                "inference",
                _ref("InferenceResponse"),
                infer_errors,
                params=params,
                body=_ref("InferenceRequest"),
            )
        }
        paths[prefix + "/stats"] = {
            "get": _operation("Statistics", "statistics", _ref("Statistics"), (404,), params=params)
        }
        paths[prefix + "/generate"] = {
            "post": _operation(
                "Generate (Triton's generate extension): one response as flat JSON",
                "inference", _ref("GenerateResponse"), generate_errors, params=params,
                body=_ref("GenerateRequest"),
            )
        }  # fmt: skip
        paths[prefix + "/generate_stream"] = {
            "post": _operation(
                "Generate: every response as a server-sent event (data: {json})",
                "inference", {"type": "string"}, generate_errors, params=params,
                body=_ref("GenerateRequest"), success_type="text/event-stream",
            )
        }  # fmt: skip
    # A load waits for the versions and answers 503 naming a failure; an unload cannot fail.
    for action, failures in (("load", (400, 401, 403, 404, 503)), ("unload", (400, 401, 403, 404))):
        paths[f"/v2/repository/models/{{model}}/{action}"] = {
            "post": _operation(
                f"{action.capitalize()} a model's versions",
                "repository",
                None,
                failures,
                params=(MODEL,),
                secured=True,
            )
        }
    return paths


def _secured(
    summary: str,
    tag: str,
    errors: tuple[int, ...],
    params: tuple[Schema, ...] = (MODEL,),
    body: Schema | None = None,
) -> Schema:
    """A management operation: bearer token, any JSON object back."""
    return _operation(summary, tag, None, errors, params=params, body=body, secured=True)


def _management() -> dict[str, Schema]:
    prefix = "/v2/pitstop/models/{model}"
    refused = (401, 403, 404)
    changes = (400, 401, 403, 404)
    conflicts = (*changes, 409)  # a rollout's state forbids it
    return {
        prefix + "/traffic": {
            "get": _secured("The traffic policy", "admin", refused),
            "put": _secured("Set the traffic policy", "admin", changes, body=OBJECT),
        },
        prefix + "/deploy": {
            "post": _secured("Start a progressive rollout", "admin", conflicts, body=OBJECT)
        },
        prefix + "/rollout/{action}": {
            "post": _secured(
                "Pause, resume or abort the rollout", "admin", conflicts, params=(MODEL, ACTION)
            )
        },
        prefix + "/rollback": {
            "post": _secured("Point production back at the previous version", "admin", changes)
        },
        prefix + "/drift": {"get": _secured("Input drift per version", "observability", refused)},
        "/v2/models/{model}/feedback": {
            "post": _operation(
                "Feedback on predictions: {id, label | value | reward, at?, row?}, one, a list or "
                "{feedback: [...]} (404: none of the ids is known; 400 names the bad field)",
                "experiments",
                None,
                (400, 404),
                params=(MODEL,),
                body=OBJECT,
            )
        },
        "/v2/models/{model}/outcomes": {
            "get": _secured(
                "Outcome metrics per version and arm with confidence intervals",
                "experiments",
                (400, 401, 403, 404),
            )
        },
        "/v2/models/{model}/ab": {
            "get": _secured(
                "A/B verdicts: each arm against the first (mSPRT)",
                "experiments",
                (400, 401, 403, 404),
            )
        },
        "/v2/pitstop/cost": {
            "get": _secured("Cost per version", "observability", (400, 401, 403, 404), params=())
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                "observability",
                {"type": "string"},
                (404,),
                success_type="text/plain",
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "OpenAI-compatible embeddings",
                "openai",
                _ref("Embeddings"),
                (400, 404, 413, 429, 503),
                body=_ref("EmbeddingsRequest"),
                openai=True,
            )
        },
        "/v1/models": {
            "get": _operation("OpenAI-compatible model list", "openai", _ref("ModelList"))
        },
        "/openapi.json": {"get": _operation("This document", "metadata", None)},
        **_scoring(),
    }


def _scoring() -> dict[str, Schema]:
    """MLflow's scoring protocol and KServe V1 (transports/scoring.py)."""
    versioned = "/v2/models/{model}/versions/{version}/invocations"
    body, text = _ref("ScoringRequest"), "text/plain"

    def invocations(errors: tuple[int, ...], *params: Schema) -> Schema:
        return _operation(
            "MLflow scoring: JSON (dataframe_split, dataframe_records, instances, inputs) or "
            "CSV in, predictions out",
            "mlflow", _ref("Predictions"), errors, params=params, body=body, mlflow=True,
        )  # fmt: skip

    def health() -> Schema:
        return _operation(
            "MLflow scoring server health (the server is ready)",
            "mlflow", {"type": "string"}, (503,), success_type=text, mlflow=True,
        )  # fmt: skip

    return {
        "/invocations": {"post": invocations((400, 404, 415))},
        "/v2/models/{model}/invocations": {"post": invocations((400, 404, 413, 415, 503), MODEL)},
        versioned: {"post": invocations((400, 404, 415), MODEL, VERSION)},
        "/ping": {"get": health()},
        "/health": {"get": health()},
        "/version": {
            "get": _operation(
                "The server's version", "mlflow", {"type": "string"}, success_type=text
            )
        },
        "/v1/models/{model}:predict": {
            "post": _operation(
                "KServe V1 / TF Serving predict: instances → predictions, inputs → outputs",
                "v1",
                _ref("V1Predictions"),
                (400, 404, 413, 503),
                params=(MODEL,),
                body=body,
            )
        },
        "/v1/models/{model}": {
            "get": _operation(
                "KServe V1 model status (also an OpenAI model object)",
                "v1",
                _ref("V1Model"),
                (404,),
                params=(MODEL,),
                extra={503: _ref("V1Model")},
            )
        },
    }


def _shared_memory() -> dict[str, Schema]:
    """The system shared-memory extension (and the CUDA one, which has no GPU to offer)."""
    region = _parameter("name", "The region's name")
    paths: dict[str, Schema] = {}
    for kind in ("system", "cuda"):
        base = f"/v2/{kind}sharedmemory"
        named = base + "/region/{name}"
        paths[base + "/status"] = {
            "get": _operation("Every registered region", "shared memory", _ref("RegionList"))
        }
        paths[named + "/status"] = {
            "get": _operation(
                "One registered region", "shared memory", _ref("RegionList"), (404,),
                params=(region,),
            )
        }  # fmt: skip
        paths[named + "/register"] = {
            "post": _operation(
                "Register a region", "shared memory", None, (400,), params=(region,),
                body=_ref("RegisterRegion") if kind == "system" else None,
            )
        }  # fmt: skip
        if kind == "cuda":  # no GPU: a CUDA region is never registered, never found
            del paths[named + "/status"]["get"]["responses"]["200"]
            del paths[named + "/register"]["post"]["responses"]["200"]
        paths[base + "/unregister"] = {
            "post": _operation("Unregister every region", "shared memory", None)
        }
        paths[named + "/unregister"] = {
            "post": _operation(
                "Unregister a region", "shared memory", None,
                (404,) if kind == "system" else (), params=(region,),
            )
        }  # fmt: skip
    return paths


def _catalog() -> dict[str, Schema]:
    """The catalog routes (transports/catalog.py) and the console's files."""
    prefix = "/v2/pitstop/models/{model}"
    page = {"type": "string"}
    return {
        "/v2/pitstop/whoami": {
            "get": _secured(
                "The caller's principal, scopes and whether it may act",
                "catalog",
                (401, 403),
                params=(),
            )
        },
        "/v2/pitstop/overview": {
            "get": _secured(
                "Every model: what serves, traffic, rollout, health, rates",
                "catalog",
                (401, 403),
                params=(),
            )
        },
        "/v2/pitstop/live": {
            "get": _secured(
                "The last hour of rate, errors and p50/p95/p99 per model (?model=&since=)",
                "catalog",
                (400, 401, 403),
                params=(),
            )
        },
        prefix + "/versions": {
            "get": _secured(
                "Versions with lineage, manifest and signatures", "catalog", (401, 403, 404)
            )
        },
        prefix + "/history": {
            "get": _secured(
                "Audit events with the traffic split each left, and the timeline (?limit=&since=)",
                "catalog",
                (400, 401, 403, 404),
            )
        },
        prefix + "/aliases/{alias}": {
            "put": _secured(
                "Point an alias at a version: {version, reason}",
                "catalog",
                (400, 401, 403, 404),
                params=(MODEL, ALIAS),
                body=OBJECT,
            )
        },
        "/console": {
            "get": _operation(
                "The web console (no credentials: it asks for a token)",
                "console",
                page,
                success_type="text/html",
            )
        },
        "/console/{name}": {
            "get": _operation(
                "The console's script and style sheet",
                "console",
                page,
                (404,),
                params=(FILE,),
                success_type="text/javascript",
            )
        },
    }


def document(server_version: str) -> Schema:
    """The OpenAPI document of a pitstop server of ``server_version``."""
    responses = {
        f"{kind}{status}": {
            "description": reason,
            "content": {JSON: {"schema": _ref(schema)}},
        }
        for status, reason in ERROR_REASONS.items()
        for kind, schema in (("E", "Error"), ("OpenAI", "OpenAIError"), ("MLflow", "MLflowError"))
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pitstop",
            "version": server_version,
            "description": "Open Inference Protocol (V2) REST data plane, with pitstop's "
            "management, observability and OpenAI-compatible routes.",
        },
        "paths": {**_v2_data_plane(), **_management(), **_catalog(), **_shared_memory()},
        "components": {
            "schemas": SCHEMAS,
            "responses": responses,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
