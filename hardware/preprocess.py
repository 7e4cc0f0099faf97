"""Image pre-processing between a camera channel (uint8 [H, W, 3]) and a network's input, declared
in the board's input binding and done without allocating: crop (a view), resize along each
axis by precomputed taps (np.take / multiply / add into preallocated arrays), then
``(x · scale − mean) / std`` per colour channel into the plan's input, CHW or HWC.

    [[inputs]]
    tensor = "image"
    channels = ["cam.frame"]
    image = { crop = "center", size = [96, 96], resize = "area", layout = "chw",
              scale = 0.00392156862745098, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }

``resize = "area"``: each output pixel the mean of the source area it covers, fractions of
pixels weighted by their coverage (OpenCV's INTER_AREA when shrinking; PIL's BOX where the
blocks are whole pixels);
``"bilinear"``: OpenCV's INTER_LINEAR (pixel centres, no antialiasing). ``crop``: "center"
(the largest centred region of the output's aspect ratio) or [top, left, height, width].
"""
from __future__ import annotations

import math

import numpy as np

from nnos.frontend.image import crop_box

RESIZE = ("area", "bilinear")
LAYOUTS = ("chw", "hwc")


def taps(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(index [T, n_out], weight [T, n_out]) along one axis: output i = Σ_t w[t, i] · x[idx[t, i]]."""
    rows = []
    s = n_in / n_out
    for i in range(n_out):
        if mode == "area":
            lo, hi = i * s, (i + 1) * s
            row = [(j, (min(hi, j + 1) - max(lo, j)) / s) for j in range(int(math.floor(lo)), int(math.ceil(hi)))
                   if min(hi, j + 1) > max(lo, j)]
        else:
            x = min(max((i + 0.5) * s - 0.5, 0.0), n_in - 1.0)
            j = min(int(math.floor(x)), n_in - 1)
            f = x - j
            row = [(j, 1.0 - f), (min(j + 1, n_in - 1), f)]
        rows.append(row)
    t = max(len(r) for r in rows)
    idx, w = np.zeros((t, n_out), np.intp), np.zeros((t, n_out), np.float32)
    for i, row in enumerate(rows):
        for k, (j, wt) in enumerate(row):
            idx[k, i], w[k, i] = j, wt
        for k in range(len(row), t):                  # padding taps: weight 0 on the last pixel taken
            idx[k, i] = row[-1][0]
    return idx, w


class Preprocess:
    """``run()``: ``frame`` (uint8 [H, W, 3], the camera channel's live array) → ``out`` (the
    plan's float32 input, [3, h, w] or [h, w, 3] after any leading 1s). With ``sample`` (the
    channel's Sample), a frame already processed is not processed again."""

    def __init__(self, frame: np.ndarray, out: np.ndarray, size, resize: str = "area", crop=None, layout: str = "chw",
                 scale: float = 1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), sample=None):
        self.sample, self.done = sample, -1
        h, w, c = frame.shape
        oh, ow = size
        top, left, ch, cw = crop_box(h, w, crop, (oh, ow))
        self.src = frame[top:top + ch, left:left + cw]                 # a view: no copy of the frame
        self.blocks = resize == "area" and ch % oh == 0 and cw % ow == 0
        if self.blocks:                                                # whole blocks: one matmul + one sum
            self._block_sums(ch, cw, oh, ow, c)
        else:
            self._taps(ch, cw, oh, ow, c, resize)
        self.acc_h = np.empty((oh, ow, c), np.float32)
        std = np.asarray(std, np.float32)
        a, b = np.float32(scale) / std, -np.asarray(mean, np.float32) / std
        if self.blocks:
            a = a / np.float32(ch * cw // (oh * ow))                   # block sums → means
        shape = (c, oh, ow) if layout == "chw" else (oh, ow, c)
        self.out = out.reshape(shape)
        self.view = self.acc_h.transpose(2, 0, 1) if layout == "chw" else self.acc_h
        self.a = a[:, None, None] if layout == "chw" else a
        self.b = b[:, None, None] if layout == "chw" else b

    def _taps(self, ch: int, cw: int, oh: int, ow: int, c: int, resize: str) -> None:
        """Any factor: per tap along each axis, (indices, weights shaped to broadcast), made once."""
        iw, ww = taps(cw, ow, resize)
        ih, wh = taps(ch, oh, resize)
        self.w_taps = [(iw[t].copy(), ww[t][:, None].copy()) for t in range(len(iw))]
        self.h_taps = [(ih[t].copy(), wh[t][:, None, None].copy()) for t in range(len(ih))]
        self.f32 = np.empty((ch, cw, c), np.float32)
        self.acc_w, self.tmp_w = np.empty((ch, ow, c), np.float32), np.empty((ch, ow, c), np.float32)
        self.tmp_h = np.empty((oh, ow, c), np.float32)

    def _block_sums(self, ch: int, cw: int, oh: int, ow: int, c: int) -> None:
        """Area resizing by whole factors fy×fx: each row's fx-pixel groups summed by one matmul
        with a 0/1 matrix [fx·c, c] (the crop's rows as [ow, fx·c] views), then fy rows summed;
        the 1/(fy·fx) goes into the scale."""
        fy, fx = ch // oh, cw // ow
        self.groups = np.empty((ch * ow, fx * c), np.float32)
        self.ones = np.tile(np.eye(c, dtype=np.float32), (fx, 1))
        self.rows = np.empty((ch * ow, c), np.float32)
        self.fy, self.fx = fy, fx

    def run(self) -> None:
        if self.sample is not None:
            if self.sample.count == self.done:
                return
            self.done = self.sample.count
        if self.blocks:
            oh, ow, c = self.acc_h.shape
            np.copyto(self.groups.reshape(-1, ow, self.fx * c), self.src.reshape(-1, ow, self.fx * c), casting="unsafe")
            np.matmul(self.groups, self.ones, out=self.rows)
            np.add.reduce(self.rows.reshape(oh, self.fy, ow, c), axis=1, out=self.acc_h)
        else:
            np.copyto(self.f32, self.src, casting="unsafe")
            self._axis(self.f32, self.w_taps, self.acc_w, self.tmp_w, axis=1)
            self._axis(self.acc_w, self.h_taps, self.acc_h, self.tmp_h, axis=0)
        np.multiply(self.view, self.a, out=self.out)
        np.add(self.out, self.b, out=self.out)

    @staticmethod
    def _axis(x, taps_, acc, tmp, axis: int) -> None:
        (idx, w), rest = taps_[0], taps_[1:]
        np.take(x, idx, axis=axis, out=acc)
        np.multiply(acc, w, out=acc)
        for idx, w in rest:
            np.take(x, idx, axis=axis, out=tmp)
            np.multiply(tmp, w, out=tmp)
            np.add(acc, tmp, out=acc)
