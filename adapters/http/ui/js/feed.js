// The live feed: a long-poll on /v1/ui/feed from the last position seen, so a reconnect
// neither skips nor repeats an event. Listeners hear each batch; the list is redrawn at
// most four times a second, keeping the newest KEEP lines.
import { get } from "./api.js";
import { clockTime, h, taskLink } from "./dom.js";

const KEEP = 300;
const DRAW_MS = 250;
const WAIT_S = 20;
const RETRY_MS = [500, 1000, 2000, 5000];

export class Feed {
  constructor(list, filter, setLive) {
    this.list = list;
    this.filter = filter;
    this.setLive = setLive;
    this.events = [];
    this.types = new Set();
    this.after = null;
    this.listeners = [];
    this.drawPending = false;
    this.running = false;
    // Every position heard, checked in order: a repeat or a gap would show here.
    this.received = 0;
    this.lastPosition = null;
    this.outOfOrder = 0;
    filter.addEventListener("change", () => this.draw());
  }

  onBatch(listener) { this.listeners.push(listener); }

  async start() {
    this.running = true;
    let failures = 0;
    while (this.running) {
      try {
        const query = this.after === null ? "limit=100" : `after=${this.after}&limit=500&wait=${WAIT_S}`;
        this.abort = new AbortController();
        const batch = await get(`/v1/ui/feed?${query}`, { signal: this.abort.signal });
        failures = 0;
        this.setLive(true);
        if (batch.head < batch.next_after) { this.after = null; continue; } // another log: start over
        this.after = batch.next_after;
        if (batch.events.length) this.take(batch.events);
      } catch (error) {
        if (!this.running) return;
        this.setLive(false);
        await new Promise((done) => setTimeout(done, RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]));
      }
    }
  }

  stop() {
    this.running = false;
    if (this.abort) this.abort.abort();
  }

  take(events) {
    for (const e of events) {
      if (this.lastPosition !== null && e.position <= this.lastPosition) this.outOfOrder += 1;
      this.lastPosition = e.position;
      this.received += 1;
    }
    this.events.push(...events);
    if (this.events.length > KEEP) this.events.splice(0, this.events.length - KEEP);
    let newType = false;
    for (const e of events) if (!this.types.has(e.type)) { this.types.add(e.type); newType = true; }
    if (newType) this.fillTypes();
    for (const listener of this.listeners) listener(events);
    if (!this.drawPending) {
      // At most four redraws a second, however fast events come.
      this.drawPending = true;
      setTimeout(() => requestAnimationFrame(() => { this.drawPending = false; this.draw(); }), DRAW_MS);
    }
  }

  fillTypes() {
    const chosen = this.filter.value;
    const options = [...this.types].sort().map((t) => h("option", { value: t }, t));
    this.filter.replaceChildren(h("option", { value: "" }, "all types"), ...options);
    this.filter.value = chosen;
  }

  draw() {
    const type = this.filter.value;
    const shown = [];
    for (let i = this.events.length - 1; i >= 0 && shown.length < 150; i -= 1) {
      const e = this.events[i];
      if (type && e.type !== type) continue;
      shown.push(h("li", { dataset: { position: e.position, type: e.type } },
        h("span", { class: "t" }, clockTime(e.at)),
        h("span", { class: "ty" }, e.type, " ", e.task_id ? taskLink(e.task_id) : ""),
        h("span", { class: "ln" }, e.line)));
    }
    this.list.replaceChildren(...shown);
  }
}
