"""The plan: a compiled network (graph, schedule, memory plan, weights, metadata) and its file."""
from .plan import Plan, TensorSpec, load  # noqa: F401
