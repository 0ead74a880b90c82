// The console's only script (the CSP allows no inline code). htmx does the polling
// and swaps; this file gives it the session's CSRF token and keeps polls polite.
(function () {
  "use strict";
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  // Every htmx request carries the token, as forms carry it in a hidden field.
  document.addEventListener("htmx:configRequest", function (evt) {
    evt.detail.headers["X-CSRF-Token"] = csrf();
    // A list refreshing itself is not someone using the console: the hub does not
    // count it as use of the session, so an open console still ends when idle.
    var elt = evt.detail.elt;
    if (evt.detail.verb === "get" && elt && elt.classList && elt.classList.contains("live")) {
      evt.detail.headers["X-Console-Poll"] = "1";
    }
  });
  // A poll must not pull the ground from under someone: skip it while focus or an
  // open dialog is inside the region it would replace.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var region = evt.detail.elt;
    if (!region || !region.classList || !region.classList.contains("live")) return;
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active)) {
      evt.preventDefault();
    }
  });
})();
