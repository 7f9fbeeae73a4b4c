// Building the page from data: text only. Every value shown here (tool output,
// goals, policy text, errors) becomes a text node; no HTML is ever parsed from
// data (the page's Content-Security-Policy makes any such attempt throw).

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) throw new Error(`no event attributes: ${name}`);
    if (name === "class") node.setAttribute("class", Array.isArray(value) ? value.join(" ") : value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  return node;
}

/** An HTML element with attributes and children (strings become text). */
export function el(tag, attributes, ...children) {
  return append(setAttributes(document.createElement(tag), attributes), children);
}

/** An SVG element with attributes and children. */
export function svg(tag, attributes, ...children) {
  return append(setAttributes(document.createElementNS(SVG_NS, tag), attributes), children);
}

/** Replace the children of `node` (or of the element with this id). */
export function show(node, ...children) {
  const target = typeof node === "string" ? document.getElementById(node) : node;
  target.replaceChildren();
  return append(target, children);
}

/** A table from column titles and rows of cells. */
export function table(columns, rows, attributes) {
  return el(
    "table",
    attributes,
    el("thead", null, el("tr", null, columns.map((title) => el("th", null, title)))),
    el("tbody", null, rows.map((cells) => el("tr", null, cells.map((cell) => el("td", null, cell))))),
  );
}

/** A preformatted block of text, marked empty when there is none. */
export function textBlock(text, attributes) {
  const value = text ?? "";
  const classes = ["out", value ? null : "empty", attributes && attributes.class]
    .filter(Boolean).join(" ");
  return el("pre", { ...attributes, class: classes }, value || "(nothing)");
}

/** A date-time as the browser's locale writes it. */
export function when(value) {
  if (!value) return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A small coloured label. */
export function badge(text, kind) {
  return el("span", { class: ["badge", kind || "plain"] }, text);
}
