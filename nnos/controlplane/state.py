"""Everything the control plane's routes share, in one typed object (``Depends(deps.state)``)."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from nnos_hardware.board import Board, load_board

from ..store import ModelStore
from .settings import Settings, ensure_token


@dataclass
class AppState:
    settings: Settings
    token: str                                     # the bearer token every route but /v2/health/* needs
    store: ModelStore
    board: Board
    plans: dict = field(default_factory=dict)      # model id → bound Plan for /v2 inference (KServe)
    plans_lock: threading.Lock = field(default_factory=threading.Lock)
    intake_lock: asyncio.Lock = field(default_factory=asyncio.Lock)     # one compile at a time
    request_id: int = 0                            # the loop socket's request counter
    jobs: dict = field(default_factory=dict)       # job id → jobs.Job (uploads and activations in progress)
    job_tasks: set = field(default_factory=set)    # their asyncio tasks, kept referenced
    last_activation: dict | None = None            # the last activation asked of the loop, and its outcome
    gpu: dict | None = None                        # the Vulkan device (/v1/status), found once
    update_job: object = None                      # the system update in progress (jobs.Job), one at a time
    update_booted: dict = field(default_factory=dict)   # what RAUC says of the booted slot, asked once
    scrape_token: str = ""                         # opens /metrics and nothing else (Prometheus)

    @classmethod
    def open(cls, settings: Settings, token: str | None = None) -> "AppState":
        return cls(settings=settings, token=token or ensure_token(settings.data)[0],
                   store=ModelStore(settings.data), board=load_board(settings.board_path),
                   scrape_token=ensure_token(settings.data, "scrape_token", "nnos_scrape_")[0])
