"""Board configs (hardware/boards/*.toml): which devices, how to find them, their channels, and
how channels bind to a plan's inputs and outputs.

Everything is validated at load, before anything starts; an error names FILE:LINE and says
what was expected and what was found. ``check_plan`` validates the bindings against a plan.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field

import numpy as np

from .channels import ACTUATOR, DTYPES, FAILSAFE_MODES, SENSOR, Channel
from .devices.factory import CAMERAS, DRIVERS, SERVO_BUSES
from .errors import ConfigError

MIN_RATE, MAX_RATE = 1, 1000


@dataclass
class DeviceConfig:
    """One device of a board: its driver, channels and driver options."""
    name: str
    driver: str
    channels: list[Channel]
    stale_ms: dict[str, float]
    path: str | None = None
    usb: dict = field(default_factory=dict)        # vendor, product (ints), serial (str)
    simulator: list[str] | None = None
    recording: str | None = None
    servo_ids: list[int] = field(default_factory=list)       # servo buses: one id per joint
    joint_names: list[str] = field(default_factory=list)     # ... and its name
    servo_models: list[str] = field(default_factory=list)    # ... and its register table
    baudrate: int = 1_000_000
    arm_on_start: bool = False
    fast_sync_read: bool = False
    camera: object = None                                    # cameras: a CameraSpec (camera_config.py)


@dataclass
class InputBinding:
    """Which channels feed a model input, scaled and offset."""
    tensor: str
    channels: list[tuple[str, str]]                 # (device, channel), concatenated in order
    scale: np.ndarray
    offset: np.ndarray
    line: str = ""
    image: dict | None = None                       # pre-processing of a camera channel (preprocess.py)


@dataclass
class OutputBinding:
    """Which actuator channel a model output drives, scaled and offset."""
    tensor: str
    device: str
    channel: str
    scale: np.ndarray
    offset: np.ndarray
    lo: float
    hi: float
    max_step: float | None = None                   # rate limit: most change per tick
    line: str = ""
    chunk: str | None = None                        # an action chunk [K, n]: "replace" or "ensemble" (action_queue.py)
    ensemble_m: float = 0.01                        # ensemble: weight exp(-m·i), i = 0 for the oldest chunk


@dataclass
class Board:
    """A board config: its rate, devices, model, bindings and failsafe rules."""
    name: str
    path: str
    rate_hz: float
    devices: list[DeviceConfig]
    inputs: list[InputBinding]
    outputs: list[OutputBinding]
    model: str | None = None
    failsafe: dict = field(default_factory=dict)
    description: str = ""
    infer_every: int = 1                            # the policy runs every k ticks (asynchronously when k > 1)
    modules: list[str] = field(default_factory=list)  # kernel modules the loop loads first (kmod.py)
    model_cpus: int = 1                             # CPUs the model's large steps may use (the loop's + workers)

    def device(self, name: str) -> DeviceConfig:
        return next(d for d in self.devices if d.name == name)

    def channel(self, device: str, channel: str) -> Channel:
        return next(c for c in self.device(device).channels if c.name == channel)

    def labels(self, limit: int = 16) -> dict[str, list[str]]:
        """What each of the first ``limit`` elements of the first input and output binding is
        called (joint names where the board gives them), as telemetry shows them (it keeps the
        first 16 values of each): {"inputs": [...], "outputs": [...]}."""
        def names(refs):
            out = []
            for d, c in refs:
                ch = self.channel(d, c)
                out += [f"{d}.{ch.label(i)}" for i in range(min(ch.size, limit - len(out)))]
                if len(out) >= limit:
                    break
            return out
        return {"inputs": names(self.inputs[0].channels) if self.inputs else [],
                "outputs": names([(self.outputs[0].device, self.outputs[0].channel)]) if self.outputs else []}

    def check_plan(self, plan) -> None:
        """Bindings must cover the plan's inputs and outputs with matching sizes."""
        ins = {s.name: s for s in plan.inputs}
        outs = {s.name: s for s in plan.outputs}
        for b in self.inputs:
            spec = ins.get(b.tensor)
            if spec is None:
                raise ConfigError(b.line, f"input binding names tensor {b.tensor!r}; the model's inputs are {sorted(ins)}")
            if b.image is not None:
                self._check_image(b, spec)
                continue
            size = sum(self.channel(d, c).size for d, c in b.channels)
            if int(np.prod(spec.shape)) != size or spec.dtype != np.float32:
                raise ConfigError(b.line, f"tensor {b.tensor!r} is {spec.dtype}{list(spec.shape)}, but its channels "
                                  f"give {size} float32 values")
        missing = sorted(set(ins) - {b.tensor for b in self.inputs})
        if missing:
            raise ConfigError(f"{self.path}", f"model inputs {missing} have no binding in [[inputs]]")
        for b in self.outputs:
            spec = outs.get(b.tensor)
            if spec is None:
                raise ConfigError(b.line, f"output binding names tensor {b.tensor!r}; the model's outputs are {sorted(outs)}")
            self._check_output(b, spec)

    @staticmethod
    def _check_image(b, spec) -> None:
        h, w = b.image["size"]
        if b.image.get("in_plan"):
            frame = [1, *b.image["frame"], 3]
            if list(spec.shape) != frame or spec.dtype != np.uint8:
                raise ConfigError(b.line, f"tensor {b.tensor!r} is {spec.dtype}{list(spec.shape)}; with in_plan = true the plan "
                                  f"takes the camera's frame, uint8 {frame}: compile the model with the board "
                                  f"(nnos compile MODEL --board BOARD; an upload to the control plane does)")
            return
        want = [3, h, w] if b.image["layout"] == "chw" else [h, w, 3]
        shape = [s for s in spec.shape if s != 1][-3:]
        if shape != want or spec.dtype != np.float32 or int(np.prod(spec.shape)) != 3 * h * w:
            raise ConfigError(b.line, f"tensor {b.tensor!r} is {spec.dtype}{list(spec.shape)}, but the image "
                              f"pre-processing makes float32 {want}")

    def plan_images(self) -> dict:
        """The inputs whose pre-processing is compiled into the plan: {tensor: ((H, W), spec)}."""
        return {b.tensor: (b.image["frame"], b.image) for b in self.inputs if b.image and b.image.get("in_plan")}

    def _check_output(self, b, spec) -> None:
        """An output fills its channel (size n), or is a chunk [..., K, n] with ``chunk`` set."""
        ch = self.channel(b.device, b.channel)
        size, what = int(np.prod(spec.shape)), f"tensor {b.tensor!r} is {spec.dtype}{list(spec.shape)}"
        if spec.dtype != np.float32:
            raise ConfigError(b.line, f"{what}, but channel {b.device}.{b.channel} takes float32 values")
        if b.chunk is None and size != ch.size:
            hint = (f"; if it is a chunk of {size // ch.size} actions, set chunk = \"replace\" or \"ensemble\""
                    if size % ch.size == 0 and spec.shape and spec.shape[-1] == ch.size else "")
            raise ConfigError(b.line, f"{what}, but channel {b.device}.{b.channel} takes {ch.size} float32 values{hint}")
        if b.chunk is not None and (not spec.shape or spec.shape[-1] != ch.size or size % ch.size):
            raise ConfigError(b.line, f"{what}: a chunk must be [..., K, {ch.size}], K actions of channel "
                              f"{b.device}.{b.channel}'s {ch.size} values")
        if b.chunk is not None and size // ch.size < self.infer_every:
            raise ConfigError(b.line, f"{what}: a chunk of {size // ch.size} actions runs dry before the next "
                              f"inference (infer_every = {self.infer_every} ticks)")


