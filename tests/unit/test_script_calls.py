"""Each Lua script's documented KEYS/ARGV header and the ``*_call`` function that packs them agree.

A header names every position: ``KEYS[n] name`` / ``ARGV[n] name`` where ``n`` is a number up to
the first variable part (``KEYS[3..] targets``, ``ARGV[16] conversations`` for a count then pairs)
and ``..`` or ``#KEYS`` / ``#ARGV`` (the last one) after it. Each function is called with a marker
per parameter, and where each marker lands in the packed KEYS and ARGV is compared with the header.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from aggregator import scripts as store_scripts
from aggregator.scripts import ScriptCall
from workers import scripts as turn_scripts

MODULES = (store_scripts, turn_scripts)
ENTRY = re.compile(r"\b(KEYS|ARGV)\[([^\]]+)\]\s+([A-Za-z_]\w*)")


def _scripts() -> dict[str, str]:
    return {
        value: f"{m.__name__}.{name}"
        for m in MODULES
        for name, value in vars(m).items()
        if name.isupper() and isinstance(value, str) and value.lstrip().startswith("--")
    }


def _functions() -> list[Callable[..., ScriptCall]]:
    return [f for m in MODULES for name, f in vars(m).items() if name.endswith("_call") and callable(f)]


def header(script: str) -> str:
    """The script's opening comment block (up to its first line of code)."""
    lines = []
    for line in script.lstrip("\n").splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def entries(script: str, slot: str) -> list[tuple[str, str]]:
    """``(position label, name)`` of each ``KEYS[..] name`` / ``ARGV[..] name`` in the header."""
    return [(label, name) for s, label, name in ENTRY.findall(header(script)) if s == slot]


class Marker(str):
    """A parameter's stand-in: its name, recognisable wherever the packer puts it."""


def kinds(fn: Callable[..., ScriptCall]) -> dict[str, str]:
    """Each parameter's kind, from its annotation: ``one`` value, ``many`` values, or ``pairs``."""
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        ann = str(p.annotation)
        out[name] = "pairs" if ann.startswith("Sequence[tuple") else "many" if ann.startswith("Sequence[") else "one"
    return out


def call_with_markers(fn: Callable[..., ScriptCall]) -> ScriptCall:
    values = {"pairs": lambda n: [(Marker(n), Marker(n))], "many": lambda n: [Marker(n)], "one": Marker}
    return fn(**{name: values[kind](name) for name, kind in kinds(fn).items()})


def placed(packed: list[Any]) -> list[tuple[int, str]]:
    """(1-based position, parameter) where each parameter's part of ``packed`` starts."""
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(packed):
        v = packed[i]
        if isinstance(v, Marker):
            out.append((i + 1, str(v)))
            i += 1
        else:  # a count: the pairs that follow belong to one parameter
            assert v == 1 and packed[i + 1] == packed[i + 2], packed
            out.append((i + 1, str(packed[i + 1])))
            i += 3
    return out


def test_every_script_has_exactly_one_call_function() -> None:
    scripts = _scripts()
    packed = [scripts[call_with_markers(f).script] for f in _functions()]
    assert sorted(packed) == sorted(scripts.values())


@pytest.mark.parametrize("fn", _functions(), ids=lambda f: f.__name__)
def test_header_and_call_function_agree(fn: Callable[..., ScriptCall]) -> None:
    call = call_with_markers(fn)
    used: list[str] = []
    for slot, packed in (("KEYS", call.keys), ("ARGV", call.args)):
        documented = entries(call.script, slot)
        where = placed(packed)
        assert [name for _, name in documented] == [name for _, name in where]  # same names, same order
        variable = False  # past the first part of variable length: positions are not numbered
        for (label, name), (pos, _) in zip(documented, where, strict=True):
            if variable:
                assert not label.isdigit(), f"{slot}[{label}] {name}: numbered after a variable part"
                assert not label.startswith("#") or name == where[-1][1], f"{slot}[{label}] {name} is not last"
            else:
                kind = kinds(fn)[name]
                assert label == str(pos) or (kind != "one" and label.startswith(f"{pos}..")), (
                    f"{slot}[{label}] {name} is packed at {pos}"
                )
            variable = variable or kinds(fn)[name] != "one"
        used += [name for _, name in where]
    assert sorted(used) == sorted(inspect.signature(fn).parameters)  # every parameter packed, once


def test_ingest_packing() -> None:
    call = store_scripts.ingest_call(
        seq="k0",
        log="k1",
        stats="k2",
        cursor="k3",
        convs="k4",
        files="k5",
        rejects="k6",
        rejseen="k7",
        dirty="k8",
        conv_keys=["c1", "c2", "c3", "c4", "c5"],
        store="s",
        expected_tok="t",
        fid="f",
        events_channel="e",
        conv_channel_prefix="p",
        rejects_cap=5,
        file="F",
        project="P",
        agent="",
        lines=2,
        conv_index="",
        ids="a\nb",
        digests="d" * 64,
        msg_flags=b"10",
        tails=b"x\ny",
        facts=b"{}\n{}",
        times="1,",
        conversations=[("c", b'"c"')],
        rejections=[],
        cursor_fields=[("off", 3), ("tok", "u")],
        expect_id="id",
    )
    assert call.keys == [*(f"k{i}" for i in range(9)), "c1", "c2", "c3", "c4", "c5", "s"]
    assert call.args[15:] == ["1,", 1, "c", b'"c"', 0, 2, "off", 3, "tok", "u", "id"]


def test_the_module_lists_are_the_script_modules() -> None:
    assert all(isinstance(m, ModuleType) for m in MODULES) and len(_functions()) == len(_scripts()) == 20
