// Building DOM nodes. Text is only ever set as text (textContent or text nodes), never parsed as HTML: whatever a
// task returns or a user typed is shown as it is and cannot run.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

// JSON of any value, indented, as text for a <pre>.
export function json(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// How long from `start` to `end` (or to now when it has not ended), e.g. "850 ms", "12.4 s", "3 min 5 s".
export function duration(start, end) {
  if (!start) return "";
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (ms < 1000) return `${Math.max(ms, 0)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 60) return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function statusBadge(status, props = {}) {
  return h("span", { class: `badge status-${status}`, "data-status": status, ...props }, status);
}

export function link(href, text, props = {}) {
  return h("a", { href, ...props }, text);
}

export function message(kind, text) {
  return h("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}
