// Records every script error in the page itself (data-errors and the #js-errors list), so a
// headless browser, or a reader, can see that the report drew without errors.
"use strict";
window.reportErrors = [];
window.recordReportError = function (message) {
  window.reportErrors.push(String(message));
  const show = function () {
    document.body.dataset.errors = String(window.reportErrors.length);
    const box = document.getElementById("js-errors");
    if (!box) return;
    box.hidden = false;
    const li = document.createElement("li");
    li.textContent = String(message);
    box.querySelector("ul").appendChild(li);
  };
  if (document.body) show(); else document.addEventListener("DOMContentLoaded", show);
};
window.addEventListener("error", function (e) {
  window.recordReportError((e.message || "error") + " (" + (e.filename || "page") + ":" + (e.lineno || 0) + ")");
});
window.addEventListener("unhandledrejection", function (e) {
  window.recordReportError("unhandled rejection: " + (e.reason && e.reason.message ? e.reason.message : e.reason));
});
(function () {
  const original = console.error;
  console.error = function () {
    window.recordReportError("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
})();
