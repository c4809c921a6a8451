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
    card.setAttribute("role", "option");
    card.setAttribute("aria-selected", items[current] === item ? "true" : "false");
    const img = el("img", "thumb");
    img.loading = "lazy";
    img.alt = item.name;
    img.src = "/api/thumb/" + item.id;
    const meta = el("div", "meta");
    meta.append(el("span", "name", (item.where ? item.where + "/" : "") + item.name));
    meta.append(badge(item.verdict, false));
    if (item.user) meta.append(badge(item.user, true));
    meta.append(el("span", "dim", item.score === null ? "no score" : "score " + item.score.toFixed(3)));
    if (item.kind) meta.append(el("span", "dim", item.kind));
    if (item.partner) meta.append(el("span", "dim", "+ " + item.partner));
    card.title = item.reason;
    card.append(img, meta);
  }

  function cardOf(index) { return grid.children[index]; }

  function render() {
    grid.replaceChildren();
    if (!items.length) {
      grid.append(el("div", "card empty", "Nothing to review here."));
      return;
    }
    items.forEach((item, index) => {
      const card = el("div", "card");
      card.addEventListener("click", () => { select(index); });
      card.addEventListener("dblclick", () => { select(index); openDetail(); });
      renderCard(card, item);
      grid.append(card);
    });
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

  function columns() {
    const first = cardOf(0);
    if (!first) return 1;
    let n = 0;
    for (const card of grid.children) { if (card.offsetTop === first.offsetTop) n += 1; else break; }
    return Math.max(1, n);
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

  async function undo() {
    try {
      const answer = await post("/api/undo", {});
      if (!answer.item) { say("nothing to undo"); return; }
      const index = replace(answer.item);
      say("undone: " + answer.item.name + (answer.problems.length ? " (" + answer.problems.join("; ") + ")" : ""),
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
      detail.dataset.ready = String(item.id);
    } catch (error) {
      crops.replaceChildren(el("p", "dim", "cannot show this photo: " + error.message));
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
    else if (key === "ArrowDown") select(current + (inDetail ? 1 : columns()));
    else if (key === "ArrowUp") select(current - (inDetail ? 1 : columns()));
    else if (key === "x" || key === "X") decide("reject");
    else if (key === "p" || key === "P") decide("keep");
    else if (key === "u" || key === "U") decide("uncertain");
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
  for (const button of document.querySelectorAll("[data-decision]")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }

  fetch("/api/items", { credentials: "same-origin" })
    .then((answer) => answer.json())
    .then((data) => {
      items = data.items;
      document.getElementById("summary").textContent =
        items.length + " of " + data.total + " photos (" + data.show + "), worst first · model " + data.model;
      render();
      if (items.length) select(0);
      document.body.dataset.ready = "1";
    })
    .catch((error) => say("cannot load the list: " + error.message, true));
})();
