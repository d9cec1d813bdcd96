// agg serve: makes the server-rendered pages live. No inline script, no eval (see the CSP);
// every piece of HTML inserted here was rendered and escaped by the server.
"use strict";

(function () {
  const address = new URL(location.href);
  if (address.searchParams.has("token")) {
    // The token is now in an HttpOnly cookie: take it out of the address bar and the history.
    address.searchParams.delete("token");
    history.replaceState(null, "", address.pathname + address.search + address.hash);
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.dateTime);
      if (!isNaN(d.getTime())) {
        t.title = t.dateTime;
        t.textContent = timeFormat.format(d);
      }
    });
  }

  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html; // inert: nothing in a template runs
    return t.content;
  }

  function setLive(state) {
    const el = document.getElementById("live");
    if (el) {
      el.dataset.state = state;
      el.textContent = state;
    }
  }

  function get(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" });
  }

  // Follow /api/events from `since` on. A browser keeps at most six connections to one server
  // over HTTP/1.1, and each open stream holds one: a hidden tab lets its stream go and, when
  // shown again, opens a new one from the last seq it had, so nothing is missed.
  // Each event's id is where the stream stands after it (a seq; on a Redis Cluster, a seq per
  // bucket as "3:120,7:55"): reopening from the last id resumes every bucket.
  function follow(query, since, onEnvelope) {
    let last = since || "0";
    let source = null;
    function open() {
      if (source) return;
      source = new EventSource("/api/events?" + query + (query ? "&" : "") + "since=" + last);
      source.onopen = () => setLive("live");
      source.onerror = () => setLive("reconnecting");
      source.onmessage = (ev) => {
        const env = JSON.parse(ev.data);
        if (ev.lastEventId) last = ev.lastEventId;
        onEnvelope(env);
      };
    }
    function close() {
      if (source) {
        source.close();
        source = null;
        setLive("paused");
      }
    }
    document.addEventListener("visibilitychange", () => (document.hidden ? close() : open()));
    if (!document.hidden) open();
  }

  // --- the conversation list ------------------------------------------------------------------
  function conversations() {
    const form = document.querySelector("form.filter");
    if (form) {
      form.querySelectorAll("select, input").forEach((el) => el.addEventListener("change", () => form.submit()));
    }
    const tbody = document.getElementById("conv-rows");
    if (!tbody || tbody.dataset.live !== "1") return;
    const filter = new URLSearchParams();
    for (const k of ["project", "active"]) {
      const v = new URLSearchParams(location.search).get(k);
      if (v) filter.set(k, v);
    }
    const pending = new Map(); // conversation → fetch again when the current one is done
    // From the seq the list was read at: nothing committed since then is missed.
    follow("", tbody.dataset.since, (env) => refresh(env.conv));

    function refresh(key) {
      if (pending.has(key)) {
        pending.set(key, true);
        return;
      }
      pending.set(key, false);
      get("/fragments/conversation-row/" + encodeURIComponent(key) + "?" + filter)
        .then((r) => (r.status === 200 ? r.text() : null))
        .then((html) => {
          if (html) place(key, html);
        })
        .catch(() => {})
        .finally(() => {
          const again = pending.get(key);
          pending.delete(key);
          if (again) refresh(key);
        });
    }

    function place(key, html) {
      const row = fragment(html).querySelector("tr");
      if (!row) return;
      localTimes(row);
      for (const tr of tbody.querySelectorAll("tr")) {
        if (tr.dataset.key === key || tr.classList.contains("empty")) tr.remove();
      }
      const last = row.dataset.last || "";
      let before = null;
      for (const tr of tbody.children) {
        if ((tr.dataset.last || "") <= last) {
          before = tr;
          break;
        }
      }
      tbody.insertBefore(row, before);
      row.classList.add("flash");
      setTimeout(() => row.classList.remove("flash"), 1500);
    }
  }

  // --- one conversation -----------------------------------------------------------------------
  function conversation() {
    const section = document.getElementById("events");
    if (!section) return;
    const conv = section.dataset.conv;
    const all = section.dataset.all === "1";
    const hidden = new Set((section.dataset.hidden || "").split(","));
    const base = "/fragments/events/" + encodeURIComponent(conv) + "?" + (all ? "all=1&" : "");
    const jump = document.getElementById("jump");
    const tail = section.dataset.tail === "1";
    let unseen = 0;
    let loading = false;
    let fetching = false;
    let again = false;

    function chunks() {
      return Array.from(section.querySelectorAll(".chunk"));
    }
    function lastSeq() {
      return chunks().reduce((m, c) => (c.dataset.last ? Math.max(m, Number(c.dataset.last)) : m), 0);
    }
    function firstSeq() {
      const c = chunks().find((x) => x.dataset.first);
      return c ? Number(c.dataset.first) : 0;
    }
    function atBottom() {
      return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
    }
    function toBottom() {
      window.scrollTo(0, document.documentElement.scrollHeight);
    }
    function showJump() {
      jump.hidden = unseen === 0;
      jump.textContent = "↓ " + unseen + " new — jump to latest";
    }

    // Arriving at a message (#e-<seq>): unfold what holds it, then show it.
    const target = location.hash.startsWith("#e-") ? document.getElementById(location.hash.slice(1)) : null;
    if (target) {
      for (let p = target.parentElement; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
      target.classList.add("target");
      target.scrollIntoView({ block: "center" });
    } else if (tail) {
      toBottom();
    }

    // Earlier pages: on click, or when the link scrolls into view.
    function loadEarlier() {
      const link = document.getElementById("earlier");
      if (!link || loading) return;
      loading = true;
      get(base + "before=" + firstSeq())
        .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
        .then((html) => {
          const part = fragment(html);
          const chunk = part.querySelector(".chunk");
          localTimes(part);
          const height = document.documentElement.scrollHeight;
          link.after(part);
          window.scrollBy(0, document.documentElement.scrollHeight - height);
          if (!chunk || chunk.dataset.moreBefore !== "1") {
            const start = document.createElement("p");
            start.className = "start";
            start.textContent = "start of the conversation";
            link.replaceWith(start);
          }
        })
        .catch(() => {})
        .finally(() => {
          loading = false;
        });
    }
    const earlier = document.getElementById("earlier");
    if (earlier) {
      earlier.addEventListener("click", (ev) => {
        ev.preventDefault();
        loadEarlier();
      });
      new IntersectionObserver((seen) => {
        if (seen.some((x) => x.isIntersecting) && window.scrollY > 0) loadEarlier();
      }).observe(earlier);
    }

    jump.addEventListener("click", () => {
      if (!tail) {
        location.href = "/conversations/" + encodeURIComponent(conv) + (all ? "?all=1" : "");
        return;
      }
      unseen = 0;
      showJump();
      toBottom();
    });
    window.addEventListener("scroll", () => {
      if (unseen && tail && atBottom()) {
        unseen = 0;
        showJump();
      }
    });

    function fetchNew() {
      if (fetching) {
        again = true;
        return;
      }
      fetching = true;
      const follow = atBottom();
      get(base + "after=" + lastSeq())
        .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
        .then((html) => {
          const part = fragment(html);
          const chunk = part.querySelector(".chunk");
          if (!chunk || !chunk.dataset.last) return;
          const added = chunk.querySelectorAll("article.ev").length;
          localTimes(part);
          section.append(part);
          if (follow) toBottom();
          else {
            unseen += added;
            showJump();
          }
        })
        .catch(() => {})
        .finally(() => {
          fetching = false;
          if (again) {
            again = false;
            fetchNew();
          }
        });
    }

    function refreshEvent(id) {
      const old = Array.from(section.querySelectorAll("article.ev")).find((a) => a.dataset.id === id);
      if (!old) return;
      get("/fragments/events/" + encodeURIComponent(conv) + "?all=1&limit=1&after=" + (Number(old.dataset.seq) - 1))
        .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
        .then((html) => {
          const fresh = fragment(html).querySelector("article.ev");
          if (fresh) {
            localTimes(fresh);
            old.replaceWith(fresh);
          }
        })
        .catch(() => {});
    }

    // The tail follows on from its last event; a page further back counts what is new since it was read.
    // On a Redis Cluster a place in the log is bucket:seq (the conversation is in one bucket).
    const here = section.dataset.bucket ? section.dataset.bucket + ":" + lastSeq() : String(lastSeq());
    const since = tail ? here : section.dataset.since;
    follow("conversation=" + encodeURIComponent(conv), since, (env) => {
      if (!all && hidden.has(env.type)) return;
      if (env.revision) {
        refreshEvent(env.id);
      } else if (tail) {
        fetchNew();
      } else if (env.seq > lastSeq()) {
        unseen += 1;
        showJump();
      }
    });
  }

  // --- status -------------------------------------------------------------------------------
  function status() {
    const box = document.getElementById("status");
    if (!box) return;
    setInterval(() => {
      get("/fragments/status")
        .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
        .then((html) => {
          const part = fragment(html);
          localTimes(part);
          box.replaceChildren(part);
          setLive("refreshing");
        })
        .catch(() => setLive("server away"));
    }, 2000);
  }

  localTimes(document);
  const page = document.body.dataset.page;
  if (page === "conversations") conversations();
  else if (page === "conversation") conversation();
  else if (page === "status") status();
})();
