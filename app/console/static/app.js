// The console's shell: signing in and out, the navigation, and which page a path shows. Pages are modules whose
// `show(root, params)` renders into `root` and returns a function that stops whatever it keeps running.

import { identify, session, whenUnauthenticated } from "./api.js";
import { clear, h, message } from "./dom.js";
import * as apiKeys from "./pages/api_keys.js";
import * as deadLetters from "./pages/dead_letters.js";
import * as run from "./pages/run.js";
import * as runs from "./pages/runs.js";
import * as workflow from "./pages/workflow.js";
import * as workflows from "./pages/workflows.js";

const ROUTES = [
  [/^\/console\/?$/, runs],
  [/^\/console\/runs\/?$/, runs],
  [/^\/console\/runs\/([^/]+)$/, run],
  [/^\/console\/workflows\/?$/, workflows],
  [/^\/console\/workflows\/([^/]+)$/, workflow],
  [/^\/console\/dead-letters\/?$/, deadLetters],
  [/^\/console\/api-keys\/?$/, apiKeys],
];
const SIGN_IN = "/console/sign-in";
const page = document.getElementById("page");
let stopPage = () => {};
let signInNotice = null;

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

function render() {
  stopPage();
  stopPage = () => {};
  clear(page);
  showIdentity();
  const path = location.pathname;
  if (!session.current) {
    if (path !== SIGN_IN) sessionStorage.setItem("workflow-console.after-sign-in", path + location.search);
    if (path !== SIGN_IN) history.replaceState(null, "", SIGN_IN);
    showSignIn();
    return;
  }
  if (path === SIGN_IN) {
    navigate("/console/runs", { replace: true });
    return;
  }
  for (const [pattern, module] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      const params = match.slice(1).map(decodeURIComponent);
      stopPage = module.show(page, params, new URLSearchParams(location.search)) || (() => {});
      return;
    }
  }
  page.append(h("h1", {}, "Not found"), message("error", `The console has no page at ${path}.`));
}

function showIdentity() {
  const current = session.current;
  document.getElementById("nav").hidden = !current;
  document.getElementById("who").hidden = !current;
  document.getElementById("nav-api-keys").hidden = !session.may("admin");
  document.getElementById("who-name").textContent = current ? `${current.name} (${current.role})` : "";
}

function showSignIn() {
  const keyInput = h("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "off",
    required: true,
    "aria-label": "API key",
  });
  const problem = h("div", { id: "sign-in-problem" });
  if (signInNotice) problem.append(message("error", signInNotice));
  const form = h(
    "form",
    { class: "sign-in", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Sign in with an API key. It is kept in this tab only, until you sign out or close the tab."),
    h("label", { for: "api-key" }, "API key"),
    keyInput,
    h("button", { type: "submit" }, "Sign in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    try {
      const identity = await identify(key);
      session.start(key, identity);
      signInNotice = null;
      const next = sessionStorage.getItem("workflow-console.after-sign-in") || "/console/runs";
      sessionStorage.removeItem("workflow-console.after-sign-in");
      navigate(next.startsWith("/console") ? next : "/console/runs", { replace: true });
    } catch (error) {
      clear(problem).append(message("error", `The API refused this key: ${error.message}`));
    }
  });
  page.append(form);
  keyInput.focus();
}

whenUnauthenticated((reason) => {
  if (!session.current) return;
  session.end();
  signInNotice = `Your API key is no longer accepted (${reason}). Sign in again.`;
  render();
});

document.getElementById("sign-out").addEventListener("click", () => {
  session.end();
  signInNotice = null;
  sessionStorage.removeItem("workflow-console.after-sign-in");
  navigate(SIGN_IN);
});

// Links within the console change the page without reloading it.
document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[href^='/console']");
  if (!anchor || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(anchor.getAttribute("href"));
});
window.addEventListener("popstate", render);
render();
