"""Markdown testcases: parsing, and the steps that run them.

A testcase file (testcases/README.md has the language) has a `# ID: title`
line and one fenced block marked `steps`. Parsing matches every line against
the step patterns registered below with @step; a line that matches none is a
ScenarioSyntaxError naming the file and line, raised at collection time.
Running a scenario calls each step's function with a Run: the cluster, the
network faults, the clients and their history, the seed's random choices,
and the scenario's variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# ---------------------------------------------------------------------------
# Parsing

TITLE_RE = re.compile(r"^#\s+([A-Z]+-\d+):\s*(.+?)\s*$")
FENCE_RE = re.compile(r"^(```+|~~~+)\s*(\S*)\s*$")

# Placeholders of the step patterns.
_DUR1 = r"\d+(?:\.\d+)?\s*(?:ms|s|ET)"
_PIECES = {
    "dur": rf"(?P<{{name}}>{_DUR1}(?:\s+or\s+{_DUR1})?)",
    "node": r"(?P<{name}>node \d+|the leader|a follower|another follower|\$\w+)",
    "nodes": r"(?P<{name}>(?:\d+|\$\w+)(?:\s*,\s*(?:\d+|\$\w+))*|\d+ random nodes"
             r"|\d+ followers|the rest)",
    "int": r"(?P<{name}>-?\d+)",
    "pct": r"(?P<{name}>\d+(?:\.\d+)?)%",
    "var": r"(?P<{name}>\$\w+)",
    "word": r"(?P<{name}>\S+)",
    "ops": r"(?P<{name}>(?:add|put|get|cas)(?:,(?:add|put|get|cas))*)",
}


class ScenarioSyntaxError(Exception):
    """A testcase file that cannot run: the message names file and line."""


@dataclass
class StepDef:
    pattern: re.Pattern
    func: Callable
    text: str


STEPS: list[StepDef] = []


def _compile(text):
    """'kill {node:n}' -> a regex with named groups (default name: the
    placeholder's own)."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(?::(\w+))?(?:=([\w|]+))?\}", text):
        out.append(re.escape(text[pos:m.start()]).replace(r"\ ", r"\s+"))
        kind, name = m.group(1), m.group(2) or m.group(1)
        if kind == "either":  # {either:name=a|b|c}
            out.append(f"(?P<{name}>{m.group(3)})")
        else:
            out.append(_PIECES[kind].format(name=name))
        pos = m.end()
    out.append(re.escape(text[pos:]).replace(r"\ ", r"\s+"))
    # Optional parts are written as (?:...)? in the text itself.
    body = "".join(out).replace(r"\(\?:", "(?:").replace(r"\)\?", ")?")
    return re.compile(rf"^{body}$", re.IGNORECASE)


def step(*texts):
    """Registers a step function for one or more patterns."""
    def reg(func):
        for t in texts:
            STEPS.append(StepDef(_compile(t), func, t))
        return func
    return reg


@dataclass
class Step:
    path: Path
    lineno: int
    text: str
    func: Callable | None = None
    args: dict = field(default_factory=dict)
    times: int = 0              # repeat N times: ...
    long_times: int = 0         # ... (M with --long):
    block: list = field(default_factory=list)

    def where(self):
        return f"{self.path}:{self.lineno}"


@dataclass
class Scenario:
    path: Path
    id: str
    title: str
    text: str
    steps: list

    @property
    def area(self):
        return self.id.split("-")[0].lower()


REPEAT_RE = re.compile(r"^repeat\s+(\d+)\s+times(?:\s+\((\d+)\s+with\s+--long\))?:$",
                       re.IGNORECASE)


def match_step(path, lineno, text):
    for d in STEPS:
        m = d.pattern.match(text)
        if m:
            return Step(path, lineno, text, d.func,
                        {k: v for k, v in m.groupdict().items()})
    raise ScenarioSyntaxError(f"{path}:{lineno}: unknown step: {text!r} "
                              f"(testcases/README.md lists the steps)")


def parse(path) -> Scenario:
    path = Path(path)
    lines = path.read_text().splitlines()
    sid = title = None
    for i, line in enumerate(lines, 1):
        m = TITLE_RE.match(line)
        if m:
            sid, title = m.group(1), m.group(2)
            break
        if line.strip():
            raise ScenarioSyntaxError(
                f"{path}:{i}: the first line must be '# ID: title' (got "
                f"{line!r})")
    if sid is None:
        raise ScenarioSyntaxError(f"{path}:1: no '# ID: title' line")
    if sid != path.stem:
        raise ScenarioSyntaxError(f"{path}:1: the id {sid} does not match the "
                                  f"file name {path.name}")
    block, start, fence = None, None, None
    for i, line in enumerate(lines, 1):
        m = FENCE_RE.match(line.strip())
        if fence is None and m and m.group(2) == "steps":
            if block is not None:
                raise ScenarioSyntaxError(f"{path}:{i}: a second steps block "
                                          f"(the first is at line {start})")
            fence, start, block = m.group(1), i, []
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is not None:
            block.append((i, line))
        elif m and m.group(2) == "" and fence is None:
            # Another fenced block (an example): skip to its end.
            continue
    if block is None:
        raise ScenarioSyntaxError(f"{path}: no fenced block marked 'steps'")
    if fence is not None:
        raise ScenarioSyntaxError(f"{path}:{start}: the steps block never "
                                  f"ends")
    steps = _parse_block(path, block)
    if not steps:
        raise ScenarioSyntaxError(f"{path}:{start}: the steps block is empty")
    return Scenario(path, sid, title, path.read_text(), steps)


def _parse_block(path, lines):
    """Lines -> steps; indentation under `repeat N times:` makes a block."""
    items = []
    for lineno, raw in lines:
        text = raw.split("#", 1)[0].rstrip()
        if not text.strip():
            continue
        indent = len(text) - len(text.lstrip(" "))
        if "\t" in text[:indent + 1]:
            raise ScenarioSyntaxError(f"{path}:{lineno}: indent with spaces")
        items.append((lineno, indent, text.strip()))
    steps, _ = _nest(path, items, 0, 0)
    return steps


def _nest(path, items, pos, indent):
    out = []
    while pos < len(items):
        lineno, ind, text = items[pos]
        if ind < indent:
            break
        if ind > indent:
            raise ScenarioSyntaxError(f"{path}:{lineno}: unexpected indent")
        m = REPEAT_RE.match(text)
        if m:
            if pos + 1 >= len(items) or items[pos + 1][1] <= indent:
                raise ScenarioSyntaxError(f"{path}:{lineno}: 'repeat' needs "
                                          f"indented steps below it")
            block, pos = _nest(path, items, pos + 1, items[pos + 1][1])
            out.append(Step(path, lineno, text, times=int(m.group(1)),
                            long_times=int(m.group(2) or 0), block=block))
            continue
        out.append(match_step(path, lineno, text))
        pos += 1
    return out, pos


# ---------------------------------------------------------------------------
# Durations and names


def seconds(text, et):
    """'5s', '500ms', '2 ET', '5s or 2 ET' (the larger) -> seconds."""
    best = 0.0
    for part in re.split(r"\s+or\s+", text.strip()):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|ET)", part.strip(), re.I)
        if not m:
            raise ValueError(f"bad duration {text!r}")
        v, unit = float(m.group(1)), m.group(2).lower()
        best = max(best, v / 1000 if unit == "ms" else v * et if unit == "et"
                   else v)
    return best