# --- loading --------------------------------------------------------------------------------
class _Lines:
    """Finds the line of a key inside the n-th [[table]] of a TOML text (tomllib keeps none).
    The text is read once into its table headers and keys: a board is checked key by key, and
    each check names its line."""

    HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    KEY = re.compile(r"\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, path: str, text: str):
        self.path = path
        self.headers: list[tuple[int, str, bool]] = []        # (line index, table name, [[array]])
        self.keys: dict[str, list[int]] = {}                  # key -> the line indices it is set on
        for i, line in enumerate(text.splitlines()):
            if line.lstrip().startswith("["):
                m = self.HEADER.match(line)
                self.headers.append((i, m.group(2) if m else "", bool(m) and m.group(1) == "[["))
                continue
            m = self.KEY.match(line)
            if m:
                self.keys.setdefault(m.group(1).strip("\"'"), []).append(i)
        self.n = len(text.splitlines())

    def at(self, table: str | None, index: int = 0, key: str | None = None, sub: tuple | None = None) -> str:
        start = 0
        if table is not None:
            found = [i for i, name, _ in self.headers if name == table]
            if index < len(found):
                start = found[index]
        if sub is not None:                                 # (subtable, index) inside this one
            count = -1
            for i, name, array in self.headers:
                if i <= start:
                    continue
                if array and name == f"{table}.{sub[0]}":
                    count += 1
                    if count == sub[1]:
                        start = i
                        break
                elif name == table:
                    break
        if key is not None:
            end = next((i for i, _, _ in self.headers if i > start), self.n)
            line = next((i for i in self.keys.get(key, ()) if start <= i < end), None)
            if line is not None:
                return f"{self.path}:{line + 1}"
        return f"{self.path}:{start + 1}"


KEYS = {
    "top level": {"board", "devices", "inputs", "outputs", "failsafe"},
    "board": {"name", "description", "rate_hz", "model", "infer_every", "infer_hz", "modules", "model_cpus"},
    "devices": {"name", "driver", "path", "usb", "simulator", "recording", "channels", "ids", "names", "servo",
                "baudrate", "arm_on_start", "fast_sync_read", "camera", "stale_ms"},
    "channels": {"name", "kind", "shape", "range", "units", "safe", "stale_ms", "rate_hz", "out_of_range",
                 "fault_after", "names", "max_rate", "failsafe", "dtype"},
    "inputs": {"tensor", "channels", "scale", "offset", "image"},
    "outputs": {"tensor", "channel", "scale", "offset", "clamp", "max_step", "chunk", "ensemble_m"},
    "failsafe": {"exit", "good_ticks", "overrun_streak"},
}


def _known(table: dict, kind: str, where) -> None:
    """Refuse a key the board format does not have (a typo would otherwise be ignored), with
    the nearest known key as a hint. ``where(key)`` gives its FILE:LINE."""
    for k in table:
        if k not in KEYS[kind]:
            import difflib
            near = difflib.get_close_matches(k, sorted(KEYS[kind]), 1, 0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(where(k), f"unknown key {k!r} at the {kind}{hint} (known: {', '.join(sorted(KEYS[kind]))})"
                              if kind == "top level" else
                              f"unknown key {k!r} in [{kind}]{hint} (known: {', '.join(sorted(KEYS[kind]))})")


def _need(cond, where, message):
    if not cond:
        raise ConfigError(where, message)


def _floats(value, n, where, what):
    arr = np.asarray(value, dtype=np.float64) if isinstance(value, (int, float, list)) else None
    _need(arr is not None and arr.ndim <= 1, where, f"{what} must be a number or a list of numbers, got {value!r}")
    arr = np.broadcast_to(arr, (n,)) if arr.ndim == 0 else arr
    _need(arr.shape == (n,), where, f"{what} must have {n} values, got {len(arr)}")
    return arr.astype(np.float32)


def _range(value, where, what="range"):
    _need(isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
          and value[0] < value[1], where, f"{what} must be [low, high] with low < high, got {value!r}")
    return float(value[0]), float(value[1])


def load_board(path: str) -> Board:
    doc, L = _parse(path)
    b = doc["board"]
    rate = b.get("rate_hz")
    _need(isinstance(rate, (int, float)) and MIN_RATE <= rate <= MAX_RATE, L.at("board", key="rate_hz"),
          f"rate_hz must be a number from {MIN_RATE} to {MAX_RATE}, got {rate!r}")
    devices = [_device(d, i, L) for i, d in enumerate(doc.get("devices", []))]
    names = [d.name for d in devices]
    for i, n in enumerate(names):
        _need(names.index(n) == i, L.at("devices", i, "name"), f"device name {n!r} is used twice")
    chans = {(d.name, c.name): c for d in devices for c in d.channels}
    inputs = [_input(x, i, L, chans) for i, x in enumerate(doc.get("inputs", []))]
    outputs = [_output(x, i, L, chans) for i, x in enumerate(doc.get("outputs", []))]
    failsafe = doc.get("failsafe", {})
    model = _model_path(b.get("model"), path)
    every = _infer_every(b, L, rate, outputs)
    from .kmod import NAME
    modules = b.get("modules", [])
    _need(isinstance(modules, list) and all(isinstance(m, str) and NAME.fullmatch(m) for m in modules),
          L.at("board", key="modules"), f"modules must be a list of kernel module names (e.g. [\"vivid\"]), got {modules!r}")
    cpus = b.get("model_cpus", 1)
    _need(isinstance(cpus, int) and not isinstance(cpus, bool) and 1 <= cpus <= 16, L.at("board", key="model_cpus"),
          f"model_cpus must be a whole number of CPUs from 1 (the loop's own) to 16, got {cpus!r}")
    _need(cpus == 1 or every == 1, L.at("board", key="model_cpus"),
          f"model_cpus = {cpus} splits a policy run on the loop's own thread; with infer_every = {every} the policy "
          f"already runs on a worker beside the loop, on the CPUs the loop does not own: remove model_cpus")
    return Board(b["name"], path, float(rate), devices, inputs, outputs, model, failsafe, b.get("description", ""),
                 every, modules, cpus)


def _parse(path: str) -> tuple[dict, "_Lines"]:
    """The board file as TOML, its tables' shapes and keys checked; and where each key is."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read board config: {e.strerror}") from e
    try:
        text = raw.decode()
        doc = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path, f"not valid TOML: {e}") from e
    L = _Lines(path, text)
    _known(doc, "top level", lambda k: L.at(None, key=k) if k not in ("devices", "inputs", "outputs") else path)
    b = doc.get("board", {})
    _need(isinstance(b, dict) and "name" in b, L.at("board"), "a [board] table with a name is required")
    _known(b, "board", lambda k: L.at("board", key=k))
    _need(isinstance(doc.get("failsafe", {}), dict), path, "[failsafe] must be a table")
    _known(doc.get("failsafe", {}), "failsafe", lambda k: L.at("failsafe", key=k))
    for kind in ("devices", "inputs", "outputs"):
        _need(isinstance(doc.get(kind, []), list), path, f"{kind} must be an array of tables: [[{kind}]]")
        for i, t in enumerate(doc.get(kind, [])):
            _need(isinstance(t, dict), L.at(kind, i), f"each [[{kind}]] entry must be a table")
            _known(t, kind, lambda k, i=i, kind=kind: L.at(kind, i, k))
    return doc, L


def _infer_every(b: dict, L: "_Lines", rate: float, outputs: list) -> int:
    """Ticks between inferences: infer_every, or infer_hz said as a rate (rate_hz / infer_hz)."""
    every = b.get("infer_every", 1)
    if "infer_hz" in b:
        hz = b["infer_hz"]
        at = L.at("board", key="infer_hz")
        _need("infer_every" not in b, at, "give infer_every or infer_hz, not both")
        _need(isinstance(hz, (int, float)) and 0 < hz <= rate, at,
              f"infer_hz must be a rate in (0, rate_hz = {rate:g}], got {hz!r}")
        k = rate / hz
        _need(abs(k - round(k)) < 1e-6, at, f"infer_hz = {hz:g} is not a whole number of ticks at {rate:g} Hz "
              f"({k:.3g}): infer_every = {int(k)} is {rate / int(k):.3g} Hz, {int(k) + 1} is {rate / (int(k) + 1):.3g} Hz")
        every = int(round(k))
    _need(isinstance(every, int) and not isinstance(every, bool) and 1 <= every <= 1000, L.at("board", key="infer_every"),
          f"infer_every must be a whole number of ticks from 1 to 1000, got {every!r}")
    _need(every == 1 or all(o.chunk for o in outputs), L.at("board", key="infer_every"),
          f"infer_every = {every} needs every output to be an action chunk (chunk = \"replace\" or \"ensemble\"): "
          f"between inferences the loop executes queued actions; not chunks: "
          f"{', '.join(o.tensor for o in outputs if not o.chunk)}")
    return every


def _model_path(model: str | None, board_path: str) -> str | None:
    """A board's ``model``: absolute, or relative to the tree the board is in (hardware/boards/ →
    its root); ``models/…`` that is not there names nnos's bundled models wherever they are
    installed (a board in the appliance's /data/config)."""
    if not model or os.path.isabs(model):
        return model
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(board_path))))
    here = os.path.join(root, model)
    if os.path.exists(here) or not model.startswith("models/"):
        return here
    import importlib.util
    spec = importlib.util.find_spec("nnos_models")
    bundled = os.path.join(os.path.dirname(spec.origin), model[len("models/"):]) if spec and spec.origin else here
    return bundled if os.path.exists(bundled) else here


