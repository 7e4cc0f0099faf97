"""The FastAPI application, assembled like FastAPI's "bigger applications": routers per area,
shared dependencies in deps.py, one typed state (state.py) on app.state.nnos."""
from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__, flags
from .deps import disk_full
from .guard import Guard, error_body
from .routers import device, jobs, kserve, live, metrics, models, recordings, robot, system, vm
from .settings import Settings
from .state import AppState


def create_app(settings: Settings, token: str | None = None) -> FastAPI:
    app = FastAPI(title="nnos control plane", version=__version__,
                  description="Manage models and watch the device. Every route but /v2/health/* needs "
                              "`Authorization: Bearer <token>` (the token file in the data directory).")
    st = app.state.nnos = AppState.open(settings, token)
    app.include_router(kserve.health)
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(kserve.router)
    app.include_router(device.router)
    app.include_router(metrics.router)
    app.include_router(device.ws_router)
    app.include_router(live.router)
    app.include_router(vm.router)
    app.include_router(robot.router)
    app.include_router(recordings.router)
    app.include_router(system.router)

    static = Path(__file__).parent / "static"
    page = (static / "dashboard.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard():
        """The dashboard: a page, its script and uPlot, served from the package (no build step, no
        CDN: the device is offline). It holds no data of its own; everything it shows comes from
        the token-protected API."""
        return page

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)                 # no icon; not a 401 in the browser's console

    app.mount("/static", StaticFiles(directory=static), name="static")

    app.add_middleware(Guard, token=st.token, upload_limit=settings.max_upload_bytes, scrape_token=lambda: st.scrape_token,
                       scrape_from=flags.SCRAPE_FROM.get())

    @app.exception_handler(OSError)
    async def storage(request: Request, exc: OSError):
        full = disk_full(exc, settings.data)
        if full is None:
            raise exc
        return JSONResponse({"detail": full.detail}, status_code=full.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        errs = [{"where": ".".join(str(x) for x in e.get("loc", ())), "error": e.get("msg")} for e in exc.errors()]
        if request.url.path.startswith("/v2"):
            return JSONResponse(error_body("/v2", "; ".join(f"{e['where']}: {e['error']}" for e in errs)), 422)
        return JSONResponse({"detail": errs}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """KServe v2 clients read {"error": "..."}; the rest of the API keeps FastAPI's {"detail"}."""
        if not request.url.path.startswith("/v2"):
            return await http_exception_handler(request, exc)
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return JSONResponse(error_body("/v2", message), status_code=exc.status_code, headers=exc.headers)

    return app
