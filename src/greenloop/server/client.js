// greenloop live reload. The dev server injects this into every HTML page it
// serves. Every message from /__greenloop/events carries the whole status, so
// this script only compares it with the page: another artifact served means a
// full reload; a red tree (or a failed build) means an overlay over the last
// green page, which stays usable underneath.
(function () {
  "use strict";
  if (window.__greenloopClient) {
    return; // a page that includes itself twice still gets one socket
  }
  window.__greenloopClient = true;

  var script = document.currentScript;
  var pageArtifact = (script && script.getAttribute("data-greenloop-artifact")) || "";
  var OVERLAY_ID = "greenloop-overlay";
  var MAX_RETRY_MS = 4000;
  var retryMs = 250;
  var reloading = false;
  var dismissedKey = null;

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + location.host + "/__greenloop/events");
    } catch (err) {
      retryLater();
      return;
    }
    socket.onopen = function () {
      retryMs = 250;
    };
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (message && message.status) {
        apply(message.status);
      }
    };
    // A failed connect fires error then close; reconnecting on close covers both.
    socket.onclose = retryLater;
  }

  function retryLater() {
    if (reloading) {
      return;
    }
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
  }

  function apply(status) {
    var served = status.artifact ? status.artifact.tree : "";
    if (served !== pageArtifact) {
      reloading = true;
      location.reload();
      return;
    }
    render(problemOf(status));
  }

  function problemOf(status) {
    // Every problem at once, most fundamental first: the title is the first one's.
    var sections = [];
    if (status.verdict === "red") {
      sections.push({
        title: "The tree is red",
        items: (status.diagnostics || []).map(function (d) {
          return {
            where: d.path + ":" + d.line + ":" + d.col,
            severity: d.severity,
            message: d.message,
            source: d.code ? d.code + "; " + d.source : d.source,
          };
        }),
      });
    }
    var build = status.last_build;
    if (status.verdict !== "red" && build && build.outcome && build.outcome.kind === "failed") {
      sections.push({
        title: "The last build failed",
        items: [{ where: "", severity: "error", message: build.outcome.reason, source: "build" }],
      });
    }
    var app = status.app;
    if (app && app.failed_start && app.failed_start.problem) {
      sections.push(appSection("The new app did not start", app.failed_start));
    }
    if (app && app.current && app.current.problem) {
      var exited = app.current.health === "exited";
      sections.push(appSection(exited ? "The app exited" : "The app is failing", app.current));
    }
    if (!sections.length) {
      return null;
    }
    return { title: sections[0].title, sections: sections };
  }

  function appSection(title, info) {
    var problem = info.problem;
    var at = problem.location;
    return {
      title: title,
      items: [
        {
          where: at ? at.path + ":" + at.line + (at.col ? ":" + at.col : "") : "",
          severity: "error",
          message: problem.error ? problem.summary + ": " + problem.error : problem.summary,
          source: "app pid " + info.pid + ", build " + String(info.input_hash).slice(0, 12),
          log: (problem.log_tail || []).join("\n"),
        },
      ],
    };
  }

  function render(problem) {
    var old = document.getElementById(OVERLAY_ID);
    if (old) {
      old.remove();
    }
    if (!problem) {
      dismissedKey = null;
      return;
    }
    var key = JSON.stringify(problem);
    if (key === dismissedKey) {
      return; // closed by the user; it comes back only when something changes
    }
    var overlay = overlayFor(problem);
    overlay.querySelector("#greenloop-overlay-close").onclick = function () {
      dismissedKey = key;
      overlay.remove();
    };
    (document.body || document.documentElement).appendChild(overlay);
    // A log ends with what went wrong: show its end, the start is a scroll away.
    overlay.querySelectorAll(".greenloop-log").forEach(function (log) {
      log.scrollTop = log.scrollHeight;
    });
  }

  function el(tag, css, text) {
    var node = document.createElement(tag);
    node.style.cssText = css;
    if (text !== undefined) {
      node.textContent = text; // never innerHTML: messages are untrusted text
    }
    return node;
  }

  function overlayFor(problem) {
    // A panel over the bottom of the page, not a modal: the last green page
    // above it stays readable and clickable.
    var overlay = el(
      "section",
      "all:initial;display:block;position:fixed;left:0;right:0;bottom:0;z-index:2147483647;" +
        "max-height:45vh;overflow:auto;box-sizing:border-box;padding:12px 16px;" +
        "background:#2b0b0e;color:#fbe9ea;border-top:4px solid #e5484d;" +
        "font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;" +
        "box-shadow:0 -4px 16px rgba(0,0,0,.35);"
    );
    overlay.id = OVERLAY_ID;
    overlay.setAttribute("role", "alert");
    overlay.setAttribute("aria-label", "greenloop: " + problem.title);

    var header = el("header", "display:flex;align-items:baseline;gap:12px;margin-bottom:8px;");
    var title = el("strong", "font-size:14px;color:#ff9592;", problem.title);
    title.id = "greenloop-overlay-title";
    var note = el(
      "span",
      "flex:1;color:#d9b8ba;",
      pageArtifact
        ? "showing the last green build; a green build reloads the page"
        : "no green build yet; this page reloads when there is one"
    );
    var close = el(
      "button",
      "all:initial;cursor:pointer;color:#fbe9ea;border:1px solid #a5474b;border-radius:4px;" +
        "padding:2px 10px;font:inherit;",
      "close"
    );
    close.id = "greenloop-overlay-close";
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss the greenloop overlay");
    header.append(title, note, close);

    var body = el("div", "");
    problem.sections.forEach(function (section, index) {
      if (index > 0) {
        var subtitle = el("strong", "display:block;margin:10px 0 6px;color:#ff9592;", section.title);
        subtitle.className = "greenloop-section-title";
        body.append(subtitle);
      }
      body.append(listOf(section.items));
    });
    overlay.append(header, body);
    return overlay;
  }

  function listOf(items) {
    var list = el("ol", "margin:0;padding:0;list-style:none;");
    items.forEach(function (item) {
      var row = el("li", "margin:0 0 6px;padding:0;white-space:pre-wrap;");
      row.className = "greenloop-diagnostic";
      if (item.where) {
        var where = el("span", "color:#ffd37a;", item.where);
        where.className = "greenloop-location";
        row.append(where, " ");
      }
      var severity = el("span", "color:#ff9592;", item.severity + ": ");
      var message = el("span", "", item.message);
      message.className = "greenloop-message";
      var source = el("span", "color:#b99a9c;", " [" + item.source + "]");
      source.className = "greenloop-source";
      row.append(severity, message, source);
      if (item.log) {
        // The app's own output, as it printed it: the traceback is read top to bottom.
        var log = el(
          "pre",
          "margin:6px 0 0;padding:6px 8px;background:#1c0709;color:#e8d3d4;white-space:pre-wrap;" +
            "max-height:16em;overflow:auto;" +
            "font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;",
          item.log
        );
        log.className = "greenloop-log";
        row.append(log);
      }
      list.append(row);
    });
    return list;
  }

  connect();
})();