def _device(d, i, L) -> DeviceConfig:
    where = L.at("devices", i)
    _need(isinstance(d.get("name"), str) and re.fullmatch(r"[A-Za-z0-9_-]+", d["name"] or ""), where,
          f"device needs a name of letters, digits, '-' and '_', got {d.get('name')!r}")
    driver = d.get("driver")
    _need(driver in DRIVERS, L.at("devices", i, "driver"), f"driver must be one of {list(DRIVERS)}, got {driver!r}")
    finders = [k for k in ("path", "usb", "simulator", "recording") if k in d]
    _need(len(finders) == 1 or (driver == "synthetic-camera" and not finders), where,
          f"device {d['name']!r} needs exactly one of path, usb, simulator, recording; "
          f"got {finders or 'none'}")
    usb = d.get("usb", {})
    if "usb" in d:
        w = L.at("devices", i, "usb")
        _need(isinstance(usb, dict) and set(usb) <= {"vendor", "product", "serial"} and "vendor" in usb
              and "product" in usb, w, f"usb must be {{vendor, product[, serial]}}, got {usb!r}")
        _need(all(isinstance(usb[k], int) and 0 <= usb[k] <= 0xFFFF for k in ("vendor", "product")), w,
              f"usb vendor/product must be 16-bit integers (e.g. 0x0403), got {usb!r}")
    servo = driver in SERVO_BUSES
    channels, stale = [], {}
    for j, c in enumerate(d.get("channels", [])):
        ch = _channel(c, lambda key=None, j=j: L.at("devices", i, key, sub=("channels", j)), servo)
        channels.append(ch)
        if ch.kind == SENSOR:
            stale[ch.name] = float(c.get("stale_ms", 100))
    sim = d.get("simulator")
    if sim is not None:
        _need(isinstance(sim, list) and sim and all(isinstance(s, str) for s in sim), L.at("devices", i, "simulator"),
              f"simulator must be a command as a list of strings, got {sim!r}")
    cfg = DeviceConfig(d["name"], driver, channels, stale, d.get("path"), usb, sim, d.get("recording"))
    servo_keys = [k for k in ("ids", "names", "servo", "baudrate", "arm_on_start", "fast_sync_read") if k in d]
    _need(servo or not servo_keys, L.at("devices", i, servo_keys[0] if servo_keys else None),
          f"device {d['name']!r}: {', '.join(servo_keys)} {'belongs' if len(servo_keys) == 1 else 'belong'} "
          f"to a servo bus (driver {' or '.join(SERVO_BUSES)})")
    camera_keys = [k for k in ("camera", "stale_ms") if k in d]
    _need(driver in CAMERAS or not camera_keys, L.at("devices", i, camera_keys[0] if camera_keys else None),
          f"device {d['name']!r}: {', '.join(camera_keys)} {'belongs' if len(camera_keys) == 1 else 'belong'} "
          f"to a camera (driver {' or '.join(CAMERAS)})")
    # each kind's checks (and its register tables, its camera formats) imported by a board that has one
    if servo:
        from .servo_config import check_servo_bus
        check_servo_bus(cfg, d, lambda key=None: L.at("devices", i, key), _need)
    if driver in CAMERAS:
        from .camera_config import check_camera
        check_camera(cfg, d, lambda key=None: L.at("devices", i, key), _need)
    return cfg


