// API keys (admin only): the list, creating one (its secret shown once, here), and revoking one.

import { ApiError, api, session } from "../api.js";
import { clear, formatTime, h, message } from "../dom.js";

export function show(root) {
  root.append(h("h1", {}, "API keys"));
  if (!session.may("admin")) {
    root.append(message("error", "Only an admin key may manage API keys."));
    return;
  }
  const notice = h("div", { id: "keys-notice" });
  const body = h("tbody", { id: "api-keys" });
  const nameInput = h("input", { id: "key-name", required: true, maxlength: 200, "aria-label": "Name" });
  const roleSelect = h(
    "select",
    { id: "key-role", "aria-label": "Role" },
    ["read", "submit", "admin"].map((role) => h("option", { value: role }, role)),
  );
  const form = h(
    "form",
    { class: "inline", id: "create-key" },
    h("label", {}, "Name ", nameInput),
    h("label", {}, "Role ", roleSelect),
    h("button", { type: "submit" }, "Create key"),
  );
  root.append(
    form,
    notice,
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ["Name", "Role", "Created", "Revoked", ""].map((t) => h("th", {}, t)))),
      body,
    ),
  );
  let stopped = false;

  async function load() {
    try {
      const keys = await api("/v1/api-keys");
      if (stopped) return;
      body.replaceChildren(...keys.map(row));
    } catch (error) {
      if (!stopped && !(error instanceof ApiError && error.status === 401)) {
        clear(notice).append(message("error", `Could not load API keys: ${error.message}`));
      }
    }
  }

  function row(key) {
    const revoke = key.revoked_at
      ? null
      : h("button", { type: "button", class: "danger", "data-revoke": key.name, onclick: () => revokeKey(key) }, "Revoke");
    return h(
      "tr",
      { "data-key": key.id },
      h("td", {}, key.name),
      h("td", {}, key.role),
      h("td", {}, formatTime(key.created_at)),
      h("td", {}, key.revoked_at ? formatTime(key.revoked_at) : "active"),
      h("td", {}, revoke),
    );
  }

  async function revokeKey(key) {
    try {
      await api(`/v1/api-keys/${key.id}`, { method: "DELETE" });
      clear(notice).append(message("info", `Revoked ${key.name}.`));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      clear(notice).append(message("error", `Could not revoke ${key.name}: ${error.message}`));
    }
    load();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api("/v1/api-keys", { method: "POST", body: { name: nameInput.value, role: roleSelect.value } });
      nameInput.value = "";
      clear(notice).append(
        h(
          "div",
          { class: "secret", id: "new-key", role: "status" },
          h("p", {}, `Key ${created.name} (${created.role}) created. Copy it now: it is not shown again.`),
          h("code", { id: "new-key-secret" }, created.key),
        ),
      );
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      clear(notice).append(message("error", `Could not create the key: ${error.message}`));
    }
    load();
  });
  load();
  return () => {
    stopped = true;
  };
}
