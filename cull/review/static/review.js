// cull review: keyboard-first grid and detail view. No inline script (strict CSP), no dependencies.
"use strict";
(function () {
  const token = document.querySelector('meta[name="cull-token"]').content;
  const grid = document.getElementById("grid");
  const detail = document.getElementById("detail");
  const help = document.getElementById("help");
  const status = document.getElementById("status");
  const stack = document.getElementById("stack");
  let items = [];
  let cards = [];  // cards[i] shows items[i]; the frames of a burst sit together in one .burst box
  let current = 0;
  let detailFor = null;

  function say(text, error) {
    status.textContent = text;
    status.classList.toggle("error", !!error);
  }

  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Cull-Token": token },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    const data = answer.headers.get("content-type") && answer.headers.get("content-type").includes("json")
      ? await answer.json() : { error: await answer.text() };
    if (!answer.ok) throw new Error(data.error || answer.statusText);
    return data;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function badge(verdict, user) {
    const b = el("span", "badge " + verdict + (user ? " user" : ""), user ? "you: " + verdict : verdict);
    b.dataset.role = user ? "user" : "cull";
    return b;
  }

  function renderCard(card, item) {
    card.replaceChildren();
    card.className = "card" + (item.user ? " decided" : "") + (items[current] === item ? " current" : "");
    card.dataset.id = item.id;
    card.dataset.verdict = item.verdict;
    card.dataset.user = item.user || "";
    if (item.burst) { card.dataset.burst = item.burst; card.dataset.rank = item.burst_rank; }
    card.setAttribute("role", "option");
    card.setAttribute("aria-selected", items[current] === item ? "true" : "false");
    const img = el("img", "thumb");
    img.loading = "lazy";
    img.alt = item.name;
    img.src = "/api/thumb/" + item.id;
    const meta = el("div", "meta");
    meta.append(el("span", "name", (item.where ? item.where + "/" : "") + item.name));
    if (item.burst) {
      if (item.burst_rank === 1) meta.append(el("span", "badge best", "★ best"));
      meta.append(el("span", "rank", "#" + item.burst_rank + "/" + item.burst_size));
    }
    meta.append(badge(item.verdict, false));
    if (item.user) meta.append(badge(item.user, true));
    if (item.protected) meta.append(el("span", "badge protected", item.protected));
    meta.append(el("span", "dim", item.score === null ? "no score" : "score " + item.score.toFixed(3)));
    if (item.kind) meta.append(el("span", "dim", item.kind));
    if (item.partner) meta.append(el("span", "dim", "+ " + item.partner));
    card.title = item.reason;
    card.append(img, meta);
  }

  function cardOf(index) { return cards[index]; }

  function render() {
    grid.replaceChildren();
    cards = [];
    if (!items.length) {
      grid.append(el("div", "card empty", "Nothing to review here."));
      return;
    }
    let box = null;
    items.forEach((item, index) => {
      const card = el("div", "card");
      card.addEventListener("click", () => { select(index); });
      card.addEventListener("dblclick", () => { select(index); openDetail(); });
      renderCard(card, item);
      cards.push(card);
      if (!item.burst) { box = null; grid.append(card); return; }
      if (!box || box.dataset.burst !== item.burst) {
        box = el("div", "burst");
        box.dataset.burst = item.burst;
        box.setAttribute("role", "group");
        box.setAttribute("aria-label", "burst of " + item.burst_size + " frames, sharpest first");
        box.append(el("div", "burst-label", "burst · " + item.burst_size + " frames, sharpest first · B: keep best, flag the rest"));
        grid.append(box);
      }
      box.append(card);
    });
  }

  function burstRange(index) {
    // [first, last] indices of the burst of items[index] (frames of a burst are listed together)
    const id = items[index] && items[index].burst;
    if (!id) return null;
    let first = index, last = index;
    while (first > 0 && items[first - 1].burst === id) first -= 1;
    while (last < items.length - 1 && items[last + 1].burst === id) last += 1;
    return [first, last];
  }

  function select(index) {
    if (!items.length) return;
    const before = current;
    current = Math.max(0, Math.min(items.length - 1, index));
    if (cardOf(before)) renderCard(cardOf(before), items[before]);
    renderCard(cardOf(current), items[current]);
    cardOf(current).scrollIntoView({ block: "nearest" });
    if (!detail.hidden) openDetail();
  }

  function vertical(step) {
    // the card in the next row up (step -1) or down (+1) nearest to the current card's column
    const here = cardOf(current);
    if (!here) return current;
    const from = here.getBoundingClientRect();
    let best = -1, bestKey = null;
    cards.forEach((card, index) => {
      const r = card.getBoundingClientRect();
      const dy = (r.top - from.top) * step;
      if (dy < 4) return;
      const key = [dy, Math.abs(r.left - from.left)];
      if (bestKey === null || key[0] < bestKey[0] - 4 || (Math.abs(key[0] - bestKey[0]) <= 4 && key[1] < bestKey[1])) {
        best = index; bestKey = key;
      }
    });
    return best < 0 ? current : best;
  }

  function replace(updated) {
    const index = items.findIndex((item) => item.id === updated.id);
    if (index < 0) return -1;
    items[index] = updated;
    renderCard(cardOf(index), updated);
    return index;
  }

  async function decide(decision) {
    const item = items[current];
    if (!item) return;
    try {
      const answer = await post("/api/decide", { id: item.id, decision: decision });
      replace(answer.item);
      say(item.name + ": " + decision + " (Z undoes)");
      if (current < items.length - 1) select(current + 1); else if (!detail.hidden) openDetail();
    } catch (error) {
      say(item.name + ": not saved: " + error.message, true);
    }
  }

  async function keepBest() {
    const range = burstRange(current);
    if (!range) { say("not a burst: B keeps the best frame of a burst (cull review --bursts)"); return; }
    const item = items[current];
    try {
      const answer = await post("/api/keep-best", { id: item.id });
      for (const frame of answer.items) replace(frame);
      const kept = answer.items.find((frame) => frame.user === "keep") || answer.items[0];
      say("burst: kept " + kept.name + ", " + (answer.items.length - 1) + " other frames uncertain (Z undoes)");
      if (range[1] < items.length - 1) select(range[1] + 1); else if (!detail.hidden) openDetail(); else select(current);
    } catch (error) {
      say(item.name + ": burst not saved: " + error.message, true);
    }
  }

  async function undo() {
    try {
      const answer = await post("/api/undo", {});
      if (!answer.item) { say("nothing to undo"); return; }
      for (const other of answer.items || []) replace(other);
      const index = replace(answer.item);
      const what = answer.items && answer.items.length > 1 ? "burst of " + answer.items.length + " frames" : answer.item.name;
      say("undone: " + what + (answer.problems.length ? " (" + answer.problems.join("; ") + ")" : ""),
          answer.problems.length > 0);
      if (index >= 0) select(index);
    } catch (error) {
      say("undo failed: " + error.message, true);
    }
  }

  async function openDetail() {
    const item = items[current];
    if (!item) return;
    detail.hidden = false;
    detailFor = item.id;
    document.getElementById("detail-name").textContent = (item.where ? item.where + "/" : "") + item.name;
    const facts = document.getElementById("detail-facts");
    facts.replaceChildren(badge(item.verdict, false));
    if (item.user) facts.append(" ", badge(item.user, true));
    if (item.protected) facts.append(" ", el("span", "badge protected", item.protected));
    if (item.burst) facts.append(" burst #" + item.burst_rank + "/" + item.burst_size + (item.burst_rank === 1 ? " ★ best" : "") + " ·");
    facts.append(" " + (item.score === null ? "no score" : "score " + item.score.toFixed(3)) +
      (item.kind ? " · " + item.kind : "") + (item.partner ? " · + " + item.partner : "") + " · " + item.reason);
    const crops = document.getElementById("crops");
    crops.replaceChildren(el("p", "dim", "scoring patches…"));
    try {
      const answer = await fetch("/api/detail/" + item.id, { credentials: "same-origin" });
      if (!answer.ok) throw new Error(await answer.text());
      const info = await answer.json();
      if (detailFor !== item.id) return;
      document.getElementById("view").src = info.view;
      document.getElementById("overlay").src = info.overlay;
      crops.replaceChildren();
      if (!info.crops.length) crops.append(el("p", "dim", "no textured region to show"));
      for (const crop of info.crops) {
        const figure = el("figure");
        figure.dataset.which = crop.which;
        const img = el("img", "crop");
        img.id = "crop-" + crop.which;
        img.alt = crop.which + " region at 100 %";
        img.src = crop.url;
        const box = crop.box;
        figure.append(img, el("figcaption", null,
          crop.which + " region, 100 % (" + (box[2] - box[0]) + "×" + (box[3] - box[1]) + " px at " + box[0] + "," + box[1] +
          " of " + info.full[0] + "×" + info.full[1] + "), patch score " + crop.score.toFixed(3)));
        crops.append(figure);
      }
      renderStrip(info.burst || [], item.id);
      detail.dataset.ready = String(item.id);
    } catch (error) {
      crops.replaceChildren(el("p", "dim", "cannot show this photo: " + error.message));
    }
  }

  function renderStrip(frames, id) {
    // the burst's frames (sharpest first) under the detail bar: click one, or J K, to step through
    const strip = document.getElementById("burst-strip");
    strip.replaceChildren();
    strip.hidden = frames.length < 2;
    if (strip.hidden) return;
    strip.append(el("span", "dim", "burst, sharpest first (B: keep best, flag the rest)"));
    for (const frame of frames) {
      const fig = el("figure", "frame" + (frame.id === id ? " current" : ""));
      fig.dataset.id = frame.id;
      fig.dataset.rank = frame.burst_rank;
      const img = el("img");
      img.src = frame.thumb;
      img.alt = frame.name;
      const caption = el("figcaption", null, "#" + frame.burst_rank + (frame.burst_rank === 1 ? " ★ best" : "") + " · " +
        (frame.user ? "you: " + frame.user : frame.verdict) + (frame.score === null ? "" : " · " + frame.score.toFixed(3)));
      fig.append(img, caption);
      fig.title = frame.name;
      fig.addEventListener("click", () => {
        const index = items.findIndex((it) => it.id === frame.id);
        if (index >= 0) select(index);
      });
      strip.append(fig);
    }
  }

  function closeDetail() {
    detail.hidden = true;
    detailFor = null;
    delete detail.dataset.ready;
    grid.focus();
  }

  function toggleHeat(on) {
    const box = document.getElementById("toggle-heat");
    box.checked = on === undefined ? !box.checked : on;
    stack.classList.toggle("no-heat", !box.checked);
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const inDetail = !detail.hidden;
    let handled = true;
    if (key === "ArrowRight" || key === "j" || key === "J") select(current + 1);
    else if (key === "ArrowLeft" || key === "k" || key === "K") select(current - 1);
    else if (key === "ArrowDown") select(inDetail ? current + 1 : vertical(1));
    else if (key === "ArrowUp") select(inDetail ? current - 1 : vertical(-1));
    else if (key === "x" || key === "X") decide("reject");
    else if (key === "p" || key === "P") decide("keep");
    else if (key === "u" || key === "U") decide("uncertain");
    else if (key === "b" || key === "B") keepBest();
    else if (key === "z" || key === "Z") undo();
    else if (key === "Enter" || key === " ") { if (inDetail) closeDetail(); else openDetail(); }
    else if (key === "Escape") { if (!help.hidden) help.hidden = true; else if (inDetail) closeDetail(); }
    else if (key === "h" || key === "H") toggleHeat();
    else if (key === "?") help.hidden = !help.hidden;
    else handled = false;
    if (handled) event.preventDefault();
  });

  document.getElementById("close-detail").addEventListener("click", closeDetail);
  document.getElementById("toggle-heat").addEventListener("change", (event) => toggleHeat(event.target.checked));
  document.getElementById("help-button").addEventListener("click", () => { help.hidden = !help.hidden; });
  document.getElementById("undo-button").addEventListener("click", undo);
  document.getElementById("best-button").addEventListener("click", keepBest);
  for (const button of document.querySelectorAll("[data-decision]")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }

  fetch("/api/items", { credentials: "same-origin" })
    .then((answer) => answer.json())
    .then((data) => {
      items = data.items;
      document.getElementById("summary").textContent =
        items.length + " of " + data.total + " photos (" + data.show + ")" +
        (data.bursts ? ", " + data.bursts + " bursts side by side" : "") + ", worst first · model " + data.model;
      render();
      if (items.length) select(0);
      document.body.dataset.ready = "1";
    })
    .catch((error) => say("cannot load the list: " + error.message, true));
})();
