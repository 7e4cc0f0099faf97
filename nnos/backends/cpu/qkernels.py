"""The C kernels of the integer products, one per instruction set, each defined only where the
target has its instructions (the emitters in quant.py choose with #ifdef), and how their
constant weights are packed.

- AVX-512 VNNI: ``vpdpbusd`` sums four u8 × s8 products into each int32 lane (64 multiply-adds
  an instruction). The activation is the unsigned operand: int8 activations are flipped to
  uint8 (+128) and the flip, like the zero point, is corrected by the weights' sums.
- AVX2: ``vpmaddwd`` on centred int16 values (16 multiply-adds an instruction, no correction).
Elsewhere (arm64, older x86) the emitters' generic int32 loops run.
"""
from __future__ import annotations

import numpy as np

VNNI_HELPER = r"""
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define NNOS_INLINE static inline __attribute__((always_inline))
/* y[0:n] = dot(a[0:4kq] (u8), packed b) - off * colsum: b is [n/16][kq][16][4] int8 */
NNOS_INLINE void nnos_qrow_vnni(const uint8_t *restrict a, const int8_t *restrict b, const int32_t *restrict colsum,
                           int32_t off, int32_t *restrict y, long kq, long n) {
    const long nb = (n + 15) / 16, step = kq * 64;
    const __m512i voff = _mm512_set1_epi32(off);
    long j = 0;
    for (; j + 4 <= nb; j += 4) {
        const int8_t *b0 = b + j * step;
        __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
        for (long p = 0; p < kq; p++) {
            int32_t a4; memcpy(&a4, a + 4 * p, 4);
            const __m512i av = _mm512_set1_epi32(a4);
            c0 = _mm512_dpbusd_epi32(c0, av, _mm512_loadu_si512(b0 + 64 * p));
            c1 = _mm512_dpbusd_epi32(c1, av, _mm512_loadu_si512(b0 + step + 64 * p));
            c2 = _mm512_dpbusd_epi32(c2, av, _mm512_loadu_si512(b0 + 2 * step + 64 * p));
            c3 = _mm512_dpbusd_epi32(c3, av, _mm512_loadu_si512(b0 + 3 * step + 64 * p));
        }
        __m512i cs[4] = {c0, c1, c2, c3};
        for (int q = 0; q < 4; q++) {
            long col = (j + q) * 16;
            __m512i v = _mm512_sub_epi32(cs[q], _mm512_mullo_epi32(voff, _mm512_loadu_si512(colsum + col)));
            __mmask16 m = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1);
            _mm512_mask_storeu_epi32(y + col, m, v);
        }
    }
    for (; j < nb; j++) {
        const int8_t *b0 = b + j * step;
        __m512i c0 = _mm512_setzero_si512();
        for (long p = 0; p < kq; p++) {
            int32_t a4; memcpy(&a4, a + 4 * p, 4);
            c0 = _mm512_dpbusd_epi32(c0, _mm512_set1_epi32(a4), _mm512_loadu_si512(b0 + 64 * p));
        }
        long col = j * 16;
        __m512i v = _mm512_sub_epi32(c0, _mm512_mullo_epi32(voff, _mm512_loadu_si512(colsum + col)));
        __mmask16 m = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1);
        _mm512_mask_storeu_epi32(y + col, m, v);
    }
}
/* four rows' sums of one 16-column block (at col, of n) stored, each less off · the column's sum */
static inline void nnos_qstore_rows4(int32_t *y, long ldy, long col, long n, const __m512i *c, __m512i colsum,
                                     __m512i voff) {
    const __m512i corr = _mm512_mullo_epi32(voff, colsum);
    const __mmask16 m = n - col >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - col)) - 1);
    for (int r = 0; r < 4; r++) _mm512_mask_storeu_epi32(y + r * ldy + col, m, _mm512_sub_epi32(c[r], corr));
}
/* four rows at once (a: rows of lda bytes, y: rows of ldy), two column blocks at a time: eight
   independent chains, each broadcast row used twice and each weight vector four times (four
   chains, one block, waited on vpdpbusd's latency: act_s's 65 × 32 × 128 product 2.0 µs) */
NNOS_INLINE void nnos_qrows4_vnni(const uint8_t *restrict a, long lda, const int8_t *restrict b,
                             const int32_t *restrict colsum, int32_t off, int32_t *restrict y, long ldy, long kq, long n) {
    const long nb = (n + 15) / 16, step = kq * 64;
    const __m512i voff = _mm512_set1_epi32(off);
    long j = 0;
    for (; j + 2 <= nb; j += 2) {
        const int8_t *b0 = b + j * step, *b1 = b0 + step;
        __m512i c[8];
        for (int r = 0; r < 8; r++) c[r] = _mm512_setzero_si512();
        for (long p = 0; p < kq; p++) {
            const __m512i u = _mm512_loadu_si512(b0 + 64 * p), v = _mm512_loadu_si512(b1 + 64 * p);
            for (int r = 0; r < 4; r++) {
                int32_t ar; memcpy(&ar, a + r * lda + 4 * p, 4);
                const __m512i av = _mm512_set1_epi32(ar);
                c[r] = _mm512_dpbusd_epi32(c[r], av, u);
                c[4 + r] = _mm512_dpbusd_epi32(c[4 + r], av, v);
            }
        }
        nnos_qstore_rows4(y, ldy, j * 16, n, c, _mm512_loadu_si512(colsum + j * 16), voff);
        nnos_qstore_rows4(y, ldy, j * 16 + 16, n, c + 4, _mm512_loadu_si512(colsum + j * 16 + 16), voff);
    }
    for (; j < nb; j++) {
        const int8_t *b0 = b + j * step;
        __m512i c[4];
        for (int r = 0; r < 4; r++) c[r] = _mm512_setzero_si512();
        for (long p = 0; p < kq; p++) {
            const __m512i bv = _mm512_loadu_si512(b0 + 64 * p);
            for (int r = 0; r < 4; r++) {
                int32_t ar; memcpy(&ar, a + r * lda + 4 * p, 4);
                c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(ar), bv);
            }
        }
        nnos_qstore_rows4(y, ldy, j * 16, n, c, _mm512_loadu_si512(colsum + j * 16), voff);
    }
}
/* nb consecutive groups of 16 pixels (col: [nb][kq][16][4], a tile of a convolution's groups, in
   the first-level cache): each four output channels over every group, each channel's row
   written along — not one 64-byte store to each of m rows a plane apart per group (rows 4 KB
   apart share a cache set, and each is its own prefetch stream: int8 mbv2_s's 16 → 64
   convolution took 22 µs, its float32 one 12); the last group's pixels past ``lastn`` not stored.
   Two groups at a time: eight independent sums, each four broadcast weights used twice (four
   sums were a chain of dependent vpdpbusd, bound by its latency) */
static inline void nnos_qstore4(int32_t *yg, long ldy, long q, __mmask16 mk, const __m512i *cs, const __m512i *corr) {
    for (long t = 0; t < q; t++) _mm512_mask_storeu_epi32(yg + t * ldy, mk, _mm512_sub_epi32(cs[t], corr[t]));
}
NNOS_INLINE void nnos_qconv16_vnni_rows(const uint8_t *restrict col, long nb, const int8_t *restrict w,
                                   const int32_t *restrict rowsum, int32_t off, int32_t *restrict y, long ldy,
                                   long kq, long m, long lastn) {
    const long ld = 4 * kq;
    const __mmask16 last = (__mmask16)((1u << lastn) - 1);
    for (long oc = 0; oc < m; oc += 4) {
        const long q = m - oc < 4 ? m - oc : 4;                  /* rows past m: the zero rows packed after them */
        const int8_t *w0 = w + oc * ld;
        __m512i corr[4];
        for (long t = 0; t < 4; t++) corr[t] = _mm512_set1_epi32(t < q ? off * rowsum[oc + t] : 0);
        long g = 0;
        for (; g + 2 <= nb; g += 2) {
            const uint8_t *cg = col + g * 64 * kq;
            __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, d0 = c0, d1 = c0, d2 = c0, d3 = c0;
            for (long p = 0; p < kq; p++) {
                const __m512i cv = _mm512_loadu_si512(cg + 64 * p), dv = _mm512_loadu_si512(cg + 64 * (kq + p));
                int32_t a0, a1, a2, a3;
                memcpy(&a0, w0 + 4 * p, 4); memcpy(&a1, w0 + ld + 4 * p, 4);
                memcpy(&a2, w0 + 2 * ld + 4 * p, 4); memcpy(&a3, w0 + 3 * ld + 4 * p, 4);
                const __m512i b0 = _mm512_set1_epi32(a0), b1 = _mm512_set1_epi32(a1);
                const __m512i b2 = _mm512_set1_epi32(a2), b3 = _mm512_set1_epi32(a3);
                c0 = _mm512_dpbusd_epi32(c0, cv, b0); d0 = _mm512_dpbusd_epi32(d0, dv, b0);
                c1 = _mm512_dpbusd_epi32(c1, cv, b1); d1 = _mm512_dpbusd_epi32(d1, dv, b1);
                c2 = _mm512_dpbusd_epi32(c2, cv, b2); d2 = _mm512_dpbusd_epi32(d2, dv, b2);
                c3 = _mm512_dpbusd_epi32(c3, cv, b3); d3 = _mm512_dpbusd_epi32(d3, dv, b3);
            }
            const __m512i cs[4] = {c0, c1, c2, c3}, ds[4] = {d0, d1, d2, d3};
            nnos_qstore4(y + oc * ldy + g * 16, ldy, q, (__mmask16)0xFFFF, cs, corr);
            nnos_qstore4(y + oc * ldy + g * 16 + 16, ldy, q, g + 2 == nb ? last : (__mmask16)0xFFFF, ds, corr);
        }
        if (g < nb) {                                              /* an odd last group */
            const uint8_t *cg = col + g * 64 * kq;
            __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
            for (long p = 0; p < kq; p++) {
                const __m512i cv = _mm512_loadu_si512(cg + 64 * p);
                int32_t a0, a1, a2, a3;
                memcpy(&a0, w0 + 4 * p, 4); memcpy(&a1, w0 + ld + 4 * p, 4);
                memcpy(&a2, w0 + 2 * ld + 4 * p, 4); memcpy(&a3, w0 + 3 * ld + 4 * p, 4);
                c0 = _mm512_dpbusd_epi32(c0, cv, _mm512_set1_epi32(a0));
                c1 = _mm512_dpbusd_epi32(c1, cv, _mm512_set1_epi32(a1));
                c2 = _mm512_dpbusd_epi32(c2, cv, _mm512_set1_epi32(a2));
                c3 = _mm512_dpbusd_epi32(c3, cv, _mm512_set1_epi32(a3));
            }
            const __m512i cs[4] = {c0, c1, c2, c3};
            nnos_qstore4(y + oc * ldy + g * 16, ldy, q, last, cs, corr);
        }
    }
}
/* output rows of eight pixels (a backbone's last 8 × 8 maps; nnos_qdirect_sums's ``rows2``):
   sixteen lanes are two rows' words, the second row's eight loaded s·wq words on (``up`` bytes;
   0 where there is no second row: the first row again, not stored); ``two``: a second vector of
   two rows ``second`` bytes below (its second row ``dup`` on) */
NNOS_INLINE __m512i nnos_qrows2(const uint8_t *at, long up) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)at)),
                              _mm256_loadu_si256((const __m256i *)(at + up)), 1);
}
/* the direct form of a convolution at stride s = 1 or 2 (qdirect.py): no window copies — the input
   padded in words by column parity, [words][s][hp][wq] (four channels' bytes a word; column x of
   a row at parity x mod s, index x / s), so that word j of tap (ky, kx) of sixteen consecutive
   output pixels of a row is one 64-byte load; K = kh·kw·words steps, each four output channels'
   broadcast weights (w as the windowed form's: [m][kh][kw][words] words) over two groups of
   sixteen pixels (eight sums: along a row, or one of each of two rows), a row's last masked */
NNOS_INLINE void nnos_qdirect_sums(const uint8_t *restrict src, long plane, long wq, long s, long words, long kh,
                                     long kw, const int8_t *restrict w0, long ld, __m512i *c, __m512i *d, long second,
                                     int two, int rows2, long up, long dup) {
    for (long ky = 0; ky < kh; ky++) for (long kx = 0; kx < kw; kx++) for (long j = 0; j < words; j++) {
        const uint8_t *at = src + ((j * s + kx % s) * plane + ky * wq + kx / s) * 4;
        const long p = (ky * kw + kx) * words + j;
        int32_t a0, a1, a2, a3;
        memcpy(&a0, w0 + 4 * p, 4); memcpy(&a1, w0 + ld + 4 * p, 4);
        memcpy(&a2, w0 + 2 * ld + 4 * p, 4); memcpy(&a3, w0 + 3 * ld + 4 * p, 4);
        const __m512i b0 = _mm512_set1_epi32(a0), b1 = _mm512_set1_epi32(a1);
        const __m512i b2 = _mm512_set1_epi32(a2), b3 = _mm512_set1_epi32(a3);
        const __m512i cv = rows2 ? nnos_qrows2(at, up) : _mm512_loadu_si512(at);
        c[0] = _mm512_dpbusd_epi32(c[0], cv, b0); c[1] = _mm512_dpbusd_epi32(c[1], cv, b1);
        c[2] = _mm512_dpbusd_epi32(c[2], cv, b2); c[3] = _mm512_dpbusd_epi32(c[3], cv, b3);
        if (two) {
            const __m512i dv = rows2 ? nnos_qrows2(at + second, dup) : _mm512_loadu_si512(at + second);
            d[0] = _mm512_dpbusd_epi32(d[0], dv, b0); d[1] = _mm512_dpbusd_epi32(d[1], dv, b1);
            d[2] = _mm512_dpbusd_epi32(d[2], dv, b2); d[3] = _mm512_dpbusd_epi32(d[3], dv, b3);
        }
    }
}
/* four output rows of eight at a time (two vectors of two rows: eight sums), the last one to
   three rows masked; a row of eight is contiguous with the next in y */
NNOS_INLINE void nnos_qconv8_rows_direct(const uint8_t *restrict P, long plane, long wq, long s, long words, long kh,
                                         long kw, const int8_t *restrict w0, long ld, long q, const __m512i *corr,
                                         int32_t *restrict yc, long ldy, long oh) {
    const long pitch = s * wq * 4;
    for (long oy = 0; oy < oh; oy += 4) {
        const long rows = oh - oy < 4 ? oh - oy : 4;
        __m512i c[4], d[4];
        for (int t = 0; t < 4; t++) c[t] = d[t] = _mm512_setzero_si512();
        nnos_qdirect_sums(P + oy * pitch, plane, wq, s, words, kh, kw, w0, ld, c, d, 2 * pitch, rows > 2, 1,
                          rows > 1 ? pitch : 0, rows > 3 ? pitch : 0);
        nnos_qstore4(yc + oy * 8, ldy, q, rows > 1 ? (__mmask16)0xFFFF : (__mmask16)0xFF, c, corr);
        if (rows > 2) nnos_qstore4(yc + oy * 8 + 16, ldy, q, rows > 3 ? (__mmask16)0xFFFF : (__mmask16)0xFF, d, corr);
    }
}
/* inlined at each call: its sizes and stride literals (a runtime kx / s was an idiv a tap) */
NNOS_INLINE void nnos_qconv16_vnni_direct(const uint8_t *restrict P, long hp, long wq, long s, long words, long kh, long kw,
                                     const int8_t *restrict w, const int32_t *restrict rowsum, int32_t off,
                                     int32_t *restrict y, long oh, long ow, long m) {
    const long ld = kh * kw * words * 4, plane = hp * wq, ldy = oh * ow;
    for (long oc = 0; oc < m; oc += 4) {
        const long q = m - oc < 4 ? m - oc : 4;                  /* rows past m: the zero rows packed after them */
        const int8_t *w0 = w + oc * ld;
        __m512i corr[4];
        for (long t = 0; t < 4; t++) corr[t] = _mm512_set1_epi32(t < q ? off * rowsum[oc + t] : 0);
        if (ow == 8) {
            nnos_qconv8_rows_direct(P, plane, wq, s, words, kh, kw, w0, ld, q, corr, y + oc * ldy, ldy, oh);
            continue;
        }
        const long dy = ow >= 32 ? 1 : 2;                         /* narrow rows: a group of each of two rows */
        for (long oy = 0; oy < oh; oy += dy) {
            int32_t *yr = y + oc * ldy + oy * ow;
            const uint8_t *src = P + oy * s * wq * 4;
            long ox = 0;
            if (dy == 1) for (; ox + 32 <= ow; ox += 32) {
                __m512i c[4], d[4];
                for (int t = 0; t < 4; t++) c[t] = d[t] = _mm512_setzero_si512();
                nnos_qdirect_sums(src + ox * 4, plane, wq, s, words, kh, kw, w0, ld, c, d, 64, 1, 0, 0, 0);
                nnos_qstore4(yr + ox, ldy, q, (__mmask16)0xFFFF, c, corr);
                nnos_qstore4(yr + ox + 16, ldy, q, (__mmask16)0xFFFF, d, corr);
            }
            for (; ox < ow; ox += 16) {
                const int two = dy == 2 && oy + 1 < oh;
                const long n = ow - ox < 16 ? ow - ox : 16;
                const __mmask16 mk = (__mmask16)((1u << n) - 1);
                __m512i c[4], d[4];
                for (int t = 0; t < 4; t++) c[t] = d[t] = _mm512_setzero_si512();
                nnos_qdirect_sums(src + ox * 4, plane, wq, s, words, kh, kw, w0, ld, c, d, s * wq * 4, two, 0, 0, 0);
                nnos_qstore4(yr + ox, ldy, q, mk, c, corr);
                if (two) nnos_qstore4(yr + ow + ox, ldy, q, mk, d, corr);
            }
        }
    }
}
#define NNOS_HAVE_VNNI 1
#endif
"""

