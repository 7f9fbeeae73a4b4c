// The console's panels: each takes what the API answered and shows it, as text.

import { lineChart } from "./charts.js";
import { badge, el, show, table, textBlock, when } from "./dom.js";

const OUTCOME_KIND = {
  ok: "good", completed: "good", error: "bad", failed: "bad", killed: "bad",
  timeout: "warn", limit: "warn", stopped: "warn", cancelled: "plain", running: "info",
  allowed: "good", refused: "bad",
};

function outcome(word) {
  return badge(word ?? "–", OUTCOME_KIND[word] || "plain");
}

function bytes(value) {
  if (typeof value !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${Number.isInteger(size) ? size : size.toFixed(1)} ${units[unit]}`;
}

// ----------------------------------------------------------------- services and sandbox

export function renderOverview(overview) {
  show("services", Object.entries(overview.services).map(([name, health]) =>
    el("div", { class: ["service", health.ok ? "up" : "down"], "data-service": name },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el("strong", null, name),
      el("span", { class: "muted" }, health.ok
        ? `${health.status || "ok"}${health.version ? ` · ${health.version}` : ""}`
        : `down: ${health.error || health.status || "no answer"}`))));
  const sandbox = overview.sandbox;
  if (!sandbox) {
    const missing = el("p", { class: "error" }, "The sandbox did not answer: no isolation report.");
    for (const id of ["isolation", "warm-path", "denials", "admission"]) show(id, missing.cloneNode(true));
    return;
  }
  const isolation = sandbox.isolation || {};
  const layers = Object.entries(isolation).filter(
    ([, state]) => state && typeof state === "object" && typeof state.active === "boolean");
  show("isolation", table(["layer", "active", "why not"], layers.map(([layer, state]) => [
    layer, state.active ? badge("active", "good") : badge("inactive", "bad"), state.reason || "",
  ]), { class: "compact" }));
  const warm = isolation.warm_path;
  show("warm-path", warm ? el("dl", { class: "facts" },
    el("dt", null, "state"), el("dd", null, outcome(warm.state === "ready" ? "ok" : warm.state),
      warm.state === "ready" ? " ready" : ""),
    el("dt", null, "warm interpreters"), el("dd", null, `${warm.zygotes_ready} of ${warm.slots} slots`),
    el("dt", null, "restarts"), el("dd", null, String(warm.restarts)),
    el("dt", null, "recycled after"), el("dd", null, `${warm.recycle_after_runs} runs`),
  ) : el("p", { class: "muted" }, "No warm path in this report."));
  show("denials", renderDenials(isolation));
  const admission = sandbox.admission || {};
  const policy = sandbox.policy || {};
  show("admission", el("dl", { class: "facts" },
    el("dt", null, "running"), el("dd", null, `${admission.running ?? "–"} of ${admission.max_concurrent_runs ?? "–"}`),
    el("dt", null, "queued"), el("dd", null, `${admission.queued ?? "–"} of ${admission.queue_length ?? "–"}`),
    el("dt", null, "audit log"), el("dd", null, sandbox.audit && sandbox.audit.writable
      ? badge("writable", "good") : badge("not writable: no tool runs", "bad")),
    el("dt", null, "policy"), el("dd", null, policy.version || "–",
      policy.last_edit_refused ? badge("last edit refused", "bad") : ""),
  ));
}

function renderDenials(isolation) {
  // A sandbox that reports denials per layer says so under `denials`; shown as it comes.
  if (isolation.denials && typeof isolation.denials === "object") {
    return table(["layer", "what this host observes"], Object.entries(isolation.denials).map(
      ([layer, value]) => [layer, typeof value === "string" ? value : JSON.stringify(value)]));
  }
  const seccomp = isolation.seccomp || {};
  return el("div", null,
    el("p", null, seccomp.refusals_counted
      ? "seccomp: system calls the filter refuses are counted for each run (seccomp_refusals)."
      : "seccomp: refused system calls are not counted on this host."),
    el("p", { class: "muted small" },
      "Per-layer denials (files, network) are not reported by this sandbox version."));
}

// ----------------------------------------------------------------- charts

export function renderCharts(series) {
  const times = series.times;
  show("charts",
    lineChart("Tool runs per minute, by outcome", times, series.tool_runs_per_minute, "/min"),
    lineChart("Agent runs per minute, by status", times, series.agent_runs_per_minute, "/min"),
    lineChart("execute_tool latency", times, series.execute_tool_ms, "ms"),
    lineChart("Sandbox queue", times, series.queue, ""),
    series.unreadable.length
      ? el("p", { class: "error small" }, `Not read: ${series.unreadable.join(", ")} metrics.`)
      : null);
}

// ----------------------------------------------------------------- policy

export function renderPolicy(policy) {
  const summary = policy.summary || {};
  const tools = summary.tools || {};
  const callers = summary.callers || {};
  show("policy",
    el("dl", { class: "facts" },
      el("dt", null, "version"), el("dd", { id: "policy-version" }, policy.version),
      el("dt", null, "loaded"), el("dd", null, when(policy.loaded_at)),
      el("dt", null, "file"), el("dd", null, policy.source),
      el("dt", null, "checked"), el("dd", null, when(policy.last_checked_at)),
      el("dt", null, "you may run"), el("dd", { id: "policy-yours" },
        policy.caller_tools.length ? policy.caller_tools.join(", ") : "no tool"),
    ),
    el("h3", null, "Last refused edit"),
    policy.last_error
      ? el("div", { id: "policy-error" },
        el("p", { class: "error" }, `Refused ${when(policy.last_error_at)}; version ${policy.version} stays in force.`),
        textBlock(policy.last_error, { class: "error-text" }))
      : el("p", { id: "policy-error", class: "muted" }, "None: the file on disk is in force."),
    el("h3", null, "Tools"),
    table(["tool", "description", "code", "executor", "network", "wall", "memory", "output"],
      Object.entries(tools).map(([name, tool]) => [
        el("code", null, name), tool.description, tool.code, tool.executor,
        tool.network ? badge("network", "warn") : "none",
        `${tool.limits.wall_seconds} s`, bytes(tool.limits.memory_bytes), bytes(tool.limits.output_bytes),
      ]), { id: "policy-tools" }),
    el("h3", null, "Callers"),
    table(["caller", "may run"], Object.entries(callers).map(([name, allowed]) => [
      el("code", null, name), allowed.join(", ") || "nothing",
    ]), { id: "policy-callers", class: "compact" }),
  );
}

/** Fill the tool picker: every tool of the policy, the person's own first. */
export function renderToolChoices(policy) {
  const select = document.getElementById("tool-select");
  const chosen = select.value;
  const mine = new Set(policy.caller_tools);
  const names = Object.keys((policy.summary || {}).tools || {});
  names.sort((a, b) => (mine.has(b) - mine.has(a)) || a.localeCompare(b));
  show(select, names.map((name) => el("option", { value: name },
    mine.has(name) ? name : `${name} (not allowed for you)`)));
  if (names.includes(chosen)) select.value = chosen;
  else if (names.includes("python") && mine.has("python")) select.value = "python";
  const tool = ((policy.summary || {}).tools || {})[select.value];
  document.getElementById("tool-code").disabled = Boolean(tool && tool.code === "none");
}

// ----------------------------------------------------------------- a tool run

export function renderToolResult(answer) {
  const result = answer.result;
  const denials = result.denials;
  show("tool-result",
    el("p", { id: "tool-status" }, outcome(answer.tool_status),
      ` exit ${result.exit_code ?? "–"}${result.signal ? `, signal ${result.signal}` : ""}`,
      ` · ${result.duration_ms} ms · ${result.executor} · policy ${result.policy_version}`,
      result.limit_hit ? badge(`limit: ${result.limit_hit}`, "warn") : ""),
    el("div", { id: "tool-denials" },
      result.seccomp_refusals
        ? badge(`seccomp refused ${result.seccomp_refusals} system call${result.seccomp_refusals === 1 ? "" : "s"}`, "bad")
        : badge("seccomp refused nothing", "plain"),
      bySyscall(result.seccomp_denials),
      " ",
      denials === undefined
        ? el("span", { class: "muted small" }, "Other denials: not reported by this sandbox version.")
        : deniedInWords(denials)),
    el("h3", null, "stdout", result.stdout_truncated ? badge("cut", "warn") : ""),
    textBlock(result.stdout, { id: "tool-stdout" }),
    el("h3", null, "stderr", result.stderr_truncated ? badge("cut", "warn") : ""),
    textBlock(result.stderr, { id: "tool-stderr" }));
}

/** Each denial as the sandbox words it: what, how often, and the policy key behind it. */
function deniedInWords(denials) {
  if (!Array.isArray(denials)) {
    return el("span", null, `Denials: ${typeof denials === "string" ? denials : JSON.stringify(denials)}`);
  }
  if (!denials.length) return el("span", { class: "muted small" }, "No denials.");
  return el("ul", { class: "denial-list" }, ...denials.map((denial) => el("li", null,
    `${denial.layer}: ${denial.what}${denial.count > 1 ? ` ×${denial.count}` : ""} — ${denial.hint}`)));
}

/** "socket ×2, ptrace ×1" from a {syscall: count} map, or nothing. */
function bySyscall(denials) {
  const entries = Object.entries(denials || {});
  if (!entries.length) return null;
  return el("span", { class: "denials" }, ` (${entries.map(([name, count]) => `${name} ×${count}`).join(", ")})`);
}

export function renderRefusal(target, id, error) {
  const service = error.body && error.body.service ? ` (${error.body.service})` : "";
  show(target, el("div", { class: "refusal", id },
    el("strong", null, `Refused: ${error.status}${service}`), " ", error.message));
}

// ----------------------------------------------------------------- a run as it goes

export function renderRunEvent(list, name, data) {
  const item = el("li", { class: "event", "data-event": name }, badge(name, "info"), " ");
  if (name === "run.started") {
    item.append(`run ${data.run_id} for ${data.caller}`,
      data.actor ? ` (through ${data.actor})` : "",
      `; tools: ${(data.tools || []).join(", ") || "none"}`,
      data.tools_error ? el("span", { class: "error" }, ` ${data.tools_error}`) : "");
  } else if (name === "model.message") {
    item.append(data.summary ? "summary: " : `step ${data.step}: `,
      data.tool_calls.length ? `calls ${data.tool_calls.map((c) => c.tool).join(", ")}` : "answers",
      ` (${data.usage.total_tokens} tokens, ${data.latency_ms} ms)`);
    if (data.content) item.append(textBlock(data.content));
  } else if (name === "tool.call") {
    item.append(`${data.tool} `, el("code", null, data.arguments));
  } else if (name === "tool.result") {
    item.append(data.executed ? outcome(data.tool_status) : badge(data.error_kind || "not run", "bad"),
      ` ${data.tool}`, data.seccomp_refusals ? badge(`seccomp refused ${data.seccomp_refusals}`, "bad") : "",
      data.error ? el("span", { class: "error" }, ` ${data.error}`) : "");
    if (data.stdout) item.append(textBlock(data.stdout));
    if (data.stderr) item.append(textBlock(data.stderr, { class: "error-text" }));
  } else if (name === "run.completed") {
    item.append(outcome(data.status), ` ${data.reason}: `, data.detail || "",
      ` (${data.usage.steps} steps, ${data.usage.total_tokens} tokens, ${Math.round(data.duration_ms)} ms)`);
    if (data.answer) item.append(el("h3", null, "Answer"), textBlock(data.answer, { class: "answer" }));
  } else {
    item.append(typeof data.detail === "string" ? data.detail : JSON.stringify(data));
  }
  list.append(item);
}

// ----------------------------------------------------------------- runs

export function renderRuns(answer, open) {
  if (!answer.runs.length) {
    show("runs", el("p", { class: "muted" }, "No run yet."));
    return;
  }
  show("runs", table(["started", "caller", "outcome", "steps", "tokens", "goal", ""],
    answer.runs.map((run) => {
      const button = el("button", { type: "button", class: "link", "data-run": run.id }, "steps");
      button.addEventListener("click", () => open(run.id));
      return [when(run.started_at), run.actor ? `${run.caller} (via ${run.actor})` : run.caller,
        el("span", null, outcome(run.status), run.reason && run.reason !== run.status ? ` ${run.reason}` : ""),
        String(run.steps), String(run.total_tokens), el("span", { class: "goal" }, run.goal), button];
    }), { id: "runs-table" }));
}

export function renderRunDetail(answer) {
  const run = answer.run;
  show("run-detail", el("article", { class: "run", "data-run": run.id },
    el("h3", null, `Run ${run.id}`),
    el("p", null, outcome(run.status), ` ${run.reason || ""} · ${run.usage.steps} steps · `,
      `${run.usage.total_tokens} tokens · ${Math.round(run.duration_ms)} ms · ${run.backend || ""} ${run.model || ""}`),
    el("h4", null, "Goal"), textBlock(run.goal),
    run.steps.map((step) => el("section", { class: "step" },
      el("h4", null, `Step ${step.index}`),
      step.model.content ? textBlock(step.model.content) : null,
      step.calls.map((call) => el("div", { class: "call" },
        el("p", null, call.result.executed ? outcome(call.result.tool_status) : badge(call.result.error_kind || "not run", "bad"),
          ` ${call.tool} `, el("code", null, call.arguments)),
        call.result.error ? el("p", { class: "error" }, call.result.error) : null,
        call.result.stdout ? textBlock(call.result.stdout) : null,
        call.result.stderr ? textBlock(call.result.stderr, { class: "error-text" }) : null)))),
    el("h4", null, "Answer"), textBlock(run.answer, { class: "answer" })));
}

// ----------------------------------------------------------------- audit

export function renderAudit(answer) {
  show("audit", table(["time", "caller", "by", "tool", "decision", "status", "outcome", "seccomp", "ms", "reason"],
    answer.records.map((record) => {
      if (record.kind !== "execute_tool") {
        return [when(record.time), "", "", "", badge(record.action || record.kind, "info"), "", "",
          "", "", record.error || record.version || record.policy_version || ""];
      }
      const result = record.outcome || {};
      return [when(record.time), record.caller || "–", record.actor || "", record.tool || "–",
        outcome(record.decision), String(record.status ?? "–"),
        result.tool_status ? `${result.tool_status} (exit ${result.exit_code ?? "–"})` : "",
        result.seccomp_refusals
          ? el("span", null, badge(String(result.seccomp_refusals), "bad"), bySyscall(result.seccomp_denials))
          : "",
        String(record.duration_ms ?? ""), record.reason || ""];
    }), { id: "audit-table", class: "compact" }));
}

export function renderAuditRefused(error) {
  show("audit", el("p", { class: "muted", id: "audit-refused" }, error.status === 403
    ? "The audit log is for operators (PAGI_OPERATORS)."
    : `The audit log could not be read: ${error.message}`));
}
