"""Human-readable YAML output shared by `validate --fill`, stored lima.yaml files and the
cloud-init seed: block style, `|` literals for multi-line strings, lists indented under
their key, no anchors/aliases (a reader should never have to chase `*id001`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class BlockDumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


BlockDumper.add_representer(str, _str_representer)


def dump(doc: Mapping[str, Any], *, width: int = 100) -> str:
    """`doc` as block-style YAML, keys in the order given."""
    text: str = yaml.dump(
        dict(doc),
        Dumper=BlockDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=width,
    )
    return text
