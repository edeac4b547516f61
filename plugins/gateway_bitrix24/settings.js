/* WhatsChat Gateway, Bitrix24 settings page: refresh the numbers' QR codes and states
   while the administrator waits; stop once every number is connected. Without this
   script the page still works: its "Refresh" button shows the same. */
(function () {
  "use strict";
  var live = document.getElementById("live");
  var form = document.getElementById("poll");
  var note = document.getElementById("poll-note");
  if (!live || !form || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var every = parseInt(live.getAttribute("data-poll-ms"), 10) || 3000;
  var failures = 0;

  function stop(text) {
    if (note) {
      note.textContent = text || form.getAttribute("data-stopped") || "";
    }
  }

  function fitFrame() {
    if (window.BX24 && window.BX24.fitWindow) {
      window.BX24.fitWindow();
    }
  }

  function tick() {
    var body = new URLSearchParams(new FormData(form));
    // Not form.action: the form's field named "action" hides that property.
    fetch(form.getAttribute("action"), {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    })
      .then(function (response) {
        return response.json().then(function (data) {
          return { ok: response.ok, data: data };
        });
      })
      .then(function (answer) {
        failures = 0;
        if (!answer.ok) {
          stop(answer.data && answer.data.error);
          return;
        }
        live.innerHTML = answer.data.html;
        live.setAttribute("data-poll", answer.data.poll ? "1" : "0");
        fitFrame();
        if (answer.data.poll) {
          window.setTimeout(tick, every);
        }
      })
      .catch(function () {
        // The gateway is restarting or the network blinked: ask again, less often.
        failures += 1;
        if (failures > 20) {
          stop();
          return;
        }
        window.setTimeout(tick, every * Math.min(failures + 1, 5));
      });
  }

  if (live.getAttribute("data-poll") === "1") {
    window.setTimeout(tick, every);
  }
})();
