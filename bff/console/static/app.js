// The console page: sign in from the link's fragment, then keep every panel live.

import { ApiError, api, streamRun, useCsrfToken, whenSignedOut } from "./api.js";
import { el, show, when } from "./dom.js";
import {
  renderAudit, renderAuditRefused, renderCharts, renderOverview, renderPolicy, renderRefusal,
  renderRunDetail, renderRunEvent, renderRuns, renderToolChoices, renderToolResult,
} from "./panels.js";

const FAST_SECONDS = 5;
const SLOW_SECONDS = 15;
const SIGN_IN = /^#sign-in=([A-Za-z0-9_.-]{1,4096})$/;

let timers = [];
let openRun = null;
let lastPolicy = null;

function signedOut(reason) {
  timers.forEach((timer) => clearInterval(timer));
  timers = [];
  document.getElementById("console").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("signed-out").hidden = false;
  show("signed-out-reason", reason || "");
}

function signedIn(session) {
  useCsrfToken(session.csrf_token);
  show("who-person", session.person);
  show("who-role", session.role);
  show("who-until", `until ${when(session.expires_at)}`);
  document.getElementById("who").hidden = false;
  document.getElementById("signed-out").hidden = true;
  document.getElementById("console").hidden = false;
}

/** Run `task` now and every `seconds` while the page is visible; errors stay in their panel. */
function every(seconds, task) {
  const tick = () => {
    if (!document.hidden) task().catch(() => {});
  };
  tick();
  timers.push(setInterval(tick, seconds * 1000));
}

async function refreshOverview() {
  try {
    renderOverview(await api.get("/console/api/overview"));
    document.getElementById("overview-error").hidden = true;
  } catch (error) {
    const box = document.getElementById("overview-error");
    box.hidden = false;
    show(box, `The overview could not be read: ${error.message}`);
  }
}

async function refreshPolicy() {
  try {
    const policy = await api.get("/console/api/policy");
    lastPolicy = policy;
    renderPolicy(policy);
    renderToolChoices(policy);
  } catch (error) {
    if (error instanceof ApiError) renderRefusal("policy", "policy-refusal", error);
  }
}

async function refreshRuns() {
  try {
    renderRuns(await api.get("/console/api/runs?limit=15"), showRun);
  } catch (error) {
    if (error instanceof ApiError) renderRefusal("runs", "runs-refusal", error);
  }
  if (openRun) await showRun(openRun, true);
}

async function showRun(runId, quiet) {
  openRun = runId;
  try {
    renderRunDetail(await api.get(`/console/api/runs/${encodeURIComponent(runId)}`));
  } catch (error) {
    if (!quiet && error instanceof ApiError) renderRefusal("run-detail", "run-refusal", error);
  }
}

async function refreshAudit() {
  try {
    renderAudit(await api.get("/console/api/audit?limit=40"));
  } catch (error) {
    if (error instanceof ApiError) renderAuditRefused(error);
  }
}

async function refreshCharts() {
  renderCharts(await api.get("/console/api/charts"));
}

function start(session) {
  signedIn(session);
  every(FAST_SECONDS, refreshOverview);
  every(FAST_SECONDS, refreshCharts);
  every(FAST_SECONDS, refreshRuns);
  every(FAST_SECONDS, refreshAudit);
  every(SLOW_SECONDS, refreshPolicy);
}

async function runTool(event) {
  event.preventDefault();
  const button = document.getElementById("tool-run");
  const tool = document.getElementById("tool-select").value;
  const code = document.getElementById("tool-code");
  button.disabled = true;
  show("tool-result", el("p", { class: "muted" }, `Running ${tool}…`));
  try {
    const body = { tool_name: tool };
    if (!code.disabled) body.code = code.value;
    renderToolResult(await api.post("/console/api/execute", body));
  } catch (error) {
    renderRefusal("tool-result", "tool-refusal", error instanceof ApiError ? error : new ApiError(0, { detail: String(error) }));
  } finally {
    button.disabled = false;
    refreshAudit().catch(() => {});
  }
}

async function startRun(event) {
  event.preventDefault();
  const button = document.getElementById("goal-start");
  const list = document.getElementById("run-events");
  list.replaceChildren();
  button.disabled = true;
  const steps = Number(document.getElementById("goal-steps").value) || undefined;
  const body = { goal: document.getElementById("goal").value };
  if (steps) body.budgets = { max_steps: steps };
  try {
    await streamRun(body, (name, data) => renderRunEvent(list, name, data));
  } catch (error) {
    const refusal = error instanceof ApiError ? error : new ApiError(0, { detail: String(error) });
    list.append(el("li", { class: "refusal", id: "run-refusal" }, `Refused: ${refusal.status} ${refusal.message}`));
  } finally {
    button.disabled = false;
    refreshRuns().catch(() => {});
  }
}

async function signOut() {
  try {
    await api.delete("/console/api/session");
  } finally {
    signedOut("You signed out.");
  }
}

async function main() {
  whenSignedOut(signedOut);
  document.getElementById("tool-form").addEventListener("submit", runTool);
  document.getElementById("goal-form").addEventListener("submit", startRun);
  document.getElementById("sign-out").addEventListener("click", () => signOut().catch(() => {}));
  document.getElementById("tool-select").addEventListener("change", () => {
    if (lastPolicy) renderToolChoices(lastPolicy);
  });
  const link = SIGN_IN.exec(window.location.hash);
  if (link) {
    // The token leaves the address bar and the history before anything else happens.
    history.replaceState(null, "", window.location.pathname);
    try {
      start(await api.post("/console/api/session", { token: link[1] }));
      return;
    } catch (error) {
      signedOut(`The sign-in link was refused: ${error.message}`);
      return;
    }
  }
  try {
    start(await api.get("/console/api/session"));
  } catch (error) {
    signedOut(error.status === 401 ? "" : `The console could not be reached: ${error.message}`);
  }
}

main();
