"""Each Lua script's documented KEYS/ARGV header and the ScriptCall that packs them agree."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from aggregator import scripts as store_scripts
from aggregator.scripts import ScriptCall
from workers import scripts as turn_scripts

MODULES = (store_scripts, turn_scripts)
ENTRY = re.compile(r"\b(KEYS|ARGV)\[([^\]]+)\]\s+([A-Za-z_]\w*)")


def _scripts(module: ModuleType) -> dict[str, str]:
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and value.lstrip().startswith("--")
    }


def _calls() -> list[type[ScriptCall]]:
    return [
        c
        for m in MODULES
        for c in vars(m).values()
        if isinstance(c, type) and issubclass(c, ScriptCall) and c is not ScriptCall and c.__module__ == m.__name__
    ]


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


def test_every_script_has_exactly_one_call() -> None:
    scripts = {v: f"{m.__name__}.{n}" for m in MODULES for n, v in _scripts(m).items()}
    packed = [c.script for c in _calls()]
    assert sorted(scripts[s] for s in packed) == sorted(scripts.values())


@pytest.mark.parametrize("call", _calls(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("slot", ["KEYS", "ARGV"])
def test_header_and_call_agree(call: type[ScriptCall], slot: str) -> None:
    documented = entries(call.script, slot)
    layout = call.layout()[slot]
    assert [name for _, name in documented] == [name for name, _ in layout]  # same names, same order
    fixed = True
    for i, ((label, _), (name, kind)) in enumerate(zip(documented, layout, strict=True), 1):
        if fixed:
            # positions are numbered up to the first variable part, which starts there
            assert label == str(i) or (kind != "one" and label.startswith(f"{i}..")), (name, label)
        else:
            assert not label.isdigit(), f"{name}: a numbered position after a variable part"
        fixed = fixed and kind == "one"


def test_packing_follows_the_layout() -> None:
    call = store_scripts.IngestCall(
        *(f"k{i}" for i in range(9)),
        conv_keys=["c1", "c2", "c3"],
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
        conversations=[("c", b'"c"')],
        rejections=[],
        cursor_fields=[("off", 3), ("tok", "u")],
        expect_id="id",
    )
    assert call.keys() == [*(f"k{i}" for i in range(9)), "c1", "c2", "c3", "s"]
    assert call.args()[15:] == [1, "c", b'"c"', 0, 2, "off", 3, "tok", "u", "id"]
