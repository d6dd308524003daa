"""Every JSON report the test-suite writes is read through :func:`read_report`, which
validates it against the schema shipped in the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "memguard" / "schemas" / "pytest-report.schema.json"


def validate(doc: Any) -> Any:
    """``doc``, after checking it against ``memguard/schemas/pytest-report.schema.json``."""
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    return doc


def read_report(path: Path) -> Any:
    """The pytest report at ``path``, validated against the shipped schema."""
    return validate(json.loads(Path(path).read_text()))
