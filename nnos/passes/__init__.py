"""Graph passes. Each takes a Graph and returns a new or updated Graph; each is testable alone."""
from .dce import eliminate_dead  # noqa: F401
from .fold import fold_constants  # noqa: F401
from .fusion import fold_batchnorm, fuse_bias, fuse_elementwise, prepack_gemm  # noqa: F401
from .infer import infer_types  # noqa: F401
from .lookup import tabulate  # noqa: F401
from .patterns import fuse_gelu  # noqa: F401
from .qdq import drop_requantize, fake_quantize  # noqa: F401
from .quant import integer_products  # noqa: F401


def optimize(graph):
    """The default pipeline: types (folding shape subgraphs as it goes), dead code, fusions."""
    graph = infer_types(graph)
    graph = infer_types(_integer_products(graph), keep_weights=False)    # and the weights not rewritten folded
    graph = eliminate_dead(graph)
    graph = eliminate_dead(drop_requantize(fake_quantize(graph)))      # a QDQ model's roundings: fewer, fusable
    graph = tabulate(graph)                                            # and functions of their values as tables
    graph = fuse_gelu(graph)
    graph = fold_batchnorm(graph)
    graph = fuse_bias(graph)
    graph = prepack_gemm(graph)
    graph = fuse_elementwise(graph)
    return eliminate_dead(graph)


def _integer_products(graph, sweeps: int = 4):
    """QDQ products made integer ones until no more are. A weight two products share (torch's
    export makes one initializer of equal ones; the quantizer then rounds the second product's
    copy again, as an activation: DQ(Q(Identity(DQ(w))))) folds to the second product's 8-bit
    constant only once the first product no longer reads it: one more sweep."""
    count = _products(graph)
    for _ in range(sweeps):
        graph = integer_products(graph)
        if _products(graph) == count:
            return graph
        count = _products(graph)
        graph = infer_types(graph)
    return graph


def _products(graph) -> int:
    return sum(n.op in ("MatMulInteger", "ConvInteger") for n in graph.nodes)
