// The skydag console's only script: no framework, no build step, nothing fetched from
// elsewhere. It keeps the live region fresh (a poll of the page's own fragment every
// second) and sends the action forms as the console's JSON actions.
"use strict";

const POLL_MS = 1000;

function fragmentUrl() {
  const url = new URL(window.location.href);
  url.hash = "";
  url.searchParams.set("fragment", "1");
  return url.toString();
}

let lastFragment = null;
let polling = false;

async function refresh() {
  const live = document.getElementById("live");
  if (!live || polling || document.hidden) return;
  polling = true;
  try {
    const response = await fetch(fragmentUrl(), { headers: { Accept: "text/html" } });
    const text = await response.text();
    if (lastFragment === null) lastFragment = live.innerHTML;
    if (text !== lastFragment) {
      const focused = document.activeElement && document.activeElement.id;
      live.innerHTML = text;
      lastFragment = text;
      if (focused) {
        const again = document.getElementById(focused);
        if (again && live.contains(again)) again.focus();
      }
      document.body.dataset.refreshed = String(Date.now());
    }
  } catch (error) {
    // The console or AWS did not answer this time: the next poll tries again.
  } finally {
    polling = false;
  }
}

function showStatus(kind, text, items) {
  const status = document.getElementById("status");
  if (!status) return;
  status.hidden = false;
  status.className = "status " + kind;
  status.textContent = text;
  if (items && items.length) {
    const list = document.createElement("ul");
    for (const item of items) {
      const entry = document.createElement("li");
      entry.textContent = item;
      list.appendChild(entry);
    }
    status.appendChild(list);
  }
  status.focus();
}

async function submitAction(event) {
  const form = event.target.closest("form[data-action]");
  if (!form) return;
  event.preventDefault();
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) return;
  const button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  try {
    const response = await fetch(form.dataset.action, {
      method: "POST",
      headers: { "X-Skydag-Console": "1", Accept: "application/json" },
      body: new URLSearchParams(new FormData(form)),
    });
    const answer = await response.json();
    if (response.ok) {
      const sent = answer.event_id ? " (event " + answer.event_id + ")" : "";
      showStatus("ok", "Done: " + answer.message + sent, answer.items);
      refresh();
    } else {
      showStatus("failed", "Refused: " + answer.error);
    }
  } catch (error) {
    showStatus("failed", "The console did not answer: " + error);
  } finally {
    if (button) button.disabled = false;
  }
}

document.addEventListener("submit", submitAction);
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  if (status) status.tabIndex = -1;
  if (document.getElementById("live")) window.setInterval(refresh, POLL_MS);
});
