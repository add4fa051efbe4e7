// A workflow's DAG as an SVG drawing. Layout: each step's layer is the longest path to it from a step without
// dependencies (Kahn's topological order), and within a layer steps are ordered by the mean position of their
// dependencies (barycenter), one sweep from the top: O(V + E) plus a sort per layer. The drawing is made once;
// a step's state changes only its node's `data-status`, which the stylesheet colours.

const SVG = "http://www.w3.org/2000/svg";
const NODE_WIDTH = 150;
const NODE_HEIGHT = 36;
const GAP_X = 24;
const GAP_Y = 48;
const MARGIN = 12;
const LABEL_CHARS = 20;

export function layout(steps) {
  const byName = new Map(steps.map((step) => [step.name, step]));
  const children = new Map(steps.map((step) => [step.name, []]));
  const waitingOn = new Map();
  for (const step of steps) {
    const parents = step.depends_on.filter((name) => byName.has(name));
    waitingOn.set(step.name, parents.length);
    for (const parent of parents) children.get(parent).push(step.name);
  }
  const layerOf = new Map();
  const queue = steps.filter((step) => waitingOn.get(step.name) === 0).map((step) => step.name);
  for (const name of queue) layerOf.set(name, 0);
  for (let next = 0; next < queue.length; next++) {
    const name = queue[next];
    for (const child of children.get(name)) {
      layerOf.set(child, Math.max(layerOf.get(child) ?? 0, layerOf.get(name) + 1));
      waitingOn.set(child, waitingOn.get(child) - 1);
      if (waitingOn.get(child) === 0) queue.push(child);
    }
  }
  const layers = [];
  for (const name of queue) (layers[layerOf.get(name)] ??= []).push(name);
  const slot = new Map();
  for (const layer of layers) {
    const centre = (name) => {
      const parents = byName.get(name).depends_on.filter((parent) => slot.has(parent));
      if (!parents.length) return Number.POSITIVE_INFINITY;
      return parents.reduce((sum, parent) => sum + slot.get(parent), 0) / parents.length;
    };
    const keyed = layer.map((name, index) => ({ name, index, centre: centre(name) }));
    keyed.sort((a, b) => a.centre - b.centre || a.index - b.index);
    keyed.forEach(({ name }, position) => slot.set(name, position));
    layer.splice(0, layer.length, ...keyed.map(({ name }) => name));
  }
  const widest = Math.max(1, ...layers.map((layer) => layer.length));
  const width = widest * (NODE_WIDTH + GAP_X) - GAP_X + 2 * MARGIN;
  const height = layers.length * (NODE_HEIGHT + GAP_Y) - GAP_Y + 2 * MARGIN;
  const position = new Map();
  layers.forEach((layer, depth) => {
    const offset = ((widest - layer.length) * (NODE_WIDTH + GAP_X)) / 2;
    layer.forEach((name, index) => {
      position.set(name, {
        x: MARGIN + offset + index * (NODE_WIDTH + GAP_X),
        y: MARGIN + depth * (NODE_HEIGHT + GAP_Y),
      });
    });
  });
  return { position, width: Math.max(width, NODE_WIDTH), height: Math.max(height, NODE_HEIGHT) };
}

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

// Draws `steps` ({name, depends_on, status}) into `container`; `onSelect(name)` when a step is clicked. Returns
// `setStatus(name, status)`.
export function drawDag(container, steps, onSelect) {
  const { position, width, height } = layout(steps);
  const drawing = svg("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  drawing.append(svg("title"));
  drawing.firstChild.textContent = `The run's ${steps.length} steps and their dependencies`;
  const edges = svg("g", { class: "dag-edges" });
  const nodes = svg("g", { class: "dag-nodes" });
  const nodeOf = new Map();
  for (const step of steps) {
    const at = position.get(step.name);
    if (!at) continue;
    for (const parent of step.depends_on) {
      const from = position.get(parent);
      if (!from) continue;
      const x1 = from.x + NODE_WIDTH / 2;
      const y1 = from.y + NODE_HEIGHT;
      const x2 = at.x + NODE_WIDTH / 2;
      const y2 = at.y;
      const bend = (y2 - y1) / 2;
      edges.append(svg("path", { d: `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}` }));
    }
    const node = svg("g", {
      class: "dag-node",
      transform: `translate(${at.x},${at.y})`,
      "data-step": step.name,
      "data-status": step.status || "waiting",
      tabindex: 0,
    });
    const title = svg("title");
    title.textContent = `${step.name}: ${step.status || "waiting"}`;
    const label = svg("text", { x: NODE_WIDTH / 2, y: NODE_HEIGHT / 2 + 4, "text-anchor": "middle" });
    label.textContent = step.name.length > LABEL_CHARS ? `${step.name.slice(0, LABEL_CHARS - 1)}…` : step.name;
    node.append(title, svg("rect", { width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6 }), label);
    node.addEventListener("click", () => onSelect(step.name));
    node.addEventListener("keydown", (event) => event.key === "Enter" && onSelect(step.name));
    nodes.append(node);
    nodeOf.set(step.name, { node, title });
  }
  drawing.append(edges, nodes);
  container.replaceChildren(drawing);
  return function setStatus(name, status) {
    const found = nodeOf.get(name);
    if (!found || found.node.getAttribute("data-status") === status) return;
    found.node.setAttribute("data-status", status);
    found.title.textContent = `${name}: ${status}`;
  };
}
