"""One OS process of the two-process test: a scheduler runtime plus its own agents.

Usage: fleet_worker.py STORE_URL NAME TASKS SUBMIT(0|1) TIMEOUT_S
Prints one JSON line: {"name", "conflicts", "completed", "reports"}.
"""

from __future__ import annotations

import json
import sys
import time

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.domain import commands as cmd
from tierlog.domain.config import SchedulerConfig

DESCRIPTIONS = (
    "fix typo in README",
    "write unit tests for the invoice parser and the tax tables",
    "refactor the storage layer",
)


def main() -> None:
    url, name, tasks, submit, timeout = sys.argv[1:6]
    total, deadline = int(tasks), time.monotonic() + float(timeout)
    settings = Settings(
        store=url,
        scheduler=SchedulerConfig(fallback_wait_s=0.2, lease_s=60),
        writer_poll_s=0.01,
        max_batch=100,
    )
    runtime = bootstrap.build_runtime(settings, bootstrap.open_log(settings))
    runtime.start_background()
    agents = [f"{name}-agent-{i}" for i in range(6)]
    for agent_id in agents:
        runtime.call(cmd.RegisterAgent(agent_id=agent_id))
    if submit == "1":
        futures = [
            runtime.submit(
                cmd.SubmitTask(description=DESCRIPTIONS[i % 3], priority=("high", "normal")[i % 2])
            )
            for i in range(total)
        ]
        for future in futures:
            future.result()
    mine = set(agents)
    reports = 0
    completed = 0
    while time.monotonic() < deadline:
        held, completed = runtime.read(
            lambda state: (
                [
                    (a.agent_id, a.task_id, a.generation)
                    for a in state.agents.values()
                    if a.agent_id in mine and a.status == "busy"
                ],
                sum(1 for t in state.tasks.values() if t.state == "completed"),
            )
        )
        if completed >= total:
            break
        for agent_id, task_id, generation in held:
            runtime.submit(
                cmd.CompleteTask(
                    agent_id=agent_id,
                    task_id=task_id,
                    generation=generation,
                    result={"by": agent_id},
                )
            )
            reports += 1
        time.sleep(0.005)
    runtime.stop()
    runtime.log.close()
    print(
        json.dumps(
            {
                "name": name,
                "conflicts": runtime.conflicts,
                "completed": completed,
                "reports": reports,
            }
        )
    )


if __name__ == "__main__":
    main()
