"""Starting runs within the agent's limits, keeping them while they go, recording them.

One :class:`RunService` per agent process. It refuses a run beyond
``PAGI_AGENT_MAX_CONCURRENT_RUNS`` (429), resolves each run's budgets
against the settings' defaults and ceilings (422 beyond a ceiling), starts
the run as a task of its own, and stores it in memory as it goes (see
:class:`agent.run_store.RunRecorder`). A finished run is read back from
memory; one still going is answered from the process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agent.loop import AgentRun, Decider
from agent.run_limits import LoopLimits
from agent.run_models import RunListItem, RunRecord, utc_now
from agent.run_store import RunRecorder, RunStore
from agent.sandbox_calls import ToolSandbox
from agent.settings import AgentSettings
from pagi import metric_catalogue as metrics
from pagi.errors import ApiError
from pagi.logging import log_event
from pagi.run_request import BudgetRequest, Budgets, RunRequest

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
SHUTDOWN_SECONDS = 5.0
RUNS_SCANNED_FOR_A_CALLER = 1000
"""A caller who sees only their own runs sees those among this many newest (memory's most)."""


@dataclass(frozen=True)
class BudgetCeilings:
    """The defaults and ceilings of the four budgets."""

    defaults: Budgets
    ceilings: Budgets

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> BudgetCeilings:
        """Both, as the settings give them."""
        return cls(defaults=settings.run_defaults, ceilings=settings.run_ceilings)

    def resolve(self, asked: BudgetRequest) -> Budgets:
        """The budgets of a run: each asked for (within its ceiling) or the default.

        Requests through the API are checked against the ceilings already
        (:func:`pagi.run_request.run_request_model`); this holds for any caller.
        """
        values: dict[str, Any] = {}
        problems = []
        for name in Budgets.model_fields:
            value = getattr(asked, name)
            ceiling = getattr(self.ceilings, name)
            if value is None:
                values[name] = getattr(self.defaults, name)
            elif value > ceiling:
                problems.append(
                    {
                        "loc": ["body", "budgets", name],
                        "msg": f"must be at most {ceiling:g} (the agent's ceiling)",
                        "type": "less_than_equal",
                    }
                )
            else:
                values[name] = value
        if problems:
            metrics.AGENT_RUNS_REFUSED.labels("budget_above_ceiling").inc()
            raise ApiError(422, "invalid_request", problems)
        return Budgets(**values)


@dataclass
class ActiveRun:
    """A run going on in this process, and the events it has sent."""

    agent_run: AgentRun
    recorder: RunRecorder
    task: asyncio.Task[RunRecord] | None = None
    events: asyncio.Queue[tuple[int, str, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    streamed: bool = False
    counted: bool = False
    _sequence: int = 0

    @property
    def record(self) -> RunRecord:
        """The run as it stands."""
        return self.agent_run.record

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue an event for the stream (kept only when the run is streamed)."""
        if self.streamed:
            self._sequence += 1
            self.events.put_nowait((self._sequence, event, data))

    async def stream(self, keepalive_seconds: float) -> AsyncIterator[tuple[int, str, dict] | None]:
        """The run's events until ``run.completed``; None after each quiet ``keepalive_seconds``."""
        while True:
            try:
                item = await asyncio.wait_for(self.events.get(), keepalive_seconds)
            except TimeoutError:
                yield None
                continue
            yield item
            if item[1] == "run.completed":
                return


class RunsBusy(ApiError):
    """Too many runs at once."""


class RunService:
    """The runs of this agent process."""

    def __init__(
        self,
        settings: AgentSettings,
        decider: Decider,
        sandbox: ToolSandbox,
        store: RunStore,
    ) -> None:
        self.settings = settings
        self.decider = decider
        self.sandbox = sandbox
        self.store = store
        self.budgets = BudgetCeilings.from_settings(settings)
        self.limits = LoopLimits(
            model_timeout_seconds=settings.model_gateway_grpc_timeout_seconds,
            tool_timeout_seconds=settings.pagi_agent_tool_timeout_seconds,
            list_timeout_seconds=settings.request_timeout_seconds,
            summary_seconds=settings.pagi_agent_summary_seconds,
            observation_bytes=settings.pagi_agent_observation_bytes,
            max_calls_per_step=settings.pagi_agent_max_calls_per_step,
            max_conversation_bytes=settings.pagi_agent_max_conversation_bytes,
            file_bytes=settings.pagi_agent_run_file_bytes,
        )
        self.max_concurrent = settings.pagi_agent_max_concurrent_runs
        # How long a run's end waits for memory to store it (retrying meanwhile).
        self.final_write_seconds = settings.request_timeout_seconds
        self.active: dict[str, ActiveRun] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def start(
        self,
        request: RunRequest,
        caller: str,
        request_id: str | None,
        streamed: bool,
        actor: str | None = None,
    ) -> ActiveRun:
        """Start a run (429 when too many go on, 422 when a budget is above its ceiling).

        ``caller`` is whom the run is for; ``actor`` the service that asked for
        them (the bff, for a console user), None when the caller asked itself.
        """
        if len(self.active) >= self.max_concurrent:
            metrics.AGENT_RUNS_REFUSED.labels("too_many_runs").inc()
            raise RunsBusy(
                429,
                "too_many_runs",
                f"{self.max_concurrent} runs are going on; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                retry_after=RETRY_AFTER_SECONDS,
            )
        budgets = self.budgets.resolve(request.budgets)
        record = RunRecord(
            id=f"run_{uuid.uuid4().hex}",
            goal=request.goal,
            caller=caller,
            actor=actor,
            request_id=request_id,
            status="running",
            budgets=budgets,
            started_at=utc_now(),
        )
        holder: list[ActiveRun] = []
        recorder = RunRecorder(self.store, lambda: holder[0].record)
        agent_run = AgentRun(
            record,
            self.decider,
            self.sandbox,
            self.limits,
            emit=lambda event, data: self._on_event(holder[0], event, data),
            changed=recorder.changed,
        )
        active = ActiveRun(agent_run, recorder, streamed=streamed)
        holder.append(active)
        self.active[record.id] = active
        active.task = asyncio.create_task(self._work(active), name=f"run-{record.id}")
        active.task.add_done_callback(lambda task: self._settle(active, task))
        log_event(
            logger,
            "run_started",
            run_id=record.id,
            caller=caller,
            actor=actor,
            streamed=streamed,
            budgets=budgets.model_dump(),
        )
        return active

    async def _work(self, active: ActiveRun) -> RunRecord:
        try:
            record = await active.agent_run.run()
        except asyncio.CancelledError:
            # Stored in the background: nobody waits for a cancelled run.
            self._in_background(self._finish(active))
            raise
        except Exception as exc:
            # A bug in the loop: the run still ends, recorded, and the service goes on.
            log_event(
                logger, "run_crashed", logging.ERROR, run_id=active.record.id, error=repr(exc)
            )
            record = active.agent_run.crashed(exc)
        await self._finish(active)
        return record

    def _settle(self, active: ActiveRun, task: asyncio.Task[RunRecord]) -> None:
        """A run cancelled before it began never ran its own ending: end and record it here."""
        if task.cancelled() and active.record.status == "running":
            active.agent_run.cancelled()
            self._in_background(self._finish(active))

    @staticmethod
    def _on_event(active: ActiveRun, event: str, data: dict[str, Any]) -> None:
        if event == "tool.result":
            outcome = data.get("tool_status") or data.get("error_kind") or "unknown"
            metrics.AGENT_TOOL_CALLS.labels(outcome).inc()
        active.emit(event, data)

    @staticmethod
    def _count_end(active: ActiveRun) -> None:
        record = active.record
        if active.counted or record.status == "running":
            return
        active.counted = True
        reason = record.reason or "unknown"
        metrics.AGENT_RUNS.labels(record.status, reason).inc()
        metrics.AGENT_RUN_STEPS.labels(reason).observe(record.usage.steps)
        metrics.AGENT_RUN_DURATION.labels(record.status).observe(record.duration_ms / 1000)

    async def _finish(self, active: ActiveRun) -> None:
        self._count_end(active)
        try:
            await active.recorder.finish(self.final_write_seconds)
        finally:
            self.active.pop(active.record.id, None)

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def get(self, run_id: str) -> tuple[RunRecord, bool] | None:
        """The run (live when it goes on here), and whether memory holds this state."""
        active = self.active.get(run_id)
        if active is not None:
            return active.record, False
        stored = await self.store.get(run_id)
        return (stored, True) if stored is not None else None

    async def recent(self, limit: int, caller: str | None = None) -> list[RunListItem]:
        """The most recently started runs; with ``caller``, only the runs for that caller.

        Memory lists runs of every caller: for one caller, the newest
        :data:`RUNS_SCANNED_FOR_A_CALLER` are read and theirs kept.
        """
        if caller is None:
            return await self.store.recent(limit)
        scanned = await self.store.recent(RUNS_SCANNED_FOR_A_CALLER)
        return [run for run in scanned if run.caller == caller][:limit]

    async def shutdown(self) -> None:
        """Cancel the runs going on and give their final writes a moment."""
        tasks = [active.task for active in self.active.values() if active.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_SECONDS)
        if self._background:  # the cancelled runs' last writes
            await asyncio.wait(set(self._background), timeout=SHUTDOWN_SECONDS)
