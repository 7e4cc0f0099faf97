"""Image pre-processing prepended to a network as ONNX ops (a board's ``image = {…, in_plan =
true}``), so it is compiled with the network: the plan then takes the camera's frame itself,
uint8 [1, H, W, 3], and the cpu backend fuses the scaling into its loops. What the binding's
numpy pre-processing (nnos_hardware.preprocess) does, as ops:

    frame uint8 [1, H, W, 3] ─ Slice (the crop) ─ Cast float32 ─ Transpose → [1, 3, h', w']
        ─ AveragePool k×k / stride k (the area resize, whole factors only) ─ Mul, Add (scale,
        mean, std per colour) ─ (Transpose back for an HWC network) → the network's input

Area resizing by a whole factor is exactly an average pool; other factors and bilinear
resizing stay in the binding (the error says so).
"""
from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..ir import Graph, Node, TensorType

FLOAT = 1                                   # ONNX TensorProto.FLOAT, Cast's "to"


def crop_box(h: int, w: int, crop, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region that is resized: "center" (the largest centred
    region of the output's aspect ratio) or [top, left, height, width]. The binding's
    pre-processing (nnos_hardware.preprocess) crops with this too."""
    if crop is None:
        return 0, 0, h, w
    if crop == "center":
        aspect = size[1] / size[0]
        ch, cw = (h, min(w, round(h * aspect))) if w / h >= aspect else (min(h, round(w / aspect)), w)
        return (h - ch) // 2, (w - cw) // 2, ch, cw
    top, left, ch, cw = crop
    if not (0 <= top and 0 <= left and ch > 0 and cw > 0 and top + ch <= h and left + cw <= w):
        raise ValueError(f"crop [top, left, height, width] = {list(crop)} does not fit a {h}×{w} frame")
    return top, left, ch, cw


def prepend(graph: Graph, name: str, frame: tuple[int, int], spec: dict) -> Graph:
    """``graph`` with its float input ``name`` fed by pre-processing from a uint8 [1, H, W, 3] frame."""
    if name not in graph.inputs:
        raise CompileError(f"in-plan image pre-processing names input {name!r}; the model's inputs are {graph.inputs}")
    want = graph.type_of(name)
    oh, ow = spec["size"]
    chw = spec.get("layout", "chw") == "chw"
    if want.dtype != np.float32 or want.shape != ((1, 3, oh, ow) if chw else (1, oh, ow, 3)):
        raise CompileError(f"input {name!r} is {want}; in-plan pre-processing makes float32 "
                           f"{[1, 3, oh, ow] if chw else [1, oh, ow, 3]}")
    top, left, ch, cw = crop_box(frame[0], frame[1], spec.get("crop"), (oh, ow))
    if ch % oh or cw % ow or spec.get("resize", "area") != "area":
        raise CompileError(f"in-plan pre-processing resizes by whole factors with resize = \"area\" (an average pool); "
                           f"the crop {ch}×{cw} → {oh}×{ow} with {spec.get('resize', 'area')!r} is not — "
                           f"leave in_plan off (the binding resizes any factor)")
    g = graph.copy()
    net, p = f"{name}__net", f"{name}__pre"
    g.nodes = [Node(n.op, n.name, [net if i == name else i for i in n.inputs], list(n.outputs), n.attrs, n.epilogue)
               for n in g.nodes]
    g.outputs = [net if o == name else o for o in g.outputs]
    g.types.pop(name)
    g.types[name] = TensorType(np.dtype(np.uint8), (1, frame[0], frame[1], 3))
    std = np.asarray(spec.get("std", (1, 1, 1)), np.float32)
    fy, fx = ch // oh, cw // ow
    g.consts.update({
        f"{p}_starts": np.array([top, left], np.int64), f"{p}_ends": np.array([top + ch, left + cw], np.int64),
        f"{p}_axes": np.array([1, 2], np.int64),
        f"{p}_a": (np.float32(spec.get("scale", 1.0)) / std).reshape(1, 3, 1, 1),
        f"{p}_b": (-np.asarray(spec.get("mean", (0, 0, 0)), np.float32) / std).reshape(1, 3, 1, 1)})
    nodes = [Node("Slice", f"{p}_crop", [name, f"{p}_starts", f"{p}_ends", f"{p}_axes"], [f"{p}_c"]),
             Node("Cast", f"{p}_cast", [f"{p}_c"], [f"{p}_f"], {"to": FLOAT}),
             Node("Transpose", f"{p}_nchw", [f"{p}_f"], [f"{p}_t"], {"perm": [0, 3, 1, 2]})]
    x = f"{p}_t"
    if fy > 1 or fx > 1:
        nodes.append(Node("AveragePool", f"{p}_area", [x], [f"{p}_r"], {"kernel_shape": [fy, fx], "strides": [fy, fx]}))
        x = f"{p}_r"
    out = net if chw else f"{p}_n"
    nodes += [Node("Mul", f"{p}_scale", [x, f"{p}_a"], [f"{p}_m"]), Node("Add", f"{p}_shift", [f"{p}_m", f"{p}_b"], [out])]
    if not chw:
        nodes.append(Node("Transpose", f"{p}_nhwc", [out], [net], {"perm": [0, 2, 3, 1]}))
    g.nodes = nodes + g.nodes
    return g
