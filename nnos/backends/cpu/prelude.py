"""The C prelude every generated plan starts with: the vector type (GCC vector extensions: the
same source lowers to AVX-512, AVX2, SSE or NEON), unaligned loads and stores, and the
activations, vectorized and NaN-propagating (a NaN in stays a NaN out, so the loop's finite
check still sees it; nothing is compiled with -ffinite-math-only).

tanh is the rational approximation Eigen uses for float (a 13th/6th-degree ratio on [-7.9, 7.9],
a few ulp), the same code for vectors and scalars; sigmoid(x) = 0.5 + 0.5·tanh(x/2).
"""

PRELUDE = r"""
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#ifndef NNOS_VW
#define NNOS_VW 8
#endif
#define VW NNOS_VW
#if (VW == 16 && defined(__AVX512F__)) || (VW == 8 && defined(__AVX2__))
#include <immintrin.h>
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));

/* narrower vectors for products with fewer columns than a vector (attention's small heads) */
#if VW >= 8
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
static inline vf8 vload8(const float *p) { vf8 v; memcpy(&v, p, sizeof v); return v; }
#endif
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));
static inline vf4 vload4(const float *p) { vf4 v; memcpy(&v, p, sizeof v); return v; }
static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
/* a vector's lanes summed (or their max: a NaN lane may be lost, callers let NaN through their
   sums) by halving it: log2(VW) dependent steps, not VW */
static inline vf4 vhalves4(vf v, int max) {
#if VW == 16
    vf8 a8, b8;
    memcpy(&a8, &v, 32); memcpy(&b8, (const char *)&v + 32, 32);
    { vi8 m8 = b8 > a8; a8 = max ? (vf8)((m8 & (vi8)b8) | (~m8 & (vi8)a8)) : a8 + b8; }
#elif VW == 8
    vf8 a8;
    memcpy(&a8, &v, 32);
#endif
#if VW >= 8
    vf4 a, b;
    memcpy(&a, &a8, 16); memcpy(&b, (const char *)&a8 + 16, 16);
    vi4 m4 = b > a;
    return max ? (vf4)((m4 & (vi4)b) | (~m4 & (vi4)a)) : a + b;
#else
    vf4 a;
    memcpy(&a, &v, 16);
    return a;
#endif
}
static inline float vhsum(vf v) { vf4 s = vhalves4(v, 0); return (s[0] + s[2]) + (s[1] + s[3]); }
static inline float vhmax(vf v) {
    vf4 s = vhalves4(v, 1);
    float a = s[0] > s[2] ? s[0] : s[2], b = s[1] > s[3] ? s[1] : s[3];
    return a > b ? a : b;
}
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* an explicit initializer, not {0} + x: gcc then broadcasts straight from memory (one load
   µop, no shuffle), which is what keeps a convolution's inner loop at one FMA per cycle */
#if VW == 16
#define VB(x) (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}
#elif VW == 8
#define VB(x) (vf){x, x, x, x, x, x, x, x}
#else
#define VB(x) (vf){x, x, x, x}
#endif
static inline vf vsplat(float x) { return VB(x); }
static inline vf vbcast(const float *p) { float x = *p; return VB(x); }
/* m's lanes all ones or all zeros (comparisons): a where set, else b; on AVX2 one blend (the
   and/andnot/or it was lowered to: three) */
#if VW == 8 && defined(__AVX2__)
static inline vf vsel(vi m, vf a, vf b) { return (vf)_mm256_blendv_ps((__m256)b, (__m256)a, (__m256)m); }
#else
static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
#endif
{VTRANSPOSE}

/* max/min that keep a NaN in the first operand (numpy's maximum/minimum propagate NaN). On x86
   maxps(lo, x) is lo > x ? lo : x — the select's value bit for bit, NaN and -0 included — in one
   instruction (gcc made the select a compare and a blend, or three logic ops); SSE by gcc's
   builtin, not a header (an image's compiler has none: image/steps/48-cpu-backend.sh) */
#if VW == 16 && defined(__AVX512F__)
static inline vf vmaxnan(vf x, vf lo) { return (vf)_mm512_max_ps((__m512)lo, (__m512)x); }
static inline vf vminnan(vf x, vf hi) { return (vf)_mm512_min_ps((__m512)hi, (__m512)x); }
#elif VW == 8 && defined(__AVX2__)
static inline vf vmaxnan(vf x, vf lo) { return (vf)_mm256_max_ps((__m256)lo, (__m256)x); }
static inline vf vminnan(vf x, vf hi) { return (vf)_mm256_min_ps((__m256)hi, (__m256)x); }
#elif VW == 4 && defined(__SSE__) && defined(__GNUC__)
static inline vf vmaxnan(vf x, vf lo) { return __builtin_ia32_maxps(lo, x); }
static inline vf vminnan(vf x, vf hi) { return __builtin_ia32_minps(hi, x); }
#else
static inline vf vmaxnan(vf x, vf lo) { return vsel(x < lo, lo, x); }
static inline vf vminnan(vf x, vf hi) { return vsel(x > hi, hi, x); }
#endif
static inline vf vrelu(vf x) { return vmaxnan(x, vsplat(0.0f)); }
{VTANH}
static inline vf vsigmoid(vf x) { return 0.5f + 0.5f * vtanh(0.5f * x); }

static inline vf vleaky(vf x, float a) { return vsel(x < 0.0f, x * a, x); }

static inline float srelu(float x) { return x < 0.0f ? 0.0f : x; }
static inline float sleaky(float x, float a) { return x < 0.0f ? x * a : x; }
static inline float smaxnan(float x, float lo) { return x < lo ? lo : x; }
static inline float sminnan(float x, float hi) { return x > hi ? hi : x; }
{STANH}
static inline float ssigmoid(float x) { return 0.5f + 0.5f * stanh(0.5f * x); }

/* exp: Cephes' range reduction x = n·ln2 + g and degree-7 polynomial (≈1 ulp); n rounded to
   nearest by adding 1.5·2^23 (n is then the float's low mantissa bits: no conversions); 2^n
   applied in two halves so n = 128 (x up to ln FLT_MAX) stays finite; below −87.34 (denormal
   results) 0 */
static inline vf vexp_special(vf x, vf y, float hi, float lo);
static inline vf vclampq(vf t, float lo, float hi);
static inline vf vexp_within(vf c);
static inline vf vexp(vf x) {
    const float hi = 88.72283935546875f, lo = -87.3365478515625f;
    vf c = vclampq(x, lo, hi);                     /* NaN → lo: its result is replaced below */
    return vexp_special(x, vexp_within(c), hi, lo);
}
/* exp of c within [lo, hi] (vexp's clamp): the polynomial and the scaling only. The
   polynomials here are evaluated by Estrin's scheme (pairs, then pairs of pairs by g², g⁴…),
   not Horner's: a loop of exps or GELUs is bound by its dependent chain, not by its operations
   (a Zen 5 held too few vectors' chains in flight: GELU 9.6 → 6.4 ns a vector, with 2^n by one
   vscalefps on AVX-512) */
static inline vf vexp_within(vf c) {
    const float magic = 12582912.0f;
    vf t = c * 1.44269504088896341f + magic;
    vf n = t - magic;
    vf g = c - n * 0.693359375f + n * 2.12194440e-4f, g2 = g * g;
    vf a = g * 1.9875691500e-4f + 1.3981999507e-3f, b = g * 8.3334519073e-3f + 4.1665795894e-2f;
    vf y = ((a * g2 + b) * g2 + (g * 1.6666665459e-1f + 5.0000001201e-1f)) * g2 + (g + 1.0f);
#if VW == 16 && defined(__AVX512F__)
    return (vf)_mm512_scalef_ps((__m512)y, (__m512)n);
#else
    vi ni = (vi)t - 0x4B400000, h = ni >> 1;
    return y * (vf)((h + 127) << 23) * (vf)((ni - h + 127) << 23);
#endif
}
/* exp's results outside the range: ∞ above it, 0 below it, NaN for NaN — on AVX-512 three
   masked moves of compares' masks (the selects were lowered to two xors each) */
static inline vf vexp_special(vf x, vf y, float hi, float lo) {
#if VW == 16 && defined(__AVX512F__)
    __m512 v = (__m512)x, r = (__m512)y;
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(v, _mm512_set1_ps(hi), _CMP_GT_OQ), _mm512_set1_ps(__builtin_inff()));
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(v, _mm512_set1_ps(lo), _CMP_LT_OQ), _mm512_setzero_ps());
    return (vf)_mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
#else
    y = vsel(x > hi, vsplat(__builtin_inff()), vsel(x < lo, vsplat(0.0f), y));
    return vsel(x != x, x, y);
#endif
}
/* erf: x·P(x²) for |x| ≤ 0.9277, else ±(1 − exp(Q(|x|))) with |x| clamped at 4 (erf rounds to
   1 there); P, Q least-squares fits on Chebyshev nodes, ≤ 2.4 ulp against float64 erf */
static inline vf verf(vf x) {
    vf s = x * x, t = vsel(x < 0.0f, -x, x), s2 = s * s;
    vf p = (s * -0.37612634897232056f + 1.128379225730896f) + (s * -0.02685965783894062f + 0.11283703148365021f) * s2
         + ((s * -0.0008144934545271099f + 0.00520141189917922f) + s2 * 8.373116725124419e-05f) * (s2 * s2);
    p = p * x;
    vf u = vsel(t > 4.0f, vsplat(4.0f), t), u2 = u * u, u4 = u2 * u2;
    vf q = ((u * -1.130398154258728f + 0.0003527336521074176f) + (u * -0.11050236970186234f - 0.6314730644226074f) * u2)
         + ((u * -0.004907005000859499f + 0.02673269435763359f)
            + (u * -5.454450365505181e-05f + 0.0006416576215997338f) * u2) * u4
         + (u * -4.20290255931377e-08f + 2.5456399725953816e-06f) * (u4 * u4);
    vf r = 1.0f - vexp(q);
    r = vsel(x < 0.0f, -r, r);
    return vsel(t <= 0.9277f, p, vsel(x != x, x, r));
}
/* QuantizeLinear then DequantizeLinear by one scale s: with lo, hi the type's bounds minus the
   zero point, (clamp(rint(x / s), lo, hi)) * s — clamped before rounding (the bounds are
   integers: the same value), NaN to lo, as QuantizeLinear sends it to the low bound; rint by
   adding and subtracting 1.5·2^23 (round half to even, exact for |v| ≤ 2^22) */
/* t clamped to [lo, hi], NaN to lo: on x86 maxps and minps (maxps returns its second operand
   for a NaN; gcc lowered the selects below to mask moves and xors, the QuantizeLinears of int8
   models' roundings ran at half the speed); SSE by gcc's builtins */
static inline vf vclampq(vf t, float lo, float hi) {
#if VW == 16 && defined(__AVX512F__)
    return (vf)_mm512_min_ps(_mm512_max_ps((__m512)t, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
#elif VW == 8 && defined(__AVX2__)
    return (vf)_mm256_min_ps(_mm256_max_ps((__m256)t, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
#elif VW == 4 && defined(__SSE__) && defined(__GNUC__)
    return __builtin_ia32_minps(__builtin_ia32_maxps(t, vsplat(lo)), vsplat(hi));
#else
    t = vsel(t >= lo, t, vsplat(lo));
    return vsel(t > hi, vsplat(hi), t);
#endif
}
/* a value as computed: a product kept out of a fused multiply-add with what is added to it next
   (the source is compiled with -ffp-contract=fast; the reference rounds the product first —
   a residual Add after a rounding differed from it by an ulp) */
static inline vf vkeep(vf v) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(v));
#elif defined(__aarch64__)
    __asm__("" : "+w"(v));
#endif
    return v;
}
static inline float skeep(float v) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(v));
#elif defined(__aarch64__)
    __asm__("" : "+w"(v));
#endif
    return v;
}
static inline vf vfakeq(vf x, float s, float lo, float hi) {
    vf t = vclampq(x / s, lo, hi);
    return vkeep(((t + 12582912.0f) - 12582912.0f) * s);
}
/* vfakeq with x / s as x · r, r ≈ 1/s (a value not the reference's bit for bit anyway:
   elementwise.RECIPROCAL_ROUNDING) */
static inline vf vfakeqr(vf x, float r, float s, float lo, float hi) {
    vf t = vclampq(x * r, lo, hi);
    return vkeep(((t + 12582912.0f) - 12582912.0f) * s);
}
/* vclampq of one value (on x86 maxss and minss: gcc made the selects compares and branches,
   mispredicted on a row's rounded tail) — by gcc's builtins, not a header: an image's compiler
   has no intrinsics headers (image/steps/48-cpu-backend.sh) */
static inline float sclampq(float t, float lo, float hi) {
#if defined(__SSE__) && defined(__GNUC__)
    typedef float sf4 __attribute__((vector_size(16)));
    const sf4 a = {t}, l = {lo}, h = {hi};
    return __builtin_ia32_minss(__builtin_ia32_maxss(a, l), h)[0];
#else
    t = t >= lo ? t : lo;
    return t > hi ? hi : t;
#endif
}
static inline float sfakeq(float x, float s, float lo, float hi) {
    float t = sclampq(x / s, lo, hi);
    return skeep(((t + 12582912.0f) - 12582912.0f) * s);
}
static inline float sfakeqr(float x, float r, float s, float lo, float hi) {
    float t = sclampq(x * r, lo, hi);
    return skeep(((t + 12582912.0f) - 12582912.0f) * s);
}
/* nnos.Lookup: a table's entry at each value's grid index — x / s rounded half to even, clamped
   to [lo, hi] (NaN → lo, as the reference's fmax), less lo; clamped before rounding as vfakeq */
static inline vi vgridindex(vf x, float s, float lo, float hi) {
    vf t = vclampq(x / s, lo, hi);
    return __builtin_convertvector(((t + 12582912.0f) - 12582912.0f) - lo, vi);
}
/* n: the table's entries; 256 (a table padded to 256) on AVX-512: sixteen registers of it, each
   lane's entry picked by permutes of pairs (index bits 0–4) and masked moves (bits 5–7) — a
   gather of 16 lanes took 3.4 times as long on a Zen 5 (8 320 lookups: 2.36 against 0.69 µs) */
static inline __attribute__((always_inline)) vf vlookup_at(vi k, const float *table, int n);
static inline vf vlookup(vf x, float s, float lo, float hi, const float *table, int n) {
    return vlookup_at(vgridindex(x, s, lo, hi), table, n);
}
/* a rounding to the grid of s (bounds qlo, qhi), then a lookup by the same grid: the index is
   the rounding's own integer, clamped to the table's (the lookup's x / s of the rounded value
   is that integer again: |t|·2^-23 ≪ 1/2) — one division, not two */
static inline vf vlookupq(vf x, float s, float qlo, float qhi, float lo, float hi, const float *table, int n) {
    vf t = vclampq(x / s, qlo, qhi);
    t = vclampq((t + 12582912.0f) - 12582912.0f, lo, hi);
    return vlookup_at(__builtin_convertvector(t - lo, vi), table, n);
}
static inline __attribute__((always_inline)) vf vlookup_at(vi k, const float *table, int n) {
#if VW == 16 && defined(__AVX512F__)
    if (n == 256) {
        const __m512i idx = (__m512i)k;
        __m512 r[8];
        for (int j = 0; j < 8; j++)
            r[j] = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 32 * j), idx, _mm512_loadu_ps(table + 32 * j + 16));
        const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
        const __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
        const __mmask16 b7 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(128));
        for (int j = 0; j < 8; j += 2) r[j] = _mm512_mask_mov_ps(r[j], b5, r[j + 1]);
        r[0] = _mm512_mask_mov_ps(r[0], b6, r[2]); r[4] = _mm512_mask_mov_ps(r[4], b6, r[6]);
        return (vf)_mm512_mask_mov_ps(r[0], b7, r[4]);
    }
    return (vf)_mm512_i32gather_ps((__m512i)k, table, 4);
#elif VW == 8 && defined(__AVX2__)
    return (vf)_mm256_i32gather_ps(table, (__m256i)k, 4);
#else
    vf r;
    for (int l = 0; l < VW; l++) r[l] = table[k[l]];
    return r;
#endif
}
static inline float slookup(float x, float s, float lo, float hi, const float *table) {
    float t = x / s;
    t = t >= lo ? t : lo;
    t = t > hi ? hi : t;
    return table[(int)(((t + 12582912.0f) - 12582912.0f) - lo)];
}
/* GELU = x·Φ(x) with E = erfc(t), t = |x|/√2: Φ = E/2 below zero, 1 − E/2 above, so no
   1 + erf cancels. E = exp(R(u) − t²), u = t/2 − 1 on t ≤ 4 (past it E < 1.6e-8: 0), R a
   least-squares fit of log erfc(t) + t² on Chebyshev nodes (3.6e-7); one exp, no erf. The
   polynomial runs on t clamped to [0, 4] (NaN to 0: x·… is NaN anyway), so exp's argument is
   within [-17.4, 0] and exp's own clamp and edges are not needed. In two halves: vgelu_arg,
   exp's argument; vgelu_fin, the rest — a loop of GELUs does a block of vectors' first halves,
   then their second (elementwise.py: a vector's whole GELU is one chain of ~25 dependent steps,
   too long for the out-of-order window to overlap many of them) */
static inline __attribute__((always_inline)) vf vgelu_arg(vf x) {
    vf a = vsel(x < 0.0f, -x, x) * 0.7071067811865476f, t = vclampq(a, 0.0f, 4.0f), u = t * 0.5f - 1.0f;
    vf u2 = u * u, u4 = u2 * u2;
    vf r = ((u * -0.8363199234008789f - 1.3649412393569946f) + (u * -0.1317550390958786f + 0.3049947917461395f) * u2)
         + ((u * -0.023247670382261276f + 0.05715375021100044f) + (u * -0.0030743328388780355f + 0.008565579541027546f) * u2) * u4
         + ((u * 0.0005076261586509645f + 0.0006861650035716593f) + u2 * -0.00034819284337572753f) * (u4 * u4);
    return r - t * t;
}
static inline __attribute__((always_inline)) vf vgelu_fin(vf x, vf g) {
    vf a = vsel(x < 0.0f, -x, x) * 0.7071067811865476f;
    vf e = vsel(a > 4.0f, vsplat(0.0f), vexp_within(g));
    return x * vsel(x < 0.0f, 0.5f * e, 1.0f - 0.5f * e);
}
static inline vf vgelu(vf x) { return vgelu_fin(x, vgelu_arg(x)); }
static inline float sgelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }
/* 0.5·x·(1 + tanh(y)) = x / (1 + exp(−2y)): exactly −0 far below zero, as the reference's */
static inline vf vgelu_tanh(vf x) { return x / (1.0f + vexp(-1.5957691216057308f * (x + 0.044715f * x * x * x))); }
static inline float sgelu_tanh(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }
"""

