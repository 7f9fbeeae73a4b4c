// Calls to the console's API. The session is an HttpOnly cookie the browser
// sends by itself; the CSRF token that changes must carry lives only in this
// module's memory (never in storage), for as long as the page is open.

let csrfToken = null;
let signedOutHandler = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    super(detail || (body && body.error) || `the console answered ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** Remember the session's CSRF token (from the session answer). */
export function useCsrfToken(token) {
  csrfToken = token;
}

/** Called with the reason when the server says the session is gone. */
export function whenSignedOut(handler) {
  signedOutHandler = handler;
}

function headersFor(method, hasBody) {
  const headers = { Accept: "application/json" };
  if (hasBody) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  return headers;
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headersFor(method, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401 && data && data.error === "signed_out") {
    csrfToken = null;
    signedOutHandler(data.detail);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body) => call("POST", path, body),
  delete: (path) => call("DELETE", path),
};

/**
 * Start a run and call `onEvent(name, data)` for each server-sent event as it
 * arrives, until the stream ends. Refusals before the stream starts throw ApiError.
 */
export async function streamRun(body, onEvent) {
  const response = await fetch("/console/api/runs/stream", {
    method: "POST",
    headers: { ...headersFor("POST", true), Accept: "text/event-stream" },
    body: JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (!response.ok || !response.body) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.status === 401 && data && data.error === "signed_out") signedOutHandler(data.detail);
    throw new ApiError(response.status, data);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a keep-alive comment
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) {
        let parsed;
        try {
          parsed = JSON.parse(data.join("\n"));
        } catch {
          parsed = { unreadable: data.join("\n") };
        }
        onEvent(name, parsed);
      }
    }
  }
}
