"""The sandbox's HTTP app: the service, its routers, its lifespan and health.

The request pipeline is :class:`sandbox.service.Sandbox`; each concern's
routes are in :mod:`sandbox.routes` (execute_tool, policy, audit, tools).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from pagi import metric_catalogue as metrics
from pagi.app import create_app as create_base_app
from pagi.auth import ACTS_FOR_PEOPLE, TokenVerifier, TrustStore
from pagi.disconnect import CancelOnDisconnect
from pagi.logging import log_event
from pagi.metrics import CounterFromTotal
from sandbox.admission import Admission
from sandbox.audit import AuditLog, utc_now
from sandbox.host.runner import Runner
from sandbox.package_envs import EnvRegistry
from sandbox.policy import MAX_CONCURRENT_RUNS_CEILING, deployment_context
from sandbox.policy.watch import PolicyStore
from sandbox.routes.audit import build_audit_router
from sandbox.routes.execute import build_execute_router
from sandbox.routes.policy import build_policy_router
from sandbox.routes.tools import build_tools_router
from sandbox.service import HARD_BODY_LIMIT, Sandbox, ToolRunner
from sandbox.settings import SandboxSettings

logger = logging.getLogger(__name__)

WARM_PATH_STATES = ("ready", "degraded_cold_fallback", "cold_fallback")


def service_event(kind: str = "service", **details: Any) -> dict[str, Any]:
    """An audit record for something the service did (start, stop, policy change)."""
    return {"time": utc_now(), "kind": kind, **details}


def count_live_state(sandbox: Sandbox, restarts: CounterFromTotal) -> None:
    """Set the sandbox's gauges from its state now (run before every scrape)."""
    stats = sandbox.admission.stats()
    metrics.QUEUE_DEPTH.labels().set(stats["queued"])
    metrics.RUNS_IN_PROGRESS.labels().set(stats["running"])
    metrics.RUN_SLOTS.labels().set(stats["max_concurrent_runs"])
    metrics.POLICY_EDIT_REFUSED.labels().set(1 if sandbox.store.last_error is not None else 0)
    metrics.AUDIT_WRITABLE.labels().set(1 if sandbox.audit.error is None else 0)
    report = sandbox.runner.isolation_report()
    for layer, state in report.items():
        if isinstance(state, dict) and isinstance(state.get("active"), bool):
            metrics.ISOLATION_LAYER_ACTIVE.labels(layer).set(1 if state["active"] else 0)
    warm = report.get("warm_path")
    if isinstance(warm, dict):
        for state in WARM_PATH_STATES:
            metrics.WARM_PATH_STATE.labels(state).set(1 if warm.get("state") == state else 0)
        metrics.WARM_ZYGOTES_READY.labels().set(warm.get("zygotes_ready", 0))
        restarts.set_total(warm.get("restarts", 0))


def default_runner(settings: SandboxSettings) -> ToolRunner:
    """The real jail runner, configured from settings."""
    return Runner(
        python_executable=settings.pagi_sandbox_python,
        state_dir=settings.work_root,
        warm_modules=settings.pagi_sandbox_warm_modules,
        # As many run slots as any policy may admit at once, and two more:
        # a run admitted by the policy never waits again inside the runner,
        # not even for a slot whose last run is still being emptied.
        slots=MAX_CONCURRENT_RUNS_CEILING + 2,
    )


def create_app(
    settings: SandboxSettings | None = None, *, runner: ToolRunner | None = None
) -> FastAPI:
    """The sandbox app; raises :class:`~sandbox.policy.PolicyError` on an invalid policy."""
    settings = settings or SandboxSettings()
    store = PolicyStore.open(settings.pagi_sandbox_policy, deployment_context(settings))
    table = store.current.document.sandbox
    sandbox = Sandbox(
        settings=settings,
        store=store,
        audit=AuditLog(settings.audit_log_path, fsync=settings.pagi_sandbox_audit_fsync),
        admission=Admission(
            table.max_concurrent_runs, table.queue_length, table.queue_wait_seconds
        ),
        runner=runner or default_runner(settings),
        envs=EnvRegistry(settings.envs_dir, settings.pagi_sandbox_python),
    )
    sandbox.envs.configure(store.current)
    store.subscribe(sandbox.apply_policy)
    store.on_event(lambda change: sandbox.audit.write_now(service_event(kind="policy", **change)))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.audit.open()
        if sandbox.audit.error is not None:
            raise RuntimeError(sandbox.audit.error)
        sandbox.audit.write_now(
            service_event(
                action="sandbox_started",
                policy_version=store.current.version,
                source=str(store.path),
            )
        )
        await sandbox.runner.start()
        stop = asyncio.Event()
        watcher = asyncio.create_task(store.watch(stop), name="policy-watch")
        env_watcher = asyncio.create_task(sandbox.envs.watch(stop), name="package-envs-watch")
        log_event(
            logger,
            "sandbox_ready",
            policy=str(store.path),
            policy_version=store.current.version,
            audit_log=str(sandbox.audit.path),
            python=settings.pagi_sandbox_python,
        )
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait({watcher, env_watcher}, timeout=5)
            watcher.cancel()
            env_watcher.cancel()
            await sandbox.runner.close()
            sandbox.audit.write_now(service_event(action="sandbox_stopped"))
            sandbox.audit.close()

    async def health_extra(_: Request) -> dict[str, Any]:
        try:
            isolation = sandbox.runner.isolation_report()
        except Exception as exc:
            isolation = {"error": f"isolation report failed: {exc!r}"}
        return {
            "isolation": isolation,
            "policy": {
                "version": store.current.version,
                "last_edit_refused": store.last_error is not None,
                "dangerously_allow_host_network": (
                    store.current.document.sandbox.dangerously_allow_host_network
                ),
                "host_network_tools": len(store.current.host_network_tools),
            },
            "audit": {"writable": sandbox.audit.error is None},
            "admission": sandbox.admission.stats(),
            "package_envs": sandbox.envs.health(),
        }

    app = create_base_app(
        "sandbox",
        lifespan=lifespan,
        health_extra=health_extra,
        # The policy's own, smaller limit is applied by the route, so that
        # those refusals are audited too; this one only bounds what any
        # request may make the service read.
        max_body_bytes=HARD_BODY_LIMIT,
        metrics_token=settings.metrics_token(),
    )
    app.state.verifier = TokenVerifier(
        "sandbox", TrustStore.from_keys_dir(settings.keys_dir), delegators=ACTS_FOR_PEOPLE
    )
    app.state.sandbox = sandbox
    restarts = CounterFromTotal(metrics.WARM_ZYGOTE_RESTARTS.labels())
    metrics.SANDBOX.refresh_on_scrape("sandbox", lambda: count_live_state(sandbox, restarts))
    app.include_router(build_execute_router(sandbox))
    app.include_router(build_policy_router(sandbox))
    app.include_router(build_audit_router(sandbox))
    app.include_router(
        build_tools_router(
            store, usable=lambda name, tool: sandbox.package_env_problem(name, tool) is None
        )
    )
    # A client that hangs up mid-run (an agent run cancelled) stops its tool run.
    app.add_middleware(CancelOnDisconnect, paths={"/api/v1/execute_tool"})
    return app
