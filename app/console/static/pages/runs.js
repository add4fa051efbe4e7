// Runs, newest first, filtered by status and workflow and paged with the API's cursor. The page on screen is
// fetched again every few seconds, so new runs appear and statuses change without a reload.

import { api } from "../api.js";
import { navigate } from "../app.js";
import { clear, duration, formatTime, h, link, message, statusBadge } from "../dom.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 2000;
const PAGE_SIZE = 50;

export function show(root, _params, query) {
  const filters = { status: query.get("status") || "", workflow: query.get("workflow") || "" };
  const cursors = [null]; // the cursor of each page up to the one shown
  let timer = null;
  let stopped = false;

  const statusSelect = h(
    "select",
    { id: "filter-status", "aria-label": "Status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((status) => h("option", { value: status, selected: status === filters.status }, status)),
  );
  const workflowSelect = h(
    "select",
    { id: "filter-workflow", "aria-label": "Workflow" },
    h("option", { value: "" }, "any workflow"),
  );
  if (filters.workflow) workflowSelect.append(h("option", { value: filters.workflow, selected: true }, filters.workflow));
  const body = h("tbody", { id: "runs" });
  const notice = h("div");
  const newer = h("button", { type: "button", id: "newer", disabled: true }, "← Newer");
  const older = h("button", { type: "button", id: "older", disabled: true }, "Older →");
  const pageLabel = h("span", { class: "muted" });

  root.append(
    h("h1", {}, "Runs"),
    h("div", { class: "filters" }, h("label", {}, "Status ", statusSelect), h("label", {}, "Workflow ", workflowSelect)),
    notice,
    h(
      "table",
      { class: "list" },
      h(
        "thead",
        {},
        h("tr", {}, ["Run", "Workflow", "Status", "Created", "Duration"].map((title) => h("th", {}, title))),
      ),
      body,
    ),
    h("div", { class: "pager" }, newer, pageLabel, older),
  );

  const onFilter = () => {
    const params = new URLSearchParams();
    if (statusSelect.value) params.set("status", statusSelect.value);
    if (workflowSelect.value) params.set("workflow", workflowSelect.value);
    navigate(`/console/runs${params.size ? `?${params}` : ""}`);
  };
  statusSelect.addEventListener("change", onFilter);
  workflowSelect.addEventListener("change", onFilter);
  older.addEventListener("click", () => {
    cursors.push(older.dataset.cursor);
    refresh();
  });
  newer.addEventListener("click", () => {
    cursors.pop();
    refresh();
  });

  async function refresh() {
    clearTimeout(timer);
    try {
      const page = await api("/v1/runs", {
        query: { ...filters, cursor: cursors.at(-1), limit: PAGE_SIZE },
      });
      if (stopped) return;
      clear(notice);
      body.replaceChildren(...page.runs.map(row));
      if (!page.runs.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No runs.")));
      older.disabled = !page.next_cursor;
      older.dataset.cursor = page.next_cursor || "";
      newer.disabled = cursors.length === 1;
      pageLabel.textContent = `page ${cursors.length}`;
    } catch (error) {
      if (stopped) return;
      clear(notice).append(message("error", `Could not load runs: ${error.message}`));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function loadWorkflowNames() {
    try {
      const page = await api("/v1/workflows", { query: { limit: 500 } });
      for (const { name } of page.workflows) {
        if (name !== filters.workflow) workflowSelect.append(h("option", { value: name }, name));
      }
    } catch {
      // The filter still offers the workflow in the address; the runs themselves say what went wrong.
    }
  }

  refresh();
  loadWorkflowNames();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function row(run) {
  return h(
    "tr",
    { "data-run": run.id },
    h("td", {}, link(`/console/runs/${run.id}`, run.id.slice(0, 8), { class: "mono", title: run.id })),
    h("td", {}, `${run.workflow} v${run.version}`),
    h("td", {}, statusBadge(run.status)),
    h("td", {}, formatTime(run.created_at)),
    h("td", {}, duration(run.started_at, run.finished_at)),
  );
}
