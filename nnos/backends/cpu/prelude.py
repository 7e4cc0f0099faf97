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
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
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
static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

static inline vf vrelu(vf x) { return vsel(x < 0.0f, vsplat(0.0f), x); }
{VTANH}
static inline vf vsigmoid(vf x) { return 0.5f + 0.5f * vtanh(0.5f * x); }

static inline vf vleaky(vf x, float a) { return vsel(x < 0.0f, x * a, x); }
/* max/min that keep a NaN in the first operand (numpy's maximum/minimum propagate NaN) */
static inline vf vmaxnan(vf x, vf lo) { return vsel(x < lo, lo, x); }
static inline vf vminnan(vf x, vf hi) { return vsel(x > hi, hi, x); }

static inline float srelu(float x) { return x < 0.0f ? 0.0f : x; }
static inline float sleaky(float x, float a) { return x < 0.0f ? x * a : x; }
static inline float smaxnan(float x, float lo) { return x < lo ? lo : x; }
static inline float sminnan(float x, float hi) { return x > hi ? hi : x; }
{STANH}
static inline float ssigmoid(float x) { return 0.5f + 0.5f * stanh(0.5f * x); }
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


from .scalar import SCALAR_PRELUDE  # noqa: E402

PRELUDE = PRELUDE.replace("{VTANH}", _tanh("vf", "vtanh", "vsel(x > c, vsplat(c), vsel(x < -c, vsplat(-c), x))")).replace(
    "{STANH}", _tanh("float", "stanh", "x > c ? c : (x < -c ? -c : x)")) + SCALAR_PRELUDE

# unary activations the kernels apply to a value before storing it: op -> (vector, scalar) C function
ACTIVATIONS = {"Relu": ("vrelu", "srelu"), "Tanh": ("vtanh", "stanh"), "Sigmoid": ("vsigmoid", "ssigmoid")}
