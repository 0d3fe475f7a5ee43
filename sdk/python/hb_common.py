"""Helpers for hongbao plugins in Python (componentize-py). Each mirrors the Rust SDK helper of
the same name (sdk/src/helpers.rs) bit for bit, so a Python plugin gives the same answers as its
Rust twin. WIT s64/u64 are Python ints (range-checked by the bindings)."""
import re
from typing import Optional, Sequence

from componentize_py_types import Err
from wit_world.imports import types

U64 = (1 << 64) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def unsupported(message: str) -> Err:
    """Raise the result: `raise unsupported("...")` becomes the WIT `err(unsupported(..))`."""
    return Err(types.PluginError_Unsupported(message))


def invalid_input(message: str) -> Err:
    return Err(types.PluginError_InvalidInput(message))


def host_failed(message: str) -> Err:
    return Err(types.PluginError_HostFailed(message))


def other(message: str) -> Err:
    return Err(types.PluginError_Other(message))


def yuan(cents: int) -> str:
    """`yuan(888)` → "8.88", `yuan(-120)` → "-1.20" (abs first: Python's // and % floor)."""
    sign = "-" if cents < 0 else ""
    a = abs(cents)
    return f"{sign}{a // 100}.{a % 100:02d}"


def trunc_div(a: int, b: int) -> int:
    """Integer division rounding toward zero, as Rust's (Python's // rounds toward -inf)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class Rng:
    """splitmix64 seeded with the call's `random_seed`, like the SDK's `Rng`. Create one per call:
    the module-level `random` is seeded once per instance, so warm calls would continue its stream."""

    def __init__(self, seed: int):
        self.state = seed & U64

    @staticmethod
    def from_ctx(ctx: types.CallContext) -> "Rng":
        return Rng(ctx.random_seed)

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & U64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
        return z ^ (z >> 31)

    def range_i64(self, low: int, high: int) -> int:
        """Uniform in `low..=high`, Lemire's multiply-and-reject, as `Rng::range_i64`."""
        if low > high:
            raise AssertionError(f"Rng::range_i64: empty range `{low}..={high}`")
        span_minus_one = (high - low) & U64
        if span_minus_one == U64:
            v = self.next_u64()
            return v - (1 << 64) if v > I64_MAX else v
        span = span_minus_one + 1
        threshold = ((-span) & U64) % span
        while True:
            product = self.next_u64() * span
            if (product & U64) >= threshold:
                return low + (product >> 64)


def setting(ctx: types.CallContext, key: str) -> Optional[str]:
    """`ctx.settings` is a list of `(key, value)` tuples."""
    for name, value in ctx.settings:
        if name == key:
            return value
    return None


# Rust's `str::trim` strips Unicode White_Space; Python's `str.strip()` also strips U+001C..U+001F.
_WS = "\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
_TRIM = re.compile(f"^[{_WS}]+|[{_WS}]+$")
# Rust's `i64::from_str` / `u64::from_str`: optional sign, ASCII digits only (Python's int() also
# takes "1_000", surrounding spaces and non-ASCII digits).
_INT = re.compile(r"[+-]?[0-9]+")
_UINT = re.compile(r"\+?[0-9]+")


def rust_trim(s: str) -> str:
    return _TRIM.sub("", s)


def setting_i64(ctx: types.CallContext, key: str, default: int) -> int:
    """Setting `key` as an i64, `default` if unset; `invalid_input` naming key and value if not."""
    value = setting(ctx, key)
    if value is None:
        return default
    t = rust_trim(value)
    if _INT.fullmatch(t):
        n = int(t)
        if I64_MIN <= n <= I64_MAX:
            return n
    raise invalid_input(f"setting `{key}` must be an integer, got `{value}`")


def setting_u64(ctx: types.CallContext, key: str, default: int) -> int:
    """Setting `key` as a u64, `default` if unset; `invalid_input` naming key and value if not."""
    value = setting(ctx, key)
    if value is None:
        return default
    t = rust_trim(value)
    if _UINT.fullmatch(t):
        n = int(t)
        if n <= U64:
            return n
    raise invalid_input(f"setting `{key}` must be a non-negative integer, got `{value}`")


def _normalise(c: str) -> str:
    # ASCII-only folding, as Rust's `to_ascii_lowercase` (str.lower() would fold U+212A to "k").
    return "-" if c == "_" else (c.lower() if "A" <= c <= "Z" else c)


def _same(a: str, b: str) -> bool:
    return len(a) == len(b) and all(_normalise(x) == _normalise(y) for x, y in zip(a, b))


def _language(tag: str) -> int:
    for i, c in enumerate(tag):
        if c in "-_":
            return i
    return len(tag)


def pick_locale(requested: Optional[str], supported: Sequence[str], default: str) -> str:
    """Exact match, else the same language, else `default`; as the SDK's `pick_locale`."""
    if requested is None:
        return default
    requested = rust_trim(requested)
    if requested == "":
        return default
    lang = requested[: _language(requested)]
    for s in supported:
        if _same(s, requested):
            return s
    for s in supported:
        if _same(s, lang):
            return s
    for s in supported:
        if _same(s[: _language(s)], lang):
            return s
    return default


def _rust_debug_str(s: str) -> str:
    """Rust's `{:?}` of a string, for the common cases (Rust also escapes a few rarer
    unprintable code points)."""
    out = ['"']
    for c in s:
        code = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif c == "\n":
            out.append("\\n")
        elif c == "\0":
            out.append("\\0")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\u{{{code:x}}}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def host_error(err: Err) -> Err:
    """A host function's error (raised as `Err(HostError_…)`) as `PluginError::HostFailed`, with
    the message a Rust plugin writes (`format!("{e:?}")`, e.g. `HostError::Unavailable("…")`):

        try:
            taken = host.counter_add(name, 1, window_ms)
        except Err as e:
            raise host_error(e)
    """
    error = err.value
    name = "HostError::" + type(error).__name__.split("_", 1)[-1]
    value = getattr(error, "value", None)
    return host_failed(name if value is None else f"{name}({_rust_debug_str(str(value))})")
