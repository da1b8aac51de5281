/* medcurric review report: filtering, image loading and reviewer marks. Plain JavaScript, no network. */
(function () {
  "use strict";

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function loadImages() {
    var images = readJson("mc-images") || {};
    document.querySelectorAll("[data-img]").forEach(function (el) {
      var src = images[el.getAttribute("data-img")];
      if (!src) { return; }
      if (el.tagName.toLowerCase() === "image") {
        el.setAttribute("href", src);
      } else {
        el.setAttribute("src", src);
      }
    });
  }

  function currentFilters() {
    var f = {};
    document.querySelectorAll("[data-filter]").forEach(function (el) {
      f[el.getAttribute("data-filter")] = el.value;
    });
    return f;
  }

  function matches(el, f) {
    for (var key in f) {
      var want = f[key];
      if (!want) { continue; }
      if (key === "text") {
        if ((el.getAttribute("data-text") || "").indexOf(want.toLowerCase()) < 0) { return false; }
      } else if (key === "failed") {
        var failed = (el.getAttribute("data-failed") || "").split(" ");
        if (failed.indexOf(want) < 0) { return false; }
      } else if (el.getAttribute("data-" + key) !== want) {
        return false;
      }
    }
    return true;
  }

  function applyFilters() {
    var f = currentFilters();
    var shown = 0;
    document.querySelectorAll("tr[data-id]").forEach(function (row) {
      var ok = matches(row, f);
      row.classList.toggle("hidden", !ok);
      if (ok) { shown += 1; }
    });
    document.querySelectorAll(".card[data-id]").forEach(function (card) {
      card.classList.toggle("hidden", !matches(card, f));
    });
    var counter = document.getElementById("mc-count");
    if (counter) { counter.textContent = shown + " shown"; }
  }

  var storeKey = "medcurric-review-" + (document.body.getAttribute("data-report") || "");

  function loadMarks() {
    try { return JSON.parse(window.localStorage.getItem(storeKey) || "{}"); } catch (e) { return {}; }
  }

  function saveMarks(marks) {
    try { window.localStorage.setItem(storeKey, JSON.stringify(marks)); } catch (e) { /* file:// may refuse */ }
  }

  var marks = {};

  function collectMarks() {
    document.querySelectorAll(".marks[data-id]").forEach(function (box) {
      var id = box.getAttribute("data-id");
      var chosen = box.querySelector("input[type=radio]:checked");
      var note = box.querySelector("textarea").value;
      if (chosen || note) {
        marks[id] = { decision: chosen ? chosen.value : null, note: note };
      } else {
        delete marks[id];
      }
    });
    saveMarks(marks);
    var counter = document.getElementById("mc-marked");
    if (counter) { counter.textContent = Object.keys(marks).length + " marked"; }
  }

  function restoreMarks() {
    marks = loadMarks();
    document.querySelectorAll(".marks[data-id]").forEach(function (box) {
      var m = marks[box.getAttribute("data-id")];
      if (!m) { return; }
      box.querySelectorAll("input[type=radio]").forEach(function (r) { r.checked = r.value === m.decision; });
      box.querySelector("textarea").value = m.note || "";
    });
  }

  function decisionsJsonl() {
    collectMarks();
    var reviewer = (document.getElementById("mc-reviewer") || { value: "" }).value;
    var lines = Object.keys(marks).sort().map(function (id) {
      return JSON.stringify({ id: id, decision: marks[id].decision, note: marks[id].note, reviewer: reviewer });
    });
    return lines.length ? lines.join("\n") + "\n" : "";
  }

  function exportMarks() {
    var blob = new Blob([decisionsJsonl()], { type: "application/x-ndjson" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "review-decisions.jsonl";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  }

  window.medcurricReview = { decisionsJsonl: decisionsJsonl, applyFilters: applyFilters };

  document.addEventListener("DOMContentLoaded", function () {
    loadImages();
    document.querySelectorAll("[data-filter]").forEach(function (el) {
      el.addEventListener("input", applyFilters);
      el.addEventListener("change", applyFilters);
    });
    restoreMarks();
    document.querySelectorAll(".marks[data-id]").forEach(function (box) {
      box.addEventListener("change", collectMarks);
      box.addEventListener("input", collectMarks);
    });
    var button = document.getElementById("mc-export");
    if (button) { button.addEventListener("click", exportMarks); }
    collectMarks();
    applyFilters();
  });
})();
