"""A depthwise ConvInteger (one input channel a group) at stride 1 or 2 with a constant weight,
and the dequantizing chain after it.

The sums are float32, exactly: each product of centred 8-bit values is at most 255², so a sum
of up to 258 of them stays below 2²⁴, where every integer is a float. Each channel's plane is
centred into a bordered float buffer (the border zeroed once a step), then the float depthwise
form's tiles of rows × vectors (depthwise.RowTile). The generic loops' bounds checks per tap
took 217 µs for a 64 × 32 × 32 3×3 step of dynamically quantized mbv2_s.

A QDQ model's depthwise convolution becomes such a ConvInteger and a DequantizeLinear of its
sums with the bias, the activation and the next rounding chained (passes/quant.py). When that
DequantizeLinear is the very next step and the sums' only reader (``choose``), this step runs
it too, in registers: each sum × its channel's scale (the DequantizeLinear's value exactly: the
sum is exact), then the chain, stored as float32 or as the following QuantizeLinear's bytes
(qstore.py) — not an int32 tensor four times the bytes' size written, read back and
dequantized by its own pass. Codegen takes the DequantizeLinear's step out of the plan's
order, and back in when the kernel did not run it.
"""
from __future__ import annotations

import numpy as np

from .ctype import storage
from .depthwise import RowTile, blocks, evens
from .qstore import disjoint


def choose(prog, skip: set) -> dict[str, int]:
    """The ConvInteger outputs whose DequantizeLinear — the next step and their only reader — a
    depthwise form may run too, with that step (added to ``skip``). Its output, and the bytes
    of a QuantizeLinear stored in its place (``prog.qstores``), must not overlap what the
    ConvInteger reads: the memory plan promised them free only from their own steps on."""
    g, chosen = prog.graph, {}
    consumers = g.consumers()
    live = [s for s in range(len(g.nodes)) if s not in skip]
    for s, nxt in zip(live, live[1:]):
        node, d = g.nodes[s], g.nodes[nxt]
        y = node.outputs[0] if node.outputs else ""
        if node.op != "ConvInteger" or d.op != "DequantizeLinear" or not d.inputs or d.inputs[0] != y \
                or y in g.outputs or len(consumers.get(y, [])) != 1:
            continue
        reads = [i for i in node.inputs if i]
        q = prog.qstores.get(d.outputs[0])
        if not disjoint(prog, d.outputs[0], reads) or (q is not None and not q.late and not disjoint(prog, q.out, reads)):
            continue
        chosen[y] = nxt
        skip.add(nxt)
    return chosen


def _centred(prog, node, geometry, g: int) -> np.ndarray | None:
    """W − its zero point (int32) when the depthwise forms apply: one input channel a group, a
    constant weight, stride 1 or 2 alike on both axes, at most 258 taps of at most 255."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    w = node.inputs[1]
    zw = node.inputs[3] if len(node.inputs) > 3 else ""
    consts = prog.graph.consts
    if g != c or prog.type(w).shape[0] != c or w not in consts or (zw and zw not in consts) or kh * kw > 258 \
            or strides[0] != strides[1] or strides[0] not in (1, 2):
        return None
    wc = consts[w].astype(np.int32)
    if zw:
        wc = wc - consts[zw].astype(np.int32).reshape((-1,) + (1,) * (wc.ndim - 1))
    return None if np.abs(wc).max(initial=0) > 255 else wc


def _output(prog, node, finish) -> tuple[str, str, object]:
    """Where the step stores: (the C declaration of Y, its element type, the QStore when it stores
    the bytes of the QuantizeLinear after the chain); the chain's step marked taken."""
    o = node.outputs[0]
    if finish is None:
        return f"int32_t *Y = {prog.ptr(o)};", "int32_t", None
    d, decls, _ = finish
    q = prog.quantized_store(d.outputs[0])
    prog.after_taken.add(o)
    if q is not None:
        return f"uint8_t *Y = (uint8_t *){prog.ptr(q.out)}; {decls}", "uint8_t", q
    return f"float *Y = {prog.ptr(d.outputs[0])}; {decls}", "float", None


