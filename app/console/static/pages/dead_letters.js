// Messages the broker dead-lettered, newest first: which queue, why, which steps, and the message itself.

import { api } from "../api.js";
import { clear, formatTime, h, message } from "../dom.js";

const PAGE_SIZE = 50;

export function show(root) {
  const body = h("tbody", { id: "dead-letters" });
  const notice = h("div");
  const older = h("button", { type: "button", hidden: true }, "Older");
  root.append(
    h("h1", {}, "Dead letters"),
    h("p", { class: "muted" }, "Messages the broker gave up delivering, and why. Their steps failed with the reason."),
    notice,
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ["#", "When", "Queue", "Reason", "Steps", "Message"].map((t) => h("th", {}, t)))),
      body,
    ),
    older,
  );
  let stopped = false;
  let before = null;

  async function load() {
    try {
      const rows = await api("/v1/dead-letters", { query: { before, limit: PAGE_SIZE } });
      if (stopped) return;
      for (const letter of rows) {
        body.append(
          h(
            "tr",
            {},
            h("td", {}, String(letter.id)),
            h("td", {}, formatTime(letter.created_at)),
            h("td", { class: "mono" }, letter.queue),
            h("td", {}, letter.reason),
            h("td", {}, letter.step_ids.join(", ")),
            h("td", {}, h("details", {}, h("summary", {}, "message"), h("pre", {}, letter.body))),
          ),
        );
      }
      if (!rows.length && before === null) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "None.")));
      before = rows.length ? rows.at(-1).id : before;
      older.hidden = rows.length < PAGE_SIZE;
    } catch (error) {
      if (!stopped) clear(notice).append(message("error", `Could not load dead letters: ${error.message}`));
    }
  }
  older.addEventListener("click", load);
  load();
  return () => {
    stopped = true;
  };
}
