// Progressive enhancement only: every page works without this script.
// 1. The live part (cards, charts, topics, relays) refreshes itself every few seconds.
// 2. Forms marked data-confirm ask before discarding or replaying.
"use strict";
(function () {
  const live = document.getElementById("live");
  const period = Number(document.body.dataset.refreshMs || 0);
  if (live && period > 0) {
    setInterval(async function () {
      if (document.hidden) return;
      try {
        const response = await fetch(live.dataset.src, { credentials: "same-origin", cache: "no-store" });
        if (response.ok) live.innerHTML = await response.text();
      } catch (_) { /* the next tick tries again */ }
    }, period);
  }
  document.addEventListener("submit", function (event) {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
