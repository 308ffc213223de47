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
