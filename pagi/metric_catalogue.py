"""Every metric PAGI exposes besides the HTTP ones, one line each, grouped by service.

Adding a metric is one line here and one call where the thing happens::

    DENIALS = SANDBOX.counter("pagi_sandbox_denials_total", "...", ("layer",))
    DENIALS.labels("landlock").inc()                       # at the place it happens

then a row in the table of ``docs/operations.md`` (a test checks that every
name here is there). Names start with ``pagi_<service>_``; counters end in
``_total``, durations in ``_seconds``. Label values must come from fixed
sets in the code or from the policy (tool names), never from a request.
"""

from __future__ import annotations

from pagi.metrics import metrics_of

SANDBOX = metrics_of("sandbox")
AGENT = metrics_of("agent")
GATEWAY = metrics_of("gateway")
BFF = metrics_of("bff")

STEP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)

# ----------------------------------------------------------------- sandbox
TOOL_RUNS = SANDBOX.counter(
    "pagi_sandbox_tool_runs_total",
    "Tool runs that ran, by tool and outcome (ok, error, timeout, limit, killed).",
    ("tool", "outcome"),
)
TOOL_REFUSALS = SANDBOX.counter(
    "pagi_sandbox_tool_refusals_total",
    "execute_tool requests answered without a run, by tool and error code.",
    ("tool", "reason"),
)
TOOL_RUN_DURATION = SANDBOX.histogram(
    "pagi_sandbox_tool_run_duration_seconds",
    "Time one tool run took in its jail, by tool and executor (cold, warm).",
    ("tool", "executor"),
)
DENIALS = SANDBOX.counter(
    "pagi_sandbox_denials_total",
    "What the isolation layers refused tools, by layer (seccomp: refused system calls;"
    " limit: runs stopped by a limit; network: requests the egress proxy refused).",
    ("layer",),
)
EGRESS_DECISIONS = SANDBOX.counter(
    "pagi_sandbox_egress_decisions_total",
    "Requests of networked runs through the egress proxy, by outcome (allowed, refused,"
    " failed: allowed but the destination could not be reached).",
    ("outcome",),
)
EGRESS_BYTES = SANDBOX.counter(
    "pagi_sandbox_egress_bytes_total",
    "Bytes networked runs moved through the egress proxy, by direction (in, out).",
    ("direction",),
)
QUEUE_DEPTH = SANDBOX.gauge("pagi_sandbox_queue_depth", "Requests waiting for a run slot.")
RUNS_IN_PROGRESS = SANDBOX.gauge("pagi_sandbox_runs_in_progress", "Runs holding a slot now.")
RUN_SLOTS = SANDBOX.gauge(
    "pagi_sandbox_run_slots", "Runs the policy lets execute at once (max_concurrent_runs)."
)
QUEUE_WAIT = SANDBOX.histogram(
    "pagi_sandbox_queue_wait_seconds", "Time a request waited for a run slot (given one)."
)
ADMISSION_REFUSED = SANDBOX.counter(
    "pagi_sandbox_admission_refused_total",
    "Requests refused with 429 because the queue was full or no slot came in time.",
)
WARM_PATH_STATE = SANDBOX.gauge(
    "pagi_sandbox_warm_path_state",
    "1 for the warm path's current state (ready, degraded_cold_fallback, cold_fallback).",
    ("state",),
)
WARM_ZYGOTES_READY = SANDBOX.gauge(
    "pagi_sandbox_warm_zygotes_ready", "Run slots whose warm interpreter is ready."
)
WARM_ZYGOTE_RESTARTS = SANDBOX.counter(
    "pagi_sandbox_warm_zygote_restarts_total", "Warm interpreters started again after dying."
)
ISOLATION_LAYER_ACTIVE = SANDBOX.gauge(
    "pagi_sandbox_isolation_layer_active",
    "1 when the isolation layer is active on this host, 0 when not.",
    ("layer",),
)
POLICY_RELOADS = SANDBOX.counter(
    "pagi_sandbox_policy_reloads_total", "New policy versions put in force while running."
)
POLICY_EDITS_REFUSED = SANDBOX.counter(
    "pagi_sandbox_policy_edits_refused_total",
    "Policy edits refused (invalid, deleted or unreadable file); the last good one kept.",
)
POLICY_EDIT_REFUSED = SANDBOX.gauge(
    "pagi_sandbox_policy_edit_refused",
    "1 while the policy file on disk is refused and an older version is in force.",
)
AUDIT_WRITABLE = SANDBOX.gauge(
    "pagi_sandbox_audit_writable", "1 when the audit log can be written (else no tool runs)."
)

