"""Elementwise ops and fused epilogue chains.

Two forms. The vector form (float32, every operand either the output's size or one element):
explicit vectors, the activations from the prelude, a chain of unary activations applied in
registers by the kernel that produced the value. The generic form (any dtype, numpy
broadcasting): one strided loop nest over the output that evaluates the whole chain per element
with ``scalar.expr`` — numpy's semantics, a float16 value rounded after every op as numpy's
half-precision ufuncs round.
"""
from __future__ import annotations

import numpy as np

from ...ops.lookup import LOOKUP
from ...ops.quant import FAKE_QUANT, QUANT, grid_dtype
from .emit import Unsupported, indent
from .ctype import compute, literal, storage
from .loops import broadcast_strides, contiguous_strides, nest
from .prelude import ACTIVATIONS, activation
from .scalar import SUPPORTED, expr

VECTOR_BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}
# Kernels whose value before a rounding is their own, not the reference's bit for bit (products
# summed in another order, exp from tables): their rounding multiplies by 1/s where
# QuantizeLinear divides (vdivps: ≈ 2.3 cycles a vector on a Zen 5, the epilogue's cost). A
# product's last bit already moves a value near a half-way point a step either way (verify.py's
# "quantized" tolerance); elementwise chains keep the division, and with it the reference's bits.
RECIPROCAL_ROUNDING = frozenset({"MatMul", "Gemm", "Conv", "Softmax"})


def unary_chain(prog, node) -> list | None:
    """The node's epilogue as what a kernel can apply to a value in registers before storing
    it: activation names, Clip's constant bounds, and roundings to the grid of one constant
    scale and zero point (a QDQ model's QuantizeLinear → DequantizeLinear pairs); None when some
    link needs another operand (then the kernel stores plainly and ``epilogue_pass`` applies
    the chain)."""
    chain = []
    for e in node.epilogue:
        if e.op == FAKE_QUANT and _scalar_consts(prog, e.operands[:2]):
            chain.append(_rounding(prog, e, node.op in RECIPROCAL_ROUNDING))
        elif e.op == "Clip" and not e.operands:
            chain.append((e.op, e.attrs.get("min"), e.attrs.get("max")))
        elif activation(e.op, e.attrs) and not e.operands:
            chain.append(activation(e.op, e.attrs))
        else:
            return None
    return chain


def _rounding(prog, e, reciprocal: bool) -> tuple:
    """A chain's rounding: (FAKE_QUANT, s, lo, hi, 1/s or "" where it divides by s)."""
    s, lo, hi = _fakeq_terms(prog, e.operands[:2], e.attrs)
    scale = np.float32(prog.graph.consts[e.operands[0]].reshape(()))
    r = literal(np.float32(1.0) / scale, np.float32) if reciprocal and np.isfinite(1.0 / scale) and scale != 0 else ""
    return (FAKE_QUANT, s, lo, hi, r)


def _scalar_consts(prog, names: list[str]) -> bool:
    return len(names) == 2 and all(a in prog.graph.consts and prog.type(a).size == 1 for a in names)


def _fakeq_terms(prog, args: list[str], attrs: dict) -> tuple[str, str, str]:
    """vfakeq's scale and the grid's bounds less the zero point, as C literals."""
    scale, zp = (prog.graph.consts[a].reshape(()) for a in args)
    lo, hi = QUANT[grid_dtype(attrs)]
    return (literal(scale, np.float32), *(literal(float(b) - float(zp), np.float32) for b in (lo, hi)))


def _clip(value: str, lo, hi, vector: bool) -> str:
    """Clip with constant bounds (NaN passes through, as numpy's does)."""
    def bound(v):
        return f"vsplat({literal(v, np.float32)})" if vector else literal(v, np.float32)
    if lo is not None:
        value = f"{'vmaxnan' if vector else 'smaxnan'}({value}, {bound(lo)})"
    if hi is not None:
        value = f"{'vminnan' if vector else 'sminnan'}({value}, {bound(hi)})"
    return value


