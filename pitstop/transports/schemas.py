"""The JSON Schemas of pitstop's HTTP bodies: the ``components.schemas`` of the OpenAPI
document (:mod:`pitstop.transports.openapi`). The V2 inference bodies follow KServe's Open
Inference Protocol document (``oip-rest-v2.yaml``); every error body is ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any, Final

Schema = dict[str, Any]

OBJECT: Final[Schema] = {"type": "object"}
_TENSOR_DATA: Final[Schema] = {
    "description": "Row-major elements: numbers, booleans or strings, flat or nested",
    "type": "array",
}
_PARAMETERS: Final[Schema] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
_TENSOR_METADATA: Final[Schema] = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}

SCHEMAS: Final[dict[str, Schema]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "MLflowError": {
        "type": "object",
        "required": ["error_code", "message"],
        "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    },
    "Predictions": {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {}},
    },
    "V1Predictions": {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {"predictions": {"type": "array"}, "outputs": {}},
    },
    "ScoringRequest": {
        "type": "object",
        "description": "One of dataframe_split, dataframe_records, instances, inputs (MLflow); "
        "instances or inputs (KServe V1)",
    },
    "V1Model": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _TENSOR_METADATA},
            "outputs": {"type": "array", "items": _TENSOR_METADATA},
        },
    },
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "registry": {"$ref": "#/components/schemas/RegistryContact"},
        },
    },
    "Live": {
        "type": "object",
        "required": ["live"],
        "properties": {
            "live": {"type": "boolean"},
            "registry": {"$ref": "#/components/schemas/RegistryContact"},
        },
    },
    "RegistryContact": {
        "description": "Whether this server reached the registry on its last read, and since "
        "when; a server keeps serving (and stays ready) while it cannot",
        "type": "object",
        "required": ["reachable", "since", "error"],
        "properties": {
            "reachable": {"type": "boolean"},
            "since": {"type": "string", "format": "date-time"},
            "error": {"type": ["string", "null"]},
        },
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {
                            "type": "string",
                            "enum": [
                                "BOOL",
                                "UINT8",
                                "UINT16",
                                "UINT32",
                                "UINT64",
                                "INT8",
                                "INT16",
                                "INT32",
                                "INT64",
                                "FP16",
                                "FP32",
                                "FP64",
                                "BYTES",
                            ],
                        },
                        "parameters": _PARAMETERS,
                        "data": _TENSOR_DATA,
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
                },
            },
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "datatype": {"type": "string"},
                        "parameters": _PARAMETERS,
                        "data": _TENSOR_DATA,
                    },
                },
            },
        },
    },
    "Statistics": {
        "type": "object",
        "required": ["model_stats"],
        "properties": {"model_stats": {"type": "array", "items": OBJECT}},
    },
    "RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "state"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string"},
                "reason": {"type": "string"},
            },
        },
    },
    "RegionList": {
        "type": "array",
        "description": "Registered shared-memory regions (CUDA: always empty, no GPU here)",
        "items": {
            "type": "object",
            "required": ["name", "byte_size"],
            "properties": {
                "name": {"type": "string"},
                "key": {"type": "string"},
                "offset": {"type": "integer"},
                "byte_size": {"type": "integer"},
            },
        },
    },
    "RegisterRegion": {
        "type": "object",
        "required": ["key", "byte_size"],
        "properties": {
            "key": {"type": "string", "description": "The shm_open name, such as /input0"},
            "offset": {"type": "integer", "minimum": 0},
            "byte_size": {"type": "integer", "minimum": 1},
        },
    },
    "GenerateRequest": {
        "type": "object",
        "description": "Each input by name, with its value (nesting gives the shape)",
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "description": "Request parameters; a key naming an input is that input",
            },
        },
        "additionalProperties": True,
    },
    "GenerateResponse": {
        "type": "object",
        "description": "Each output by name: a one-element output as its value, else lists",
        "required": ["model_name", "model_version"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "description": "A model name, or name@version"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer"},
            "user": {"type": "string"},
        },
    },
    "Embeddings": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": OBJECT},
            "model": {"type": "string"},
            "usage": OBJECT,
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": OBJECT}},
    },
}
