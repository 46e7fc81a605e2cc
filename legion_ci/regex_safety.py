"""Refuse regular expressions that Python's backtracking engine could take forever on.

A registration's `arguments` schema may hold `pattern`s, which jsonschema and the fast path
(fastjsonschema) both match with `re.search` on values from the pipeline (up to 1 MiB). With
`(a+)+$` one 30-character value takes minutes; with two unbounded repeats (`^.*a.*b$`, or an
unanchored `[a-z]+!`, which is tried from every start) a 100 KB value takes seconds, 1 MB hours.

The check is structural and conservative, on the parsed pattern: the worst number of ways a
backtracking matcher can try is bounded by the product of the choices each part offers. An
unanchored pattern or a repeat above MAX_BOUNDED counts as one factor of n (the value's length),
and at most one such factor is allowed, so the work stays linear in the value; the bounded
choices (`?`, `{0,61}`, alternatives) must multiply to at most MAX_CHOICES. A repeat may only
repeat a fixed sequence (no repeat, alternative or backreference inside), which rules out the
exponential cases (`(a+)+`, `(a|aa)*`). Real schemas (`^3\\.[0-9]+$`,
`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`) pass; a refused pattern names what to change.
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python 3.11+
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse as P  # type: ignore[no-redef]

MAX_BOUNDED = 64  # a repeat allowing more than this many counts as unbounded
MAX_CHOICES = 1024  # product of the bounded choices a match may backtrack through

_REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT)}
_SINGLE = {C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY, C.CATEGORY, C.AT}


class UnsafePattern(ValueError):
    """Why a pattern is refused; `str()` is one line."""


def _fixed(items: Any) -> bool:
    """A sequence that matches in exactly one way: single characters and plain groups."""
    for op, av in items:
        if op in _SINGLE:
            continue
        if op is C.SUBPATTERN and _fixed(av[-1]):
            continue
        if op is getattr(C, "ATOMIC_GROUP", None) and _fixed(av):
            continue
        return False
    return True


def _cost(items: Any) -> tuple[int, int]:
    """(factors of n, product of bounded choices) of a sequence of parsed items."""
    power, choices = 0, 1
    for op, av in items:
        if op in _SINGLE:
            continue
        if op in (C.GROUPREF, C.GROUPREF_EXISTS):
            raise UnsafePattern("backreferences are not allowed")
        if op is C.SUBPATTERN:
            p, c = _cost(av[-1])
        elif op is getattr(C, "ATOMIC_GROUP", None):
            p, c = _cost(av)
        elif op in (C.ASSERT, C.ASSERT_NOT):
            p, c = _cost(av[1])
        elif op is C.BRANCH:
            costs = [_cost(branch) for branch in av[1]]
            p, c = max(b[0] for b in costs), sum(b[1] for b in costs)
        elif op in _REPEATS:
            low, high, body = av
            if high <= 1:  # `?`: the body, or nothing
                p, c = _cost(body)
                c += 1
            elif not _fixed(body):
                raise UnsafePattern(
                    "a repeated part may not itself hold a repeat or alternatives"
                    " (like (a+)+ or (a|b)*): the matcher could backtrack for ever"
                )
            elif high > MAX_BOUNDED:
                p, c = 1, 1
            else:
                p, c = 0, high - low + 1
        else:
            raise UnsafePattern(f"unsupported construct {op}")
        power += p
        choices *= c
    return power, choices


def check_pattern(pattern: str) -> None:
    """Raise UnsafePattern when `pattern` is not a regular expression, or could make a
    match take more than linear time in the length of the value."""
    try:
        re.compile(pattern)
        parsed = P.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise UnsafePattern(f"not a regular expression: {exc}") from None
    items = list(parsed)
    anchored = (
        bool(items)
        and items[0][0] is C.AT
        and items[0][1] in (C.AT_BEGINNING, C.AT_BEGINNING_STRING)
    )
    try:
        power, choices = _cost(items)
    except RecursionError:
        raise UnsafePattern("nested too deeply") from None
    if not anchored and not _fixed(items):
        power += 1  # re.search tries it from every position of the value
    if power > 1:
        raise UnsafePattern(
            "more than one unbounded repeat"
            + (
                ""
                if anchored
                else " (an unanchored pattern is tried from every position: start it with ^)"
            )
            + "; a long value would take time quadratic or worse in its length"
        )
    if choices > MAX_CHOICES:
        raise UnsafePattern(
            f"its optional parts and alternatives combine in over {MAX_CHOICES} ways"
        )


def pattern_problems(
    schema: Any, path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) of every unsafe `pattern` (and `patternProperties` key) in a schema."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            here = (*path, key)
            if key == "pattern" and isinstance(value, str):
                try:
                    check_pattern(value)
                except UnsafePattern as exc:
                    found.append((here, f"pattern refused: {exc}"))
            if key == "patternProperties" and isinstance(value, dict):
                for regex in value:
                    try:
                        check_pattern(str(regex))
                    except UnsafePattern as exc:
                        found.append(((*here, regex), f"pattern refused: {exc}"))
            found.extend(pattern_problems(value, here))
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            found.extend(pattern_problems(item, (*path, i)))
    return found