def apply(chain: list | None, value: str, vector: bool) -> str:
    for op in chain or []:
        if isinstance(op, tuple) and op[0] == FAKE_QUANT:
            value = rounded(op, value, vector)
        elif isinstance(op, tuple):
            value = _clip(value, op[1], op[2], vector)
        else:
            value = f"{ACTIVATIONS[op][0 if vector else 1]}({value})"
    return value


def stores(chain: list | None, targets: list[tuple[str, str]]) -> str:
    """``vstore(at, value)`` of each (at, value) with the chain applied in registers. A chain
    with an erf GELU does the group's GELUs in two passes (``vector_loop``): every value's
    first half, then every value's second — four accumulators of act_s's feed-forward product
    one after the other kept too few of their GELUs' dependent steps in flight."""
    if "Gelu" not in (chain or []) or len(targets) < 2:
        return " ".join(f"vstore({at}, {apply(chain, v, True)});" for at, v in targets)
    k = chain.index("Gelu")
    first = [f"const vf gx{j}_ = {apply(chain[:k], v, True)}, ga{j}_ = vgelu_arg(gx{j}_);"
             for j, (_, v) in enumerate(targets)]
    second = [f"vstore({at}, {apply(chain[k + 1:], f'vgelu_fin(gx{j}_, ga{j}_)', True)});"
              for j, (at, _) in enumerate(targets)]
    return "{ " + " ".join(first + second) + " }"


GELU_BLOCK = 8      # vectors a loop of erf GELUs takes at a time, in two passes


def vector_loop(n, vec: list[str], store: str, gelu: int | None) -> list[str]:
    """The loop over ``n`` values' whole vectors: statements ``vec`` on the running value v (the
    first declares it; each may read index i), then ``store``. Where ``vec[gelu]`` is v's erf
    GELU (``v = vgelu(v);``), blocks of GELU_BLOCK vectors first, in two passes: every vector's
    statements up to its GELU's first half (vgelu_arg, exp's argument), then every vector's
    second half and the rest. One vector's GELU is a chain of ~25 dependent steps, and the
    out-of-order window held too few vectors' chains to overlap them: act_s's 65 × 128
    dequantized sums with their GELU and range 4.6 → 3.2 µs."""
    whole = f"for (; i + VW <= {n}; i += VW) {{ {' '.join(vec)} {store} }}"
    if gelu is None:
        return [whole]
    b = GELU_BLOCK
    return [f"for (; i + {b} * VW <= {n}; i += {b} * VW) {{ vf V_[{b}], G_[{b}]; const long i0_ = i;",
            f"    for (int k_ = 0; k_ < {b}; k_++) {{ const long i = i0_ + k_ * VW; {' '.join(vec[:gelu])} "
            "V_[k_] = v; G_[k_] = vgelu_arg(v); }",
            f"    for (int k_ = 0; k_ < {b}; k_++) {{ const long i = i0_ + k_ * VW; "
            + " ".join(["vf v = vgelu_fin(V_[k_], G_[k_]);", *vec[gelu + 1:], store]) + " } }",
            whole]


def rounded(rounding: tuple, value: str, vector: bool, by: str = "") -> str:
    """A chain's rounding of ``value`` (its quotient by s as ``value`` times ``by`` times 1/s
    where ``by`` is given: a Softmax's 1/sum folded in)."""
    _, s, lo, hi, r = rounding
    if r:
        return f"{'vfakeqr' if vector else 'sfakeqr'}({value}, {f'{by} * {r}' if by else r}, {s}, {lo}, {hi})"
    value = f"{value} * {by}" if by else value
    return f"{'vfakeq' if vector else 'sfakeq'}({value}, {s}, {lo}, {hi})"


