"""A plan → one C entry point: ``void nnos_run(char *arena, void *const *w, char *ws)``, which
calls each step's own function in order.

Every tensor is a pointer at its memory-plan offset in the arena; every weight (or a repacked
copy the backend made at bind time: conv weights in output-channel vector blocks, recurrent
weights transposed) is a pointer in ``w``; ``ws`` is the backend's own workspace (padded inputs,
recurrent state). Nothing is baked into the code but shapes and offsets, so one compiled
object serves any copy of the same plan, and a call is re-entrant given its own arena and
workspace. Each step is a block of straight C with compile-time constants; ops the generator
does not cover raise Unsupported naming them (the caller falls back to numpy).
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, aligned
from .conv import conv_ok, stays_nchw
from .ctype import storage
from .elementwise import unary_chain
from .emit import Unsupported
from .emitters import EMITTERS
from .gemm import gemm_fast_ok
from .prelude import PRELUDE
from .qdepthwise import choose as choose_chains
from .qfeed import choose as choose_feeds
from .reduce import choose_range_producers, choose_ranges
from .qstore import HELPER as QSTORE_HELPER, QStore, choose as choose_quantized_stores
from .team import OPAQUE, RUNTIME, SPLIT_WORK, wrap


class Program:
    def __init__(self, plan, vw: int):
        self.plan, self.vw = plan, vw
        self.graph: Graph = plan.graph
        self.mem = plan.memory
        self.consts: list[np.ndarray] = []           # the w[] table, in order
        self._const_keys: dict[str, int] = {}
        self.workspace = 0                            # bytes of ws
        self.helpers: list[str] = []                  # static C functions some kernels share
        self.blocked: dict[str, tuple] = {}           # tensors kept channel-blocked: name -> NCHW shape
        self.blocked_flat: dict[str, tuple] = {}      # flattened views of those: name -> the (C, H, W) they flatten
        self.split = False                            # the step being generated runs on every thread
        self.qstores: dict[str, QStore] = {}          # outputs their producer may store quantized (qstore.py)
        self.qtaken: set[str] = set()                 # those whose kernel did, in registers
        self.after: dict[str, int] = {}               # outputs → the next step their kernel may run too: a
                                                      # ConvInteger's DequantizeLinear (qdepthwise.py), a
                                                      # ReduceMin's ReduceMax of the same values (reduce.py)
        self.after_taken: set[str] = set()            # those whose kernel did
        self.absorbed: dict[int, list[int]] = {}      # step → the steps it also runs
        self.feeds: dict = {}                         # quantized tensors stored padded for their
                                                      # convolutions (qfeed.py)

    # --- a step on several threads (team.py) ----------------------------------------------------
    def share(self, work: int, total: int, lo: str = "lo", hi: str = "hi") -> str | None:
        """When a step of ``work`` multiply-adds splits ``total`` units (output channel blocks,
        rows) among the threads: the C that declares this thread's range [lo, hi), and the step
        runs on every thread; else None (one thread, the whole range)."""
        if work < SPLIT_WORK or total < 2:
            return None
        self.split = True
        return f"NNOS_SHARE({lo}, {hi}, {total});"

    def quantized_store(self, name: str, late: bool = False) -> QStore | None:
        """For a kernel that can quantize in registers: how to store tensor ``name`` when its
        QuantizeLinear's output is to be stored instead (qstore.py); None to store it as it is.
        ``late``: the kernel stores in a pass after it has read all its operands."""
        q = self.qstores.get(name)
        if q is not None and q.late and not late:
            return None
        if q is not None:
            self.qtaken.add(name)
            if QSTORE_HELPER not in self.helpers:
                self.helpers.append(QSTORE_HELPER)
        return q

    def step_after(self, name: str):
        """For a kernel that can run the next step too (``after``): that step's node (the kernel
        adds ``name`` to ``after_taken`` when it does), else None."""
        step = self.after.get(name)
        return None if step is None else self.graph.nodes[step]

    # --- operands ----------------------------------------------------------------------------
    def const(self, key: str, array: np.ndarray, dtype=np.float32) -> str:
        """A weight (or a repacked copy), once per key: its C expression, a pointer to ``dtype``
        (float32 unless given; None keeps the array's own)."""
        dt = np.dtype(array.dtype if dtype is None else dtype)
        key = f"{key}:{dt.name}"
        if key not in self._const_keys:
            # aligned as made (the executable would copy it, with every other one still held)
            a = aligned(np.ascontiguousarray(array, dtype=dt))
            self._const_keys[key] = len(self.consts)
            self.consts.append(a)
        return f"((const {storage(dt)} *)w[{self._const_keys[key]}])"

    def tensor(self, name: str) -> str:
        """A float32 tensor's pointer (the vectorized kernels' operands)."""
        if self.type(name).dtype != np.float32:
            raise Unsupported(f"tensor {name!r} is {self.type(name).dtype}; this kernel takes float32")
        return self.ptr(name)

    def ptr(self, name: str) -> str:
        """Any tensor's pointer, typed by its dtype: a weight in w[], else its arena offset."""
        g = self.graph
        if name in g.consts:
            return self.const(name, g.consts[name], None)
        t = g.type_of(name)
        return f"(({storage(t.dtype)} *)(arena + {self.mem.tensors[name]}))"

    def ws(self, nbytes: int, ctype: str = "float") -> tuple[str, int]:
        """A workspace region (64-byte aligned): (C expression, offset)."""
        off = -(-self.workspace // 64) * 64
        self.workspace = off + max(int(nbytes), 1)
        return f"(({ctype} *)(ws + {off}))", off

    def type(self, name: str):
        return self.graph.type_of(name)


def generate(plan, vw: int) -> tuple[str, Program]:
    """The C source of ``plan`` for vectors of ``vw`` floats, and the program (its w[] table
    and workspace size)."""
    prog = Program(plan, vw)
    skip = set(prog.mem.skip)
    choose_layouts(prog, skip)
    prog.qstores = choose_quantized_stores(prog, skip)
    prog.feeds = choose_feeds(prog, skip)              # after the quantized stores: their QuantizeLinears are
                                                       # no steps of their own
    prog.after = choose_chains(prog, skip) | choose_ranges(prog, skip)
    prog.after |= choose_range_producers(prog, skip)   # after choose_ranges: it pairs the extremes
    blocks = []
    for s, node in enumerate(prog.graph.nodes):
        if s in skip:
            continue
        emit = EMITTERS.get(node.op)
        if emit is None:
            raise Unsupported(f"step {s} {node.op} ({node.name!r}): no generated kernel for {node.op} yet")
        prog.split = False
        try:
            code = emit(prog, node)
        except Unsupported as e:
            raise Unsupported(f"step {s} {node.op} ({node.name!r}): {e}") from e
        runs = _absorbed(prog, node.outputs[0] if node.outputs else "", skip)
        if runs:
            prog.absorbed[s] = runs
        also = "".join(f", stored as step {t}'s QuantizeLinear" if prog.graph.nodes[t].op == "QuantizeLinear"
                       else f", with step {t}'s {prog.graph.nodes[t].op}" for t in runs)
        note = f"/* step {s}: {node.op} {node.name}{also} */"
        blocks.append((s, note, code, prog.split))
    head = f"#define NNOS_VW {vw}\n{PRELUDE}\n"
    if any(split for *_, split in blocks):          # a team of threads may run it (team.py)
        return "#define _GNU_SOURCE\n" + head + RUNTIME + "".join(prog.helpers) + wrap(blocks), prog
    return head + "".join(prog.helpers) + serial(blocks), prog


def _absorbed(prog, out: str, skip: set) -> list[int]:
    """The steps the kernel just generated for tensor ``out`` also ran (the next step: ``after``;
    the QuantizeLinear whose bytes it stored); those it did not run go back into the plan's
    order."""
    runs = []
    chain = prog.after.pop(out, None)
    while chain is not None and out in prog.after_taken:
        runs.append(chain)
        out = prog.graph.nodes[chain].outputs[0]            # its QuantizeLinear's bytes may be stored too,
        chain = prog.after.pop(out, None)                   # or the step after it run (a range's other end)
    if chain is not None:
        skip.discard(chain)
    q = prog.qstores.pop(out, None)
    if q is not None and out in prog.qtaken:
        runs.append(q.step)
    elif q is not None:                                     # float32 was stored: the QuantizeLinear runs
        skip.discard(q.step)
    return runs


def serial(blocks: list) -> str:
    """The steps, each its own function (gcc's time grows faster than a function's size: one
    function per step keeps a large plan's build short — act_s 1.9 → 1.35 s), called in order
    by ``nnos_run``; opaque to gcc's analysis across calls (team.OPAQUE)."""
    args = "char *restrict arena, void *const *restrict w, char *restrict ws"
    steps = [f"{note}\nstatic {OPAQUE} void nnos_step_{s}({args}) {{\n"
             f"    (void)arena; (void)w; (void)ws;\n{code}\n}}\n" for s, note, code, _ in blocks]
    calls = "".join(f"    nnos_step_{s}(arena, w, ws);\n" for s, *_ in blocks)
    return "".join(steps) + f"void nnos_run({args}) {{\n{calls}}}\n"


def choose_layouts(prog, skip: set) -> None:
    """Which convolution outputs live channel-blocked ([N][C/VW][H][W][VW]) instead of NCHW:
    those only other convolutions read (or a Flatten that only Gemms read, whose weight rows
    are then permuted to match), that are not graph outputs and whose channels fill whole
    vectors. A blocked output is stored with whole-vector stores; an NCHW one needs a scalar
    store per channel and pixel, which dominated the first layer of cnn_s. Between a 1×1
    convolution and a depthwise one a tensor stays NCHW: both have row forms that beat the
    blocked ones there (conv.stays_nchw)."""
    g, vw = prog.graph, prog.vw
    consumers = g.consumers()
    index = {id(n): s for s, n in enumerate(g.nodes)}
    for node in g.nodes:
        if node.op != "Conv" or not conv_ok(prog, node) or unary_chain(prog, node) is None:
            continue
        y = node.outputs[0]
        shape = tuple(g.type_of(y).shape)
        if y in g.outputs or shape[1] % vw:
            continue
        flats, ok = [], True
        if any(c.op == "Conv" and stays_nchw(prog, node, c) for c in consumers.get(y, [])):
            continue
        for c in consumers.get(y, []):
            if c.op == "Conv" and conv_ok(prog, c) and c.inputs[0] == y and y not in c.inputs[1:]:
                continue
            f = c.outputs[0] if c.outputs else ""
            if (c.op == "Flatten" and int(c.attrs.get("axis", 1)) == 1 and index[id(c)] in skip and f not in g.outputs
                    and all(k.op == "Gemm" and k.inputs[0] == f and f not in k.inputs[1:] and gemm_fast_ok(prog, k)
                            and k.inputs[1] in g.consts for k in consumers.get(f, []))):
                flats.append(f)
                continue
            ok = False
        if ok:
            prog.blocked[y] = shape
            for f in flats:
                prog.blocked_flat[f] = shape[1:]
