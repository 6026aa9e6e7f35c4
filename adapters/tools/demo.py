"""``tierlog demo``: a simulated fleet, end to end, on a fresh log and a virtual clock.

Three Ollama endpoints (one fails and recovers, and twice the whole tier goes down:
once long enough for fallback timers to fire, once briefly so they are cancelled),
six agents with different capabilities and hosts (one stops heartbeating), and a
stream of tasks across every tier and priority, some of which fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.read_store import telemetry_summary
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import ValidationError

ENDPOINTS = (
    ("gpu-a.fleet.local", ("llama3:8b", "qwen2.5-coder:7b")),
    ("gpu-b.fleet.local", ("qwen2.5-coder:7b",)),
    ("cpu-c.fleet.local", ("llama3:8b",)),
)
AGENTS = (
    ("agent-py-a", ("python", "git"), "gpu-a.fleet.local"),
    ("agent-py-b", ("python", "git", "docker"), "gpu-b.fleet.local"),
    ("agent-rust", ("rust", "git"), "gpu-b.fleet.local"),
    ("agent-docs", ("docs",), None),
    ("agent-web", ("typescript", "git"), "cpu-c.fleet.local"),
    ("agent-flaky", ("python", "git"), "cpu-c.fleet.local"),
    ("agent-gen-1", ("python", "rust", "typescript", "docs", "git"), "gpu-a.fleet.local"),
    ("agent-gen-2", ("python", "rust", "typescript", "docs", "git"), None),
)
FLAKY_AGENT = "agent-flaky"
TRIVIAL = (
    "fix typo in README",
    "bump version to 1.{n}",
    "rename helper {n}",
    "lint module m{n}",
    "update readme badges",
    "format config files",
)
STANDARD = (
    "add a retry with backoff to the HTTP client used by the billing sync job and cover it",
    "write unit tests for the invoice parser edge cases found in ticket {n}",
    "implement pagination for the list endpoint and document the cursor parameter",
    "add structured logging to the worker so each job logs its id and duration",
)
COMPLEX = (
    "refactor the scheduler module into smaller services",
    "migrate the user table to the new schema with a zero-downtime migration",
    "security review of the auth flow and rewrite the token refresh",
    "redesign the plugin architecture so third parties can ship extensions",
)
CAPS = ((), ("python",), ("python", "git"), ("rust",), ("docs",), ("typescript",))
PRIORITIES = ("urgent", "high", "normal", "normal", "low")
# The scenario's clock (virtual seconds): gpu-a alone is down 60-120 s; the whole
# ollama tier is down 150-176 s (timers fire) and 230-234 s (timers are cancelled).
BRIEF_OUTAGE_BURST_S = 232.5
# The scenario's policy: its timings are part of the story above, whatever is configured.
POLICY = SchedulerConfig(lease_s=60.0, fallback_wait_s=5.0, default_model="llama3:8b")
SCENARIO_END_S = 260.0
DEMO_STORE = "sqlite:///./tierlog-demo.db"
"""The demo's own log: never ``tierlog.db``, the file ``serve`` uses by default."""


@dataclass
class DemoReport:
    """What the demo did: counters from the log, and where the log is."""

    store: str
    log_path: str | None
    seed: int
    tasks: int
    virtual_seconds: float
    events: int
    telemetry: dict[str, Any] = field(default_factory=dict)


def _task_spec(rng: random.Random, n: int) -> dict[str, Any]:
    kind = rng.choices(("trivial", "standard", "complex"), weights=(3, 5, 2))[0]
    pool = {"trivial": TRIVIAL, "standard": STANDARD, "complex": COMPLEX}[kind]
    spec: dict[str, Any] = {
        "description": rng.choice(pool).format(n=n),
        "priority": rng.choice(PRIORITIES),
        "needed_capabilities": list(rng.choice(CAPS)),
        "file_hints": [f"src/mod_{n}_{i}.py" for i in range(rng.randint(0, 3))],
        "verification_steps": ["pytest -q"] if rng.random() < 0.5 else [],
        "repo": rng.choice(("acme/billing", "acme/web", None)),
        "submitted_by": "demo",
    }
    if rng.random() < 0.1:
        spec["complexity_tier"] = rng.choice(("trivial", "standard", "complex"))
    if rng.random() < 0.05:
        # A client resending its request: one body per key, so the same key finds the
        # same task (another body under a used key is refused as a conflict).
        key = n % 7
        spec = {
            "description": f"write the release notes of acme/web 1.{key}",
            "submitted_by": "demo",
            "idempotency_key": f"demo-{key}",
        }
    return spec


