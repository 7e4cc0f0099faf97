"""The control plane: a local HTTP API (FastAPI, served by uvicorn) to manage models and watch
the device. It runs in its own process, off the loop's CPU, and reaches the loop only through
the loop's control socket and the shared-memory telemetry, so it cannot stall a tick."""
