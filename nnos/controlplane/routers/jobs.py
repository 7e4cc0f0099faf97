"""Long operations as jobs: `?wait=false` on an upload or an activation answers 202 at once with
a job id; GET /v1/jobs/{id} reports its step while it runs and its result when done."""
from __future__ import annotations

import asyncio
import itertools
import time

from fastapi import APIRouter, Depends, HTTPException

from ..deps import disk_full, require_token, state

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[Depends(require_token)])
_ids = itertools.count(1)
KEEP = 100


class Job:
    def __init__(self, kind: str):
        self.id, self.kind = str(next(_ids)), kind
        self.state, self.result, self.error = "running", None, None
        self.started, self.ended = time.time(), None
        self.steps: list[tuple[float, str]] = []
        self.step = "queued"

    @property
    def step(self) -> str:
        return self.steps[-1][1]

    @step.setter
    def step(self, name: str) -> None:
        self.steps.append((round(time.time() - self.started, 3), name))

    def view(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "step": self.step,
                "steps": [{"t": t, "step": n} for t, n in self.steps],
                "result": self.result, "error": self.error, "started": self.started, "ended": self.ended}


def start(st, kind: str, coro_factory) -> dict:
    """Run ``coro_factory(job)`` in the background; returns the 202 body."""
    job = Job(kind)
    st.jobs[job.id] = job
    while len(st.jobs) > KEEP:
        st.jobs.pop(next(iter(st.jobs)))

    async def run():
        try:
            job.result = await coro_factory(job)
            job.state, job.step = "done", "done"
        except HTTPException as e:
            job.state, job.error = "failed", {"status": e.status_code, "detail": e.detail}
        except Exception as e:                          # reported, never lost
            full = disk_full(e, st.settings.data) if isinstance(e, OSError) else None
            job.state, job.error = "failed", ({"status": 507, "detail": full.detail} if full else
                                              {"status": 500, "detail": f"{type(e).__name__}: {e}"})
        job.ended = time.time()
    st.job_tasks.add(asyncio.get_running_loop().create_task(run()))
    return {"job": job.id, "state": job.state, "progress": f"/v1/jobs/{job.id}"}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, st=Depends(state)):
    job = st.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job.view()


@router.get("/jobs")
def list_jobs(st=Depends(state)):
    return {"jobs": [j.view() for j in st.jobs.values()]}