def _channel(c, at, servo: bool) -> Channel:
    """One [[devices.channels]] entry; ``at(key)`` gives a key's FILE:LINE."""
    _need(isinstance(c, dict), at(), "each [[devices.channels]] entry must be a table")
    _known(c, "channels", at)
    _need(isinstance(c.get("name"), str), at(), "channel needs a name")
    name, kind = c["name"], c.get("kind")
    _need(kind in (SENSOR, ACTUATOR), at("kind"), f"channel {name!r}: kind must be 'sensor' or 'actuator', got {kind!r}")
    shape = c.get("shape")
    _need(isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape), at("shape"),
          f"channel {name!r}: shape must be a list of positive integers, got {shape!r}")
    lo, hi = _range(c.get("range"), at("range"), f"channel {name!r}: range")
    safe = c.get("safe", 0.0)
    policy, after = c.get("out_of_range", "failsafe"), c.get("fault_after", 1)
    _need(policy in ("failsafe", "clamp"), at("out_of_range"),
          f"channel {name!r}: out_of_range must be 'failsafe' (a reading outside the range is a fault) "
          f"or 'clamp' (clamped into the range and counted), got {policy!r}")
    _need(isinstance(after, int) and after >= 1, at("fault_after"),
          f"channel {name!r}: fault_after must be a whole number ≥ 1, got {after!r}")
    size = int(np.prod(shape))
    names = c.get("names", [])
    _need(isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) in (0, size),
          at("names"), f"channel {name!r}: names must be {size} strings, one per element, got {names!r}")
    dtype = c.get("dtype", "float32")
    _need(dtype in DTYPES, at("dtype"), f"channel {name!r}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    failsafe = c.get("failsafe", "hold" if servo and kind == ACTUATOR else "value")
    max_rate = c.get("max_rate", 0.0)
    if kind == ACTUATOR:
        _need(isinstance(safe, (int, float)) and lo <= safe <= hi, at("safe"),
              f"channel {name!r}: safe value {safe!r} must lie in its range [{lo}, {hi}]")
        _need(failsafe in FAILSAFE_MODES, at("failsafe"), f"channel {name!r}: failsafe must be one of "
              + "; ".join(f"{k!r} ({v})" for k, v in FAILSAFE_MODES.items()) + f" — got {failsafe!r}")
        _need(failsafe != "torque_off" or servo, at("failsafe"),
              f"channel {name!r}: failsafe 'torque_off' needs a device with torque (a servo bus)")
        _need(isinstance(max_rate, (int, float)) and max_rate >= 0, at("max_rate"),
              f"channel {name!r}: max_rate must be a number ≥ 0 (units per second; 0: no limit), got {max_rate!r}")
        _need(failsafe != "ramp" or max_rate > 0, at("failsafe"),
              f"channel {name!r}: failsafe 'ramp' needs a max_rate to ramp at")
    else:
        _need("failsafe" not in c and "max_rate" not in c, at("failsafe" if "failsafe" in c else "max_rate"),
              f"channel {name!r}: failsafe and max_rate belong to actuators")
        stale_ms = c.get("stale_ms", 100)
        _need(isinstance(stale_ms, (int, float)) and stale_ms > 0, at("stale_ms"),
              f"channel {name!r}: stale_ms must be positive, got {stale_ms!r}")
    return Channel(name, kind, tuple(shape), lo, hi, c.get("units", ""), float(safe), int(c.get("rate_hz", 0)),
                   np.dtype(dtype), policy, after, tuple(names), float(max_rate), failsafe)


def _ref(ref, where, chans, want_kind):
    _need(isinstance(ref, str) and ref.count(".") == 1, where, f"channel reference must be 'device.channel', got {ref!r}")
    dev, ch = ref.split(".")
    c = chans.get((dev, ch))
    _need(c is not None, where, f"unknown channel {ref!r}; known: {sorted(f'{d}.{n}' for d, n in chans)}")
    _need(c.kind == want_kind, where, f"channel {ref!r} is a {c.kind}, an {'input' if want_kind == SENSOR else 'output'} "
          f"binding needs a {want_kind}")
    return dev, ch


def _input(x, i, L, chans) -> InputBinding:
    where = L.at("inputs", i)
    _need(isinstance(x.get("tensor"), str), where, "input binding needs tensor = NAME")
    refs = x.get("channels")
    _need(isinstance(refs, list) and refs, L.at("inputs", i, "channels"), "input binding needs channels = [..]")
    pairs = [_ref(r, L.at("inputs", i, "channels"), chans, SENSOR) for r in refs]
    if "image" in x:
        return InputBinding(x["tensor"], pairs, np.ones(1, np.float32), np.zeros(1, np.float32), where,
                            _image(x["image"], pairs, chans, L.at("inputs", i, "image")))
    n = sum(chans[p].size for p in pairs)
    scale = _floats(x.get("scale", 1.0), n, L.at("inputs", i, "scale"), "scale")
    offset = _floats(x.get("offset", 0.0), n, L.at("inputs", i, "offset"), "offset")
    return InputBinding(x["tensor"], pairs, scale, offset, where)


def _image(img, pairs, chans, where) -> dict:
    """An input binding's ``image = {...}``: one uint8 [H, W, 3] channel, pre-processed."""
    from .preprocess import LAYOUTS, RESIZE, crop_box
    c = chans[pairs[0]]
    _need(len(pairs) == 1 and c.dtype == np.uint8 and len(c.shape) == 3 and c.shape[2] == 3, where,
          f"image pre-processing takes one uint8 [H, W, 3] camera channel; got {[f'{d}.{n}' for d, n in pairs]} "
          f"({c.dtype}{list(c.shape)})")
    _need(isinstance(img, dict) and set(img) <= {"crop", "size", "resize", "layout", "scale", "mean", "std", "in_plan"}
          and "size" in img, where,
          f"image must be {{size = [h, w], resize, crop, layout, scale, mean, std, in_plan}}, got {img!r}")
    size = img["size"]
    _need(isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size), where,
          f"image size must be [height, width], got {size!r}")
    _need(img.get("resize", "area") in RESIZE, where, f"image resize must be one of {RESIZE}, got {img.get('resize')!r}")
    _need(img.get("layout", "chw") in LAYOUTS, where, f"image layout must be one of {LAYOUTS}, got {img.get('layout')!r}")
    try:
        _, _, ch, cw = crop_box(c.shape[0], c.shape[1], img.get("crop"), tuple(size))
    except (ValueError, TypeError) as e:
        raise ConfigError(where, f"image crop: {e}") from e
    _need(isinstance(img.get("in_plan", False), bool), where, f"image in_plan must be true or false, got {img.get('in_plan')!r}")
    _need(not img.get("in_plan") or (ch % size[0] == 0 and cw % size[1] == 0 and img.get("resize", "area") == "area"), where,
          f"image in_plan = true resizes by whole factors with resize = \"area\" (an average pool in the plan); "
          f"the crop {ch}×{cw} → {size[0]}×{size[1]} is not: leave in_plan off (the binding resizes any factor)")
    for key in ("mean", "std"):
        v = img.get(key, [0.0, 0.0, 0.0] if key == "mean" else [1.0, 1.0, 1.0])
        _need(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
              and (key == "mean" or all(x > 0 for x in v)), where, f"image {key} must be 3 numbers (std > 0), got {v!r}")
    return {"resize": "area", "layout": "chw", "scale": 1.0, **img, "size": tuple(size), "frame": tuple(c.shape[:2])}


