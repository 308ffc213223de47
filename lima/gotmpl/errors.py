"""The errors and sentinel values shared by the Go template parser and executor."""

from __future__ import annotations

NO_VALUE = "<no value>"


class TemplateError(ValueError):
    """The text cannot be processed as a template (parse or execution error)."""


class _Missing:
    """Go's invalid reflect.Value: a missing map key. Prints `<no value>`, is false."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING = _Missing()


class Struct(dict[str, object]):
    """A Go struct as template data: its fields by Go name; a field it lacks is an error
    (Go: "can't evaluate field X in type T"), where a map's missing key prints <no value>.
    `as_json` is what the `json` and `yaml` functions print for it (Lima's JSON names)."""

    def __init__(self, fields: dict[str, object], type_name: str, as_json: object) -> None:
        super().__init__(fields)
        self.type_name = type_name
        self.as_json = as_json
