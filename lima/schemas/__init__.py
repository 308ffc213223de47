"""The spec layer: lima.yaml -> InstanceSpec. Pure: no processes, no sockets, no network.

Pipeline (`resolve`): templates.load_document (bases merged, `file:` inlined, line marks)
-> validate.check (schema + Lima's rules) -> defaults.fill (builtin defaults,
_config/default.yaml and override.yaml, {{.X}} expansion) -> validate.check again on the
filled document -> build.build_spec. Every verb that reads a lima.yaml goes through here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from lima import paths
from lima.errors import NotFoundError, Problem, SpecError
from lima.schemas import yamldump
from lima.schemas.build import build_spec
from lima.schemas.defaults import fill, load_configs, order_keys
from lima.schemas.lines import line_of
from lima.schemas.spec import InstanceSpec
from lima.schemas.templates import IMAGE_SUFFIX, Document, load_document, split_template_name

__all__ = [
    "Document",
    "Resolved",
    "dump_yaml",
    "generation",
    "load_instance",
    "name_from_locator",
    "resolve",
    "resolve_document",
]


@dataclass(frozen=True)
class Resolved:
    document: Document  # merged, self-contained: what `create` stores as lima.yaml
    filled: dict[str, Any]  # defaults filled: what `validate --fill` prints
    spec: InstanceSpec
    warnings: list[Problem] = field(default_factory=list)
    # The user's intent: the document and _config/{default,override}.yaml, before any host
    # fact (time zone, user, RAM) is filled in. `generation` hashes it.
    intent: dict[str, Any] = field(default_factory=dict)

    @property
    def generation(self) -> str:
        """What decides "changed": equal intents, equal generations, whatever the host."""
        return generation(self.intent)


def _check(data: dict[str, Any], lines: Any, source: str) -> list[Problem]:
    from lima.schemas import validate

    return validate.check(data, lines, source)


def resolve(locator: str, *, name: str | None = None, stdin: bytes | None = None,
            content: bytes | None = None) -> Resolved:
    """Load, validate, fill and build; SpecError carries every problem found. `content`:
    the bytes behind `locator` when the caller has them (see `load_document`)."""
    name = name or name_from_locator(locator)
    return resolve_document(load_document(locator, stdin=stdin, content=content), name)


def resolve_document(document: Document, name: str) -> Resolved:
    """`resolve` for a document already loaded (and maybe changed by edit flags)."""
    problems = _check(document.data, document.lines, document.source)
    errors = [p for p in problems if not p.warning]
    warnings = [p for p in problems if p.warning]
    if errors:
        raise SpecError(problems)
    fill_notes: list[Problem] = []
    configs = load_configs(paths.lima_home())
    filled = fill(document.data, name=name, lima_home=paths.lima_home(), warnings=fill_notes,
                  configs=configs)
    for note in fill_notes:
        file, line = line_of(document.lines, _parse_path(note.path), document.source)
        warnings.append(Problem(file, line, note.path, note.message, True))
    # Whether each param is used can only be judged before {{.Param.X}} is expanded: the
    # first check did that, so the second one's verdict on params is dropped.
    after = [
        p for p in _check(filled, document.lines, document.source)
        if not (p.path == "param" or p.path.startswith("param."))
    ]
    errors = [p for p in after if not p.warning]
    if errors:
        raise SpecError(errors + warnings)
    for problem in after:
        if problem not in warnings:
            warnings.append(problem)
    intent = {"document": _without_run_state(document.data), "default.yaml": configs[0],
              "override.yaml": configs[1]}
    return Resolved(document, filled, build_spec(filled, name), sorted(set(warnings)), intent)


def _without_run_state(data: dict[str, Any]) -> dict[str, Any]:
    """The document without `x-limapy.runState`: asking for another run state is not a new
    spec (a resume checks the saved state against the generation; it must still match)."""
    extra = data.get("x-limapy")
    if not isinstance(extra, dict) or "runState" not in extra:
        return data
    rest = {k: v for k, v in extra.items() if k != "runState"}
    out = {k: v for k, v in data.items() if k != "x-limapy"}
    if rest:
        out["x-limapy"] = rest
    return out


def _parse_path(text: str) -> tuple[str | int, ...]:
    """"provision[0].script" -> ("provision", 0, "script")."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


def load_instance(name: str) -> Resolved:
    """The stored `$LIMA_HOME/NAME/lima.yaml`, resolved again (defaults may have changed)."""
    path = paths.instance_dir(name) / paths.LIMA_YAML
    if not path.is_file():
        raise NotFoundError(f"instance {name!r} does not exist ({path} not found)")
    return resolve(str(path), name=name)


def name_from_locator(locator: str) -> str:
    """Lima's default instance name: `template:docker` -> docker, `dir/foo.yaml` -> foo,
    `-` -> default, an image file -> its name without the format suffix."""
    if locator == "-":
        return "default"
    template = split_template_name(locator)
    if template is not None:
        base = template.rstrip("/").rsplit("/", 1)[-1]
    else:
        base = locator.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if IMAGE_SUFFIX.search(base.lower()):
            return IMAGE_SUFFIX.sub("", base.lower())
    base = base.lower()
    for suffix in (".yml", ".yaml"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base


def generation(filled: dict[str, Any]) -> str:
    """The sha256 of the canonical JSON of a document: equal documents, equal hashes.
    `Resolved.generation` is this over the intent; over the filled document it is what
    limapy before the applied spec (lima.applied.json) recorded in status.json."""
    import hashlib  # deferred: OpenSSL's hashlib costs ~3 ms of start-up

    canonical = json.dumps(filled, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def dump_yaml(filled: dict[str, Any]) -> str:
    """Stable, human-readable YAML: top-level keys in Lima's default.yaml order."""
    return yamldump.dump(order_keys(filled))
