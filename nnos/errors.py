"""One exception family per layer. Each names what was expected and what was received.

Layers convert foreign exceptions at their boundary with ``raise ... from e``.
"""


class NnosError(Exception):
    """Root of every error nnos raises on purpose."""


class ModelError(NnosError):
    """The ONNX model cannot be read or is not something nnos compiles (frontend)."""


class CompileError(NnosError):
    """A node cannot be compiled: unsupported op, dtype or dynamic shape (passes, planner)."""

    def __init__(self, message: str, node: str | None = None, op: str | None = None):
        where = ""
        if node is not None or op is not None:
            where = f"node {node!r} (op {op}): "
        super().__init__(where + message)
        self.node = node
        self.op = op


class PlanFormatError(NnosError):
    """A plan file is truncated, tampered with, of another format version, or not a plan."""


class PlanCallError(NnosError):
    """A plan was called with inputs that do not match its signature."""


class BackendError(NnosError):
    """A backend cannot bind or run a plan on this machine."""
