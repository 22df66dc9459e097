// Small enhancements for every page; everything works without them.

// Live "expires in" countdowns; the absolute time stays in the title.
function remaining(ms) {
  if (ms <= 0) return null;
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `in ${d} d ${h} h ${m} min`;
  if (h) return `in ${h} h ${m} min ${sec} s`;
  return `in ${m} min ${sec} s`;
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time.countdown")) {
    const text = remaining(Date.parse(el.dateTime) - now);
    if (text === null) {
      el.classList.remove("countdown");
      el.textContent = "expired";
      const row = el.closest("tr");
      row?.querySelector(".status")?.replaceChildren("expired");
      row?.querySelector("a[download]")?.remove(); // the server answers 410 from now on anyway
    } else if (el.textContent !== text) {
      el.textContent = text;
    }
  }
}
if (document.querySelector("time.countdown")) {
  tick();
  setInterval(tick, 1000);
}

// Copy buttons (hidden without JavaScript, where the full value is in the title).
for (const button of document.querySelectorAll("button.copy")) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
    } catch {
      // No clipboard (plain http on another host): select the text so Ctrl+C works.
      const code = button.previousElementSibling;
      window.getSelection().selectAllChildren(code);
      code.textContent = button.dataset.copy;
      button.textContent = "Press Ctrl+C";
    }
    setTimeout(() => {
      button.textContent = "Copy";
    }, 2000);
  });
}