# --- the vector form ---------------------------------------------------------------------------------
def vector_ok(prog, steps, out: str) -> bool:
    t = prog.type(out)
    if t.dtype != np.float32:
        return False
    n = t.size
    for op, args, attrs in steps:
        if op == FAKE_QUANT:                 # one constant scale and zero point: literals
            if not all(a in prog.graph.consts and prog.type(a).size == 1 for a in args[1:]):
                return False
            args = args[:1]
        elif op == LOOKUP:                   # a constant scale (a literal) and table (a pointer)
            if not all(a in prog.graph.consts for a in args[1:]):
                return False
            args = args[:1]
        elif not (activation(op, attrs) or op in VECTOR_BINARY or op in ("LeakyRelu", "Clip")):
            return False
        if op in VECTOR_BINARY and len([a for a in args if a]) != 2:
            return False
        for a in args:
            if a and a != "@v":
                at = prog.type(a)
                if at.dtype != np.float32 or at.size not in (n, 1):
                    return False
    return True


def vector_expr(prog, op: str, args: list[str], n: int, vector: bool, attrs: dict, operand=None) -> str:
    """One op on the running value "@v" or tensors of the output's size (or one element);
    ``operand(name, vector)``, when given, says how to read every other argument."""
    def load(a):
        return _load(prog, a, n, vector, operand)
    if activation(op, attrs):
        return f"{ACTIVATIONS[activation(op, attrs)][0 if vector else 1]}({load(args[0])})"
    if op == FAKE_QUANT:
        return _fake_quantize(prog, args, load(args[0]), attrs, vector)
    if op == LOOKUP:
        return _lookup(prog, args, load(args[0]), attrs, vector)
    if op == "LeakyRelu":
        a = float(np.float32(attrs.get("alpha", 0.01)))
        return f"{'vleaky' if vector else 'sleaky'}({load(args[0])}, {a!r}f)"
    if op == "Clip":            # NaN passes: comparisons with NaN are false
        v = load(args[0])
        if len(args) > 1 and args[1]:
            v = f"{'vmaxnan' if vector else 'smaxnan'}({v}, {load(args[1])})"
        if len(args) > 2 and args[2]:
            v = f"{'vminnan' if vector else 'sminnan'}({v}, {load(args[2])})"
        return _clip(v, attrs.get("min"), attrs.get("max"), vector)
    return f"({load(args[0])} {VECTOR_BINARY[op]} {load(args[1])})"


def _load(prog, a: str, n: int, vector: bool, operand=None) -> str:
    """How an elementwise loop over ``n`` values reads argument ``a`` at ``i``."""
    if a == "@v":
        return "v"
    if operand is not None:
        return operand(a, vector)
    if prog.type(a).size == 1 and n != 1:
        return f"vsplat({prog.tensor(a)}[0])" if vector else f"{prog.tensor(a)}[0]"
    return f"vload({prog.tensor(a)} + i)" if vector else f"{prog.tensor(a)}[i]"


def _fake_quantize(prog, args: list[str], value: str, attrs: dict, vector: bool) -> str:
    """A rounding to the grid of one constant scale and zero point (the prelude's vfakeq)."""
    return f"{'vfakeq' if vector else 'sfakeq'}({value}, {', '.join(_fakeq_terms(prog, args[1:3], attrs))})"


def _rounded_lookup(prog, rounding, lookup, n: int) -> str:
    """vlookupq: a rounding's step and the lookup after it, as one."""
    s, qlo, qhi = _fakeq_terms(prog, rounding[1][1:3], rounding[2])
    table, lo, hi = _table(prog, lookup[1], lookup[2])
    return f"vlookupq({_load(prog, rounding[1][0], n, True)}, {s}, {qlo}, {qhi}, {lo}, {hi}, {table})"


def _table(prog, args: list[str], attrs: dict) -> tuple[str, str, str]:
    """A lookup's table for vlookup (a pointer and its entries: padded to 256 for the permutes
    when at most that) and its grid's bounds, as C."""
    lo, size = int(attrs["lo"]), prog.type(args[2]).size
    bounds = literal(lo, np.float32), literal(lo + size - 1, np.float32)
    if size > 256:
        return f"{prog.tensor(args[2])}, {size}", *bounds
    padded = np.zeros(256, np.float32)
    padded[:size] = prog.graph.consts[args[2]].reshape(-1)
    return f"{prog.const(args[2] + ':lookup256', padded)}, 256", *bounds


