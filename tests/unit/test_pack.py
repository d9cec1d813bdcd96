"""Commands agg packs itself survive an exception raised while they are packed.

``hiredis.pack_command`` turns a number into text with ``PyObject_Repr``, which runs pending
signal handlers first; when one raises (Ctrl-C's KeyboardInterrupt) hiredis goes on with the NULL
it got back and the process dies of SIGSEGV — one run in ~40 of the Ctrl-C test did. A float
subclass whose ``__repr__`` raises makes ``PyObject_Repr`` fail the same way, every time. Each case
runs in a child interpreter, so that a crash fails the test instead of ending the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from aggregator.store import pack

FAILING_NUMBER = """
    class Interrupted(float):
        def __repr__(self) -> str:
            raise KeyboardInterrupt
        __str__ = __repr__
"""


def _child(body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(FAILING_NUMBER) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_an_interrupt_while_packing_a_number_is_an_exception_not_a_crash() -> None:
    proc = _child("""
        from aggregator.store import pack
        try:
            pack(("EVAL", "return 1", 0, Interrupted(1.5)))
        except KeyboardInterrupt:
            print("interrupted")
    """)
    assert (proc.returncode, proc.stdout.strip()) == (0, "interrupted"), proc.stderr


def test_numbers_are_packed_as_redis_py_sends_them() -> None:
    assert pack(("SET", b"k\x00", 7)) == b"*3\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$1\r\n7\r\n"
    assert pack(("SET", "k", 2.5)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n2.5\r\n"
    assert pack(("SET", "k", 2**70)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$22\r\n%d\r\n" % 2**70