def _output(x, i, L, chans) -> OutputBinding:
    where = L.at("outputs", i)
    _need(isinstance(x.get("tensor"), str), where, "output binding needs tensor = NAME")
    dev, ch = _ref(x.get("channel"), L.at("outputs", i, "channel"), chans, ACTUATOR)
    c = chans[(dev, ch)]
    scale = _floats(x.get("scale", 1.0), c.size, L.at("outputs", i, "scale"), "scale")
    offset = _floats(x.get("offset", 0.0), c.size, L.at("outputs", i, "offset"), "offset")
    lo, hi = _range(x.get("clamp", [c.lo, c.hi]), L.at("outputs", i, "clamp"), "clamp")
    _need(c.lo <= lo and hi <= c.hi, L.at("outputs", i, "clamp"),
          f"clamp [{lo}, {hi}] must lie inside channel {dev}.{ch}'s range [{c.lo}, {c.hi}]")
    step = x.get("max_step")
    _need(step is None or (isinstance(step, (int, float)) and step > 0), L.at("outputs", i, "max_step"),
          f"max_step must be a positive number, got {step!r}")
    chunk, m = x.get("chunk"), x.get("ensemble_m", 0.01)
    _need(chunk in (None, "replace", "ensemble"), L.at("outputs", i, "chunk"),
          f"chunk must be \"replace\" (a new chunk replaces the queue) or \"ensemble\" (temporal ensembling), got {chunk!r}")
    _need(isinstance(m, (int, float)) and m >= 0 and (chunk == "ensemble" or "ensemble_m" not in x),
          L.at("outputs", i, "ensemble_m"), f"ensemble_m must be a number ≥ 0 with chunk = \"ensemble\", got {m!r}")
    return OutputBinding(x["tensor"], dev, ch, scale, offset, lo, hi, step, where, chunk, float(m))