# ----------------------------------------------------------------- agent
AGENT_RUNS = AGENT.counter(
    "pagi_agent_runs_total",
    "Agent runs that ended, by status and terminal reason.",
    ("status", "reason"),
)
AGENT_RUN_STEPS = AGENT.histogram(
    "pagi_agent_run_steps",
    "Steps (model turns) an ended run took, by terminal reason.",
    ("reason",),
    buckets=STEP_BUCKETS,
)
AGENT_RUN_DURATION = AGENT.histogram(
    "pagi_agent_run_duration_seconds", "Wall-clock time of ended runs, by status.", ("status",)
)
AGENT_RUNS_IN_PROGRESS = AGENT.gauge("pagi_agent_runs_in_progress", "Runs going on now.")
AGENT_RUNS_REFUSED = AGENT.counter(
    "pagi_agent_runs_refused_total",
    "Run requests refused before starting, by reason (too_many_runs is the 429).",
    ("reason",),
)
AGENT_TOOL_CALLS = AGENT.counter(
    "pagi_agent_tool_calls_total",
    "Tool calls of runs, by outcome (the sandbox's tool_status, or why nothing ran).",
    ("outcome",),
)

# ----------------------------------------------------------------- gateway
GRPC_REQUESTS = GATEWAY.counter(
    "pagi_grpc_requests_total",
    "gRPC calls answered, by method and status code.",
    ("method", "code"),
)
GRPC_DURATION = GATEWAY.histogram(
    "pagi_grpc_request_duration_seconds", "Time a gRPC call took, by method.", ("method",)
)
MODEL_CALLS = GATEWAY.counter(
    "pagi_gateway_model_calls_total",
    "Calls that reached the model backend, by backend, RPC and outcome (ok or a status).",
    ("backend", "rpc", "outcome"),
)
MODEL_CALL_DURATION = GATEWAY.histogram(
    "pagi_gateway_model_call_duration_seconds",
    "Time a successful model call took, by backend and RPC.",
    ("backend", "rpc"),
)
MODEL_TOKENS = GATEWAY.counter(
    "pagi_gateway_model_tokens_total",
    "Tokens the backend reported, by backend and kind (prompt, completion).",
    ("backend", "kind"),
)
MODEL_CALLS_REJECTED = GATEWAY.counter(
    "pagi_gateway_model_calls_rejected_total",
    "Calls refused with RESOURCE_EXHAUSTED: every upstream slot was taken.",
    ("backend",),
)
MODEL_CALLS_IN_FLIGHT = GATEWAY.gauge(
    "pagi_gateway_model_calls_in_flight", "Calls to the backend holding a slot now."
)
MODEL_UPSTREAM_RETRIES = GATEWAY.counter(
    "pagi_gateway_model_upstream_retries_total",
    "Requests to the model server sent again after a failure, by backend.",
    ("backend",),
)

# ----------------------------------------------------------------- bff
CONSOLE_SIGN_INS = BFF.counter(
    "pagi_bff_console_sign_ins_total",
    "Console sign-in attempts, by outcome (ok, refused).",
    ("outcome",),
)
CONSOLE_SESSIONS = BFF.gauge("pagi_bff_console_sessions", "Console sessions signed in now.")
