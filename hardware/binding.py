"""Channels ↔ plan tensors, every tick, without allocating.

read_inputs(): latest sensor samples → scale/offset → the plan's input arrays.
write_outputs(): the plan's outputs → (an action chunk: its queue, one action a tick) →
scale/offset → rate limit → clamp → actuator commands.
All calls are functools.partial over numpy with preallocated arrays, built once.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .action_queue import ActionQueue
from .board import Board
from .device import Device


def _affine(src, scale, offset, dst) -> list:
    if np.all(scale == 1) and np.all(offset == 0):
        return [partial(np.copyto, dst, src)]
    return [partial(np.multiply, src, scale, dst), partial(np.add, dst, offset, dst)]


def _new_frame(sample, dst, done: list) -> None:
    """A frame the plan has not had yet into its uint8 input (a frame is copied once)."""
    if sample.count != done[0]:
        done[0] = sample.count
        np.copyto(dst, sample.values.reshape(-1, 3))


class Binder:
    def __init__(self, board: Board, devices: dict[str, Device], inputs: dict[str, np.ndarray],
                 outputs: dict[str, np.ndarray], push_each_tick: bool = True):
        """``push_each_tick``: the model ran this tick, its chunks go into their queues as the
        outputs are written; else (asynchronous inference) ``push_chunks`` does it when one ends."""
        self.reads, self.writes, self.pushes = [], [], []
        for b in board.inputs:
            if b.image is not None and b.image.get("in_plan"):     # the plan pre-processes: the frame as it is
                dev, ch = b.channels[0]
                self.reads.append(partial(_new_frame, devices[dev].latest(ch), inputs[b.tensor].reshape(-1, 3), [-1]))
                continue
            if b.image is not None:                 # a camera frame, pre-processed into the tensor
                from .preprocess import Preprocess  # a board with a camera's: off the others' boot path
                dev, ch = b.channels[0]
                sample = devices[dev].latest(ch)
                im = b.image
                pre = Preprocess(sample.values, inputs[b.tensor], im["size"], im["resize"], im.get("crop"), im["layout"],
                                 im["scale"], im.get("mean", (0, 0, 0)), im.get("std", (1, 1, 1)), sample=sample)
                self.reads.append(pre.run)
                continue
            dst, off = inputs[b.tensor].reshape(-1), 0
            for dev, ch in b.channels:
                src = devices[dev].latest(ch).values.reshape(-1)
                n = src.size
                self.reads += _affine(src, b.scale[off:off + n], b.offset[off:off + n], dst[off:off + n])
                off += n
        self.previous, self.queues = {}, []
        for b in board.outputs:
            cmd = devices[b.device].commands[b.channel].reshape(-1)
            src = outputs[b.tensor].reshape(-1)
            if b.chunk is not None:               # [K, n] → one action a tick, through the queue
                q = ActionQueue(src.size // cmd.size, cmd.size, b.chunk, b.ensemble_m)
                self.queues.append(q)
                chunk, src = src.reshape(q.k, q.n), np.zeros(cmd.size, np.float32)
                if push_each_tick:
                    self.writes.append(partial(q.push, chunk))
                else:
                    self.pushes.append((q, chunk))
                self.writes.append(partial(q.pop, src))
            tmp = np.zeros_like(cmd)
            self.writes += _affine(src, b.scale, b.offset, tmp)
            if b.max_step is not None:            # rate limit against the last command sent
                prev, d = cmd.copy(), np.zeros_like(cmd)
                step, neg = np.float32(b.max_step), np.float32(-b.max_step)
                self.writes += [partial(np.subtract, tmp, prev, d), partial(np.minimum, d, np.array(step), out=d),
                                partial(np.maximum, d, np.array(neg), out=d), partial(np.add, prev, d, tmp)]
                self.previous[(b.device, b.channel)] = prev
            self.writes += [partial(np.maximum, tmp, np.array(b.lo, np.float32), out=tmp),
                            partial(np.minimum, tmp, np.array(b.hi, np.float32), out=tmp),
                            partial(np.copyto, cmd, tmp)]
            if b.max_step is not None:
                self.writes.append(partial(np.copyto, self.previous[(b.device, b.channel)], tmp))
        self.reads, self.writes, self.pushes = tuple(self.reads), tuple(self.writes), tuple(self.pushes)

    def read_inputs(self) -> None:
        for f in self.reads:
            f()

    def write_outputs(self) -> None:
        for f in self.writes:
            f()

    def push_chunks(self, skip: int = 0) -> None:
        """A finished inference's chunks into their queues; ``skip``: ticks since its inputs were read."""
        for q, chunk in self.pushes:
            q.push(chunk, skip)

    @property
    def shortest_chunk(self) -> int:
        return min((q.k for q in self.queues), default=0)

    @property
    def longest_chunk(self) -> int:
        return max((q.k for q in self.queues), default=0)

    def queues_ready(self) -> bool:
        """Every action queue has an action for this tick."""
        for q in self.queues:
            if not q.ready():
                return False
        return True

    def skip_actions(self) -> None:
        """Failsafe: this tick's queued actions are not taken, but their time passes."""
        for q in self.queues:
            q.skip()
