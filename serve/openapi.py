"""Document the ``ead`` request object in vLLM's OpenAPI schema."""

from __future__ import annotations

from typing import Any

from ead_vllm.params import EADParams

EAD_SCHEMA_NAME = "EADParams"
EAD_PATHS = ("/v1/completions", "/v1/chat/completions")

EAD_DESCRIPTION = (
    "Exploratory annealed decoding for this request: the temperature of generated token t "
    "is temperature * max(1 + tau_max - exp(t / decay), tau_min) (1.0 before `warmup`), "
    "t counting from `offset` (for a rollout resumed from its partial output). "
    "An object sets the schedule (omitted fields take the server defaults), true uses the "
    "server defaults, false turns EAD off for this request. Same as the flat ead_* keys of "
    "vllm_xargs."
)


def _request_schema_names(schema: dict[str, Any]) -> list[str]:
    names = []
    for path in EAD_PATHS:
        content = (
            schema.get("paths", {}).get(path, {}).get("post", {}).get("requestBody", {})
        ).get("content", {})
        for media in content.values():
            for ref in _refs(media.get("schema", {})):
                names.append(ref.rsplit("/", 1)[-1])
    return names


def _refs(node: dict[str, Any]) -> list[str]:
    if "$ref" in node:
        return [node["$ref"]]
    return [
        r for key in ("anyOf", "oneOf", "allOf") for sub in node.get(key, []) for r in _refs(sub)
    ]


def add_ead_to_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` (an OpenAPI document) with an ``ead`` property on the
    completions and chat-completions request bodies and an ``EADParams`` component.
    The input is modified in place and returned."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    ead_schema = EADParams.model_json_schema(ref_template="#/components/schemas/{model}")
    ead_schema["description"] = EADParams.__doc__.split("\n\n")[0] if EADParams.__doc__ else ""
    components[EAD_SCHEMA_NAME] = ead_schema
    for name in _request_schema_names(schema):
        request = components.get(name)
        if request is None:
            continue
        request.setdefault("properties", {})["ead"] = {
            "anyOf": [
                {"$ref": f"#/components/schemas/{EAD_SCHEMA_NAME}"},
                {"type": "boolean"},
                {"type": "null"},
            ],
            "default": None,
            "title": "Ead",
            "description": EAD_DESCRIPTION,
        }
    return schema