def _submit(spec: dict[str, Any]) -> cmd.Command:
    return cmd.SubmitTask(**spec)


def _call(verb: str, **kwargs: Any) -> cmd.Command:
    return cmd.COMMANDS[verb](**kwargs)


class FleetSimulator:
    """Drives agents and endpoints against a runtime on a virtual clock."""

    def __init__(self, runtime: SchedulerRuntime, clock: VirtualClock, rng: random.Random):
        self.runtime = runtime
        self.clock = clock
        self.rng = rng
        self.work_left: dict[tuple[UUID, int], float] = {}
        self.last_beat: dict[tuple[UUID, int], float] = {}
        self.elapsed = 0.0

    def setup(self) -> None:
        """Register endpoints (healthy, with resources) and agents."""
        commands: list[cmd.Command] = []
        for host, models in ENDPOINTS:
            commands.append(_call("register_endpoint", host=host, models=list(models)))
        for host, models in ENDPOINTS:
            commands.append(
                _call("report_health", endpoint_id=f"{host}:11434", ok=True, models=list(models))
            )
        for agent_id, caps, ollama_host in AGENTS:
            commands.append(
                _call(
                    "register_agent",
                    agent_id=agent_id,
                    capabilities=list(caps),
                    ollama_host=ollama_host,
                )
            )
        self._run(commands)

    def _run(self, commands: list[cmd.Command]) -> list[Any]:
        results = self.runtime.execute_batch(commands)
        return results

    def _health_commands(self) -> list[cmd.Command]:
        t = self.elapsed
        commands: list[cmd.Command] = []
        # gpu-a fails for a while on its own; then the whole tier goes down twice.
        down = {
            "gpu-a.fleet.local": 60 <= t < 120 or 150 <= t < 176 or 230 <= t < 234,
            "gpu-b.fleet.local": 150 <= t < 176 or 230 <= t < 234,
            "cpu-c.fleet.local": 150 <= t < 176 or 230 <= t < 234,
        }
        for host, models in ENDPOINTS:
            commands.append(
                _call(
                    "report_health",
                    endpoint_id=f"{host}:11434",
                    ok=not down[host],
                    models=list(models),
                )
            )
            if int(t) % 30 == 0:
                commands.append(
                    _call(
                        "report_resources",
                        endpoint_id=f"{host}:11434",
                        cpu_percent=round(self.rng.uniform(5, 95), 1),
                        ram_total_bytes=self.rng.choice((16, 32, 64)) * 1024**3,
                        ram_used_bytes=8 * 1024**3,
                        vram_total_bytes=24 * 1024**3,
                        vram_used_bytes=self.rng.randint(1, 20) * 1024**3,
                        repo=self.rng.choice(("acme/billing", "acme/web")),
                    )
                )
        return commands

    def _agent_commands(self) -> list[cmd.Command]:
        state = self.runtime.state
        commands: list[cmd.Command] = []
        for agent in list(state.agents.values()):
            if agent.status == "idle":
                self.runtime.heard(agent.agent_id)  # an idle agent polls (it is alive)
            if agent.status != "busy" or agent.task_id is None or agent.generation is None:
                continue
            key = (agent.task_id, agent.generation)
            if agent.agent_id == FLAKY_AGENT:
                continue  # it took the task and went silent: its lease will expire
            if key not in self.work_left:
                self.work_left[key] = self.rng.uniform(1, 12)
                self.last_beat[key] = self.elapsed
            ids = {
                "agent_id": agent.agent_id,
                "task_id": agent.task_id,
                "generation": agent.generation,
            }
            if self.elapsed >= self.last_beat[key] + self.work_left[key]:
                if self.rng.random() < 0.12:
                    commands.append(_call("fail_task", error="tests failed", **ids))
                else:
                    commands.append(_call("complete_task", result={"ok": True}, **ids))
            elif self.elapsed - self.last_beat[key] >= 20:
                commands.append(_call("heartbeat", **ids))
        return commands

    def step(self, seconds: float, new_tasks: list[dict[str, Any]]) -> None:
        """Advance the clock and send one step's worth of traffic as one group commit."""
        self.clock.advance(seconds)
        self.elapsed += seconds
        # The prober checks every 2 s: two failed checks make an endpoint unhealthy.
        commands = self._health_commands() if self.elapsed % 2 == 0 else []
        commands += [_submit(spec) for spec in new_tasks]
        commands += self._agent_commands()
        self._run(commands)
        if int(self.elapsed) == 200 and self.elapsed % 1 == 0:
            # The silent agent is restarted by its operator and rejoins.
            self._run(
                [
                    _call(
                        "register_agent",
                        agent_id=FLAKY_AGENT,
                        capabilities=["python", "git"],
                        ollama_host="cpu-c.fleet.local",
                    )
                ]
            )


