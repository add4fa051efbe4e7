// Registered workflows by name, paged with the API's cursor.

import { api } from "../api.js";
import { clear, h, link, message } from "../dom.js";

const PAGE_SIZE = 50;

export function show(root) {
  const cursors = [null];
  const body = h("tbody", { id: "workflows" });
  const notice = h("div");
  const newer = h("button", { type: "button", disabled: true }, "← Previous");
  const older = h("button", { type: "button", disabled: true }, "Next →");
  root.append(
    h("h1", {}, "Workflows"),
    notice,
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ["Workflow", "Latest version", "Versions"].map((title) => h("th", {}, title)))),
      body,
    ),
    h("div", { class: "pager" }, newer, older),
  );
  let stopped = false;

  async function load() {
    try {
      const page = await api("/v1/workflows", { query: { cursor: cursors.at(-1), limit: PAGE_SIZE } });
      if (stopped) return;
      body.replaceChildren(
        ...page.workflows.map((workflow) =>
          h(
            "tr",
            {},
            h("td", {}, link(`/console/workflows/${encodeURIComponent(workflow.name)}`, workflow.name)),
            h("td", {}, `v${workflow.latest_version}`),
            h("td", {}, String(workflow.versions)),
          ),
        ),
      );
      if (!page.workflows.length) body.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No workflows.")));
      older.disabled = !page.next_cursor;
      older.dataset.cursor = page.next_cursor || "";
      newer.disabled = cursors.length === 1;
    } catch (error) {
      if (!stopped) clear(notice).append(message("error", `Could not load workflows: ${error.message}`));
    }
  }
  older.addEventListener("click", () => {
    cursors.push(older.dataset.cursor);
    load();
  });
  newer.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  load();
  return () => {
    stopped = true;
  };
}
