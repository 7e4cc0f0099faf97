"""Where things are in the repository, for every test."""
from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(ROOT, "models", "cartpole", "cartpole.onnx")       # the cart-pole policy (ONNX)
BOARDS = os.path.join(ROOT, "hardware", "boards")
GUEST = os.path.join(ROOT, "out", "legacy-vm")                             # the legacy VM's guest, once built
