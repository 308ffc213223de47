"""lima.applied.json: the filled spec an instance last applied, and its intent generation.

Written when a boot is built from a spec (QemuDriver's BuildCidata) and when `limactl
apply` takes a change that needs no restart; read by `apply` / `diff` as the "old" side of
`lima.states.drift.classify`. Like kopf's last-handled configuration: the spec that runs,
not the file that may since have been edited. An instance made before this file existed
has none; callers then fall back to the stored lima.yaml and status.json's generation.

Shape: {"version": 1, "generation": "<sha256 of the intent>", "filled": {...},
"document": "<the lima.yaml text the boot was built from>"} ("document" is absent when
written without one: a live change, or a file from before it was recorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lima import paths
from lima.fsutil import atomic_write

VERSION = 1


@dataclass(frozen=True)
class Applied:
    generation: str
    filled: dict[str, Any]
    document: str | None = None  # the stored lima.yaml text this spec came from


def write_applied(inst: Path, generation: str, filled: dict[str, Any],
                  document: str | None = None) -> None:
    doc: dict[str, Any] = {"version": VERSION, "generation": generation, "filled": filled}
    if document is not None:
        doc["document"] = document
    atomic_write(inst / paths.APPLIED_SPEC,
                 json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")


def read_applied(inst: Path) -> Applied | None:
    """The recorded spec; None when there is none, or it cannot be read or trusted (the
    callers then fall back as for an instance made before this file existed)."""
    try:
        doc = json.loads((inst / paths.APPLIED_SPEC).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None
    gen, filled = doc.get("generation"), doc.get("filled")
    if not isinstance(gen, str) or not isinstance(filled, dict):
        return None
    document = doc.get("document")
    return Applied(gen, filled, document if isinstance(document, str) else None)
