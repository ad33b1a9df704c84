/* Behaviour every page shares, kept out of the HTML so the Content-Security-Policy can forbid inline scripts
   and event handlers: confirmations (form[data-confirm]), selects that submit their form (data-autosubmit),
   copy buttons (data-copy="<id of the element to copy>") and print buttons (data-print). Listeners sit on the
   document, so content htmx swaps in later works too. */
(function () {
  "use strict";

  // Capture phase: runs before htmx's or the browser's own handling of the submit.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
      e.stopPropagation();
    }
  }, true);

  document.addEventListener("change", function (e) {
    if (e.target.matches("select[data-autosubmit]")) e.target.form.requestSubmit();
  });

  document.addEventListener("click", function (e) {
    if (e.target.closest("[data-print]")) {
      window.print();
      return;
    }
    var copy = e.target.closest("[data-copy]");
    if (copy) {
      var text = document.getElementById(copy.dataset.copy).textContent;
      navigator.clipboard.writeText(text).then(function () { copy.textContent = copy.dataset.done; });
    }
  });
})();
