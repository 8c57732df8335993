// hookstream console: the live parts, as progressive enhancement. Every page reads
// fine without this file; with it, parts marked data-live refresh themselves.
(function () {
  "use strict";
  // <img data-live-img="2000">: reloaded every N ms (the throughput chart).
  document.querySelectorAll("img[data-live-img]").forEach(function (img) {
    var every = parseInt(img.getAttribute("data-live-img"), 10) || 2000;
    var base = img.getAttribute("src").split("?")[0];
    setInterval(function () { img.src = base + "?t=" + Date.now(); }, every);
  });
  // <section data-live="5000" id="…">: its HTML fetched again from this page every N ms.
  document.querySelectorAll("[data-live]").forEach(function (part) {
    var every = parseInt(part.getAttribute("data-live"), 10) || 5000;
    setInterval(function () {
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(part.id);
          if (fresh) { part.innerHTML = fresh.innerHTML; }
        })
        .catch(function () {});
    }, every);
  });
})();
