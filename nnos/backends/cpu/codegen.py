"""A plan → one C function: ``void nnos_run(char *arena, void *const *w, char *ws)``.

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

from ...ir import Graph, Node
from .prelude import PRELUDE


class Unsupported(Exception):
    """This plan (a step of it) has no generated form yet."""


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

    # --- operands ----------------------------------------------------------------------------
    def const(self, key: str, array: np.ndarray) -> str:
        """A weight (or a repacked copy), once per key: its C expression."""
        if key not in self._const_keys:
            a = np.ascontiguousarray(array, dtype=np.float32)
            self._const_keys[key] = len(self.consts)
            self.consts.append(a)
        return f"((const float *)w[{self._const_keys[key]}])"

    def tensor(self, name: str) -> str:
        g = self.graph
        if name in g.consts:
            return self.const(name, g.consts[name])
        if g.type_of(name).dtype != np.float32:
            raise Unsupported(f"tensor {name!r} is {g.type_of(name).dtype}; the cpu backend generates float32 only")
        return f"((float *)(arena + {self.mem['tensors'][name]}))"

    def ws(self, nbytes: int) -> tuple[str, int]:
        """A workspace region (64-byte aligned): (C expression, offset)."""
        off = -(-self.workspace // 64) * 64
        self.workspace = off + nbytes
        return f"((float *)(ws + {off}))", off

    def type(self, name: str):
        return self.graph.type_of(name)


def generate(plan, vw: int) -> tuple[str, Program]:
    """The C source of ``plan`` for vectors of ``vw`` floats, and the program (its w[] table
    and workspace size)."""
    from . import kernels
    prog = Program(plan, vw)
    skip = set(prog.mem["skip"])
    choose_layouts(prog, skip)
    blocks = []
    for s, node in enumerate(prog.graph.nodes):
        if s in skip:
            continue
        emit = kernels.EMITTERS.get(node.op)
        if emit is None:
            raise Unsupported(f"step {s} {node.op} ({node.name!r}): no generated kernel for {node.op} yet")
        try:
            code = emit(prog, node)
        except Unsupported as e:
            raise Unsupported(f"step {s} {node.op} ({node.name!r}): {e}") from e
        blocks.append(f"    /* step {s}: {node.op} {node.name} */\n    {{\n{code}\n    }}")
    src = (f"#define NNOS_VW {vw}\n{PRELUDE}\n" + "".join(prog.helpers) +
           "void nnos_run(char *restrict arena, void *const *restrict w, char *restrict ws) {\n"
           "    (void)arena; (void)w; (void)ws;\n" + "\n".join(blocks) + "\n}\n")
    return src, prog


def choose_layouts(prog, skip: set) -> None:
    """Which convolution outputs live channel-blocked ([N][C/VW][H][W][VW]) instead of NCHW:
    those only other convolutions read (or a Flatten that only Gemms read, whose weight rows
    are then permuted to match), that are not graph outputs and whose channels fill whole
    vectors. A blocked output is stored with whole-vector stores; an NCHW one needs a scalar
    store per channel and pixel, which dominated the first layer of cnn_s."""
    from .kernels import conv_ok
    g, vw = prog.graph, prog.vw
    consumers = g.consumers()
    index = {id(n): s for s, n in enumerate(g.nodes)}
    for node in g.nodes:
        if node.op != "Conv" or not conv_ok(prog, node) or unary_chain(node) is None:
            continue
        y = node.outputs[0]
        shape = tuple(g.type_of(y).shape)
        if y in g.outputs or shape[1] % vw:
            continue
        flats, ok = [], True
        for c in consumers.get(y, []):
            if c.op == "Conv" and conv_ok(prog, c) and c.inputs[0] == y and y not in c.inputs[1:]:
                continue
            f = c.outputs[0] if c.outputs else ""
            if (c.op == "Flatten" and int(c.attrs.get("axis", 1)) == 1 and index[id(c)] in skip and f not in g.outputs
                    and all(k.op == "Gemm" and k.inputs[0] == f and f not in k.inputs[1:] and not k.attrs.get("transA")
                            and k.inputs[1] in g.consts for k in consumers.get(f, []))):
                flats.append(f)
                continue
            ok = False
        if ok:
            prog.blocked[y] = shape
            for f in flats:
                prog.blocked_flat[f] = shape[1:]


def indent(code: str, n: int = 8) -> str:
    return "\n".join((" " * n + line) if line.strip() else line for line in code.strip("\n").splitlines())


def unary_chain(node: Node) -> list[str] | None:
    """The node's epilogue as activation names when every link is one a kernel can apply to a
    value in registers before storing it; None when some link needs another operand (then the
    kernel stores plainly and ``epilogue_pass`` applies the chain)."""
    from .prelude import ACTIVATIONS
    if all(e.op in ACTIVATIONS and not e.operands for e in node.epilogue):
        return [e.op for e in node.epilogue]
    return None


def apply(chain: list[str] | None, value: str, vector: bool) -> str:
    from .prelude import ACTIVATIONS
    for op in chain or []:
        value = f"{ACTIVATIONS[op][0 if vector else 1]}({value})"
    return value


BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}


def elementwise_expr(prog, op: str, args: list[str], out_shape, vector: bool, attrs: dict) -> str:
    """One elementwise op on C operands: ``args`` are either "@v" (the running value) or
    tensor names, each the output's shape or a single element (broadcast)."""
    from .prelude import ACTIVATIONS
    n = int(np.prod(out_shape))

    def load(a):
        if a == "@v":
            return "v"
        t = prog.type(a)
        if int(np.prod(t.shape)) == 1:
            return f"vsplat({prog.tensor(a)}[0])" if vector else f"{prog.tensor(a)}[0]"
        if tuple(t.shape) != tuple(out_shape) or int(np.prod(t.shape)) != n:
            raise Unsupported(f"{op} broadcasting {tuple(t.shape)} to {tuple(out_shape)}")
        return f"vload({prog.tensor(a)} + i)" if vector else f"{prog.tensor(a)}[i]"
    if op in ACTIVATIONS and len(args) == 1:
        return f"{ACTIVATIONS[op][0 if vector else 1]}({load(args[0])})"
    if op == "LeakyRelu" and len(args) == 1:
        a = float(attrs.get("alpha", 0.01))
        v = load(args[0])
        return f"vleaky({v}, {a!r}f)" if vector else f"sleaky({v}, {a!r}f)"
    if op == "Clip" and args:          # NaN passes: comparisons with NaN are false
        v = load(args[0])
        lo = load(args[1]) if len(args) > 1 and args[1] else None
        hi = load(args[2]) if len(args) > 2 and args[2] else None
        if vector:
            if lo:
                v = f"vmaxnan({v}, {lo})"
            if hi:
                v = f"vminnan({v}, {hi})"
        else:
            if lo:
                v = f"smaxnan({v}, {lo})"
            if hi:
                v = f"sminnan({v}, {hi})"
        return v
    if op in BINARY and len(args) == 2:
        return f"({load(args[0])} {BINARY[op]} {load(args[1])})"
    raise Unsupported(f"elementwise {op} is not generated "
                      f"(supported: {', '.join([*ACTIVATIONS, *BINARY, 'LeakyRelu', 'Clip'])})")


def epilogue_pass(prog, node: Node, out: str) -> str:
    """The node's whole epilogue chain over its output, in place (when it could not be fused
    into the kernel's registers); empty when there is none."""
    if not node.epilogue or unary_chain(node) is not None:
        return ""
    shape = prog.type(out).shape
    n = int(np.prod(shape))
    vec, sca = ["vf v = vload(O + i);"], ["float v = O[i];"]
    for e in node.epilogue:
        args = e.inputs_with("@v")
        vec.append(f"v = {elementwise_expr(prog, e.op, args, shape, True, e.attrs)};")
        sca.append(f"v = {elementwise_expr(prog, e.op, args, shape, False, e.attrs)};")
    return indent("\n".join([f"{{ float *O = {prog.tensor(out)}; int i = 0;",
                              f"for (; i + VW <= {n}; i += VW) {{ {' '.join(vec)} vstore(O + i, v); }}",
                              f"for (; i < {n}; i++) {{ {' '.join(sca)} O[i] = v; }} }}"]))