def depthwise_conv(prog, node, geometry, g: int, zx: str, finish=None) -> str | None:
    """The step's C, or None where the depthwise forms do not apply: on AVX-512 VNNI with VBMI
    the byte form (``_vnni``), else the exact float form (module docstring). ``finish``: (the
    DequantizeLinear's node, C declarations of its operands, sum expression → the value to
    store) to run the chain after it; else the sums are stored as int32."""
    wc = _centred(prog, node, geometry, g)
    if wc is None:
        return None
    decl, yt, q = _output(prog, node, finish)
    exact = _exact(prog, node, geometry, wc, zx, finish, (decl, yt, q))
    vnni = _vnni(prog, node, geometry, wc, zx, finish, (decl, yt, q))
    return exact if vnni is None else f"#if defined(NNOS_DW_VNNI)\n{vnni}\n#else\n{exact}\n#endif"


def _exact(prog, node, geometry, wc: np.ndarray, zx: str, finish, output) -> str:
    """Sums of centred values in float32, exactly (module docstring)."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    x, w = node.inputs[0], node.inputs[1]
    s, vw = strides[0], prog.vw
    hp = (out[0] - 1) * s + (kh - 1) * dil[0] + 1          # the rows and columns the taps reach
    wp = (out[1] - 1) * s + (kw - 1) * dil[1] + 1
    ny, nx = min(h, hp - begin[0]), min(wd, wp - begin[1])
    plane, _ = prog.ws((hp * wp + 2 * vw) * 4)             # + two vectors: a tile's last vector reads past
    if s == 2 and evens(vw) not in prog.helpers:
        prog.helpers.append(evens(vw))
    xt = storage(prog.type(x).dtype)
    offsets = [ky * dil[0] * wp + kx * dil[1] for ky in range(kh) for kx in range(kw)]
    out_decl, yt, q = output
    tile = RowTile(offsets, wp, out[1], vw, s, None, q, integer=finish is None, finish=finish and finish[2])
    lines = [f"const {xt} *X = {prog.ptr(x)}; {out_decl} const int32_t zx = {zx};",
             f"float *pc = {plane}; const float *Wd = {prog.const(w + ':depthwise-float', wc.reshape(c, kh * kw))};",
             f"const vf b = vsplat(0.0f); memset(pc, 0, {(hp * wp + 2 * vw) * 4});",
             f"for (long bc = 0; bc < {n * c}; bc++) {{",
             f"    const {xt} *xc = X + bc * {h * wd}; {yt} *yc = Y + bc * {out[0] * out[1]};",
             f"    for (long y = 0; y < {ny}; y++) {{ float *d = pc + (y + {begin[0]}) * {wp} + {begin[1]}; "
             f"for (long xx = 0; xx < {nx}; xx++) d[xx] = (float)((int32_t)xc[y * {wd} + xx] - zx); }}",
             "    " + " ".join(f"const vf k{t} = vsplat(Wd[(bc % {c}) * {kh * kw} + {t}]);" for t in range(kh * kw))]
    lines += ["    " + line for line in blocks("oy0", out[0], min(4, out[0]), tile.row)]
    return "\n".join(lines + ["}"])


# defined where the byte form compiles: AVX-512 VNNI (vpdpbusd) and VBMI (vpermb), 16-float vectors
HELPER = """#if defined(__AVX512VNNI__) && defined(__AVX512VBMI__) && defined(__AVX512BW__) && NNOS_VW == 16
#define NNOS_DW_VNNI 1
#endif
"""


def _vnni(prog, node, geometry, wc: np.ndarray, zx: str, finish, output) -> str | None:
    """Bytes, four taps of a window row at once: each channel's plane copied into a bordered
    byte plane (the border the zero point; int8 flipped to uint8), then for sixteen output
    pixels of a row (or of rows narrower than a vector, ``_VnniTile``), each window row's taps
    0–3 (and 4–7) one vpermb of a 64-byte load — lane i's four bytes from pixel i·stride on —
    and one vpdpbusd with the taps' weights, less the zero point's (and flip's) sum: ``off`` ×
    the channel's weight sum. For 3×3 three of each per sixteen sums, where the float form loads
    and multiply-adds nine times. The next channel's plane is filled while this one's is read:
    a load of a plane just filled waited on its small stores (int8 mbv2_s's 128 × 8 × 8 step
    3.7 → 1.4 µs). Weights whose centred values fit int8, at most 8 taps a row, no dilation:
    else None."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    if prog.vw != 16 or kw > 8 or tuple(dil) != (1, 1) or wc.min() < -128 or wc.max() > 127:
        return None
    if HELPER not in prog.helpers:
        prog.helpers.append(HELPER)
    x, w = node.inputs[0], node.inputs[1]
    s, parts = strides[0], 1 if kw <= 4 else 2
    packed = np.zeros((c, kh, 4 * parts), np.int8)
    packed[:, :, :kw] = wc.reshape(c, kh, kw)
    hp, wp = (out[0] - 1) * s + kh, (out[1] - 1) * s + kw          # the rows and columns the taps reach
    ny, nx = min(h, hp - begin[0]), min(wd, wp - begin[1])
    size = -(-(hp * wp + 128) // 64) * 64                        # + a load's 64 bytes (and 4) past the end
    planes, _ = prog.ws(2 * size)
    flip = prog.type(x).dtype == np.int8
    xt = storage(prog.type(x).dtype)
    rpv = 16 // out[1] if 16 % out[1] == 0 and out[0] % (16 // out[1]) == 0 else 1   # whole rows a vector
    if rpv > 1 and (rpv - 1) * s * wp + (out[1] - 1) * s + 4 * parts > 64:
        rpv = 1                                                   # their windows past one load
    idx = ", ".join(str((i // out[1] * s * wp if rpv > 1 else 0) + i % (out[1] if rpv > 1 else 16) * s + j)
                    for i in range(16) for j in range(4))
    decl, yt, q = output
    row = (f"for (long xx = 0; xx < {nx}; xx++) d[xx] = (uint8_t)xs[y * {wd} + xx] ^ 0x80;" if flip
           else f"memcpy(d, xs + y * {wd}, {nx});")

    def fill(k: str) -> str:
        """Channel k's plane, bordered with the zero point, into its half of the two."""
        return (f"{{ uint8_t *p = P + ({k}) % 2 * {size}; const {xt} *xs = X + ({k}) * {h * wd}; memset(p, off, {hp * wp}); "
                f"for (long y = 0; y < {ny}; y++) {{ uint8_t *d = p + (y + {begin[0]}) * {wp} + {begin[1]}; {row} }} }}")
    lines = [f"const {xt} *X = {prog.ptr(x)}; {decl} const int32_t off = {128 if flip else 0} + {zx};",
             f"uint8_t *P = {planes}; const int32_t *Wq = {prog.const(w + ':depthwise-bytes', packed.view(np.int32), None)};",
             f"const int32_t *Cs = {prog.const(w + ':depthwise-sums', wc.reshape(c, -1).sum(axis=1), np.int32)};",
             f"static const uint8_t IDX[64] = {{{idx}}}; const __m512i idx = _mm512_loadu_si512(IDX);",
             fill("0"),
             f"for (long bc = 0; bc < {n * c}; bc++) {{",
             f"    if (bc + 1 < {n * c}) {fill('bc + 1')}",
             f"    const uint8_t *pc = P + bc % 2 * {size}; {yt} *yc = Y + bc * {out[0] * out[1]};",
             f"    __m512i wk[{kh * parts}]; for (int t = 0; t < {kh * parts}; t++) "
             f"wk[t] = _mm512_set1_epi32(Wq[(bc % {c}) * {kh * parts} + t]);",
             f"    const __m512i corr = _mm512_set1_epi32(off * Cs[bc % {c}]);"]
    tile = _VnniTile(kh, parts, wp, out[1], s, rpv, finish and finish[2], q)
    if rpv > 1:
        units = out[0] // rpv
        lines += ["    " + line for line in blocks("u0", units, min(4, units), tile.units)]
    else:
        lines += ["    " + line for line in blocks("oy0", out[0], min(4, out[0]), tile.row)]
    return "\n".join(lines + ["}"])


class _VnniTile:
    """The C of the byte form's tiles (the names it expects: pc the plane, yc the output, wk the
    taps' words, idx, corr). A vector is sixteen pixels of a row, or — rows narrower than a
    vector (``rpv`` = 16 / the row's width > 1) — ``rpv`` whole rows, whose windows one 64-byte
    load still covers: int8 mbv2_s's 8 × 8 planes filled half of each vector."""

    def __init__(self, kh: int, parts: int, wp: int, ow: int, stride: int, rpv: int, finish, quantized):
        self.kh, self.parts, self.wp, self.ow, self.s, self.rpv = kh, parts, wp, ow, stride, rpv
        self.finish, self.quantized = finish, quantized

    def row(self, rows: int) -> list[str]:
        """Rows oy0 … oy0 + rows − 1 along their width: pairs of vectors, one, a part-filled one."""
        nvec, tail = self.ow // 16, self.ow % 16
        lines = blocks("ox0", nvec * 16, max(1, min(2, nvec)) * 16, lambda width: self.tile(
            f"(oy0 * {self.s}) * {self.wp} + ox0 * {self.s}",
            [(r * self.s * self.wp + v * 16 * self.s, f"(oy0 + {r}) * {self.ow} + ox0 + {v * 16}", 16)
             for r in range(rows) for v in range(width // 16)]))
        if tail:
            lines += [f"{{ const int ox0 = {nvec * 16};"] + ["    " + x for x in self.tile(
                f"(oy0 * {self.s}) * {self.wp} + ox0 * {self.s}",
                [(r * self.s * self.wp, f"(oy0 + {r}) * {self.ow} + ox0", tail) for r in range(rows)])] + ["}"]
        return lines

    def units(self, n: int) -> list[str]:
        """Vectors u0 … u0 + n − 1 of ``rpv`` whole rows each."""
        step = self.rpv * self.s * self.wp
        return self.tile(f"u0 * {step}", [(u * step, f"(u0 + {u}) * {16}", 16) for u in range(n)])

    def tile(self, base: str, sums: list[tuple[int, str, int]]) -> list[str]:
        """Sums (a load's offset from the plane at ``base``, the output's offset from yc, lanes
        stored), each over the window's rows."""
        names = [f"a{k}" for k in range(len(sums))]
        lines = [" ".join(f"__m512i {a} = _mm512_setzero_si512();" for a in names),
                 f"for (int ky = 0; ky < {self.kh}; ky++) {{",
                 f"    const uint8_t *xr = pc + {base} + ky * {self.wp};"]
        for a, (at, _, _) in zip(names, sums):
            lines.append("    " + " ".join(
                f"{a} = _mm512_dpbusd_epi32({a}, _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(xr + {at + 4 * p})), "
                f"wk[ky * {self.parts} + {p}]);" for p in range(self.parts)))
        lines.append("}")
        for a, (_, out, stored) in zip(names, sums):
            at = f"yc + {out}"
            if self.finish is None:
                mask = "(__mmask16)0xFFFF" if stored == 16 else f"(__mmask16){(1 << stored) - 1}"
                lines.append(f"_mm512_mask_storeu_epi32({at}, {mask}, _mm512_sub_epi32({a}, corr));")
                continue
            value = self.finish(f"(vf)_mm512_cvtepi32_ps(_mm512_sub_epi32({a}, corr))")
            if self.quantized:
                lines.append(self.quantized.store(at, value, stored))
            elif stored == 16:
                lines.append(f"vstore({at}, {value});")
            else:
                lines.append(f"{{ const vf t = {value}; memcpy({at}, &t, {stored * 4}); }}")
        return lines
