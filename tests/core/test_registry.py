"""The op registry loads an op's module when the op is first looked up (registry.MODULES)."""
import json
import subprocess
import sys

import pytest

from nnos.ops import MODULES, OPS
from tests.support.paths import ROOT

# In a new interpreter: import one op module (or look one op up) and say what is registered
# and which op modules are imported.
PROBE = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
from nnos.ops import OPS
what, name = sys.argv[2], sys.argv[3]
if what == "module":
    importlib.import_module("nnos.ops." + name)
else:
    OPS.get(name)
modules = sorted(m for m in sys.modules if m.startswith("nnos.ops.") and m != "nnos.ops.registry")
print(json.dumps({"registered": sorted(OPS.defs), "modules": modules}))
"""


def probe(what: str, name: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, ROOT, what, name], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_registers_the_ops_the_table_gives_it(module):
    assert set(MODULES[module]) <= set(probe("module", module)["registered"])


def test_the_table_names_every_op_once():
    listed = [op for ops in MODULES.values() for op in ops]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(OPS)                  # iterating loads every module: nothing unlisted


def test_a_lookup_loads_that_ops_module_and_no_other():
    seen = probe("op", "Gemm")
    assert seen["modules"] == ["nnos.ops.linalg"]
    assert "Gemm" in seen["registered"] and "Conv" not in seen["registered"]
    assert probe("op", "NoSuchOp")["modules"] == []


def test_an_unknown_op_is_refused_with_every_supported_one_named():
    from nnos.errors import CompileError
    from nnos.ir import Node
    from nnos.ops import get
    with pytest.raises(CompileError, match=r"unsupported op 'NoSuchOp'.*Conv.*Gemm"):
        get(Node("NoSuchOp", "n0", [], [], {}))
