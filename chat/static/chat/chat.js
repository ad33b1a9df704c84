/* Chat page behaviour: stream answers (SSE), keyboard send, citation chips, small UI toggles. No dependencies
   beyond htmx. Answer HTML arrives already sanitised by the server. */
(function () {
  "use strict";

  function refreshAnswer(el) {
    var url = el.getAttribute("data-refresh");
    if (url) htmx.ajax("GET", url, { target: "#" + el.id, swap: "outerHTML" });
  }

  function follow(el) {
    if (el.dataset.following) return;
    el.dataset.following = "1";
    var body = el.querySelector(".answer-body");
    var source = new EventSource(el.getAttribute("data-stream"));
    var finished = false;
    var finish = function () {
      if (finished) return;
      finished = true;
      source.close();
      refreshAnswer(el);
    };
    var stepLabel = el.querySelector(".answer-progress .step-label");
    // Progress steps (searching, N sources found, writing/quoting) show in the pending bubble until text arrives.
    source.addEventListener("step", function (e) {
      var data = JSON.parse(e.data);
      if (!stepLabel || !data.label) return;
      stepLabel.textContent = data.label;
      stepLabel.setAttribute("data-step", data.step || "");
    });
    source.addEventListener("html", function (e) {
      var thread = document.getElementById("thread");
      var atBottom = thread && thread.scrollHeight - thread.scrollTop - thread.clientHeight < 80;
      var html = JSON.parse(e.data).html;
      body.innerHTML = html;
      // The text replaces the progress line; a restarted answer (empty text again) shows its steps again.
      el.classList.toggle("has-text", !!html.trim());
      if (atBottom) thread.scrollTop = thread.scrollHeight;
    });
    source.addEventListener("done", finish);
    source.addEventListener("error", function (e) {
      // A server `error` event carries data: the answer failed. Without data it is a dropped connection:
      // EventSource reconnects by itself and resumes after Last-Event-ID.
      if (e.data) finish();
    });
    // The element is replaced when the answer ends; stop following if it goes away some other way.
    var observer = new MutationObserver(function () {
      if (!document.body.contains(el)) { source.close(); observer.disconnect(); }
    });
    observer.observe(document.body, { childList: true, subtree: true });
  }

  function scan(root) {
    if (root.matches && root.matches("[data-stream]")) follow(root);
    if (root.querySelectorAll) root.querySelectorAll("[data-stream]").forEach(follow);
  }

  htmx.onLoad(scan);

  // data-current-conversation="<param>": send the open conversation's id with the request under that name
  // (it changes without a page load; an hx-vals "js:" expression would need eval, which the CSP forbids).
  document.addEventListener("htmx:configRequest", function (e) {
    var param = e.detail.elt.getAttribute("data-current-conversation");
    if (!param) return;
    var current = document.getElementById("conversation-id");
    e.detail.parameters[param] = current ? current.value : "";
  });

  document.addEventListener("keydown", function (e) {
    var input = e.target;
    if (input.id !== "ask-input" || e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
    e.preventDefault();
    if (input.value.trim()) input.form.requestSubmit();
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.detail.elt;
    if (form.id === "ask-form" && e.detail.successful && !document.querySelector("#ask-error .error")) {
      form.querySelector("#ask-input").value = "";
      form.querySelector("#ask-input").focus();
      var thread = document.getElementById("thread");
      if (thread) thread.scrollTop = thread.scrollHeight;
    }
  });

  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "chat-main") {
      var main = document.getElementById("chat-main");
      document.title = (main.getAttribute("data-title") || "") + " · ragdesk";
      var thread = document.getElementById("thread");
      if (thread) thread.scrollTop = thread.scrollHeight;
      var input = document.getElementById("ask-input");
      if (input) input.focus();
      document.getElementById("chat-sidebar").classList.remove("open");
      var current = document.getElementById("conversation-id").value;
      document.querySelectorAll(".conversation").forEach(function (li) {
        var active = li.id === "conversation-" + current;
        li.classList.toggle("active", active);
        var link = li.querySelector("a");
        if (active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
      });
    }
  });

  document.addEventListener("click", function (e) {
    var chip = e.target.closest(".cite-chip");
    if (chip) {
      var source = document.getElementById(chip.getAttribute("aria-controls"));
      if (source) {
        // Open the source and the collapsed "N sources" list around it.
        for (var node = source; node; node = node.parentElement) {
          if (node.tagName === "DETAILS") node.open = true;
        }
        source.scrollIntoView({ block: "nearest", behavior: "smooth" });
        source.querySelector("summary").focus();
      }
      return;
    }
    var toggle = e.target.closest(".rename-toggle");
    if (toggle) {
      var form = document.getElementById(toggle.getAttribute("aria-controls"));
      form.hidden = !form.hidden;
      toggle.setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) form.querySelector("input").select();
      return;
    }
    var side = e.target.closest(".sidebar-toggle");
    if (side) {
      var sidebar = document.getElementById("chat-sidebar");
      var open = sidebar.classList.toggle("open");
      side.setAttribute("aria-expanded", String(open));
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var thread = document.getElementById("thread");
    if (thread) thread.scrollTop = thread.scrollHeight;
  });
})();
