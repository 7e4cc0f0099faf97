"""Train the cart-pole balancing policy with numpy alone and export it as cartpole.onnx.

    python -m nnos_models.cartpole.train [--out models/cartpole/cartpole.onnx] [--seed 0]

LQR-guided fitting: linearise the simulator's own dynamics (hardware/sim/cartpole.py) about the
upright pose at the 50 Hz control period, solve the discrete-time LQR, then fit a 4→32→32→1
tanh network to the saturated LQR action by Adam, on states visited by the network itself in
closed loop (DAgger rounds, with sensor noise and pushes) plus a random box of states. The
result is checked in the same simulator from 100 random starts before it is exported.
Runs in well under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from nnos_hardware.sim import cartpole as cp

DT = 1.0 / 50.0
SUBSTEPS = 20


def sim_step(s: np.ndarray, force) -> np.ndarray:
    """One control period from state(s) ``s`` ([4] or [N, 4]) under ``force`` (one per state)."""
    many = np.atleast_2d(s).astype(np.float64)          # a copy: the caller's states stay
    f = np.clip(np.broadcast_to(np.asarray(force, np.float64), len(many)), -cp.FORCE_MAX, cp.FORCE_MAX)
    for _ in range(SUBSTEPS):
        cp.step_many(many, f, DT / SUBSTEPS)
    return many.reshape(np.shape(s))


def linearise() -> tuple[np.ndarray, np.ndarray]:
    eps = 1e-5
    zero = np.zeros(4)
    A = np.stack([(sim_step(zero + eps * e, 0) - sim_step(zero - eps * e, 0)) / (2 * eps) for e in np.eye(4)], 1)
    B = ((sim_step(zero, eps) - sim_step(zero, -eps)) / (2 * eps)).reshape(4, 1)
    return A, B


def dlqr(A, B, Q, R, iters=5000) -> np.ndarray:
    P = Q.copy()
    for _ in range(iters):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P_next = Q + A.T @ P @ (A - B @ K)
        if np.max(np.abs(P_next - P)) < 1e-10:
            break
        P = P_next
    return K


class MLP:
    def __init__(self, sizes, rng):
        self.W = [rng.standard_normal((k, n)) * np.sqrt(1.0 / k) for k, n in zip(sizes, sizes[1:])]
        self.b = [np.zeros(n) for n in sizes[1:]]

    def forward(self, x):
        hs = [x]
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            x = np.tanh(x @ W + b)
            hs.append(x)
        return x, hs

    def grads(self, x, target):
        y, hs = self.forward(x)
        d = 2 * (y - target) / len(x) * (1 - y * y)
        gW, gb = [], []
        for i in range(len(self.W) - 1, -1, -1):
            gW.append(hs[i].T @ d)
            gb.append(d.sum(0))
            if i:
                d = (d @ self.W[i].T) * (1 - hs[i] ** 2)
        return float(np.mean((y - target) ** 2)), gW[::-1], gb[::-1]


def adam(net, x, t, steps, rng, lr=3e-3, batch=512):
    params = net.W + net.b
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    loss = 0.0
    for k in range(1, steps + 1):
        idx = rng.integers(0, len(x), batch)
        loss, gW, gb = net.grads(x[idx], t[idx])
        for i, g in enumerate(gW + gb):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= lr * (m[i] / (1 - 0.9 ** k)) / (np.sqrt(v[i] / (1 - 0.999 ** k)) + 1e-8)
    return loss


def rollouts(policy, rng, episodes, seconds, noise=0.0, push=0.0):
    """``episodes`` closed-loop runs side by side from random starts near upright, each until it
    fails or ``seconds`` pass. Returns (every observation an unfailed episode saw, [K, 4]; which
    episodes balanced to the end, [episodes] bool)."""
    s = rng.uniform(-0.05, 0.05, (episodes, 4))
    alive = np.ones(episodes, bool)
    seen = []
    for _ in range(int(seconds / DT)):
        obs = s + rng.normal(0, noise, s.shape) if noise else s
        seen.append(obs[alive])
        f = cp.FORCE_MAX * policy(obs)[:, 0]
        if push:
            f = f + np.where(rng.random(episodes) < 0.02, rng.normal(0, push, episodes), 0.0)
        s = np.where(alive[:, None], sim_step(s, f), s)      # a failed episode stays where it fell
        alive &= ~cp.failed_many(s)
        if not alive.any():
            break
    return np.concatenate(seen), alive


def evaluate(policy, episodes, seed, seconds=60.0, noise=0.0):
    return int(rollouts(policy, np.random.default_rng(seed), episodes, seconds, noise)[1].sum())


def export(net, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, x = [], [], "obs"
    for i, (W, b) in enumerate(zip(net.W, net.b)):
        inits += [numpy_helper.from_array(W.T.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [f"h{i}"], transB=1, name=f"fc{i}"))
        x = f"h{i}"
        nodes.append(helper.make_node("Tanh", [x], [f"a{i}" if i < len(net.W) - 1 else "action"], name=f"tanh{i}"))
        x = f"a{i}"
    graph = helper.make_graph(nodes, "cartpole_policy",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnos-cartpole-train")
    model.doc_string = "Cart-pole policy: obs = [x m, x_dot m/s, theta rad, theta_dot rad/s]; action in [-1, 1] = force / 10 N"
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "cartpole.onnx"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    # the products here are small (512 × 32): BLAS's threads only wait on each other, and on a
    # busy machine spin against its other work (one thread: 40 → 22 s with a qemu guest beside it)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        train(a.out, a.seed)


def train(out: str, seed: int) -> None:
    t0 = time.time()
    rng = np.random.default_rng(seed)
    A, B = linearise()
    K = dlqr(A, B, np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[0.05]]))
    expert = lambda s: np.clip(-(s @ K.T) / cp.FORCE_MAX, -1, 1)   # noqa: E731
    print("LQR gain", K.round(3).tolist(), "expert success", evaluate(expert, 20, 1, 20.0), "/ 20")
    box = rng.uniform(-1, 1, (20000, 4)) * np.array([2.0, 2.0, 0.2, 1.5])
    data = [box, rollouts(expert, rng, 200, 10.0, noise=0.01, push=8.0)[0]]
    net = MLP([4, 32, 32, 1], rng)
    for rnd in range(4):
        x = np.concatenate(data)
        loss = adam(net, x, expert(x), 3000, rng)
        policy = lambda s: net.forward(s)[0]   # noqa: E731
        # DAgger: the states the network itself visits, labelled by the expert
        data.append(rollouts(policy, rng, 50, 10.0, noise=0.01, push=8.0)[0])
        print(f"round {rnd}: loss {loss:.2e}, {len(x)} states")
    ok = evaluate(policy, 100, 12345, 60.0, noise=0.0)
    print(f"closed loop (numpy sim): {ok}/100 episodes balanced for 60 s; {time.time() - t0:.1f} s")
    if ok < 99:
        raise SystemExit("policy not good enough; not exported")
    export(net, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
