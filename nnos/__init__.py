"""nnos: boot-to-neural-network. Compile an ONNX network into a static plan and run it.

    plan = nnos.compile("policy.onnx")      # or nnos.load("policy.nnos")
    out = plan({"obs": obs})                 # dict of arrays in, dict of arrays out
    plan.save("policy.nnos")
"""
__version__ = "0.2.0"

from .errors import (BackendError, CompileError, ModelError, NnosError,  # noqa: E402,F401
                     PlanCallError, PlanFormatError)


def compile(path, batch=1, dims=None, check=None, freeze=None, images=None, precision="fp32-compute"):
    """Compile an ONNX file into a Plan. ``batch`` fixes the symbolic batch dimension,
    ``dims`` other named dimensions, ``freeze`` turns named inputs into constants, ``images``
    ({input: ((H, W), spec)}, a board's plan_images()) prepends image pre-processing,
    ``precision`` says where a float16 model computes ("fp32-compute", "fp32", "model")."""
    from . import backends  # noqa: F401 - a plan binds through them
    from .compiler import compile as _compile
    return _compile(path, batch=batch, dims=dims, check=check, freeze=freeze, images=images, precision=precision)


def load(path):
    from . import backends  # noqa: F401 - a plan binds through them
    from .plan import load as _load
    return _load(path)


def __getattr__(name):
    if name == "Plan":
        from . import backends  # noqa: F401 - a plan binds through them
        from .plan import Plan
        return Plan
    raise AttributeError(name)
