// One workflow: its versions, the definition of the one chosen (drawn and as JSON), and a form starting a run of
// the latest version with a JSON input, checked in the browser before it is sent.

import { ApiError, api, session } from "../api.js";
import { navigate } from "../app.js";
import { drawDag } from "../dag.js";
import { clear, formatTime, h, json, link, message } from "../dom.js";

export function show(root, [name], query) {
  const wanted = Number(query.get("version")) || null;
  const notice = h("div");
  const versionList = h("ul", { class: "versions", id: "versions" });
  const definition = h("div", { id: "definition" });
  const more = h("button", { type: "button", hidden: true }, "Older versions");
  root.append(
    h("h1", {}, "Workflow ", h("span", { class: "mono" }, name)),
    notice,
    session.may("submit") ? startForm(name) : null,
    h("div", { class: "columns" }, h("section", {}, h("h2", {}, "Versions"), versionList, more), definition),
  );
  let stopped = false;
  let cursor = null;
  let shownOne = false;

  async function loadVersions() {
    try {
      const page = await api(`/v1/workflows/${encodeURIComponent(name)}/versions`, { query: { cursor, limit: 50 } });
      if (stopped) return;
      for (const version of page.versions) {
        const href = `/console/workflows/${encodeURIComponent(name)}?version=${version.version}`;
        versionList.append(
          h("li", {}, link(href, `v${version.version}`), h("span", { class: "muted" }, ` ${formatTime(version.created_at)}`)),
        );
        if (!shownOne && (wanted === null || wanted === version.version)) {
          shownOne = true;
          showDefinition(version);
        }
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!shownOne && !cursor) clear(notice).append(message("error", `There is no version ${wanted}.`));
      else if (!shownOne) loadVersions();
    } catch (error) {
      if (!stopped) clear(notice).append(message("error", `Could not load the workflow: ${error.message}`));
    }
  }

  function showDefinition(version) {
    const drawing = h("div", { class: "dag-frame" });
    clear(definition).append(
      h("h2", {}, `Definition of v${version.version}`),
      drawing,
      h("pre", { id: "definition-json" }, json({ name: version.name, steps: version.steps })),
    );
    drawDag(drawing, version.steps, () => {});
  }

  more.addEventListener("click", loadVersions);
  loadVersions();
  return () => {
    stopped = true;
  };
}

function startForm(name) {
  const input = h("textarea", { id: "run-input", rows: 6, spellcheck: "false", "aria-label": "Run input (JSON)" });
  input.value = "{}";
  const problem = h("div", { id: "start-problem" });
  const form = h(
    "form",
    { class: "start", id: "start-run" },
    h("h2", {}, "Start a run"),
    h("label", { for: "run-input" }, "Input: a JSON object, given to every step as the run's input"),
    input,
    h("button", { type: "submit" }, "Start run of the latest version"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reason = invalidInput(input.value);
    if (reason) {
      clear(problem).append(message("error", reason));
      return;
    }
    try {
      const run = await api(`/v1/workflows/${encodeURIComponent(name)}/runs`, {
        method: "POST",
        body: { input: JSON.parse(input.value) },
      });
      navigate(`/console/runs/${run.id}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      clear(problem).append(message("error", `The API refused the run: ${error.message}`));
    }
  });
  return form;
}

// Why `text` is not an input the API takes (a JSON object), or null when it is.
function invalidInput(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `The input is not JSON: ${error.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "The input must be a JSON object.";
  return null;
}