def _tanh(t: str, name: str, clamp: str) -> str:
    """The rational tanh for type ``t`` (vf or float): one polynomial, two clamps."""
    return f"""static inline {t} {name}({t} x) {{
    const float c = 7.90531110763549805f;
    x = {clamp};
    {t} x2 = x * x;
    {t} p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    {t} q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return p / q;
}}"""


def _transpose() -> str:
    """vtranspose(r): VW vectors transposed in place (lane j of r[i] becomes lane i of r[j]) in
    log2(VW) rounds, each interleaving r[i] with r[i + VW/2] (two-source shuffles: vpermt2ps,
    unpck/perm on AVX2, zip on NEON) — how a tile moves between NCHW rows and channel-blocked
    pixels with whole-vector loads and stores instead of VW² scalar ones."""
    out = []
    for n in (16, 8, 4):
        half = n // 2
        lo = ", ".join(f"{i}, {i + n}" for i in range(half))
        hi = ", ".join(f"{i}, {i + n}" for i in range(half, n))
        body = [f"    const vi lo = {{{lo}}}, hi = {{{hi}}};",
                "    vf " + ", ".join(f"t{i}" for i in range(n)) + ";"]
        src = [f"r[{i}]" for i in range(n)]
        for _ in range(n.bit_length() - 1):
            for i in range(half):
                body.append(f"    t{2 * i} = __builtin_shuffle({src[i]}, {src[i + half]}, lo); "
                            f"t{2 * i + 1} = __builtin_shuffle({src[i]}, {src[i + half]}, hi);")
            body.append("    " + " ".join(f"r[{i}] = t{i};" for i in range(n)))
            src = [f"r[{i}]" for i in range(n)]
        head = (f"#{'if' if n == 16 else 'elif'} VW == {n}\n"
                "static inline __attribute__((always_inline)) void vtranspose(vf *r) {\n")
        out.append(head + "\n".join(body) + "\n}")
    return "\n".join(out) + "\n#endif"


