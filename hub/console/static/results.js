// Buttons that call a JSON API route with htmx (hx-swap="none") and show its answer:
// a C-ECHO result, or (data-open) go to the page of what the call created.
// Loaded by the pages that have such buttons; console.js adds the CSRF header.
(function () {
  "use strict";
  document.addEventListener("htmx:afterRequest", function (evt) {
    var elt = evt.detail.elt;
    if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-result")) return;
    var out = document.getElementById(elt.getAttribute("data-result"));
    var xhr = evt.detail.xhr;
    var body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = { detail: xhr.statusText }; }
    if (xhr.status >= 200 && xhr.status < 300 && elt.hasAttribute("data-open") && body.id) {
      window.location.assign(elt.getAttribute("data-open") + encodeURIComponent(body.id));
      return;
    }
    if (!out) return;
    var ok = xhr.status >= 200 && xhr.status < 300 && body.ok !== false;
    var text = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || "");
    if (typeof body.ms === "number") text += " (" + Math.round(body.ms) + " ms)";
    if (typeof body.status === "number") text += " · status 0x" + ("0000" + body.status.toString(16).toUpperCase()).slice(-4);
    out.textContent = (ok ? "OK: " : "Failed: ") + text;
    out.className = "result " + (ok ? "ok" : "bad");
  });
})();
