/* /preferences/: a person's channels, pairing, and the order BRAIN tries them in.
 *
 * Everything goes through the REST API (/api/v1/identities/, /api/v1/pairing-codes/,
 * /api/v1/preferences/) with the session cookie and the CSRF token; nothing reloads the page.
 * Configuration comes from the json_script block "preferences-config". No external assets.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("preferences-config").textContent);
  const $ = (id) => document.getElementById(id);
  const state = { identities: [], preferences: [], channels: [], pairing: null };
  const app = { state: state };
  window.preferencesApp = app; // for tests and debugging

  // --- HTTP ---------------------------------------------------------------------------------

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  class ApiError extends Error {
    constructor(status, message, details) {
      super(message);
      this.status = status;
      this.details = details;
    }
  }

  // The API names fields as its clients send them (quiet_start); people read labels and plain words.
  const FIELD_LABELS = {
    quiet_hours: "Quiet hours", quiet_start: "Quiet hours start", quiet_end: "Quiet hours end",
    timezone: "Time zone", notification_types: "Use it for", enabled: "Enabled", priority: "Position",
    identity: "Channel", connector: "Channel", address: "Email address", label: "Label", order: "Order",
  };
  const PLAIN_WORDS = [
    [/^give both quiet_start and quiet_end/, "give both a start and an end time, or neither."],
    [/^quiet_start and quiet_end must differ/, "the start and end times must differ."],
    [/^must be a time as HH:MM/, "give a time such as 22:00, or leave it empty."],
    [/^must be an IANA time zone/, "choose a time zone from the list."],
    [/^(unknown types|must be a list of)/, "choose from " + config.notificationTypes.join(", ") + "."],
    [/^must be the id of one of/, "choose one of your channels."],
    [/^must be an integer from/, "the position is out of range; reload the page."],
    [/^must be true or false/, "switch it on or off."],
    [/^required/, "this is needed."],
    [/^unknown field/, "the page sent something the server does not know; reload the page."],
  ];

  function plainLine(key, text) {
    const label = FIELD_LABELS[key] || (key ? key.charAt(0).toUpperCase() + key.slice(1).replace(/_/g, " ") : "");
    const rule = PLAIN_WORDS.find(([pattern]) => pattern.test(text));
    // Anything not known yet: at least no API field names in it.
    let words = rule ? rule[1] : String(text).replace(/\b[a-z]+(?:_[a-z]+)+\b/g, (name) =>
      (FIELD_LABELS[name] || name.replace(/_/g, " ")).toLowerCase());
    if (!/[.!?]$/.test(words)) words += ".";
    return label ? `${label}: ${words}` : words.charAt(0).toUpperCase() + words.slice(1);
  }

  function flattenDetails(details, key) {
    if (details === null || details === undefined || details === "") return [];
    if (typeof details === "string" || typeof details === "number") return [plainLine(key, String(details))];
    if (Array.isArray(details)) return details.flatMap((d) => flattenDetails(d, key));
    return Object.entries(details).flatMap(([name, value]) =>
      flattenDetails(value, name === "non_field_errors" || name === "detail" ? key : name));
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return "Could not reach the server. Check your connection and try again.";
    const lines = error.status === 400 ? flattenDetails(error.details) : [];
    // A bare "Invalid …" says nothing the details do not: then the details, in plain words.
    if (/\binvalid\b/i.test(error.message) && lines.length) return lines.join(" ");
    return error.message;
  }

  // Instructions may quote what to type in backticks (`manage.py chat`): shown as code, never as backticks.
  function fillWithCode(element, text) {
    element.replaceChildren();
    String(text || "").split(/`([^`]*)`/).forEach((part, index) => {
      if (index % 2) {
        const code = document.createElement("code");
        code.textContent = part;
        element.appendChild(code);
      } else if (part) {
        element.appendChild(document.createTextNode(part));
      }
    });
  }
  const withoutBackticks = (text) => String(text || "").replace(/`([^`]*)`/g, "$1");

  function signedOut() {
    // The session ended (signed out in another tab, or expired): offer the way back in.
    const box = $("signed-out");
    if (box) box.hidden = false;
  }

  async function request(method, url, body) {
    const options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401 || (response.status === 403 && !(data && data.error))) {
        signedOut();
        throw new ApiError(response.status, "You are signed out. Sign in again to go on.", null);
      }
      const err = data && data.error ? data.error : {};
      throw new ApiError(response.status, err.message || `The server answered ${response.status}.`, err.details);
    }
    return data;
  }

  const api = {
    identities: () => request("GET", config.identities),
    channels: () => request("GET", config.channels),
    preferences: () => request("GET", config.preferences),
    pendingCodes: () => request("GET", config.pairingCodes),
  };
  const list = (data) => (Array.isArray(data) ? data : (data && data.results) || []);

  // --- status -------------------------------------------------------------------------------

  let statusTimer = null;
  function say(message, kind) {
    const status = $("status");
    // Clear first so that the same message twice is announced twice.
    status.textContent = "";
    status.dataset.kind = kind || "info";
    window.clearTimeout(statusTimer);
    statusTimer = window.setTimeout(() => { status.textContent = message; }, 30);
    status.dataset.message = message;
  }

  function showRowError(row, message) {
    const box = row.querySelector(":scope > .row-error");
    if (!box) return;
    box.textContent = message || "";
    box.hidden = !message;
    if (message) box.setAttribute("role", "alert"); else box.removeAttribute("role");
  }

  // --- helpers ------------------------------------------------------------------------------

  function identityName(identity) {
    if (!identity) return "Unknown channel";
    const kind = identity.connector_kind || "";
    const where = identity.label ? `${identity.label} (${identity.address})` : identity.address;
    return `${identity.connector_name || identity.connector} ${kind ? "· " + kind + " " : ""}· ${where}`;
  }

  function identityShort(identity) {
    if (!identity) return "this channel";
    return identity.label || `${identity.connector_name || identity.connector} ${identity.address}`;
  }

  const identityById = (id) => state.identities.find((i) => String(i.id) === String(id));
  const browserZone = (() => {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (e) {
      return "UTC";
    }
  })();
  const zones = (() => {
    let all = [];
    try {
      all = Intl.supportedValuesOf("timeZone");
    } catch (e) {
      all = [];
    }
    const set = new Set(all);
    ["UTC", browserZone].forEach((z) => set.add(z));
    return Array.from(set).sort();
  })();
  app.browserZone = browserZone;

  function fillZones(select, selected) {
    const frag = document.createDocumentFragment();
    const options = zones.includes(selected) ? zones : [selected].concat(zones);
    for (const zone of options) {
      const option = document.createElement("option");
      option.value = zone;
      option.textContent = zone === browserZone ? `${zone} (this device)` : zone;
      if (zone === selected) option.selected = true;
      frag.appendChild(option);
    }
    select.replaceChildren(frag);
  }

  const hhmm = (value) => (value ? String(value).slice(0, 5) : "");

  // --- identities ---------------------------------------------------------------------------

  // Empty the list `id` to render it afresh (no longer busy); when there are no `items`, it says `emptyText`.
  function freshList(id, items, emptyText) {
    const list = $(id);
    list.replaceChildren();
    list.setAttribute("aria-busy", "false");
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = emptyText;
      list.appendChild(li);
    }
    return list;
  }

  function renderIdentities() {
    const ul = freshList("identity-list", state.identities, "No channels yet. Pair one below.");
    for (const identity of state.identities) {
      const li = $("identity-template").content.firstElementChild.cloneNode(true);
      li.dataset.identityId = identity.id;
      li.dataset.kind = identity.connector_kind || "";
      li.querySelector(".kind-badge").textContent = identity.connector_kind || "";
      li.querySelector(".identity-connector").textContent = identity.connector_name || identity.connector;
      li.querySelector(".identity-address").textContent = identity.address;
      const input = li.querySelector(".identity-label");
      input.id = `identity-label-${identity.id}`;
      input.value = identity.label || "";
      const label = li.querySelector(".label-for");
      label.htmlFor = input.id;
      label.textContent = `Label for ${identity.connector_name || identity.connector} ${identity.address}`;
      li.querySelector(".save-label").setAttribute("aria-label", `Save label for ${identity.address}`);
      const remove = li.querySelector(".remove-identity");
      remove.setAttribute("aria-label", `Remove ${identity.connector_name || identity.connector} ${identity.address}`);
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          saveLabel(li, identity, input.value);
        }
      });
      li.querySelector(".save-label").addEventListener("click", () => saveLabel(li, identity, input.value));
      remove.addEventListener("click", () => removeIdentity(li, identity, remove));
      ul.appendChild(li);
    }
    renderAddPreference();
  }

  async function saveLabel(li, identity, label) {
    showRowError(li, "");
    try {
      const updated = await request("PATCH", `${config.identities}${identity.id}/`, { label: label.trim() });
      Object.assign(identity, updated || { label: label.trim() });
      say(`Label saved for ${identity.address}.`, "ok");
      // Rename its row in the list in place: unsaved edits in other rows stay as they are.
      const title = document.querySelector(`#preference-list li[data-identity-id="${identity.id}"] .pref-title`);
      if (title) title.textContent = identityName(identity);
      renderAddPreference();
    } catch (error) {
      showRowError(li, describe(error));
      say(describe(error), "error");
    }
  }

  // Removing takes two steps, without a modal dialog: the first activation asks (true once asked before).
  function confirmedRemoval(button, question) {
    if (button.dataset.confirm === "yes") return true;
    button.dataset.confirm = "yes";
    button.textContent = "Really remove?";
    say(question, "warn");
    return false;
  }

  // A removal that failed: the button asks afresh next time, and the row and the status line say why.
  function removalFailed(li, button, label, error) {
    button.dataset.confirm = "";
    button.textContent = label;
    showRowError(li, describe(error));
    say(describe(error), "error");
  }

  async function removeIdentity(li, identity, button) {
    if (!confirmedRemoval(button, `Activate "Really remove?" again to remove ${identity.address}; its place in the list goes too.`)) {
      return;
    }
    showRowError(li, "");
    try {
      await request("DELETE", `${config.identities}${identity.id}/`);
      say(`Removed ${identity.address}.`, "ok");
      await refresh();
      $("identities-title").focus();
    } catch (error) {
      removalFailed(li, button, "Remove", error);
    }
  }

  // --- pairing ------------------------------------------------------------------------------

  function renderChannels() {
    const select = $("pair-channel");
    select.replaceChildren();
    if (!state.channels.length) {
      const option = document.createElement("option");
      option.value = "";
      option.textContent = "No channel can be paired right now";
      select.appendChild(option);
      select.disabled = true;
      $("pair-button").disabled = true;
      return;
    }
    select.disabled = false;
    $("pair-button").disabled = false;
    for (const channel of state.channels) {
      const option = document.createElement("option");
      option.value = channel.id;
      option.dataset.kind = channel.kind;
      option.dataset.needsAddress = channel.needs_address ? "true" : "false";
      option.textContent = `${channel.display_name} (${channel.kind})`;
      select.appendChild(option);
    }
    updateAddressRow();
  }

  function updateAddressRow() {
    const option = $("pair-channel").selectedOptions[0];
    // Where BRAIN sends the link to an address (email), the person gives it; the code never comes back here.
    const needsAddress = !!option && option.dataset.needsAddress === "true";
    $("pair-address-row").hidden = !needsAddress;
    $("pair-address").required = needsAddress;
  }

  async function requestCode(event) {
    event.preventDefault();
    const select = $("pair-channel");
    if (!select.value) return;
    const option = select.selectedOptions[0];
    const body = { connector: select.value };
    if (option.dataset.needsAddress === "true") body.address = $("pair-address").value.trim();
    const button = $("pair-button");
    button.disabled = true;
    try {
      const created = await request("POST", config.pairingCodes, body);
      startWaiting(created, option.textContent);
    } catch (error) {
      say(describe(error), "error");
    } finally {
      button.disabled = false;
    }
  }

  function startWaiting(created, channelName) {
    stopWaiting();
    const known = new Set(state.identities.map((i) => String(i.id)));
    const expires = new Date(created.expires_at);
    const code = created.code || "";
    state.pairing = { id: created.id, code: code, known: known, expires: expires, timer: null, polls: 0, busy: false };
    $("pair-code").textContent = code;
    $("pair-code").hidden = !code;
    $("pair-result-title").textContent = code ? "Your code" : "Check your inbox";
    fillWithCode($("pair-instructions"), created.instructions);
    const time = $("pair-expires");
    time.dateTime = created.expires_at;
    time.textContent = expires.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const waiting = $("pair-waiting");
    waiting.dataset.state = "waiting";
    waiting.textContent = code ? "Waiting for your message…" : "Waiting for you to confirm the link…";
    $("pair-cancel").hidden = false;
    const box = $("pair-result");
    box.hidden = false;
    box.dataset.code = code;
    box.focus();
    const instructions = withoutBackticks(created.instructions);
    if (code) say(`Your code for ${channelName} is ${code.split("").join(" ")}. ${instructions}`, "info");
    else say(instructions || `We sent a link for ${channelName}.`, "info");
    state.pairing.timer = window.setInterval(pollForIdentity, config.pollMs);
  }

  function stopWaiting(message) {
    if (state.pairing && state.pairing.timer) window.clearInterval(state.pairing.timer);
    if (state.pairing) state.pairing.timer = null;
    if (message !== undefined) {
      if (document.activeElement === $("pair-cancel")) $("pair-button").focus();
      $("pair-cancel").hidden = true;
      $("pair-waiting").textContent = message;
      $("pair-waiting").dataset.state = "stopped";
    }
  }

  // Paired once a new channel shows up, or once the code is no longer pending although it has not
  // expired: it was used (an emailed link confirmed in another tab, an address paired before).
  async function pollForIdentity() {
    const pairing = state.pairing;
    if (!pairing || !pairing.timer || pairing.busy) return;
    pairing.polls += 1;
    if (Date.now() > pairing.expires.getTime()) {
      stopWaiting("The code has expired. Ask for a new one.");
      say("The pairing code has expired. Ask for a new one.", "warn");
      return;
    }
    let identities, pending;
    pairing.busy = true;
    try {
      [identities, pending] = (await Promise.all([api.identities(), api.pendingCodes()])).map(list);
    } catch (error) {
      $("pair-waiting").textContent = "Still waiting (the last check failed; retrying)…";
      return;
    } finally {
      pairing.busy = false;
    }
    if (state.pairing !== pairing || !pairing.timer) return; // stopped, or a new code asked for, meanwhile
    const fresh = identities.filter((i) => !pairing.known.has(String(i.id)));
    const used = pairing.id !== undefined && !pending.some((p) => String(p.id) === String(pairing.id));
    if (!fresh.length && !used) return;
    const names = fresh.length ? fresh.map(identityName).join(", ") : "";
    stopWaiting(names ? `Paired: ${names}.` : "Paired.");
    $("pair-waiting").dataset.state = "paired";
    state.identities = identities;
    try {
      // Pairing also puts the new channel at the end of the list.
      state.preferences = list(await api.preferences());
    } catch (error) {
      say(describe(error), "error");
    }
    renderIdentities();
    renderPreferences();
    for (const identity of fresh) {
      const li = document.querySelector(`#identity-list li[data-identity-id="${identity.id}"]`);
      if (li) li.classList.add("flash");
    }
    say(names ? `Paired ${names}. It is now last in "How to reach you".` : "Paired. Your channels are up to date.", "ok");
  }

  // Background tabs check rarely (browsers slow their timers down): check at once on coming back,
  // and when the link's page says it paired something (same browser, another tab).
  function checkNow() {
    if (state.pairing && state.pairing.timer && document.visibilityState !== "hidden") pollForIdentity();
  }

  // --- preferences --------------------------------------------------------------------------

  function renderPreferences(focus) {
    const ol = freshList("preference-list", state.preferences, "No channels in the list yet: BRAIN uses its default order.");
    const count = state.preferences.length;
    state.preferences.forEach((pref, index) => {
      const identity = identityById(pref.identity);
      const name = identityShort(identity);
      const li = $("preference-template").content.firstElementChild.cloneNode(true);
      li.dataset.preferenceId = pref.id;
      li.dataset.identityId = pref.identity;
      li.dataset.priority = pref.priority;
      li.classList.toggle("disabled", !pref.enabled);
      li.querySelector(".priority").textContent = String(index + 1);
      const title = li.querySelector(".pref-title");
      title.id = `pref-title-${pref.id}`;
      title.textContent = identityName(identity);
      li.setAttribute("aria-labelledby", title.id);
      const up = li.querySelector(".move-up");
      const down = li.querySelector(".move-down");
      up.setAttribute("aria-label", `Move ${name} up (now ${index + 1} of ${count})`);
      down.setAttribute("aria-label", `Move ${name} down (now ${index + 1} of ${count})`);
      up.disabled = index === 0;
      down.disabled = index === count - 1;
      up.addEventListener("click", () => move(pref.id, -1));
      down.addEventListener("click", () => move(pref.id, +1));

      const enabled = li.querySelector(".pref-enabled");
      enabled.checked = !!pref.enabled;
      enabled.setAttribute("aria-label", `Enabled: ${name}`);

      const types = li.querySelector("fieldset.types");
      for (const type of config.notificationTypes) {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.className = "pref-type";
        box.value = type;
        box.checked = (pref.notification_types || []).includes(type);
        label.append(box, " " + type);
        types.appendChild(label);
      }
      li.querySelector(".quiet-start").value = hhmm(pref.quiet_start);
      li.querySelector(".quiet-end").value = hhmm(pref.quiet_end);
      li.querySelector(".quiet-start").setAttribute("aria-label", `Quiet hours start for ${name}`);
      li.querySelector(".quiet-end").setAttribute("aria-label", `Quiet hours end for ${name}`);
      const zone = li.querySelector(".pref-timezone");
      zone.setAttribute("aria-label", `Time zone for ${name}`);
      // The zone only matters for quiet hours: until some are set, suggest this device's zone
      // instead of the server's default (saving the row stores it).
      const unset = !pref.quiet_start && !pref.quiet_end && (!pref.timezone || pref.timezone === "UTC");
      fillZones(zone, unset ? browserZone : pref.timezone);
      li.querySelector(".save-pref").setAttribute("aria-label", `Save ${name}`);
      li.querySelector(".save-pref").addEventListener("click", () => savePreference(li, pref));
      const remove = li.querySelector(".remove-pref");
      remove.setAttribute("aria-label", `Remove ${name} from the list`);
      remove.addEventListener("click", () => removePreference(li, pref, remove));
      li.addEventListener("change", () => {
        li.classList.add("dirty");
        li.querySelector(".saved").textContent = "";
      });
      li.addEventListener("keydown", (event) => {
        // Enter in a time field saves the row, as in a form.
        if (event.key === "Enter" && event.target.matches("input[type=time]")) {
          event.preventDefault();
          savePreference(li, pref);
        }
      });
      ol.appendChild(li);
    });
    if (focus) {
      const row = ol.querySelector(`li[data-preference-id="${focus.id}"]`);
      const target = row && (row.querySelector(focus.selector + ":not(:disabled)") ||
        row.querySelector(".move-up:not(:disabled), .move-down:not(:disabled)"));
      if (target) target.focus();
    }
    renderAddPreference();
  }

  async function move(id, delta) {
    const order = state.preferences.map((p) => p.id);
    const from = order.indexOf(id);
    const to = from + delta;
    if (from < 0 || to < 0 || to >= order.length) return;
    order.splice(to, 0, order.splice(from, 1)[0]);
    const row = document.querySelector(`#preference-list li[data-preference-id="${id}"]`);
    if (row) showRowError(row, "");
    try {
      const result = await request("POST", config.reorder, { order: order });
      const updated = list(result);
      state.preferences = updated.length ? updated : list(await api.preferences());
      renderPreferences({ id: id, selector: delta < 0 ? ".move-up" : ".move-down" });
      const moved = state.preferences.findIndex((p) => p.id === id);
      say(`Moved ${identityShort(identityById(state.preferences[moved].identity))} to position ${moved + 1} of ${order.length}.`, "ok");
    } catch (error) {
      if (row) showRowError(row, describe(error));
      say(describe(error), "error");
    }
  }

  function rowValues(li) {
    return {
      enabled: li.querySelector(".pref-enabled").checked,
      notification_types: Array.from(li.querySelectorAll(".pref-type:checked")).map((b) => b.value),
      quiet_start: li.querySelector(".quiet-start").value || null,
      quiet_end: li.querySelector(".quiet-end").value || null,
      timezone: li.querySelector(".pref-timezone").value,
    };
  }

  async function savePreference(li, pref) {
    showRowError(li, "");
    const button = li.querySelector(".save-pref");
    button.disabled = true;
    li.setAttribute("aria-busy", "true");
    try {
      const updated = await request("PATCH", `${config.preferences}${pref.id}/`, rowValues(li));
      Object.assign(pref, updated || rowValues(li));
      li.classList.remove("dirty");
      li.classList.toggle("disabled", !pref.enabled);
      li.dataset.saved = String(Date.now());
      li.querySelector(".saved").textContent = "Saved";
      say(`Saved ${identityShort(identityById(pref.identity))}.`, "ok");
    } catch (error) {
      li.querySelector(".saved").textContent = "";
      showRowError(li, describe(error));
      say(`Not saved: ${describe(error)}`, "error");
    } finally {
      button.disabled = false;
      li.setAttribute("aria-busy", "false");
    }
  }

  async function removePreference(li, pref, button) {
    if (!confirmedRemoval(button, `Activate "Really remove?" again to take ${identityShort(identityById(pref.identity))} off the list.`)) {
      return;
    }
    try {
      await request("DELETE", `${config.preferences}${pref.id}/`);
      state.preferences = list(await api.preferences());
      renderPreferences();
      say(`Took ${identityShort(identityById(pref.identity))} off the list.`, "ok");
      $("preferences-title").focus();
    } catch (error) {
      removalFailed(li, button, "Remove from list", error);
    }
  }

  function renderAddPreference() {
    const form = $("add-preference");
    const used = new Set(state.preferences.map((p) => String(p.identity)));
    const free = state.identities.filter((i) => !used.has(String(i.id)));
    const select = $("add-identity");
    const previous = select.value;
    select.replaceChildren();
    for (const identity of free) {
      const option = document.createElement("option");
      option.value = identity.id;
      option.textContent = identityName(identity);
      if (String(identity.id) === previous) option.selected = true;
      select.appendChild(option);
    }
    form.hidden = free.length === 0;
  }

  async function addPreference(event) {
    event.preventDefault();
    const form = $("add-preference");
    const error = $("add-error");
    error.hidden = true;
    error.removeAttribute("role");
    const identity = Number($("add-identity").value);
    const body = {
      identity: identity,
      enabled: true,
      notification_types: Array.from(form.querySelectorAll("input[name=notification_types]:checked")).map((b) => b.value),
      timezone: browserZone,
      priority: state.preferences.reduce((max, p) => Math.max(max, p.priority), 0) + 1,
    };
    try {
      const created = await request("POST", config.preferences, body);
      state.preferences = list(await api.preferences());
      renderPreferences(created && created.id ? { id: created.id, selector: ".pref-enabled" } : null);
      say(`Added ${identityShort(identityById(identity))} at position ${state.preferences.length}.`, "ok");
    } catch (err) {
      error.textContent = describe(err);
      error.hidden = false;
      error.setAttribute("role", "alert");
      say(describe(err), "error");
    }
  }

  // --- start --------------------------------------------------------------------------------

  async function refresh() {
    const [identities, preferences] = await Promise.all([api.identities(), api.preferences()]);
    state.identities = list(identities);
    state.preferences = list(preferences);
    renderIdentities();
    renderPreferences();
  }

  async function start() {
    $("pair-form").addEventListener("submit", requestCode);
    $("pair-channel").addEventListener("change", updateAddressRow);
    $("pair-cancel").addEventListener("click", () => {
      stopWaiting("Stopped waiting. The code still works until it expires; reload to see new channels.");
    });
    $("add-preference").addEventListener("submit", addPreference);
    document.addEventListener("visibilitychange", checkNow);
    window.addEventListener("focus", checkNow);
    window.addEventListener("pageshow", checkNow);
    if ("BroadcastChannel" in window) new BroadcastChannel(config.pairedChannel).onmessage = checkNow;
    try {
      const [channels] = await Promise.all([api.channels(), refresh()]);
      state.channels = list(channels);
      renderChannels();
      $("preferences-app").dataset.ready = "true";
    } catch (error) {
      $("preferences-app").dataset.ready = "error";
      say(describe(error), "error");
    }
  }

  app.refresh = refresh;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