from .scalar import SCALAR_PRELUDE  # noqa: E402

PRELUDE = PRELUDE.replace("{VTRANSPOSE}", _transpose())
PRELUDE = PRELUDE.replace("{VTANH}", _tanh("vf", "vtanh", "vsel(x > c, vsplat(c), vsel(x < -c, vsplat(-c), x))")).replace(
    "{STANH}", _tanh("float", "stanh", "x > c ? c : (x < -c ? -c : x)")) + SCALAR_PRELUDE

# unary activations the kernels apply to a value before storing it: op -> (vector, scalar) C function
ACTIVATIONS = {"Relu": ("vrelu", "srelu"), "Tanh": ("vtanh", "stanh"), "Sigmoid": ("vsigmoid", "ssigmoid"),
               "Exp": ("vexp", "expf"), "Erf": ("verf", "erff"), "Gelu": ("vgelu", "sgelu"),
               "Gelu:tanh": ("vgelu_tanh", "sgelu_tanh")}


def activation(op: str, attrs: dict) -> str | None:
    """The ACTIVATIONS key of an op with its attributes (Gelu's approximation), None if not one."""
    key = "Gelu:tanh" if op == "Gelu" and attrs.get("approximate", "none") == "tanh" else op
    return key if key in ACTIVATIONS else None