def _lookup(prog, args: list[str], value: str, attrs: dict, vector: bool) -> str:
    """nnos.Lookup: the table's entry at the value's grid index (the prelude's vlookup; a table
    of at most 256 entries padded to 256 for its permutes)."""
    scale = literal(prog.graph.consts[args[1]].reshape(()), np.float32)
    if not vector:
        lo, size = int(attrs["lo"]), prog.type(args[2]).size
        bounds = f"{literal(lo, np.float32)}, {literal(lo + size - 1, np.float32)}"
        return f"slookup({value}, {scale}, {bounds}, {prog.tensor(args[2])})"
    table, lo, hi = _table(prog, args, attrs)
    return f"vlookup({value}, {scale}, {lo}, {hi}, {table})"


def lookup_cut(prog, steps, first: int = 1) -> int | None:
    """Where a chain's second, vector pass starts (never before ``first``): at its first lookup,
    or at the rounding to the same grid just before it (vlookupq: one division for both)."""
    cut = next((k for k, step in enumerate(steps) if step[0] == LOOKUP and k >= first), None)
    if cut is not None and cut - 1 >= first and _rounds_for(prog, steps[cut - 1], steps[cut]):
        cut -= 1
    return cut


def _rounds_for(prog, step, lookup) -> bool:
    """``step`` rounds to the grid ``lookup`` indexes by: one constant scale, the same."""
    op, args, _ = step
    consts = prog.graph.consts
    return op == FAKE_QUANT and _scalar_consts(prog, args[1:3]) and \
        np.array_equal(consts[args[1]].reshape(()), consts[lookup[1][1]].reshape(()))


def vector_code(prog, out: str, steps, chain_in_registers: list[str] | None = None) -> str:
    n = prog.type(out).size
    reads_v = any("@v" in args for _, args, _ in steps[:1])
    vec, sca = ["vf v = vload(O + i);"] if reads_v else ["vf v;"], ["float v = O[i];"] if reads_v else ["float v;"]
    k, gelu = 0, None
    while k < len(steps):
        op, args, attrs = steps[k]
        if k + 1 < len(steps) and steps[k + 1][0] == LOOKUP and _rounds_for(prog, steps[k], steps[k + 1]):
            vec.append(f"v = {_rounded_lookup(prog, steps[k], steps[k + 1], n)};")
            sca += [f"v = {vector_expr(prog, o, a, n, False, at)};" for o, a, at in steps[k:k + 2]]
            k += 2
            continue
        if gelu is None and activation(op, attrs) == "Gelu":
            if args[0] != "@v":
                vec.append(f"v = {_load(prog, args[0], n, True)};")
            gelu = len(vec)
            vec.append("v = vgelu(v);")
            sca.append(f"v = {vector_expr(prog, op, args, n, False, attrs)};")
            k += 1
            continue
        vec.append(f"v = {vector_expr(prog, op, args, n, True, attrs)};")
        sca.append(f"v = {vector_expr(prog, op, args, n, False, attrs)};")
        k += 1
    vstore = f"vstore(O + i, {apply(chain_in_registers, 'v', True)});"
    sstore = f"O[i] = {apply(chain_in_registers, 'v', False)};"
    return indent("\n".join([f"{{ float *O = {prog.tensor(out)}; long i = 0;",
                             *vector_loop(n, vec, vstore, gelu),
                             f"for (; i < {n}; i++) {{ {' '.join(sca)} {sstore} }} }}"]))


# --- the generic form --------------------------------------------------------------------------------
def _input_dtype(prog, op, args, out_dtype):
    """The dtype an op's arguments are computed in: Where's X, otherwise the first argument."""
    a = args[1] if op == "Where" else args[0]
    return out_dtype if a == "@v" else prog.type(a).dtype


