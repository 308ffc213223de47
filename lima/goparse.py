"""Go's strconv, as far as Lima's command-line flags need it: how pflag parses an int,
uint16, float32, bool or IP flag value, prints it back (`%v`, `%q`), and the errors it
gives, so `limactl create --memory abc` fails with Lima's words.

Callers: lima.editflags (the edit flags) and lima.godur (durations). Pure: no I/O.
"""

from __future__ import annotations

import math
import re
import struct

_INT = re.compile(r"(0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|0(?:_?[0-7])*"
                  r"|[1-9](?:_?[0-9])*)")
_FLOAT = re.compile(r"(?:[0-9](?:_?[0-9])*)?(?:\.(?:[0-9](?:_?[0-9])*)?)?(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT = re.compile(r"0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?[pP][+-]?[0-9]+")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def quote(text: str) -> str:
    """Go's strconv.Quote (`%q`): double quotes, printable characters kept as they are."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(
                ch, f"\\x{ord(ch):02x}" if ord(ch) < 128 else f"\\u{ord(ch):04x}"))
    return '"' + "".join(out) + '"'


def backquote(text: str) -> str:
    """Go's `%#q`: back quotes when the text allows them, else `%q`."""
    if "`" not in text and all(ch.isprintable() for ch in text):
        return f"`{text}`"
    return quote(text)


def _syntax(func: str, text: str) -> ValueError:
    return ValueError(f"strconv.{func}: parsing {quote(text)}: invalid syntax")


def _range(func: str, text: str) -> ValueError:
    return ValueError(f"strconv.{func}: parsing {quote(text)}: value out of range")


def _digits(body: str) -> int:
    """The value of a literal `_INT` matched (base prefix, or 0 for octal)."""
    body = body.replace("_", "")
    if len(body) > 1 and body[0] == "0" and body[1] in "0123456789":
        return int(body[1:], 8)
    return int(body, 0)


def parse_int(text: str, bits: int = 64) -> int:
    """strconv.ParseInt(text, 0, bits): decimal, 0x, 0o, 0b or leading-0 octal."""
    sign, body = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if not _INT.fullmatch(body):
        raise _syntax("ParseInt", text)
    value = -_digits(body) if sign == "-" else _digits(body)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise _range("ParseInt", text)
    return value


def parse_uint(text: str, bits: int) -> int:
    """strconv.ParseUint(text, 0, bits): no sign allowed."""
    if not _INT.fullmatch(text):
        raise _syntax("ParseUint", text)
    value = _digits(text)
    if value >= 2**bits:
        raise _range("ParseUint", text)
    return value


def _to_float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def parse_float32(text: str) -> float:
    """strconv.ParseFloat(text, 32), rounded to float32."""
    body = text[1:] if text[:1] in ("+", "-") else text
    lower = body.lower()
    if lower in ("inf", "infinity", "nan"):
        return float(text.replace("inity", "")) if lower != "nan" else math.nan
    if _HEX_FLOAT.fullmatch(body):
        value = float.fromhex(text.replace("_", ""))
    elif _FLOAT.fullmatch(body) and any(c.isdigit() for c in body.split("e")[0].split("E")[0]):
        value = float(text.replace("_", ""))
    else:
        raise _syntax("ParseFloat", text)
    try:
        rounded = _to_float32(value)
    except OverflowError:
        rounded = math.inf
    if math.isinf(rounded):  # Go: ±Inf and ErrRange
        raise _range("ParseFloat", text)
    return rounded


def format_float32(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32): pflag's float32 printed back."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    for precision in range(1, 10):
        text = f"{abs(value):.{precision - 1}e}"
        if _to_float32(float(text)) == abs(value):
            break
    mantissa, exp_text = text.split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    exp = int(exp_text)
    sign = "-" if value < 0 else ""
    # Go's 'g' with the shortest precision: %e when the exponent is < -4 or >= 6.
    if exp < -4 or exp >= 6:
        frac = digits[1:]
        return (f"{sign}{digits[0]}{'.' + frac if frac else ''}e{'-' if exp < 0 else '+'}"
                f"{abs(exp):02d}")
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return f"{sign}{digits}{'0' * (exp + 1 - len(digits))}"
    return f"{sign}{digits[:exp + 1]}.{digits[exp + 1:]}"


def parse_bool(text: str) -> bool:
    """strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _syntax("ParseBool", text)


def parse_ip(text: str) -> str:
    """net.ParseIP(text).String(); ValueError when it is no IP address."""
    import ipaddress  # only --dns needs it

    if "%" in text:
        raise ValueError(text)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(text) from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
