"""The generated-code record (nnos/gencache.py): dataclasses' methods compiled once at image
build and run from the record in a later process — the same classes as compiling them, a text
the record lacks compiled as before, and a record from another Python or a damaged one refused
with the reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from nnos import gencache
from tests.support.paths import ROOT

MODULE = '''
from __future__ import annotations
from collections import namedtuple
from dataclasses import dataclass, field

Point = namedtuple("Point", "x y")      # its __new__: a lambda collections compiles with eval

@dataclass(frozen=True)
class Spec:
    """A frozen one: __setattr__, __hash__ generated too."""
    name: str
    size: int = 3
    tags: tuple = ()

@dataclass(order=True)
class Job:
    """With a factory default and ordering."""
    rank: int
    items: list = field(default_factory=list)
'''

USE = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from nnos import gencache
mode, path = sys.argv[3], sys.argv[4]
cache = gencache.install(gencache.read(path)) if mode == "use" else gencache.install(recording=True)
import dataclasses, gcmod
a, b = gcmod.Spec("x"), gcmod.Spec("x", 3, ())
j1, j2 = gcmod.Job(2), gcmod.Job(1, [4])
j1.items.append(1)
try:
    a.size = 4
    frozen = "no"
except dataclasses.FrozenInstanceError as e:
    frozen = type(e).__name__
out = {"repr": [repr(a), repr(j1), repr(j2)], "eq": a == b, "hash": hash(a) == hash(b), "frozen": frozen,
       "fresh default": gcmod.Job(5).items, "order": sorted([j1, j2]) == [j2, j1],
       "tuple": [repr(gcmod.Point(1, y=2)), gcmod.Point(1, 2) == (1, 2)],
       "hits": cache.hits, "misses": cache.misses}
if mode == "record":
    open(path, "wb").write(cache.to_bytes())
print(json.dumps(out))
"""


def run(tmp_path, mode: str, path) -> dict:
    (tmp_path / "gcmod.py").write_text(MODULE)
    r = subprocess.run([sys.executable, "-c", USE, str(ROOT), str(tmp_path), mode, str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_recorded_methods_run_in_a_later_process_exactly_as_compiled_ones(tmp_path):
    record = tmp_path / "gencache"
    made = run(tmp_path, "record", record)
    assert made["hits"] == 0 and made["misses"] >= 8      # __init__, __repr__, __eq__, __setattr__, …
    used = run(tmp_path, "use", record)
    assert used["misses"] == 0 and used["hits"] == made["misses"]
    for key in ("repr", "eq", "hash", "frozen", "fresh default", "order", "tuple"):
        assert used[key] == made[key], key
    assert used["frozen"] == "FrozenInstanceError" and used["fresh default"] == [] and used["order"]
    assert used["tuple"] == ["Point(x=1, y=2)", True]


def test_a_text_the_record_lacks_is_compiled():
    cache = gencache.CodeCache({("exec", "x = 1"): compile("x = 1", "<string>", "exec")})
    ns = {}
    cache.exec("x = 1", {}, ns)
    cache.exec("y = 2", {}, ns)
    assert ns == {"x": 1, "y": 2} and (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize("damage, said", [
    (lambda data: b"\x00\x00\r\n" + data[4:], "made by another Python"),
    (lambda data: data[:len(data) // 2], "unreadable"),
    (lambda data: gencache.MAGIC + __import__("marshal").dumps([1, 2]), "expected a table of"),
    (lambda data: gencache.MAGIC + __import__("marshal").dumps({("exec", "x"): 1}), "expected a table of"),
    (lambda data: gencache.MAGIC + __import__("marshal").dumps({"x = 1": compile("x = 1", "<s>", "exec")}),
     "expected a table of"),
])
def test_a_record_from_another_python_or_damaged_is_refused_with_the_reason(tmp_path, damage, said):
    good = gencache.CodeCache({}, recording=True)
    good.exec("def f():\n return 1\n", {}, {})
    path = tmp_path / "gencache"
    path.write_bytes(damage(good.to_bytes()))
    with pytest.raises(gencache.GenCacheError, match=said) as e:
        gencache.read(str(path))
    assert str(path) in str(e.value)
    with pytest.raises(gencache.GenCacheError, match="No such file"):
        gencache.read(str(tmp_path / "none"))


def test_the_record_the_image_makes_covers_what_pid_1_imports_on_the_way_to_the_first_tick(tmp_path):
    """`python3 -m nnos.appliance record` (image step 50) for the default board, then a new
    process doing what PID 1 and its fork server import: nothing left to compile."""
    board = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")
    record = tmp_path / "gencache"
    r = subprocess.run([sys.executable, "-m", "nnos.appliance", "record", str(record), str(board)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "generated methods of PID 1's imports" in r.stdout
    code = textwrap.dedent(f"""
        import importlib, json, sys, tempfile, os
        from nnos import appliance
        cache, problem = appliance._gencache({str(record)!r})
        for name in appliance.BOOT_IMPORTS:
            importlib.import_module(name)
        from nnos_hardware.board import load_board
        from nnos.supervisor.table import Context, table
        from nnos.supervisor.up import fork_server
        with tempfile.TemporaryDirectory() as data:
            ctx = Context({str(board)!r}, data, load_board({str(board)!r}), os.path.join(data, "run"))
            server = fork_server(ctx, table(ctx))
            server.close()
        print(json.dumps([problem, cache.hits, cache.misses]))
        """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    problem, hits, misses = json.loads(r.stdout.splitlines()[-1])
    assert problem is None and hits > 50 and misses == 0, (hits, misses)
    missing = appliance_gencache(tmp_path / "none")
    assert "No such file" in missing


def appliance_gencache(path) -> str:
    """PID 1 without a record (an older image): said, and everything compiles as before."""
    code = (f"import sys; from nnos import appliance; c, p = appliance._gencache({str(path)!r}); "
            "import nnos.flags; print(p, c.misses)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) > 0
    return r.stdout
