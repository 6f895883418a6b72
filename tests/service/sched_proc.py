"""A scheduler in its own process, for the restart tests: ``python sched_proc.py STORE_URL [SPEC_JSON]``.

Starts a Scheduler on a local 2-CPU Ray, resumes what the store holds, submits the job given
as JSON (if any), prints ``ready <job id>`` and runs until it is killed.
"""

from __future__ import annotations

import json
import sys
import time

from service.scheduler import Scheduler
from service.spec import JobSpec

if __name__ == "__main__":
    sched = Scheduler(sys.argv[1], num_cpus=2)
    sched.start()
    job_id = "-"
    if len(sys.argv) > 2:
        job_id = sched.submit(JobSpec.from_dict(json.loads(sys.argv[2])), owner="tester")["id"]
    print(f"ready {job_id}", flush=True)
    while True:
        time.sleep(1)
