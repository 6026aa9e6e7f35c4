// A tiny DOM builder and the formats the page uses. Text always goes in as text.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// The end of an id: new ids start with the time they were made (UUIDv7).
export const shortId = (id) => (id ? String(id).slice(-8) : "");
export const taskLink = (id) => (id ? h("a", { href: `#/task/${id}`, class: "mono" }, shortId(id)) : "—");
export const pill = (text) => h("span", { class: `pill ${text}` }, text);

export function clockTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

export function ago(iso, now) {
  if (!iso) return "—";
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function countdown(iso, now) {
  const s = Math.round((new Date(iso).getTime() - now) / 1000);
  if (s <= 0) return "firing…";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}:${String(s % 60).padStart(2, "0")}` : `${s} s`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const gib = n / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

export const number = (n) => Number(n || 0).toLocaleString("en-US");

// Replace a table body's rows at once (one layout, not one per row).
export function fillBody(table, rows, columns, emptyText) {
  const body = table.tBodies[0];
  if (!rows.length) {
    body.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: columns }, emptyText)));
    return;
  }
  body.replaceChildren(...rows);
}
