"""The broker: the host end of the legacy VM's one channel (a virtio-serial port, which qemu
exposes on the host as a Unix socket). It answers the allow-listed requests of messages.py
from read-only views of the device, puts model proposals into quarantine, and audits every
request and refusal to the data partition. It never blocks on the guest: lines are bounded,
requests are rate limited, answers to a guest that stops reading are dropped.

    python -m nnos.legacy.broker --data DATA --socket PATH
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import sys
import time

from ..fsutil import append_rotating, atomic_write
from ..heartbeat import Heartbeat
from .messages import MAX_LINE, MAX_PROPOSAL_LINE, MessageError, parse

RATE, BURST = 20.0, 40                 # requests per second, and the burst allowed
OUT_MAX = 1 << 20                      # answers queued for a guest that does not read
AUDIT_MAX = 1 << 20                    # the audit file rotates at this size (one older kept)
QUARANTINE_MAX = 16                    # proposals kept; the oldest go first


class RateLimit:
    def __init__(self, rate: float = RATE, burst: int = BURST, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.t = float(burst), clock()

    def allow(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Audit:
    """Every request and refusal, one JSON line each, in DATA/audit/legacy-vm.jsonl."""

    def __init__(self, data: str):
        self.dir = os.path.join(data, "audit")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "legacy-vm.jsonl")

    def write(self, **entry) -> None:
        line = json.dumps({"t": round(time.time(), 3), **entry}, separators=(",", ":")) + "\n"
        try:
            append_rotating(self.path, line.encode(), AUDIT_MAX)
        except OSError:
            pass                                      # a full disk must not stop the broker


def _safe_id(mid):
    return mid if mid is None or isinstance(mid, (int, str)) else None


class Tally:
    """Refusals audited so that a guest refusing at the allowed rate cannot rotate the audit's
    earlier entries away: per code, the first refusal in each window is written in full, the
    others are counted and written as one line when the window ends."""

    def __init__(self, audit: "Audit", clock, window_s: float = 10.0):
        self.audit, self.clock, self.window_s = audit, clock, window_s
        self.codes: dict[str, dict] = {}            # code -> {start, count, bytes} of the open window

    def refused(self, code: str, nbytes: int, write_in_full) -> None:
        self.flush()
        w = self.codes.get(code)
        if w is None:
            self.codes[code] = {"start": self.clock(), "count": 0, "bytes": 0}
            write_in_full()
            return
        w["count"] += 1
        w["bytes"] += nbytes

    def flush(self, force: bool = False) -> None:
        now = self.clock()
        for code, w in list(self.codes.items()):
            if force or now - w["start"] >= self.window_s:
                if w["count"]:
                    self.audit.write(type=None, ok=False, code=code, refused=w["count"], bytes=w["bytes"],
                                     error=f"{w['count']} more {code!r} refusals in {now - w['start']:.0f} s")
                del self.codes[code]


class Lines:
    """Splits the byte stream into lines without ever holding more than MAX_PROPOSAL_LINE:
    an over-long line is discarded up to its newline and reported once as ``None``."""

    def __init__(self, cap: int = MAX_PROPOSAL_LINE):
        self.cap, self.buf, self.skipping = cap, bytearray(), False

    def feed(self, chunk: bytes) -> list:
        out = []
        self.buf += chunk
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > self.cap:
                    if not self.skipping:
                        out.append(None)
                    self.skipping = True
                    self.buf.clear()
                return out
            line = bytes(self.buf[:nl])
            del self.buf[:nl + 1]
            if self.skipping:
                self.skipping = False                 # the tail of an over-long line
                continue
            if len(line) > self.cap:
                out.append(None)
            elif line.strip():
                out.append(line)


class Broker:
    def __init__(self, data: str, clock=time.monotonic):
        self.data = data
        self.audit = Audit(data)
        self.limit = RateLimit(clock=clock)
        self.quarantine = os.path.join(data, "quarantine")
        self.last_request_ns = 0                    # CLOCK_MONOTONIC of the guest's last line
        self.counters = {"requests": 0, "answered": 0, "refused": 0, "dropped": 0, "bytes_in": 0, "bytes_out": 0}
        self.refusals: dict[str, int] = {}
        self.clock = clock
        self.flood = {"count": 0, "bytes": 0, "last": float("-inf")}   # rate-limited, not yet audited
        self.tally = Tally(self.audit, clock)

    # --- one request ---------------------------------------------------------------------------
    def handle(self, line: bytes | None) -> bytes:
        """A line from the guest (None: an over-long one) → the answer line."""
        self.counters["requests"] += 1
        self.counters["bytes_in"] += len(line or b"") + 1
        self.last_request_ns = time.monotonic_ns()        # alive, even when what it says is refused
        mid, kind = None, None
        try:
            if line is None:
                raise MessageError("too-large", f"a line is at most {MAX_PROPOSAL_LINE} bytes (a model proposal) "
                                                f"or {MAX_LINE} bytes (anything else)")
            if not self.limit.allow():
                raise MessageError("rate-limited", f"at most {RATE:g} requests per second (burst {BURST})")
            mid, kind, args = parse(line)
            if kind != "model.propose" and len(line) > MAX_LINE:
                raise MessageError("too-large", f"{kind!r} is at most {MAX_LINE} bytes, got {len(line)}")
            result = getattr(self, "_" + kind.replace(".", "_"))(args)
        except MessageError as e:
            return self._refuse(getattr(e, "id", mid), kind, e.code, str(e), len(line or b""))
        except Exception as e:                 # noqa: BLE001 - nothing a guest sends may end the broker
            return self._refuse(mid, kind, "internal", f"the request could not be handled: {type(e).__name__}",
                                len(line or b""))
        self.counters["answered"] += 1
        self.audit.write(id=mid, type=kind, ok=True, bytes=len(line),
                         **({"model": result["id"]} if kind == "model.propose" else {}))
        return self._line({"id": mid, "ok": True, "result": result})

    def _refuse(self, mid, kind, code: str, message: str, nbytes: int) -> bytes:
        self.counters["refused"] += 1
        self.refusals[code] = self.refusals.get(code, 0) + 1
        if code == "rate-limited":             # a flood is audited as one line a second, not a line a message
            self._flooded(nbytes)
        else:
            self.tally.refused(code, nbytes, lambda: self.audit.write(id=_safe_id(mid), type=kind, ok=False, code=code,
                                                                        error=message[:300], bytes=nbytes))
        return self._line({"id": _safe_id(mid), "ok": False, "error": {"code": code, "message": message}})

    def _flooded(self, nbytes: int) -> None:
        """Count a rate-limited message; write the count to the audit at most once a second, so
        that a flood cannot rotate the record of what came before it out of the audit."""
        f = self.flood
        f["count"] += 1
        f["bytes"] += nbytes
        if self.clock() - f["last"] >= 1.0:      # the first of a flood at once, then once a second
            self.flush_flood()

    def flush_flood(self) -> None:
        f = self.flood
        if f["count"]:
            self.audit.write(type=None, ok=False, code="rate-limited", refused=f["count"], bytes=f["bytes"],
                             error=f"{f['count']} messages over {RATE:g}/s (burst {BURST}) refused")
            f.update(count=0, bytes=0, last=self.clock())

    def _line(self, obj: dict) -> bytes:
        out = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.counters["bytes_out"] += len(out)
        return out

    # --- the allow-listed requests: read-only views, a log, a quarantine --------------------------
    def _telemetry(self):
        from ..telemetry import TelemetryReader
        try:
            return TelemetryReader(os.path.join(self.data, "run", "telemetry"))
        except (OSError, ValueError):
            return None

    def _ping(self, args) -> dict:
        return {}

    def _status_get(self, args) -> dict:
        from ..store import ModelStore
        r = self._telemetry()
        loop = {"mode": "down"}
        if r is not None:
            try:
                c = r.counters()
            finally:
                r.close()
            loop = {"mode": c["mode"], "ticks": int(c["ticks"]), "misses": int(c["misses"]),
                    "rate_hz": c["rate_mhz"] / 1000.0, "failsafe_reason": c["failsafe_reason"] or None}
        st = ModelStore(self.data).state()
        return {"loop": loop, "active_model": st["active"], "time": round(time.time(), 3)}

    def _telemetry_get(self, args) -> dict:
        from ..timing import percentiles
        r = self._telemetry()
        if r is None:
            return {"window_s": args["window_s"], "ticks": 0}
        try:
            c = r.counters()
            n = int(args["window_s"] * 1e9 // max(1, c["period_ns"]))
            recs = r.records(n)
        finally:
            r.close()
        if not len(recs):
            return {"window_s": args["window_s"], "ticks": 0}
        late = recs["lateness_ns"] / 1000.0
        comp = recs["compute_ns"] / 1000.0
        return {"window_s": args["window_s"], "ticks": int(len(recs)),
                "lateness_us": percentiles(late), "compute_us": percentiles(comp),
                "misses_total": int(c["misses"]), "failsafe_entries_total": int(c["failsafe_entries"])}

    def _log_post(self, args) -> dict:
        path = os.path.join(self.data, "logs", "legacy-vm-guest.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            append_rotating(path, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {args['level']}: {args['message']}\n".encode(),
                            AUDIT_MAX)
        except OSError as e:
            raise MessageError("unavailable", f"the log cannot be written: {e.strerror}") from e
        return {}

    def _model_propose(self, args) -> dict:
        """Into quarantine only. The control plane checks it (compile, verify, the signing
        policy) when someone accepts it locally; activating it is another local request."""
        kind = check_model(args["model"])
        os.makedirs(self.quarantine, exist_ok=True)
        mid = hashlib.sha256(args["model"]).hexdigest()
        meta = {"id": mid, "name": args["name"], "note": args["note"], "bytes": len(args["model"]), "format": kind,
                "signed": "signature" in args, "received": round(time.time(), 3), "from": "legacy-vm"}
        atomic_write(os.path.join(self.quarantine, mid + ".model"), args["model"])
        if "signature" in args:
            atomic_write(os.path.join(self.quarantine, mid + ".sig"), args["signature"])
        atomic_write(os.path.join(self.quarantine, mid + ".json"), json.dumps(meta).encode())
        self._trim_quarantine()
        return {"id": mid, "state": "quarantined", "note": "needs a local accept and a local activation"}

    def _trim_quarantine(self) -> None:
        metas = sorted((os.path.getmtime(os.path.join(self.quarantine, f)), f[:-5])
                       for f in os.listdir(self.quarantine) if f.endswith(".json"))
        for _, mid in metas[:-QUARANTINE_MAX]:
            for ext in (".model", ".sig", ".json"):
                try:
                    os.unlink(os.path.join(self.quarantine, mid + ext))
                except FileNotFoundError:
                    pass


def check_model(data: bytes) -> str:
    """A proposal must at least be what it claims: a plan file that validates, or an ONNX
    model that parses and has a graph (compiling and verifying it is the control plane's job
    when it is accepted). Returns the format; raises MessageError."""
    from ..plan.artifact import sniff
    kind = sniff(data[:512])
    if kind == "plan":
        from ..errors import NnosError
        from ..plan import Plan
        try:
            Plan.from_bytes(data)
        except (NnosError, ValueError, TypeError, KeyError, RecursionError) as e:
            raise MessageError("bad-model", f"not a valid plan: {type(e).__name__}: {e}"[:300]) from e
        return kind
    if kind != "onnx":
        raise MessageError("bad-model", f"a proposal is an ONNX model or an nnos plan, not a {kind} archive")
    import onnx
    try:
        model = onnx.load_from_string(data)
    except Exception as e:                              # noqa: BLE001 - protobuf raises several kinds
        raise MessageError("bad-model", f"not an ONNX model: {type(e).__name__}: {e}") from e
    if not model.graph.node:
        raise MessageError("bad-model", "an ONNX model without a graph")
    return kind


def publish(broker: Broker, path: str, connected: bool) -> None:
    """The broker's counters for the control plane (GET /v1/vm), in RAM (the run directory);
    and any flood count not yet in the audit."""
    if broker.flood["count"] and broker.clock() - broker.flood["last"] >= 1.0:
        broker.flush_flood()
    broker.tally.flush()
    try:
        atomic_write(path, json.dumps({"connected": connected, "time": round(time.time(), 3), **broker.counters,
                                       "refusals": broker.refusals,
                                       "last_request_ns": broker.last_request_ns}).encode())
    except OSError:
        pass


def serve(broker: Broker, sock: socket.socket, stop=lambda: False, on_idle=lambda: None) -> None:
    """Answer one connection until it closes. Never blocks on the guest: reads and writes are
    non-blocking, and answers beyond OUT_MAX for a guest that does not read are dropped."""
    sock.setblocking(False)
    lines, out = Lines(), bytearray()
    while not stop():
        on_idle()
        r, w, _ = select.select([sock], [sock] if out else [], [], 0.2)
        if r:
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                return
            if chunk == b"":
                return
            for line in lines.feed(chunk or b""):
                answer = broker.handle(line)
                if len(out) + len(answer) > OUT_MAX:
                    broker.counters["dropped"] += 1
                else:
                    out += answer
        if w and out:
            try:
                n = sock.send(out)
                del out[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.legacy.broker")
    ap.add_argument("--data", required=True)
    ap.add_argument("--socket", required=True, help="qemu's Unix socket for the guest's virtio-serial port")
    a = ap.parse_args(argv)
    broker = Broker(a.data)
    counters = os.path.join(os.path.dirname(a.socket), "broker.json")
    guest = Heartbeat(os.path.dirname(a.socket), "legacy-vm")     # the broker vouches for the guest
    last = [0.0]

    def tick(connected=True):
        if broker.last_request_ns:
            guest.beat(broker.last_request_ns)
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            publish(broker, counters, connected)
    while True:                                       # qemu restarts: connect again
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(a.socket)
        except OSError:
            s.close()
            tick(False)
            time.sleep(0.5)
            continue
        print(f"broker: connected to {a.socket}", file=sys.stderr, flush=True)
        serve(broker, s, on_idle=tick)
        s.close()
        print(f"broker: {a.socket} closed; counters {broker.counters}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
