"""The zoo's PyTorch policies: the structures people train today, small enough for CI.

act_s    ACT-shaped (LeRobot's Action Chunking Transformer, scaled down): a ResNet-style encoder
         (a strided stem, residual blocks with BatchNorm) → 1×1 projection to tokens with a 2-D
         sinusoidal position embedding computed in forward (torch.arange/cumsum, as ACT does:
         exports as Range/CumSum/Sin/Cos on constants, folded at compile time) → the joint state
         as one more token → a transformer encoder (GELU, 2 layers) → a decoder (1 layer) whose
         learned queries, one per future step, attend to it → a chunk of 20 actions × 6 joints.
mbv2_s   MobileNetV2-style: inverted residual blocks (1×1 expand, depthwise 3×3 or 5×5 at stride
         1 or 2, 1×1 project, ReLU6, residual adds) → global average pool → 6 actions.
res5_s   a residual policy with padded 5×5 and 3×3 convolutions and residual adds → 6 actions.

Only ``models/zoo/export.py`` imports this (torch is a development tool, not a dependency).
"""
from __future__ import annotations

import math

import torch
from torch import nn

IMAGE = (3, 64, 64)
STATE, ACTIONS, CHUNK = 6, 6, 20


def conv_bn(c_in, c_out, k, s, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class Basic(nn.Module):
    """ResNet's basic block: two 3×3 convolutions, the input added back (projected when it changes)."""

    def __init__(self, c_in, c_out, stride, k=3):
        super().__init__()
        self.a = conv_bn(c_in, c_out, k, stride)
        self.b = conv_bn(c_out, c_out, k, 1, act=None)
        self.skip = conv_bn(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        return torch.relu(self.b(self.a(x)) + self.skip(x))


def sine_embedding_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """ACT's 2-D sinusoidal embedding (DETR's): cumulative sums of a mask of ones, normalized,
    over dim/2 frequencies per axis → [h·w, dim]."""
    ones = torch.ones(1, h, w)
    y, x = ones.cumsum(1), ones.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y, x = y / (y[:, -1:, :] + eps) * scale, x / (x[:, :, -1:] + eps) * scale
    half = dim // 2
    freq = 10000 ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    px, py = x[..., None] / freq, y[..., None] / freq
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).reshape(h * w, dim)


class ActS(nn.Module):
    def __init__(self, dim=32, heads=4, ff=128, enc_layers=2, dec_layers=1):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, 16, 3, 2), Basic(16, 16, 1), Basic(16, 32, 2), Basic(32, 32, 2))
        self.proj = nn.Conv2d(32, dim, 1)
        self.state = nn.Linear(STATE, dim)
        self.state_pos = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        enc = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True)
        dec = nn.TransformerDecoderLayer(dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, enc_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, dec_layers)
        self.queries = nn.Parameter(torch.randn(1, CHUNK, dim) * 0.02)
        self.head = nn.Linear(dim, ACTIONS)

    def forward(self, image, state):
        f = self.proj(self.backbone(image))                       # [1, dim, h, w]
        _, dim, h, w = f.shape
        tokens = f.flatten(2).transpose(1, 2) + sine_embedding_2d(h, w, dim)[None]
        tokens = torch.cat((self.state(state)[:, None] + self.state_pos, tokens), dim=1)
        memory = self.encoder(tokens)
        return self.head(self.decoder(self.queries.expand(image.shape[0], -1, -1), memory))


class Inverted(nn.Module):
    """MobileNetV2's inverted residual: expand ×t, depthwise k×k at ``stride``, project; added
    back when the shape is kept."""

    def __init__(self, c_in, c_out, stride, t=4, k=3):
        super().__init__()
        mid = c_in * t
        self.body = nn.Sequential(conv_bn(c_in, mid, 1, 1, act=nn.ReLU6), conv_bn(mid, mid, k, stride, groups=mid, act=nn.ReLU6),
                                  conv_bn(mid, c_out, 1, 1, act=None))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileS(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.ReLU6), Inverted(16, 16, 1), Inverted(16, 24, 2),
                                      Inverted(24, 24, 1, k=5), Inverted(24, 32, 2, k=5), Inverted(32, 32, 1),
                                      conv_bn(32, 96, 1, 1, act=nn.ReLU6))
        self.head = nn.Linear(96 + STATE, ACTIONS)

    def forward(self, image, state):
        return self.head(torch.cat((self.features(image).mean((2, 3)), state), dim=1))


class Res5S(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16, 5, 2), Basic(16, 16, 1, k=5), Basic(16, 32, 2), Basic(32, 32, 1, k=5),
                                      Basic(32, 48, 2))
        self.head = nn.Sequential(nn.Linear(48 + STATE, 64), nn.ReLU(), nn.Linear(64, ACTIONS))

    def forward(self, image, state):
        return self.head(torch.cat((self.features(image).mean((2, 3)), state), dim=1))


POLICIES = {"act_s": ActS, "mbv2_s": MobileS, "res5_s": Res5S}


def policy(name: str, seed: int = 0) -> nn.Module:
    """The policy with seeded weights, in eval mode, each part as a trained network's: BatchNorm
    statistics and norms' scales that are not the identity, biases that are not zero, and every
    transformer layer its own weights (nn.TransformerEncoder and Decoder start each layer as a
    copy of one: the exporter shares identical weights through Identity nodes, and onnxruntime's
    dynamic quantizer leaves a product whose weight is not an initializer in float)."""
    torch.manual_seed(seed)
    m = POLICIES[name]()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
        elif isinstance(mod, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            _own_weights(mod)
    return m.eval()


def _own_weights(layer: nn.Module) -> None:
    """A transformer layer's weights drawn afresh (torch's initializations: the attention's
    projection in, then every Linear, its output projection's too), its biases and its norms'
    scales and shifts from small ranges where torch's start them at zero and one."""
    for mod in layer.modules():
        if isinstance(mod, nn.MultiheadAttention):
            mod._reset_parameters()
            mod.in_proj_bias.data.uniform_(-0.1, 0.1)
        elif isinstance(mod, nn.Linear):
            mod.reset_parameters()
        elif isinstance(mod, nn.LayerNorm):
            mod.weight.data.uniform_(0.8, 1.2)
            mod.bias.data.uniform_(-0.1, 0.1)
