// launchyard web UI: small progressive enhancements, no build step, no third-party code.
"use strict";

const POLL_MS = 2000;

async function getJSON(url, options) {
  const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
  if (response.status === 401) {
    window.location.reload(); // the session ended: the page redirects to the login form
    throw new Error("not logged in");
  }
  const body = await response.json();
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || response.statusText);
    error.fields = (body.error && body.error.fields) || {};
    throw error;
  }
  return body;
}

// Replace a page part with fresh HTML from its live endpoint every POLL_MS.
function pollLive(element, onUpdate) {
  let stopped = false;
  async function tick() {
    if (stopped) return;
    if (!document.hidden) {
      try {
        const data = await getJSON(element.dataset.liveUrl);
        element.innerHTML = data.html;
        if (onUpdate && onUpdate(data) === false) stopped = true;
      } catch (err) {
        console.warn("live update failed:", err);
      }
    }
    if (!stopped) setTimeout(tick, POLL_MS);
  }
  setTimeout(tick, POLL_MS);
}

function setupQueuePage() {
  const live = document.getElementById("queue-live");
  if (live) pollLive(live);
}

function setupRunPage() {
  const live = document.getElementById("run-live");
  const outputs = document.getElementById("run-outputs");
  let shownOutputs = null;
  if (live && live.dataset.terminal !== "yes") {
    pollLive(live, (data) => {
      // Replaced only when the list changed, so images are not reloaded every poll.
      if (outputs && data.outputs_html !== shownOutputs) {
        outputs.innerHTML = data.outputs_html;
        shownOutputs = data.outputs_html;
      }
      return !data.terminal;
    });
  }
  const log = document.getElementById("log");
  if (!log || !window.EventSource) return;
  const status = document.getElementById("log-status");
  const follow = document.getElementById("log-follow");
  const source = new EventSource(log.dataset.streamUrl);
  source.onopen = () => { status.textContent = "Following the log live."; };
  source.onmessage = (event) => {
    log.appendChild(document.createTextNode(JSON.parse(event.data)));
    if (follow.checked) log.scrollTop = log.scrollHeight;
  };
  source.addEventListener("end", () => {
    source.close();
    status.textContent = "The run has ended; this is the whole log.";
  });
  source.onerror = () => { status.textContent = "Connection lost; reconnecting…"; };
  // Scrolling up to read pauses following; scrolling back to the bottom resumes it.
  log.addEventListener("scroll", () => {
    follow.checked = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  });
}

function currentRows(container) {
  const rows = {};
  for (const input of container.querySelectorAll("[name^='var.']")) {
    const [, rest] = input.name.split(/^var\./);
    const dot = rest.lastIndexOf(".");
    const name = rest.slice(0, dot);
    rows[name] = rows[name] || {};
    rows[name][rest.slice(dot + 1)] = input.value;
  }
  return rows;
}

function selectLineColumn(textarea, line, column) {
  const lines = textarea.value.split("\n");
  let offset = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
  offset += Math.max(0, column - 1);
  textarea.focus();
  textarea.setSelectionRange(offset, offset + 1);
}

function setupQueueForm() {
  const button = document.getElementById("parse-config");
  if (!button) return;
  const textarea = document.getElementById("q-config");
  const result = document.getElementById("parse-result");
  const rowsBox = document.getElementById("var-rows");
  button.addEventListener("click", async () => {
    result.className = "";
    result.textContent = "Parsing…";
    try {
      const data = await getJSON(button.dataset.parseUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ config: textarea.value, rows: currentRows(rowsBox) }),
      });
      rowsBox.innerHTML = data.rows_html;
      const vars = data.variables.length ? data.variables.join(", ") : "none";
      const macros = data.macros.length ? data.macros.map((m) => "${" + m + "}").join(", ") : "none";
      result.className = "ok";
      result.textContent = `Configuration is valid. Variables: ${vars}. Macros: ${macros}.`;
    } catch (err) {
      result.className = "error";
      result.setAttribute("role", "alert");
      result.textContent = err.message;
      if (err.fields && err.fields.line) selectLineColumn(textarea, err.fields.line, err.fields.column || 1);
    }
  });
}

// The launch drawer shows the fields of the selected queue only (others are disabled: not sent).
function setupLaunchForm() {
  for (const select of document.querySelectorAll("[data-queue-select]")) {
    const form = select.form;
    const sync = () => {
      for (const set of form.querySelectorAll("fieldset[data-queue]")) {
        const on = set.dataset.queue === select.value;
        set.hidden = !on;
        set.disabled = !on;
      }
    };
    select.addEventListener("change", sync);
    sync();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupQueuePage();
  setupRunPage();
  setupQueueForm();
  setupLaunchForm();
});