def _seeded_ids(rng: random.Random) -> Callable[[], UUID]:
    return lambda: UUID(int=rng.getrandbits(128), version=4)


def fresh_store(store: str) -> str:
    """``store`` if its log is empty; for a used SQLite file, the first unused sibling.

    The demo needs a fresh log. Rather than refuse a second run of the README's
    command, it writes ``tierlog-demo-2.db`` and so on beside a used file.
    """
    event_log = EventLog(store)
    try:
        if event_log.head() == 0:
            return store
        path = event_log.sqlite_path
    finally:
        event_log.close()
    if path is None:
        raise ValidationError(f"the demo needs an empty log, and {store} has events", field="store")
    base = Path(path)
    # tierlog-demo.db is followed by tierlog-demo-2.db, another log by NAME-demo-2.db.
    stem = base.stem if base.stem.endswith("-demo") else f"{base.stem}-demo"
    for n in range(2, 10_000):
        candidate = base.with_name(f"{stem}-{n}{base.suffix}")
        if not candidate.exists():
            return f"sqlite:///{candidate}"
    raise ValidationError("no free file name for a fresh demo log", field="store")


def run_demo(
    store: str, tasks: int = 240, seed: int = 7, *, stop_at_s: float | None = None
) -> DemoReport:
    """Run the simulation on a fresh log at (or beside) ``store`` and summarise it.

    ``stop_at_s`` ends it early, at that many virtual seconds, with work in flight (the
    golden HTTP test's log: ``tests/fixtures/golden/``)."""
    if tasks < 1:
        raise ValidationError("the demo needs at least one task", field="tasks")
    settings = Settings(store=fresh_store(store), scheduler=POLICY)
    event_log = bootstrap.open_log(settings)
    try:
        rng = random.Random(seed)
        clock = VirtualClock()
        runtime = bootstrap.build_runtime(
            settings, event_log, clock=clock, new_task_id=_seeded_ids(rng)
        )
        runtime.start()
        sim = FleetSimulator(runtime, clock, rng)
        sim.setup()
        submitted = 0
        while (stop_at_s is None or sim.elapsed < stop_at_s) and (
            submitted < tasks
            or sim.elapsed < SCENARIO_END_S
            or (sim.elapsed < 1800 and _busy(runtime))
        ):
            batch = []
            if submitted < tasks:
                count = min(tasks - submitted, rng.choice((0, 0, 0, 1, 1, 2)))
                batch = [_task_spec(rng, submitted + i) for i in range(count)]
                submitted += count
            if sim.elapsed == BRIEF_OUTAGE_BURST_S:
                # An operator submits standard work while the tier is briefly down:
                # its timers start, then the tier recovers inside the wait.
                batch += [
                    dict(
                        _task_spec(rng, 10_000 + i),
                        complexity_tier="standard",
                        needed_capabilities=[],
                    )
                    for i in range(3)
                ]
            sim.step(0.5, batch)
        runner = bootstrap.build_runner(settings, event_log)
        try:
            runner.start()
            runner.run_until_caught_up()
            telemetry = telemetry_summary(runner.store)
        finally:
            runner.close()
        return DemoReport(
            store=settings.store,
            log_path=event_log.sqlite_path,
            seed=seed,
            tasks=telemetry["tasks"],
            virtual_seconds=sim.elapsed,
            events=event_log.head(),
            telemetry=telemetry,
        )
    finally:
        event_log.close()


def _busy(runtime: SchedulerRuntime) -> bool:
    return any(t.state in ("queued", "assigned") for t in runtime.state.tasks.values())