AVX2_HELPER = r"""
#if !(defined(__AVX512VNNI__) && defined(__AVX512BW__)) && defined(__AVX2__)
#include <immintrin.h>
/* y[0:n] = dot(a[0:2kp], b): a centred int16 values, b [n/8][kp][8][2] int16 (vpmaddwd: two
   products summed into each int32 lane, 16 multiply-adds an instruction) */
static void nnos_qrow_avx2(const int16_t *restrict a, const int16_t *restrict b, int32_t *restrict y, long kp, long n) {
    const long nb = (n + 7) / 8, step = kp * 16;
    long j = 0;
    for (; j + 4 <= nb; j += 4) {
        const int16_t *b0 = b + j * step;
        __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
        for (long p = 0; p < kp; p++) {
            int32_t a2; memcpy(&a2, a + 2 * p, 4);
            const __m256i av = _mm256_set1_epi32(a2);
            c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b0 + 16 * p))));
            c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b0 + step + 16 * p))));
            c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b0 + 2 * step + 16 * p))));
            c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b0 + 3 * step + 16 * p))));
        }
        __m256i cs[4] = {c0, c1, c2, c3};
        for (int q = 0; q < 4; q++) {
            const long col = (j + q) * 8;
            if (n - col >= 8) _mm256_storeu_si256((__m256i *)(y + col), cs[q]);
            else { int32_t t[8]; _mm256_storeu_si256((__m256i *)t, cs[q]); memcpy(y + col, t, 4 * (n - col)); }
        }
    }
    for (; j < nb; j++) {
        const int16_t *b0 = b + j * step;
        __m256i c0 = _mm256_setzero_si256();
        for (long p = 0; p < kp; p++) {
            int32_t a2; memcpy(&a2, a + 2 * p, 4);
            const __m256i bv = _mm256_loadu_si256((const __m256i *)(b0 + 16 * p));
            c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_set1_epi32(a2), bv));
        }
        const long col = j * 8;
        if (n - col >= 8) _mm256_storeu_si256((__m256i *)(y + col), c0);
        else { int32_t t[8]; _mm256_storeu_si256((__m256i *)t, c0); memcpy(y + col, t, 4 * (n - col)); }
    }
}
/* the AVX2 form of nnos_qconv16_vnni_rows: nb groups of 8 pixels (col: [nb][kp][8][2] centred
   int16, a tile in the first-level cache), each four output channels over every group, two
   groups at a time (eight sums); the last group's pixels past ``lastn`` not stored */
static inline void nnos_qstore8(int32_t *y, long ldy, long q, long cnt, const __m256i *cs) {
    for (long t = 0; t < q; t++) {
        if (cnt == 8) _mm256_storeu_si256((__m256i *)(y + t * ldy), cs[t]);
        else { int32_t tmp[8]; _mm256_storeu_si256((__m256i *)tmp, cs[t]); memcpy(y + t * ldy, tmp, 4 * cnt); }
    }
}
static void nnos_qconv8_avx2_rows(const int16_t *restrict col, long nb, const int16_t *restrict w,
                                  int32_t *restrict y, long ldy, long kp, long m, long lastn) {
    const long ld = 2 * kp;
    for (long oc = 0; oc < m; oc += 4) {
        const long q = m - oc < 4 ? m - oc : 4;           /* rows past m: the zero rows packed after them */
        const int16_t *w0 = w + oc * ld;
        long g = 0;
        for (; g + 2 <= nb; g += 2) {
            const int16_t *cg = col + g * 16 * kp;
            __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, d0 = c0, d1 = c0, d2 = c0, d3 = c0;
            for (long p = 0; p < kp; p++) {
                const __m256i cv = _mm256_loadu_si256((const __m256i *)(cg + 16 * p));
                const __m256i dv = _mm256_loadu_si256((const __m256i *)(cg + 16 * (kp + p)));
                int32_t a0, a1, a2, a3;
                memcpy(&a0, w0 + 2 * p, 4); memcpy(&a1, w0 + ld + 2 * p, 4);
                memcpy(&a2, w0 + 2 * ld + 2 * p, 4); memcpy(&a3, w0 + 3 * ld + 2 * p, 4);
                const __m256i b0 = _mm256_set1_epi32(a0), b1 = _mm256_set1_epi32(a1);
                const __m256i b2 = _mm256_set1_epi32(a2), b3 = _mm256_set1_epi32(a3);
                c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(cv, b0)); d0 = _mm256_add_epi32(d0, _mm256_madd_epi16(dv, b0));
                c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(cv, b1)); d1 = _mm256_add_epi32(d1, _mm256_madd_epi16(dv, b1));
                c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(cv, b2)); d2 = _mm256_add_epi32(d2, _mm256_madd_epi16(dv, b2));
                c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(cv, b3)); d3 = _mm256_add_epi32(d3, _mm256_madd_epi16(dv, b3));
            }
            const __m256i cs[4] = {c0, c1, c2, c3}, ds[4] = {d0, d1, d2, d3};
            nnos_qstore8(y + oc * ldy + g * 8, ldy, q, 8, cs);
            nnos_qstore8(y + oc * ldy + g * 8 + 8, ldy, q, g + 2 == nb ? lastn : 8, ds);
        }
        if (g < nb) {                                      /* an odd last group */
            const int16_t *cg = col + g * 16 * kp;
            __m256i c[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
            for (long p = 0; p < kp; p++) {
                const __m256i cv = _mm256_loadu_si256((const __m256i *)(cg + 16 * p));
                for (long t = 0; t < 4; t++) {
                    int32_t a2; memcpy(&a2, w0 + t * ld + 2 * p, 4);
                    c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(cv, _mm256_set1_epi32(a2)));
                }
            }
            nnos_qstore8(y + oc * ldy + g * 8, ldy, q, lastn, c);
        }
    }
}
#define NNOS_HAVE_AVX2_INT 1
#endif
"""


def pack_vnni(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] int8 → ([N/16][K/4][16][4] int8, zero-padded; int32 column sums padded to 16)."""
    k, n = w.shape
    kp, np_ = -(-k // 4) * 4, -(-n // 16) * 16
    full = np.zeros((kp, np_), np.int8)
    full[:k, :n] = w
    packed = full.reshape(kp // 4, 4, np_ // 16, 16).transpose(2, 0, 3, 1)
    colsum = np.zeros(np_, np.int32)
    colsum[:n] = w.astype(np.int32).sum(axis=0)
    return np.ascontiguousarray(packed), colsum


def pack_pairs(w: np.ndarray) -> np.ndarray:
    """[K, N] centred weights → [N/8][K/2][8][2] int16, zero-padded (the AVX2 row kernel's)."""
    k, n = w.shape
    kp, np_ = -(-k // 2) * 2, -(-n // 8) * 8
    full = np.zeros((kp, np_), np.int16)
    full[:k, :n] = w
    return np.ascontiguousarray(full.reshape(kp // 2, 2, np_ // 8, 8).transpose(2, 0, 3, 1))
