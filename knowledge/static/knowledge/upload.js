// Drag-and-drop (or pick) several files; each uploads on its own request with its own progress bar.
// Files over the size limit or of an unsupported type are refused here, before any byte is sent.
(function () {
  "use strict";
  const zone = document.getElementById("dropzone");
  if (!zone) return;
  zone.classList.add("enhanced");  // the plain form's submit button is only for pages without this script
  const input = document.getElementById("file-input");
  const list = document.getElementById("upload-list");
  const maxBytes = parseInt(zone.dataset.maxBytes, 10);
  const extensions = zone.dataset.extensions.split(",");
  const csrf = (document.querySelector("[name=csrfmiddlewaretoken]") || {}).value ||
    (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
  const PARALLEL = 2;
  const waiting = [];
  let running = 0;

  function row(file) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    const note = document.createElement("span");
    note.className = "upload-note muted small";
    li.append(name, bar, note);
    list.prepend(li);
    return { li, bar, note };
  }

  function finish(ui, ok, message) {
    ui.li.classList.add(ok ? "done" : "failed");
    ui.bar.value = 100;
    if (!ok) ui.bar.remove();
    ui.note.textContent = message;
  }

  // An uploaded file's row then follows its document's state in the documents table (refreshed by htmx):
  // status, progress or the reason it failed, and any reading warning.
  function follow() {
    for (const li of list.querySelectorAll("li[data-document-id]")) {
      const row = document.getElementById("doc-" + li.dataset.documentId);
      if (!row) continue;
      const status = row.dataset.status;
      const badge = row.querySelector(".badge");
      const details = [...row.querySelectorAll(".progress-cell, .doc-warning")]
        .map((el) => el.textContent.replace(/\s+/g, " ").trim()).filter(Boolean);
      const note = li.querySelector(".upload-note");
      note.textContent = [badge ? badge.textContent.trim() : status, ...details].join(" · ");
      li.dataset.status = status;
      li.classList.toggle("failed", status === "failed");
      li.classList.toggle("done", status !== "failed");
      const bar = li.querySelector("progress");
      if (bar && (status === "ready" || status === "failed")) bar.remove();
    }
  }
  document.body.addEventListener("htmx:afterSettle", follow);

  function refresh() {
    if (window.htmx) {
      window.htmx.ajax("GET", zone.dataset.refreshUrl, { target: "#documents", swap: "outerHTML" });
    }
  }

  function next() {
    while (running < PARALLEL && waiting.length) {
      const job = waiting.shift();
      running += 1;
      send(job.file, job.ui);
    }
    if (!running && !waiting.length) refresh();
  }

  function send(file, ui) {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", zone.dataset.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) ui.bar.value = Math.round((100 * e.loaded) / e.total); };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = {}; }
      const message = body.message || (body.error && body.error.message) || zone.dataset.msgFailed;
      finish(ui, xhr.status < 300, message);
      if (xhr.status === 201 && body.document_id) ui.li.dataset.documentId = body.document_id;
      running -= 1;
      next();
    };
    xhr.onerror = () => { finish(ui, false, zone.dataset.msgFailed); running -= 1; next(); };
    ui.note.textContent = zone.dataset.msgUploading;
    xhr.send(form);
  }

  function accept(files) {
    for (const file of files) {
      const ui = row(file);
      const dot = file.name.lastIndexOf(".");
      const ext = dot >= 0 ? file.name.slice(dot).toLowerCase() : "";
      if (!extensions.includes(ext)) { finish(ui, false, zone.dataset.msgType); continue; }
      if (file.size > maxBytes) { finish(ui, false, zone.dataset.msgTooLarge); continue; }
      waiting.push({ file, ui });
    }
    next();
  }

  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
    e.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (e) => {
    e.preventDefault();
    zone.classList.remove("over");
  }));
  zone.addEventListener("drop", (e) => { if (e.dataTransfer) accept(e.dataTransfer.files); });
  input.addEventListener("change", () => { accept(input.files); input.value = ""; });
})();
