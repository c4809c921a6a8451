// cull review: keyboard-first grid and detail view. No inline script (strict CSP), no dependencies.
"use strict";
(function () {
  const STOPPED = "cull review has stopped (idle timeout or Ctrl-C): start it again to go on (decisions already saved are kept)";
  const access = sessionSecret();
  const token = access.secret;
  const grid = document.getElementById("grid");
  const detail = document.getElementById("detail");
  const help = document.getElementById("help");
  const status = document.getElementById("status");
  const stack = document.getElementById("stack");
  let items = [];
  let cards = [];  // cards[i] shows items[i]; the frames of a burst sit together in one .burst box
  let current = 0;
  let detailFor = null;
  let detailRequest = null;  // the AbortController of the detail being fetched: a newer one aborts it
  let saving = Promise.resolve();  // decisions are sent one at a time, in the order the keys were pressed
  const mine = [];  // the ids this page decided, newest last: Z selects the newest at once

  function sessionSecret() {
    // the page opened by the printed address carries the session secret once; this tab keeps it in
    // sessionStorage (a reload still works) and in ``token`` (the page works while it stays open, even
    // where the browser refuses storage), and the address bar loses the token
    const given = document.querySelector('meta[name="cull-token"]').content;
    if (given) history.replaceState(null, "", "/");
    try {
      if (given) sessionStorage.setItem("cull-review", given);
      return { secret: given || sessionStorage.getItem("cull-review"), stored: true };
    } catch (error) {  // site data blocked for 127.0.0.1: reading sessionStorage throws SecurityError
      return { secret: given, stored: false };
    }
  }

  function say(text, error) {
    status.textContent = text;
    status.classList.toggle("error", !!error);
  }

  function failure(message, locked) {
    // locked: the tab cannot go on (the server stopped, or restarted with new secrets); the message says why
    const error = new Error(message);
    error.locked = locked;
    return error;
  }

  async function api(url, options) {
    const headers = { "X-Cull-Token": token };
    if (options && options.body) headers["Content-Type"] = "application/json";
    let answer;
    try {
      answer = await fetch(url, { ...options, headers: headers, credentials: "omit" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw failure(STOPPED, true);  // nothing answers on the page's own address
    }
    const data = answer.headers.get("content-type") && answer.headers.get("content-type").includes("json")
      ? await answer.json() : { error: await answer.text() };
    if (!answer.ok) throw failure(data.error || answer.statusText, answer.status === 401 || answer.status === 403);
    return data;
  }

  function post(url, body) {
    return api(url, { method: "POST", body: JSON.stringify(body || {}) });
  }

  function queue(job) {
    saving = saving.then(job);  // each job catches its own errors, so one failure does not stop the rest
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
    card.dataset.saving = item.saving || "";
    if (item.error) card.dataset.error = item.error; else delete card.dataset.error;
    if (item.burst) { card.dataset.burst = item.burst; card.dataset.rank = item.burst_rank; }
    card.setAttribute("role", "option");
    card.setAttribute("aria-selected", items[current] === item ? "true" : "false");
    const img = el("img", "thumb");
    img.loading = "lazy";
    img.alt = item.name;
    img.src = item.thumb;
    const meta = el("div", "meta");
    meta.append(el("span", "name", (item.where ? item.where + "/" : "") + item.name));
    if (item.burst) {
      if (item.burst_rank === 1) meta.append(el("span", "badge best", "★ best"));
      meta.append(el("span", "rank", "#" + item.burst_rank + "/" + item.burst_size));
    }
    meta.append(badge(item.verdict, false));
    if (item.user) meta.append(badge(item.user, true));
    if (item.saving) meta.append(el("span", "badge saving", "saving: " + item.saving + "…"));
    if (item.error) {
      const failed = el("span", "badge failed", item.error);
      failed.title = item.error;
      meta.append(failed);
    }
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

  function highlight(index, on) {
    // only the class and the aria state change: no card is rebuilt, so nothing is laid out again
    const card = cardOf(index);
    if (!card) return;
    card.classList.toggle("current", on);
    card.setAttribute("aria-selected", on ? "true" : "false");
  }

  function select(index) {
    if (!items.length) return;
    highlight(current, false);
    current = Math.max(0, Math.min(items.length - 1, index));
    highlight(current, true);
    cardOf(current).scrollIntoView({ block: "nearest" });
    if (!detail.hidden) openDetail();
  }

  function vertical(step) {
    // the card in the next row up (step -1) or down (+1) nearest to the current card's column; cards
    // are listed row by row, so only the cards up to the end of that row are measured, never all of them
    const here = cardOf(current);
    if (!here) return current;
    const from = here.getBoundingClientRect();
    let best = current, bestX = Infinity, rowDy = null;
    for (let index = current + step; index >= 0 && index < cards.length; index += step) {
      const r = cards[index].getBoundingClientRect();
      const dy = (r.top - from.top) * step;
      if (dy < 4) continue;
      if (rowDy === null) rowDy = dy;
      else if (dy > rowDy + 4) break;
      const dx = Math.abs(r.left - from.left);
      if (dx < bestX) { best = index; bestX = dx; }
    }
    return best;
  }

  function replace(updated) {
    const index = items.findIndex((item) => item.id === updated.id);
    if (index < 0) return -1;
    items[index] = updated;
    renderCard(cardOf(index), updated);
    if (detailFor === updated.id) renderFacts(updated);
    return index;
  }

  function mark(id, what) {
    // show on the photo's card that a decision is on its way (saving) or was refused (error)
    const index = items.findIndex((item) => item.id === id);
    if (index < 0) return;
    Object.assign(items[index], what);
    renderCard(cardOf(index), items[index]);
  }

  function forget(id) {
    const at = mine.lastIndexOf(id);
    if (at >= 0) mine.splice(at, 1);
  }

  function next(index) {
    // after a decision: on to the photo after ``index`` at once, before the answer comes
    if (index < items.length - 1) select(index + 1); else if (!detail.hidden) openDetail(); else select(current);
  }

  function decide(decision) {
    // the photo selected when the key was pressed gets the decision, whatever is selected when it is sent
    const item = items[current];
    if (!item) return;
    mark(item.id, { saving: decision, error: null });
    mine.push(item.id);
    next(current);
    queue(async () => {
      try {
        const answer = await post("/api/decide", { id: item.id, decision: decision });
        replace(answer.item);
        say(item.name + ": " + decision + " (Z undoes)");
      } catch (error) {
        forget(item.id);
        mark(item.id, { saving: null, error: "not saved: " + error.message });
        say(item.name + ": not saved: " + error.message, true);
      }
    });
  }

  function keepBest() {
    const range = burstRange(current);
    if (!range) { say("not a burst: B keeps the best frame of a burst (cull review --bursts)"); return; }
    const item = items[current];
    const frames = items.slice(range[0], range[1] + 1);
    for (const frame of frames) mark(frame.id, { saving: "B", error: null });
    mine.push(frames[0].id);
    next(range[1]);
    queue(async () => {
      try {
        const answer = await post("/api/keep-best", { id: item.id });
        for (const frame of answer.items) replace(frame);
        const kept = answer.items.find((frame) => frame.user === "keep") || answer.items[0];
        say("burst: kept " + kept.name + ", " + (answer.items.length - 1) + " other frames uncertain (Z undoes)");
      } catch (error) {
        forget(frames[0].id);
        for (const frame of frames) mark(frame.id, { saving: null, error: "burst not saved: " + error.message });
        say(item.name + ": burst not saved: " + error.message, true);
      }
    });
  }

  function undo() {
    // Z selects the photo of this page's last decision at once; the answer corrects that where
    // another tab decided since
    const guess = mine.pop();
    const at = items.findIndex((item) => item.id === guess);
    if (at >= 0) select(at);
    queue(async () => {
      try {
        const answer = await post("/api/undo", {});
        if (!answer.item) { say("nothing to undo"); return; }
        for (const other of answer.items) replace(other);
        const index = replace(answer.item);
        const what = answer.items.length > 1 ? "burst of " + answer.items.length + " frames" : answer.item.name;
        if (answer.kept) {
          mine.push(answer.item.id);
          say("not undone: " + what + " (" + answer.problems.join("; ") + "); its cards show what its files hold. " +
              "Z again tries once more, then gives this step up", true);
        } else if (answer.problems.length) {
          say("gave up undoing " + what + " (" + answer.problems.join("; ") + "); its cards show what its files hold", true);
        } else {
          say("undone: " + what);
        }
        if (index >= 0 && answer.item.id !== guess) select(index);
      } catch (error) {
        say("undo failed: " + error.message, true);
      }
    });
  }

  function renderFacts(item) {
    document.getElementById("detail-name").textContent = (item.where ? item.where + "/" : "") + item.name;
    const facts = document.getElementById("detail-facts");
    facts.replaceChildren(badge(item.verdict, false));
    if (item.user) facts.append(" ", badge(item.user, true));
    if (item.protected) facts.append(" ", el("span", "badge protected", item.protected));
    if (item.burst) facts.append(" burst #" + item.burst_rank + "/" + item.burst_size + (item.burst_rank === 1 ? " ★ best" : "") + " ·");
    facts.append(" " + (item.score === null ? "no score" : "score " + item.score.toFixed(3)) +
      (item.kind ? " · " + item.kind : "") + (item.partner ? " · + " + item.partner : "") + " · " + item.reason);
  }

  async function openDetail() {
    const item = items[current];
    if (!item) return;
    detail.hidden = false;
    detailFor = item.id;
    delete detail.dataset.ready;
    renderFacts(item);
    const crops = document.getElementById("crops");
    crops.replaceChildren(el("p", "dim", "scoring patches…"));
    if (detailRequest) detailRequest.abort();  // the server drops work it has not started for it
    const request = detailRequest = new AbortController();
    try {
      const info = await api("/api/detail/" + item.id, { signal: request.signal });
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
      if (request.signal.aborted) return;
      const plain = error.locked || error.message.startsWith("cannot show");
      crops.replaceChildren(el("p", "dim", plain ? error.message : "cannot show this photo: " + error.message));
    } finally {
      if (detailRequest === request) detailRequest = null;
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
    if (detailRequest) detailRequest.abort();
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

  function listUnreadable(rows) {
    const box = document.getElementById("unreadable");
    box.hidden = !rows.length;
    if (!rows.length) return;
    document.getElementById("unreadable-count").textContent = rows.length + " not readable";
    const list = document.getElementById("unreadable-list");
    list.replaceChildren(...rows.map((row) => el("li", null, (row.where ? row.where + "/" : "") + row.name + ": " + row.why)));
  }

  const BLOCKED = "the browser blocks site data (cookies and site data) for this page, so this tab cannot keep " +
    "the review's access: ";
  if (!token) {
    say(access.stored ? "this tab has no access to the review: open the address cull review printed " +
        "(it opens the page once; to open it again, start cull review again)"
      : BLOCKED + "allow site data for 127.0.0.1, then start cull review again and open the address it prints", true);
    return;
  }
  api("/api/items")
    .then((data) => {
      items = data.items;
      document.getElementById("summary").textContent =
        items.length + " of " + data.total + " photos (" + data.show + ")" +
        (data.bursts ? ", " + data.bursts + " bursts side by side" : "") + ", worst first · model " + data.model;
      listUnreadable(data.unreadable || []);
      render();
      if (items.length) select(0);
      document.body.dataset.ready = "1";
      if (!access.stored) say(BLOCKED + "it works until you reload or leave it (allow site data for 127.0.0.1 to keep it)", true);
    })
    .catch((error) => say(error.locked ? error.message : "cannot load the list: " + error.message, true));
})();
