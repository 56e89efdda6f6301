"""A materialized feature set version is immutable: what determines its stored values is pinned
by a fingerprint, kept as properties of its Delta table.

The definition covers the entities, the source's schema and event time, the features and
their types, the aggregates, the transform's code, the windows and the lookbacks and delays.
Descriptions, owners, tags, quality rules and schedule settings are not part of it: changing
them does not change a single stored value.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
from typing import Any

from feature_pipelines.spec.feature_set import FeatureSet

FINGERPRINT_PROPERTY = "featurestore.fingerprint"
DEFINITION_PROPERTY = "featurestore.definition"


def definition(feature_set: FeatureSet) -> dict[str, Any]:
    """The parts of a spec that determine its stored values, as plain JSON-able data."""
    source = feature_set.source
    return {
        "entities": [[e.name, e.dtype] for e in feature_set.entities],
        "source": {"name": source.name, "timestamp": source.timestamp, "timezone": source.timezone,
                   "columns": dict(sorted(source.columns.items())), "format": source.format},
        "timestamp": feature_set.timestamp,
        "features": [[f.name, f.dtype] for f in feature_set.features],
        "aggregates": [[a.function, a.column, list(a.windows), a.name] for a in feature_set.aggregates],
        "transform": _code_of(feature_set.transform) if feature_set.transform is not None else None,
        "partitions": {"cadence": feature_set.partitions.cadence, "start": feature_set.partitions.start.isoformat()},
        "source_lookback": feature_set.source_lookback,
        "source_delay": feature_set.source_delay,
        "temporal_join_lookback": feature_set.temporal_join_lookback,
    }


def fingerprint_of(described: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(feature_set: FeatureSet) -> str:
    return fingerprint_of(definition(feature_set))


def changed_fields(stored: dict[str, Any], feature_set: FeatureSet) -> list[str]:
    """Which top-level parts of the definition differ from the stored one."""
    current = definition(feature_set)
    return sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))


def _code_of(transform: Any) -> str:
    """A hash of the transform's syntax tree: edits to comments, layout or its name do not count,
    edits to what it computes do. Functions it calls are not followed; put all logic that matters in it,
    or bump the version when a helper changes."""
    try:
        parsed = ast.parse(textwrap.dedent(inspect.getsource(transform)))
        for node in parsed.body[:1]:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.name = ""  # renaming the function changes nothing it computes
        tree = ast.dump(parsed)
    except (OSError, TypeError, SyntaxError):
        # No source (a lambda built at run time, a C function): fall back to the compiled code.
        code = getattr(transform, "__code__", None)
        tree = repr((code.co_code, code.co_consts, code.co_names)) if code is not None else repr(transform)
    return hashlib.sha256(tree.encode()).hexdigest()[:16]
