"""Matrix products: Gemm and MatMul.

The fast form (float32, B 2-D): each output row vectorized across the columns (B row-major
K×N, a constant B repacked per column group so each pass over K streams one contiguous block),
four vector accumulators per pass, the activation epilogue applied in registers before the
store; batched float32 MatMul (both operands computed, as in attention) runs it once per batch
entry. The generic form (any dtype, transposes, alpha/beta, vectors): plain loops
accumulating in the compute type, as numpy's own non-BLAS dot does.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .emit import Unsupported, after_split, indent
from .ctype import compute, literal, storage
from .elementwise import apply, epilogue_pass, stores, unary_chain
from .loops import broadcast_strides, nest
from .team import MAX_THREADS


def _f32(prog, *names) -> bool:
    return all(prog.type(n).dtype == np.float32 for n in names if n)


def _rows(prog, a: str, b: str, o: str, m: int, k: int, n: int, bias: str | None, bias_rows: bool,
          chain: list[str], packed: tuple[str, np.ndarray] | None = None, batch: int = 1) -> str:
    """o[m×n] = a[m×k] · b[k×n] (+ bias: n values, or m×n when bias_rows), activations applied.
    ``packed`` (key, array): constant weights, repacked per column block so that each pass over
    K streams one contiguous block (a large layer is bound by reading its weights). On a team
    (team.py) each thread computes its own rows, or with few rows its own column groups (the
    last thread the columns after them); ``batch``: how many such products the step runs."""
    vw = prog.vw
    if 4 <= n < vw:
        return _narrow_rows(prog, a, b, o, m, k, n, bias, bias_rows, chain, batch)
    nvec = n // vw
    groups = nvec // 4                 # full groups of four vectors: one loop, not unrolled code
    rest = nvec % 4
    bw = 4 * vw
    by_rows = m >= 4 or groups < 2
    split = prog.share(batch * m * n * k, m if by_rows else groups)
    m_range, g_range, last = (0, m), (0, groups), ""
    if split and by_rows:
        m_range = ("lo", "hi")
    elif split:
        g_range, last = ("lo", "hi"), "if (tid == nt - 1) "
    lines = [f"const float *A = {a}; const float *B = {b}; float *O = {o};"]
    if split:
        lines.append(split)
    if bias:
        lines.append(f"const float *C = {bias};")
    ldb = n
    if packed is None and not bias and n % vw and k * -(-n // vw) * vw * 4 <= PADDED_COPY:
        ldb = -(-n // vw) * vw
        lines.append(_padded_copy(prog, k, n, ldb, bool(split)))
    if groups:
        if packed is not None:         # [group][K][4·VW], contiguous per group
            arr = packed[1][:k, :groups * bw].reshape(k, groups, bw).transpose(1, 0, 2)
            blocks = prog.const(f"{packed[0]}@groups{bw}", arr)
        row = f"{blocks} + (size_t)g * {k * bw}" if packed is not None else f"B + g * {bw}"
        ld = bw if packed is not None else ldb
    # a few rows split by columns (a batch of 2 or 3): the column groups of two rows at a time, so
    # each pass reads its weights once for both; on a team each thread does the same for its own
    # groups, so every row's sums are bitwise one thread's
    pairs = 2 * (m // 2) if groups and not by_rows else 0
    if pairs:
        lines.append(_pair_groups(m, k, n, bw, vw, g_range, row, ld, bias, bias_rows, chain))
    lines.append(f"for (int m = {m_range[0]}; m < {m_range[1]}; m++) {{")
    lines.append(f"    const float *ar = A + m * {k}; float *orow = O + m * {n};")
    if bias:
        lines.append(f"    const float *crow = C{' + m * %d' % n if bias_rows else ''};")
    if groups:
        init = [f"vload(crow + g * {bw} + {i * vw})" if bias else "vsplat(0.0f)" for i in range(4)]
        lines.append(f"    {f'if (m >= {pairs}) ' if pairs else ''}for (int g = {g_range[0]}; g < {g_range[1]}; g++) {{")
        lines.append(indent(_accumulate(4, init, k, row, ld, vw), 8))
        lines.append("        " + stores(chain, [(f"orow + g * {bw} + {i * vw}", f"acc{i}") for i in range(4)]))
        lines.append("    }")
    col = groups * bw
    if rest:
        init = [f"vload(crow + {col + i * vw})" if bias else "vsplat(0.0f)" for i in range(rest)]
        lines.append(f"    {last}{{")
        if packed is not None:
            block = prog.const(f"{packed[0]}@cols{col}+{rest * vw}", packed[1][:k, col:col + rest * vw])
            lines.append(indent(_accumulate(rest, init, k, block, rest * vw, vw), 8))
        else:
            lines.append(indent(_accumulate(rest, init, k, f"B + {col}", ldb, vw), 8))
        lines.append("        " + stores(chain, [(f"orow + {col + i * vw}", f"acc{i}") for i in range(rest)]))
        lines.append("    }")
        col += rest * vw
    if col < n and ldb > n:            # the padded copy's last vector, its first n − col lanes stored
        lines.append(f"    {{ {_accumulate(1, ['vsplat(0.0f)'], k, f'B + {col}', ldb, vw)}")
        lines.append(f"      float t_[VW]; vstore(t_, {apply(chain, 'acc0', True)}); "
                     f"memcpy(orow + {col}, t_, {n - col} * sizeof(float)); }}")
    elif col < n:                      # fewer columns than a vector: a row of partial sums over K
        rem = n - col
        first = f"crow[{col} + j]" if bias else "0.0f"
        lines.append(f"    {last}{{ float s[{rem}]; for (int j = 0; j < {rem}; j++) s[j] = {first};")
        lines.append(f"      for (int kk = 0; kk < {k}; kk++) {{ const float x = ar[kk]; const float *br = B + kk * {n} + {col};")
        lines.append(f"        for (int j = 0; j < {rem}; j++) s[j] += x * br[j]; }}")
        lines.append(f"      for (int j = 0; j < {rem}; j++) orow[{col} + j] = {apply(chain, 's[j]', False)}; }}")
    lines.append("}")
    return indent("\n".join(lines))


def _padded_copy(prog, k: int, n: int, ldb: int, split: bool) -> str:
    """B's rows copied to rows of ``ldb`` floats (whole vectors, the padding zero) in the
    workspace, B pointed at the copy — on a team each thread its own copy: a computed B whose
    rows are not whole vectors (attention's Kᵀ, 65 columns) had most of its loads across two
    cache lines, and its last columns as a chain of scalar multiply-adds a row of A."""
    bp, _ = prog.ws(k * ldb * 4 * (MAX_THREADS if split else 1))
    full = n // prog.vw * prog.vw
    return "\n".join([
        f"{{ float *Bp = {bp}{f' + tid * {k * ldb}' if split else ''};",
        f"  for (int kk = 0; kk < {k}; kk++) {{ const float *s_ = B + kk * {n}; float *d_ = Bp + kk * {ldb};",
        f"    for (int j = 0; j < {full}; j += VW) vstore(d_ + j, vload(s_ + j));",
        f"    vstore(d_ + {full}, vsplat(0.0f)); memcpy(d_ + {full}, s_ + {full}, {n - full} * sizeof(float)); }}",
        "  B = Bp; }"])


def _pair_groups(m: int, k: int, n: int, bw: int, vw: int, g_range: tuple, row: str, ld: int, bias: str | None,
                 bias_rows: bool, chain: list[str]) -> str:
    """Rows 0 … 2·(m//2) − 1 over the column groups in ``g_range``, two rows a pass: each vector
    of B loaded once feeds both rows' FMA chains (eight chains: latency-bound no more)."""
    lines = [f"for (int m = 0; m + 1 < {m}; m += 2) {{",
             f"    const float *ar0 = A + m * {k}, *ar1 = ar0 + {k}; float *orow0 = O + m * {n}, *orow1 = orow0 + {n};"]
    if bias:
        lines.append(f"    const float *crow0 = C + {'m * %d' % n if bias_rows else '0'}, "
                     f"*crow1 = crow0 + {n if bias_rows else 0};")
    lines.append(f"    for (int g = {g_range[0]}; g < {g_range[1]}; g++) {{")
    init = [[f"vload(crow{r} + g * {bw} + {i * vw})" if bias else "vsplat(0.0f)" for i in range(4)] for r in range(2)]
    lines.append(indent(_accumulate_rows(4, init, k, row, ld, vw), 8))
    lines.append("        " + stores(chain, [(f"orow{r} + g * {bw} + {i * vw}", f"acc{r}_{i}")
                                       for r in range(2) for i in range(4)]))
    lines += ["    }", "}"]
    return "\n".join(lines)


PADDED_COPY = 1 << 14     # bytes: a computed B with rows not whole vectors copied padded up to this (_rows)
NARROW_ROWS = 8     # rows a narrow block computes: eight independent chains of FMAs (four left them latency-bound)


def _narrow_rows(prog, a: str, b: str, o: str, m: int, k: int, n: int, bias: str | None, bias_rows: bool,
                 chain: list[str], batch: int) -> str:
    """o = a·b with fewer columns than a vector (4 ≤ n < VW: an attention head of 8): the columns
    in vectors of 8 and 4 floats (then single ones), NARROW_ROWS rows at a time — independent
    chains of FMAs sharing each load of b's row; the rows after the last full block are one
    block of their own. Each sum runs over K in order, as the row form's."""
    chunks, col = [], 0
    for width in (8, 4):
        while n - col >= width and width <= prog.vw:
            chunks.append((col, width))
            col += width
    chunks += [(c, 1) for c in range(col, n)]
    r = NARROW_ROWS
    # on a team each thread its own blocks of rows, the last one the rows after them: every row
    # in the block it has on one thread, so the sums are bitwise one thread's
    split = prog.share(batch * m * n * k, m // r)
    lines = [f"const float *A = {a}; const float *B = {b}; float *O = {o};",
             split or f"const int lo = 0, hi = {m // r};"]
    if bias:
        lines.append(f"const float *C = {bias};")
    if n == 8 and prog.vw == 16 and not bias:
        if PAIRS_HELPER not in prog.helpers:
            prog.helpers.append(PAIRS_HELPER)
        block = _PairBlock(k, chain)
    else:
        block = _NarrowBlock(k, n, chunks, bias, bias_rows, chain, prog.vw)
    lines += [f"for (int m0 = {r} * lo; m0 < {r} * hi; m0 += {r}) {{", indent(block.code(r), 4), "}"]
    if m % r:
        lines += [f"{'if (tid == nt - 1) ' if split else ''}{{ const int m0 = {m - m % r};",
                  indent(block.code(m % r), 4), "}"]
    return indent("\n".join(lines))


class _NarrowBlock:
    """The C of one block of rows: per chunk of columns, the rows' accumulators over K, then
    their stores with the chain applied — as whole vectors where a chunk is a vector wide, or
    two rows' chunks of half a vector are one (the rows of an 8-column output are adjacent)."""

    def __init__(self, k: int, n: int, chunks: list, bias, bias_rows: bool, chain, vw: int):
        self.k, self.n, self.chunks, self.bias, self.bias_rows, self.chain, self.vw = \
            k, n, chunks, bias, bias_rows, chain, vw

    def code(self, rows: int) -> str:
        lines = []
        for col, width in self.chunks:
            t, load = {8: ("vf8", "vload8"), 4: ("vf4", "vload4"), 1: ("float", "*")}[width]
            lines.append("{ " + " ".join(f"{t} acc{r} = {self._first(r, col, width, t, load)};" for r in range(rows)))
            lines.append(f"  for (int kk = 0; kk < {self.k}; kk++) {{ {t} bv = {load}(B + kk * {self.n} + {col});")
            lines.append("    " + " ".join(f"acc{r} += A[(m0 + {r}) * {self.k} + kk] * bv;" for r in range(rows)) + " }")
            lines += self._stores(rows, col, width)
            lines.append("}")
        return "\n".join(lines)

    def _first(self, r: int, col: int, width: int, t: str, load: str) -> str:
        if not self.bias:
            return f"({t}){{0}}" if width > 1 else "0.0f"
        return f"{load}(C + (m0 + {r}) * {self.n} + {col})" if self.bias_rows else f"{load}(C + {col})"

    def _stores(self, rows: int, col: int, width: int) -> list[str]:
        n, chain, vw = self.n, self.chain, self.vw
        out, r = [], 0
        while r < rows:
            at = f"O + (m0 + {r}) * {n} + {col}"
            if width == 1:
                out.append(f"  O[(m0 + {r}) * {n} + {col}] = {apply(chain, f'acc{r}', False)};")
            elif width == vw:
                out.append(f"  vstore({at}, {apply(chain, f'acc{r}', True)});")
            elif 2 * width == vw and n == width and r + 1 < rows:
                pair = f"__builtin_shufflevector(acc{r}, acc{r + 1}, {', '.join(map(str, range(vw)))})"
                out.append(f"  vstore({at}, {apply(chain, pair, True)});")
                r += 1
            else:
                out.append(f"  {{ float t[{width}]; memcpy(t, &acc{r}, sizeof t); for (int j = 0; j < {width}; j++) "
                           f"({at})[j] = {apply(chain, 't[j]', False)}; }}")
            r += 1
        return out


# a helper in the source of a plan that uses it (prelude's size decides gcc's -O level: toolchain)
PAIRS_HELPER = r"""/* lanes (a, b) repeated: two adjacent floats broadcast as one double (a load's broadcast;
   16-float vectors only) */
typedef double vd __attribute__((vector_size(64)));
static inline vf vpair(const float *p) { double d; memcpy(&d, p, 8); return (vf)((vd){d, d, d, d, d, d, d, d}); }
static inline vf vpair_last(float a) {
    float t[2] = {a, 0.0f}; double d; memcpy(&d, t, 8); return (vf)((vd){d, d, d, d, d, d, d, d});
}
/* rows k and k + 1 of an 8-column B (16 adjacent floats) interleaved: lane 2j is B[k][j], 2j + 1 B[k + 1][j] */
static inline vf vpairs_of(vf b) { return __builtin_shufflevector(b, b, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15); }
/* two rows' sums from their even and odd lanes: row r's 8 columns, then row r + 1's */
static inline vf vpairs_sum(vf r0, vf r1) {
    return __builtin_shufflevector(r0, r1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
         + __builtin_shufflevector(r0, r1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
"""


class _PairBlock:
    """A block of rows of an 8-column product on 16-float vectors (attention's AV with heads of
    8), two values of K a vector: lane 2j sums A[r][k]·B[k][j] over even k, lane 2j + 1 over odd
    k, each product the reference's; the halves added at the store. Half-vector FMAs held it to
    half the multiply-add rate (act_s's 65 × 65 × 8 heads: 2.9 µs)."""

    def __init__(self, k: int, chain):
        self.k, self.chain = k, chain

    def code(self, rows: int) -> str:
        k = self.k
        lines = ["{ " + " ".join(f"vf acc{r} = vsplat(0.0f);" for r in range(rows)), "  int kk = 0;",
                 f"  for (; kk + 2 <= {k}; kk += 2) {{ vf bv = vpairs_of(vload(B + kk * 8));",
                 "    " + " ".join(f"acc{r} += vpair(A + (m0 + {r}) * {k} + kk) * bv;" for r in range(rows)) + " }"]
        if k % 2:
            lines += ["  { vf bv = vsplat(0.0f); memcpy(&bv, B + kk * 8, 8 * sizeof(float)); bv = vpairs_of(bv);",
                      "    " + " ".join(f"acc{r} += vpair_last(A[(m0 + {r}) * {k} + kk]) * bv;" for r in range(rows)) + " }"]
        for r in range(0, rows - 1, 2):
            pair = apply(self.chain, f"vpairs_sum(acc{r}, acc{r + 1})", True)
            lines.append(f"  vstore(O + (m0 + {r}) * 8, {pair});")
        if rows % 2:
            r = rows - 1
            last = apply(self.chain, f"vpairs_sum(acc{r}, acc{r})", True)
            lines.append(f"  {{ vf v = {last}; memcpy(O + (m0 + {r}) * 8, &v, 8 * sizeof(float)); }}")
        return "\n".join(lines + ["}"])


def _accumulate(nv: int, init: list[str], k: int, row0: str, ld: int, vw: int) -> str:
    """acc0..acc{nv-1} = init + Σ_kk ar[kk] · row(kk)[i·VW …], row(kk) = row0 + kk·ld.

    A row times a matrix is a chain of dependent FMAs per accumulator: with few output vectors
    it is latency-bound (4 cycles an FMA), not bound by the FMA units or by reading the
    weights. So K is split into ``sets`` interleaved partial sums (about eight independent
    chains in all), added at the end."""
    sets = 1 if k < 16 else max(1, min(4, -(-8 // nv)))
    decl = [f"vf acc{i} = {init[i]};" for i in range(nv)]
    decl += [f"vf acc{i}_{s} = vsplat(0.0f);" for s in range(1, sets) for i in range(nv)]
    lines = [" ".join(decl), "int kk = 0;"]
    if sets > 1:
        lines.append(f"for (; kk + {sets} <= {k}; kk += {sets}) {{")
        lines.append(f"    const float *br = {row0} + (size_t)kk * {ld};")
        for s in range(sets):
            suffix = "" if s == 0 else f"_{s}"
            lines.append(f"    {{ vf x = vsplat(ar[kk + {s}]); " +
                         " ".join(f"acc{i}{suffix} += x * vload(br + {s * ld + i * vw});" for i in range(nv)) + " }")
        lines.append("}")
    lines.append(f"for (; kk < {k}; kk++) {{")
    lines.append(f"    vf x = vsplat(ar[kk]); const float *br = {row0} + (size_t)kk * {ld};")
    lines.append("    " + " ".join(f"acc{i} += x * vload(br + {i * vw});" for i in range(nv)))
    lines.append("}")
    for s in range(1, sets):
        lines.append(" ".join(f"acc{i} += acc{i}_{s};" for i in range(nv)))
    return "\n".join(lines)


def _accumulate_rows(nv: int, inits: list[list[str]], k: int, row0: str, ld: int, vw: int) -> str:
    """acc{r}_0..acc{r}_{nv-1} = inits[r] + Σ_kk ar{r}[kk] · row(kk)[i·VW …] for each row r at
    once: one load of the weights for every row. Each sum runs over K in order."""
    rows = range(len(inits))
    lines = [" ".join(f"vf acc{r}_{i} = {inits[r][i]};" for r in rows for i in range(nv)),
             f"for (int kk = 0; kk < {k}; kk++) {{",
             f"    const float *br = {row0} + (size_t)kk * {ld};",
             "    " + " ".join(f"vf x{r} = vsplat(ar{r}[kk]);" for r in rows)]
    for i in range(nv):
        lines.append(f"    {{ vf w = vload(br + {i * vw}); " + " ".join(f"acc{r}_{i} += x{r} * w;" for r in rows) + " }")
    lines.append("}")
    return "\n".join(lines)


def _fast_gemm(prog, node) -> str:
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    m, k = prog.type(a).shape
    _, n = prog.type(b).shape
    chain = unary_chain(prog, node)
    bexpr, packed = prog.tensor(b), None
    if b in prog.graph.consts:
        packed = (b, prog.graph.consts[b])
    if a in prog.blocked_flat:          # A is a channel-blocked activation: B's rows follow it
        arr = _blocked_rows(prog.graph.consts[b], prog.blocked_flat[a], prog.vw)
        bexpr, packed = prog.const(b + f"@blocked{prog.vw}", arr), (b + f"@blocked{prog.vw}", arr)
    bias, rows = None, False
    if len(node.inputs) > 2 and node.inputs[2]:
        c = node.inputs[2]
        shape = prog.type(c).shape
        if shape in ((n,), (1, n)):
            bias = prog.tensor(c)
        elif shape == (m, n):
            bias, rows = prog.tensor(c), True
        else:                                 # a constant that broadcasts: expanded once
            bias, rows = prog.const(c + "@full", np.broadcast_to(prog.graph.consts[c], (m, n))), True
    return _rows(prog, prog.tensor(a), bexpr, prog.tensor(o), m, k, n, bias, rows, chain, packed) + \
        "\n" + after_split(prog, epilogue_pass(prog, node, o, in_registers=True))


def _blocked_rows(b: np.ndarray, chw: tuple, vw: int) -> np.ndarray:
    """B's first C·H·W rows reordered from NCHW order to channel-blocked order (the rest, a
    bias row, unchanged)."""
    c, h, w = chw
    idx = np.arange(c * h * w).reshape(c // vw, vw, h, w).transpose(0, 2, 3, 1).reshape(-1)
    return np.concatenate([b[:c * h * w][idx], b[c * h * w:]])


def _bias_epilogue(prog, node, n: int):
    """A MatMul's first epilogue link when it adds a constant row of n values (an exported
    Linear's bias): (its C expression, the node with the rest of the chain); else (None, node)."""
    if node.epilogue and node.epilogue[0].op == "Add" and len(node.epilogue[0].operands) == 1:
        c = node.epilogue[0].operands[0]
        if c in prog.graph.consts and prog.graph.consts[c].size == n and prog.graph.consts[c].shape[-1:] == (n,) \
                and prog.graph.consts[c].dtype == np.float32:
            return prog.const(c + "@row", prog.graph.consts[c].reshape(n)), replace(node, epilogue=node.epilogue[1:])
    return None, node


def _fast_matmul(prog, node) -> str:
    """A (…, M, K) or (K,) times a 2-D B: A's leading dimensions are rows of one product; a
    constant bias added after it is added in the kernel."""
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    k, n = prog.type(b).shape
    m = prog.type(a).size // k
    bias, rest = _bias_epilogue(prog, node, n)
    packed = (b, prog.graph.consts[b]) if b in prog.graph.consts else None
    return _rows(prog, prog.tensor(a), prog.tensor(b), prog.tensor(o), m, k, n, bias, False, unary_chain(prog, rest),
                 packed) + \
        "\n" + after_split(prog, epilogue_pass(prog, rest, o, in_registers=True))


def _product_loops(m: int, n: int, k: int, a: str, b: str, o: str, a_st: tuple, b_st: tuple, ct: str, st: str,
                   finish) -> str:
    """o[i·n + j] = finish(Σ a[i·a_st[0] + kk·a_st[1]] · b[kk·b_st[0] + j·b_st[1]], i, j)."""
    return "\n".join([
        f"for (long i = 0; i < {m}; i++) for (long j = 0; j < {n}; j++) {{",
        f"    {ct} s = 0;",
        f"    for (long kk = 0; kk < {k}; kk++) s += ({ct}){a}[i * {a_st[0]} + kk * {a_st[1]}] * "
        f"({ct}){b}[kk * {b_st[0]} + j * {b_st[1]}];",
        f"    {o}[i * {n} + j] = ({st})({finish('s')});",
        "}"])


def _generic_gemm(prog, node) -> str:
    at = node.attrs
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    ta, tb = int(at.get("transA", 0)), int(at.get("transB", 0))
    sa, sb = prog.type(a).shape, prog.type(b).shape
    m, k = (sa[1], sa[0]) if ta else sa
    n = sb[0] if tb else sb[1]
    odt = prog.type(o).dtype
    ct, st = compute(odt), storage(odt)
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    a_st = (1, m) if ta else (k, 1)
    b_st = (1, k) if tb else (n, 1)
    lines = [f"const {storage(prog.type(a).dtype)} *A = {prog.ptr(a)}; const {storage(prog.type(b).dtype)} *B = "
             f"{prog.ptr(b)}; {st} *O = {prog.ptr(o)};"]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] and beta != 0.0 else ""
    bias = None
    if c:
        bias = ("C", broadcast_strides(prog.type(c).shape, (m, n)), 0)
        lines.append(f"const {storage(prog.type(c).dtype)} *C = {prog.ptr(c)};")

    def finish(s):
        v = s if alpha == 1.0 else f"{s} * {literal(alpha, odt)}"
        if odt == np.float16:
            v = f"(float)(_Float16)({v})"
        if bias is None:
            return v
        name, bst, off = bias
        term = f"({ct}){name}[{off} + i * {bst[0]} + j * {bst[1]}]"
        if beta != 1.0:
            term = f"({term} * {literal(beta, odt)})"
        return f"{v} + {term}"
    lines.append(_product_loops(m, n, k, "A", "B", "O", a_st, b_st, ct, st, finish))
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, o)


def batched(prog, node) -> tuple[int, int, int, tuple, list]:
    """A MatMul's (m, k, n), its batch shape (numpy's broadcasting of both sides' leading
    dimensions; a 1-D side as a row or a column) and the element strides of the output, A and B
    over that batch — the loops every matrix product nests its rows in."""
    sa, sb = list(prog.type(node.inputs[0]).shape), list(prog.type(node.inputs[1]).shape)
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    m, k, n = sa[-2], sa[-1], sb[-1]
    batch = tuple(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
    strides = [tuple(s * m * n for s in broadcast_strides(batch, batch)),
               tuple(s * m * k for s in broadcast_strides(sa[:-2], batch)),
               tuple(s * k * n for s in broadcast_strides(sb[:-2], batch))]
    return m, k, n, batch, strides


def _generic_matmul(prog, node) -> str:
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    m, k, n, batch, strides = batched(prog, node)
    odt = prog.type(o).dtype
    ct, st = compute(odt), storage(odt)
    finish = (lambda s: f"(float)(_Float16)({s})") if odt == np.float16 else (lambda s: s)

    def body(idx):
        return "\n".join([f"{st} *Ob = {prog.ptr(o)} + {idx[0]};",
                          f"const {storage(prog.type(a).dtype)} *Ab = {prog.ptr(a)} + {idx[1]};",
                          f"const {storage(prog.type(b).dtype)} *Bb = {prog.ptr(b)} + {idx[2]};",
                          _product_loops(m, n, k, "Ab", "Bb", "Ob", (k, 1), (n, 1), ct, st, finish)])
    return indent(nest(batch, strides, body, var="b")) + "\n" + epilogue_pass(prog, node, o)


def gemm_fast_ok(prog, node) -> bool:
    """The fast form applies: float32, no transposes, no scaling, a bias it can read."""
    at = node.attrs
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    if not (_f32(prog, a, b, o, c) and not at.get("transA", 0) and not at.get("transB", 0)
            and float(at.get("alpha", 1.0)) == 1.0 and (not c or float(at.get("beta", 1.0)) == 1.0)):
        return False
    n = prog.type(b).shape[1]
    return not c or c in prog.graph.consts or prog.type(c).shape in ((n,), (1, n), tuple(prog.type(o).shape))


def gemm(prog, node) -> str:
    if gemm_fast_ok(prog, node):
        return _fast_gemm(prog, node)
    if node.inputs[0] in prog.blocked_flat:
        raise Unsupported("a channel-blocked input to a Gemm without the fast form")   # choose_layouts prevents it
    return _generic_gemm(prog, node)


def _batched_matmul(prog, node) -> str:
    """(…, M, K) times (…, K, N), both computed (attention's QKᵀ and AV, batched over heads):
    the fast row form once per batch entry, broadcasting either side's leading dimensions."""
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    m, k, n, batch, strides = batched(prog, node)
    bias, rest = _bias_epilogue(prog, node, n)
    chain = unary_chain(prog, rest)

    def body(idx):
        return _rows(prog, f"{prog.tensor(a)} + {idx[1]}", f"{prog.tensor(b)} + {idx[2]}",
                     f"{prog.tensor(o)} + {idx[0]}", m, k, n, bias, False, chain, batch=int(np.prod(batch)))
    return indent(nest(batch, strides, body, var="b")) + "\n" + \
        after_split(prog, epilogue_pass(prog, rest, o, in_registers=True))


def matmul(prog, node) -> str:
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    ra, rb = len(prog.type(a).shape), len(prog.type(b).shape)
    if _f32(prog, a, b, o) and rb == 2:
        return _fast_matmul(prog, node)
    if _f32(prog, a, b, o) and ra >= 2 and rb >= 3:
        return _batched_matmul(prog, node)
    return _generic_matmul(prog, node)
