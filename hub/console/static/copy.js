// "Copy" beside a read-only field (data-copy="<field id>"): puts the field's text on the
// clipboard. The button stays hidden without this script; the field can still be
// selected and copied by hand. Loaded by the pages that have such a field.
(function () {
  "use strict";
  function said(button, text) {
    var out = document.getElementById(button.getAttribute("data-copy") + "-copied");
    if (out) out.textContent = text;
  }
  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) return;
    field.focus();
    field.select();
    // The Clipboard API needs https (or localhost); a clinic hub on plain http
    // falls back to the older command on the selection.
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(
        function () { said(button, "Copied"); },
        function () { said(button, document.execCommand("copy") ? "Copied" : "Select it and copy"); }
      );
    } else {
      said(button, document.execCommand("copy") ? "Copied" : "Select it and copy");
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copy(button); });
    });
  });
})();