def generic_code(prog, out: str, steps, strides: dict | None = None) -> str:
    """``steps``: (op, args, attrs) applied in order to one element; "@v" in args is the running
    value (for the first step: the output's current value, when it is updated in place).
    ``strides``: an operand's element strides over the output where they are not numpy's
    broadcasting (a per-channel scale). From a lookup on, a chain goes in a second, vector pass:
    gcc does not vectorize a loop with a table read at -O2, and a large plan's is -O2."""
    cut = lookup_cut(prog, steps)
    if cut is not None and vector_ok(prog, steps[cut:], out):
        return generic_code(prog, out, steps[:cut], strides) + "\n" + vector_code(prog, out, steps[cut:])
    ot = prog.type(out)
    shape, odt = ot.shape, ot.dtype
    operands = [(prog.ptr(out), contiguous_strides(shape))]
    slot = {}
    for op, args, _ in steps:
        if op not in SUPPORTED and op != LOOKUP:
            raise Unsupported(f"elementwise {op} has no generated form")
        for a in (args[:1] if op == LOOKUP else args):        # a lookup's scale and table: constants
            if a and a != "@v" and a not in slot:
                try:
                    el = (strides or {}).get(a) or broadcast_strides(prog.type(a).shape, shape)
                except IndexError as e:
                    raise Unsupported(f"{a} {prog.type(a)} does not broadcast to {ot}") from e
                slot[a] = len(operands)
                operands.append((prog.ptr(a), el))
    ct, st = compute(odt), storage(odt)
    half = odt == np.float16
    # one-element operands (a scale, a zero point, a scalar constant) read once, before the
    # loop: a store through a byte-sized output may alias any load, and gcc then keeps every
    # load in the loop and does not vectorize it
    hoisted = {a: f"h{k}" for a, k in slot.items() if prog.type(a).size == 1 and ot.size > 1}
    decls = [f"const {compute(prog.type(a).dtype)} {h} = ({compute(prog.type(a).dtype)}){operands[slot[a]][0]}[0];"
             for a, h in hoisted.items()]

    def body(idx):
        def load(a):
            if not a:
                return ""
            if a == "@v":
                return "v"
            if a in hoisted:
                return hoisted[a]
            return f"(({compute(prog.type(a).dtype)}){operands[slot[a]][0]}[{idx[slot[a]]}])"
        lines = [f"{ct} v = ({ct}){operands[0][0]}[{idx[0]}];" if "@v" in steps[0][1] else f"{ct} v;"]
        for op, args, attrs in steps:
            if op == LOOKUP:
                e = _lookup(prog, args, load(args[0]), attrs, False)
            else:
                e = expr(op, [load(a) for a in args], _input_dtype(prog, op, args, odt), odt, attrs)
            lines.append(f"v = {'(float)(_Float16)' if half else ''}({e});")
        lines.append(f"{operands[0][0]}[{idx[0]}] = ({st})v;")
        return "\n".join(lines)
    loops = nest(shape, [s for _, s in operands], body)
    return indent("{ " + " ".join(decls) + "\n" + loops + "\n}" if decls else loops)


# --- emitters ----------------------------------------------------------------------------------------
def elementwise(prog, node) -> str:
    """One elementwise op and its whole epilogue chain, in one pass over the output."""
    o = node.outputs[0]
    head = [(node.op, list(node.inputs), node.attrs)]
    links = [(e.op, e.inputs_with("@v"), e.attrs) for e in node.epilogue]
    if vector_ok(prog, head + links, o):
        chain = unary_chain(prog, node)
        if chain is not None:
            return vector_code(prog, o, head, chain)
        return vector_code(prog, o, head + links)
    return generic_code(prog, o, head + links)


def epilogue_pass(prog, node, out: str, in_registers: bool = False) -> str:
    """The node's epilogue chain over its output, in place; empty when there is none, or when
    the kernel applied it in registers (``in_registers``: a vector kernel that called ``apply``
    with ``unary_chain(prog, node)``)."""
    if not node.epilogue or (in_registers and unary_chain(prog, node) is not None):
        return ""
    links = [(e.op, e.inputs_with("@v"), e.attrs) for e in node.epilogue]
    if vector_ok(prog, links, out):
        return vector_code(prog, out, links)
    return generic_code(prog, out, links)
