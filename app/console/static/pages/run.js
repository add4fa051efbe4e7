// One run: its DAG coloured by each step's state, live over the run's events WebSocket; each step's attempt,
// timings, input, output and error; cancel and retry for keys that may; and the event log. The drawing is made
// once; events recolour its nodes in place and a short while later the run is read again for the details.

import { ApiError, api, runEvents, session } from "../api.js";
import { drawDag } from "../dag.js";
import { append, clear, duration, formatTime, h, json, link, message, statusBadge } from "../dom.js";

const STEP_STATUS_OF_EVENT = {
  "step.ready": "ready",
  "step.started": "running",
  "step.retrying": "ready",
  "step.succeeded": "succeeded",
  "step.failed": "failed",
  "step.cancelled": "cancelled",
};
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const DETAILS_DELAY_MS = 250;
const RECONNECT_MS = 1000;
// An unfinished run is also read again on this period: running durations advance even when no event comes.
const UNFINISHED_REFRESH_MS = 5000;

export function show(root, [runId]) {
  let stopped = false;
  let run = null;
  let setStatus = () => {};
  let socket = null;
  let lastSeq = 0;
  let detailsTimer = null;
  let reconnectTimer = null;
  let refreshTimer = null;
  const stepViews = new Map();

  const header = h("div", { class: "run-header" });
  const actions = h("div", { class: "actions" });
  const notice = h("div", { id: "run-notice" });
  const dag = h("div", { class: "dag-frame", id: "dag" });
  const steps = h("div", { class: "steps", id: "steps" });
  const log = h("ol", { class: "events", id: "events" });
  const live = h("span", { class: "muted", id: "live" }, "");
  root.append(
    h("h1", {}, "Run ", h("span", { class: "mono" }, runId)),
    header,
    actions,
    notice,
    h("h2", {}, "Steps ", live),
    dag,
    steps,
    h("h2", {}, "Event log"),
    log,
  );

  async function load() {
    try {
      run = await api(`/v1/runs/${encodeURIComponent(runId)}`);
    } catch (error) {
      if (!stopped) clear(notice).append(message("error", `Could not load the run: ${error.message}`));
      return;
    }
    if (stopped) return;
    clear(notice);
    if (!stepViews.size) {
      setStatus = drawDag(dag, run.steps, (name) => {
        const view = stepViews.get(name);
        view.section.open = true;
        view.section.scrollIntoView({ block: "nearest" });
      });
      for (const step of run.steps) {
        const view = stepView(step);
        stepViews.set(step.name, view);
        steps.append(view.section);
      }
    }
    showHeader();
    for (const step of run.steps) {
      setStatus(step.name, step.status);
      stepViews.get(step.name)?.update(step);
    }
    clearTimeout(refreshTimer);
    if (!FINISHED.has(run.status)) refreshTimer = setTimeout(load, UNFINISHED_REFRESH_MS);
  }

  function showHeader() {
    clear(header).append(
      h(
        "dl",
        { class: "facts" },
        fact("Status", statusBadge(run.status, { id: "run-status" })),
        fact("Workflow", link(`/console/workflows/${encodeURIComponent(run.workflow)}`, `${run.workflow} v${run.version}`)),
        fact("Created", formatTime(run.created_at)),
        fact("Started", formatTime(run.started_at)),
        fact("Finished", formatTime(run.finished_at)),
        fact("Duration", duration(run.started_at, run.finished_at)),
        fact("Input", h("pre", {}, json(run.input))),
        run.error ? fact("Error", h("pre", { class: "error-text", id: "run-error" }, json(run.error))) : null,
      ),
    );
    clear(actions);
    if (!session.may("submit")) return;
    if (!FINISHED.has(run.status)) actions.append(button("cancel", "Cancel run", () => act("cancel")));
    if (run.status === "failed" || run.status === "cancelled") {
      actions.append(button("retry", "Retry failed steps", () => act("retry")));
    }
  }

  async function act(action) {
    try {
      await api(`/v1/runs/${encodeURIComponent(runId)}/${action}`, { method: "POST" });
      clear(notice).append(message("info", action === "cancel" ? "Run cancelled." : "Run retried."));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      clear(notice).append(message("error", `Could not ${action} the run: ${error.message}`));
    }
    await load();
    if (!socket) connect();
  }

  function onEvent(event) {
    lastSeq = event.seq;
    log.append(
      h(
        "li",
        { "data-seq": event.seq },
        h("span", { class: "mono muted" }, `#${event.seq} ${formatTime(event.created_at)} `),
        h("strong", {}, event.type),
        event.step ? ` ${event.step}` : "",
        Object.keys(event.data || {}).length ? h("pre", {}, json(event.data)) : null,
      ),
    );
    const status = STEP_STATUS_OF_EVENT[event.type];
    if (status && event.step) setStatus(event.step, status);
    clearTimeout(detailsTimer);
    detailsTimer = setTimeout(load, DETAILS_DELAY_MS);
  }

  function connect() {
    live.textContent = "(live)";
    socket = runEvents(runId, lastSeq, {
      onEvent,
      onClose(code) {
        socket = null;
        live.textContent = "";
        if (stopped) return;
        // 1000: the run finished for good, or stayed failed or cancelled long enough; a retry reconnects.
        if (code !== 1000 && code !== 4404 && code !== 4403) reconnectTimer = setTimeout(connect, RECONNECT_MS);
      },
    });
  }

  load().then(() => !stopped && run && connect());
  return () => {
    stopped = true;
    clearTimeout(detailsTimer);
    clearTimeout(reconnectTimer);
    clearTimeout(refreshTimer);
    socket?.close();
  };
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

function button(id, text, onClick) {
  return h("button", { type: "button", id, onclick: onClick }, text);
}

// A step's details as a <details> section, updated in place.
function stepView(step) {
  const badge = statusBadge(step.status);
  const facts = h("dl", { class: "facts" });
  const summary = h("summary", {}, h("strong", {}, step.name), " ", badge, h("span", { class: "muted" }, ` ${step.task}`));
  const section = h("details", { class: "step", id: `step-${step.name}`, "data-step": step.name }, summary, facts);
  let shown = "";
  return {
    section,
    update(current) {
      const fingerprint = JSON.stringify(current);
      if (fingerprint === shown) return;
      shown = fingerprint;
      badge.textContent = current.status;
      badge.className = `badge status-${current.status}`;
      badge.setAttribute("data-status", current.status);
      if (current.status === "failed") section.open = true;
      append(clear(facts), [
        fact("Attempt", `${current.attempt} of ${current.max_attempts}`),
        fact("Started", formatTime(current.started_at)),
        fact("Finished", formatTime(current.finished_at)),
        fact("Duration", duration(current.started_at, current.finished_at)),
        fact("Depends on", current.depends_on.join(", ") || "nothing"),
        fact("Input", h("pre", { class: "step-input" }, json(current.input))),
        fact("Output", h("pre", { class: "step-output" }, json(current.output))),
        current.error ? fact("Error", h("pre", { class: "step-error error-text" }, json(current.error))) : null,
      ]);
    },
  };
}
