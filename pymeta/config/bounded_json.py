"""JSON that a stranger may have written (the settings a model file records, `--test_tasks`,
`--env_kwargs`), parsed within bounds: the text's size and nesting depth are checked BEFORE `json.loads`
(whose recursion a deeply nested text exhausts: RecursionError), and NaN, Infinity, numbers beyond
float range and integers of more digits than Python parses are refused. Every failure is a one-line
ValueError naming what was read. No TensorFlow, no numpy."""

import json
import math
import os
import re
from typing import Any

MAX_DEPTH = 32  # nesting of [ and {: pymeta writes at most 4 levels (a meta-test JSON's settings)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of arrays and objects in JSON `text` (brackets inside strings do not count);
    stops counting once it exceeds `limit` (returns limit + 1). Linear in the text, no recursion."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is beyond float range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_bounded(text: str, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(text)` after its nesting depth is checked; ValueError('<what>: ...', one line) for
    a text nested deeper than `max_depth`, invalid JSON, NaN / Infinity, a number beyond float range or
    an integer of more than 4300 digits."""
    if nesting_depth(text, max_depth) > max_depth:
        raise ValueError(f"{what}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # RecursionError: cannot happen below the depth bound
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{what}: not valid JSON ({reason[:200]})") from None


def load_json_file(path: str, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in the file `path` (UTF-8, at most `max_bytes`), parsed by `loads_bounded`;
    FileNotFoundError / ValueError (one line, starting with `what`) otherwise. Only a regular file is
    read (a FIFO would block)."""
    try:
        info = os.stat(path)
    except OSError:
        raise FileNotFoundError(f"{what}: no such file") from None
    if not os.path.isfile(path):
        raise ValueError(f"{what}: not a regular file")
    if info.st_size > max_bytes:
        raise ValueError(f"{what}: {info.st_size:,} bytes, more than the {max_bytes:,} a JSON file here may have")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        text = data.decode("utf-8")
    except OSError as e:
        raise ValueError(f"{what}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: not UTF-8 text (byte {e.start})") from None
    if len(data) > max_bytes:
        raise ValueError(f"{what}: more than the {max_bytes:,} bytes a JSON file here may have")
    return loads_bounded(text, what, max_depth)
