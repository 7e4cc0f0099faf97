"""python -m nnos.controlplane --data DIR --board FILE [--host 127.0.0.1] [--port 8080]"""
from __future__ import annotations

import argparse
import os
import sys

from .settings import Settings, ensure_token


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.controlplane")
    ap.add_argument("--data", required=True)
    ap.add_argument("--board", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--max-upload-mb", type=float, default=64.0, help="largest accepted upload")
    a = ap.parse_args(argv)
    # off the loop's CPU: the supervisor sets that before exec (table.py: off_loop_cpu)
    token, new = ensure_token(a.data)
    if new:      # the token itself never goes to a stream: stderr ends up in DATA/logs
        print(f"control plane: a new API token is in {os.path.join(a.data, 'token')} (mode 0600); "
              "nnos ctl reads it from there", file=sys.stderr, flush=True)
    import uvicorn
    from .app import create_app
    from .. import flags
    app = create_app(Settings(a.data, a.board, a.host, a.port, max_upload_bytes=int(a.max_upload_mb * (1 << 20)),
                              require_signed=flags.REQUIRE_SIGNED.get()), token)
    from .guard import SlowHeaderH11
    SlowHeaderH11.HEADER_TIMEOUT_S = flags.API_HEADER_TIMEOUT_S.get()
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False, http=SlowHeaderH11)
    return 0


if __name__ == "__main__":
    sys.exit(main())
