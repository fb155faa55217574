// Muster dashboard: the one script (no framework, no build step).
//
// - Action forms (`form[data-api]`) are sent to the hub's JSON API with fetch and the
//   X-Muster-CSRF header: the same handlers and audit as the CLI.
// - Copy buttons, times shown in the browser's zone, login and logout.
// - Live updates from `/api/v1/events` (server-sent events) when the hub has them;
//   without that endpoint nothing happens.
"use strict";

(function () {
  const CSRF = { "X-Muster-CSRF": "1" };

  // ---- helpers -------------------------------------------------------------

  function flash(text, kind) {
    const box = document.querySelector(".flash");
    if (!box) return;
    box.textContent = text;
    box.className = "flash " + (kind || "info");
    box.hidden = false;
  }

  async function api(method, path, body) {
    const init = { method: method, credentials: "same-origin", headers: Object.assign({}, CSRF) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    try { data = await res.json(); } catch (_) { /* empty body */ }
    if (res.status === 401 && path !== "/api/v1/login") {
      // The session expired: log in again and come back here.
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new Error("session expired");
    }
    if (!res.ok) {
      const msg = data && data.error && data.error.message ? data.error.message : "HTTP " + res.status;
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  // "a=b, c=d" or one per line -> {a: "b", c: "d"}
  function pairs(text) {
    const out = {};
    (text || "").split(/[\n,]/).map((s) => s.trim()).filter(Boolean).forEach((p) => {
      const i = p.indexOf("=");
      if (i > 0) out[p.slice(0, i).trim()] = p.slice(i + 1).trim();
      else out[p] = "";
    });
    return out;
  }

  function list(text) {
    return (text || "").split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  }

  // What each kind of form sends.
  const bodies = {
    none: () => undefined,
    token: (f) => {
      const body = {
        cidrs: list(f.cidrs.value),
        labels: pairs(f.labels.value),
      };
      if (f.uses.value) body.max_uses = Number(f.uses.value);
      if (f.ttl.value) body.ttl_s = Number(f.ttl.value);
      if (f.pattern.value.trim()) body.pattern = f.pattern.value.trim();
      if (f.description.value.trim()) body.description = f.description.value.trim();
      return body;
    },
    labels: (f) => ({ set: pairs(f.set.value), remove: list(f.remove.value) }),
    key: (f) => {
      const body = { name: f.name.value.trim(), role: f.role.value };
      if (f.agents.value.trim()) body.agents = f.agents.value.trim();
      if (f.expires.value) body.expires_s = Number(f.expires.value);
      return body;
    },
    reason: (f) => (f.reason.value.trim() ? { reason: f.reason.value.trim() } : {}),
    update: (f) => (f.version.value.trim() ? { version: f.version.value.trim() } : {}),
    pattern: (f) => ({ pattern: f.pattern.value.trim() }),
    rule: (f) => {
      const body = { pattern: f.pattern.value.trim(), cidrs: list(f.cidrs.value), labels: pairs(f.labels.value) };
      if (f.max_per_hour.value) body.max_per_hour = Number(f.max_per_hour.value);
      return body;
    },
    // No password: a person who signs in with single sign-on (the name is their email).
    user: (f) => {
      const body = { name: f.name.value.trim(), role: f.role.value };
      if (f.password.value) body.password = f.password.value;
      return body;
    },
    group: (f) => ({ id: f.id.value.trim(), name: f.name.value.trim(), role: f.role.value }),
    probe: (f) => ({ params: pairs(f.params.value) }),
  };

  // What happens after success.
  function after(form, data) {
    const then = form.dataset.then || "reload";
    if (then === "token") {
      const install = data.install || {};
      document.getElementById("install-sh").textContent = install.sh || "";
      document.getElementById("install-ps").textContent = install.powershell || "";
      document.getElementById("install-enroll").textContent = install.enroll || data.enroll_command || "";
      document.getElementById("token-result").hidden = false;
      flash("Token created.", "ok");
      return;
    }
    if (then === "key") {
      // Shown once; the list below is stale until the next load.
      document.getElementById("key-value").textContent = data.key || "";
      document.getElementById("key-result").hidden = false;
      flash("Key " + (data.info && data.info.name ? data.info.name + " " : "") + "ready: copy it now.", "ok");
      return;
    }
    if (then === "probe") {
      // The agent's answer, shown as text (never as HTML).
      const ok = data.outcome === "ok";
      document.getElementById("probe-outcome").textContent =
        data.probe + " on " + data.agent + ": " + data.outcome + " (" + data.duration_ms + " ms)" +
        (data.truncated ? ", cut at the output cap" : "");
      document.getElementById("probe-output").textContent = ok
        ? JSON.stringify(data.result, null, 2)
        : (data.error || "");
      document.getElementById("probe-result").hidden = false;
      return;
    }
    if (then === "reload") {
      location.reload();
      return;
    }
    location.assign(then);
  }

  // One listener for the whole document, so forms in regions the live updates
  // replace keep working.
  function wireForms() {
    document.addEventListener("submit", async (ev) => {
      const form = ev.target.closest("form[data-api]");
      if (!form) return;
      ev.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const build = bodies[form.dataset.body || "none"];
      const buttons = form.querySelectorAll("button");
      buttons.forEach((b) => (b.disabled = true));
      try {
        // A URL naming a field's value, e.g. the probe chosen: `{probe}`.
        const url = form.dataset.api.replace(/\{(\w+)\}/g, (_, name) =>
          encodeURIComponent(form.elements[name] ? form.elements[name].value : ""));
        const data = await api(form.dataset.method || "POST", url, build(form));
        after(form, data);
      } catch (e) {
        flash(e.message, "error");
      } finally {
        buttons.forEach((b) => (b.disabled = false));
      }
    });
  }

  // ---- copy buttons --------------------------------------------------------

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const was = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = was), 1500);
  }

  function wireCopy() {
    document.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-copy], button[data-copy-text]");
      if (!b) return;
      const text = b.dataset.copyText !== undefined
        ? b.dataset.copyText
        : (document.querySelector(b.dataset.copy) || {}).textContent || "";
      copy(text, b);
    });
  }

  // ---- times ---------------------------------------------------------------

  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = d.toLocaleString();
    });
  }

  // ---- login and logout ----------------------------------------------------

  function wireLogin() {
    const form = document.getElementById("login-form");
    if (!form) return;
    const error = document.getElementById("login-error");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      try {
        await api("POST", "/api/v1/login", { user: form.user.value, password: form.password.value });
        const next = form.dataset.next || "/";
        location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
      } catch (e) {
        // Never says whether the user exists.
        error.textContent = e.status === 429
          ? "Too many attempts. Wait a moment and try again."
          : e.status === 401
            ? "Invalid user name or password."
            : "The hub could not sign you in (" + e.message + ").";
        error.hidden = false;
      }
    });
  }

  function wireLogout() {
    document.querySelectorAll("[data-logout]").forEach((b) =>
      b.addEventListener("click", async () => {
        try { await api("POST", "/api/v1/logout"); } catch (_) { /* gone anyway */ }
        location.assign("/login");
      })
    );
  }

  // ---- live updates --------------------------------------------------------

  const ICONS = { online: "●", degraded: "◐", offline: "○", revoked: "⊘", removed: "✕", pending: "…", cloned: "⚠" };

  // Apply one message from the hub's event stream:
  //   {"type":"agent","id":…,"status":…,"last_seen_at":…}  a row or an agent page
  //   {"type":"counts","counts":{"online":3,…}}             the status counts
  function applyEvent(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "agent" && typeof msg.id === "string") {
      document.querySelectorAll('[data-agent-id="' + CSS.escape(msg.id) + '"]').forEach((row) => {
        const badge = row.querySelector(".status");
        if (badge && typeof msg.status === "string" && ICONS[msg.status]) {
          badge.className = "status status-" + msg.status;
          badge.dataset.status = msg.status;
          badge.querySelector(".icon").textContent = ICONS[msg.status];
          badge.querySelector(".word").textContent = msg.status;
        }
        const seen = row.querySelector(".last-seen");
        if (seen && typeof msg.last_seen_at === "string") {
          seen.textContent = "";
          const t = document.createElement("time");
          t.setAttribute("datetime", msg.last_seen_at);
          t.title = msg.last_seen_at + " (UTC)";
          seen.appendChild(t);
          localTimes(seen);
        }
      });
    } else if (msg.type === "counts" && msg.counts && typeof msg.counts === "object") {
      const box = document.getElementById("status-counts");
      Object.keys(msg.counts).forEach((s) => {
        const el = document.querySelector('[data-count-status="' + CSS.escape(s) + '"]');
        if (el) el.textContent = String(Number(msg.counts[s]) || 0);
      });
      if (box) box.hidden = false;
    }
  }

  // Regions (`[data-live-region=NAME]`) the page re-reads from the hub when rows come
  // or go: the fleet table when an agent enrolls or is removed, the approval queue
  // when its count changes. At most one re-read a second, whatever the hub sends;
  // the new region is the hub's own HTML for this same URL (escaped there).
  const stale = new Set();
  let refreshing = null;

  function refresh(names) {
    names.forEach((n) => {
      if (document.querySelector('[data-live-region="' + CSS.escape(n) + '"]')) stale.add(n);
    });
    if (stale.size === 0 || refreshing) return;
    refreshing = setTimeout(async () => {
      const wanted = Array.from(stale);
      stale.clear();
      try {
        const res = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (res.ok) {
          const doc = new DOMParser().parseFromString(await res.text(), "text/html");
          wanted.forEach((n) => {
            const sel = '[data-live-region="' + CSS.escape(n) + '"]';
            const fresh = doc.querySelector(sel);
            const old = document.querySelector(sel);
            if (fresh && old) {
              const node = document.importNode(fresh, true);
              old.replaceWith(node);
              localTimes(node);
            }
          });
        }
      } catch (_) { /* the next event tries again */ }
      setTimeout(() => {
        refreshing = null;
        if (stale.size) refresh([]);
      }, 1000);
    }, 100);
  }

  // The hub's stream (docs/ARCHITECTURE.md, "Live events"): `agents` carries the
  // changed agents (latest state each, coalesced) and the status counts, `approvals`
  // the pending count, `resync` says messages were dropped: re-read everything.
  function startLive() {
    if (document.body.dataset.live !== "on" || !window.EventSource) return;
    let es;
    try { es = new EventSource("/api/v1/events"); } catch (_) { return; }
    const parse = (ev) => { try { return JSON.parse(ev.data); } catch (_) { return null; } };
    es.addEventListener("agents", (ev) => {
      const msg = parse(ev);
      if (!msg) return;
      let rows = false;
      (Array.isArray(msg.agents) ? msg.agents : []).forEach((a) => {
        if (!a || typeof a.id !== "string") return;

        if (a.change === "enrolled" || a.change === "removed") rows = true;
        applyEvent(Object.assign({ type: "agent" }, a));
      });
      if (rows) refresh(["fleet"]);
      if (msg.counts) applyEvent({ type: "counts", counts: msg.counts });
    });
    es.addEventListener("approvals", () => refresh(["approvals"]));
    es.addEventListener("resync", () => refresh(["fleet", "approvals"]));
    // A hub without the endpoint answers 404: the stream closes and stays closed.
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) es.close(); };
  }

  window.musterApplyEvent = applyEvent;

  document.addEventListener("DOMContentLoaded", () => {
    localTimes();
    wireForms();
    wireCopy();
    wireLogin();
    wireLogout();
    startLive();
  });
})();
