// animelite web page: pick/drop/paste a photo, choose a style, POST /v1/stylize, compare, download.
// Plain JavaScript, no build step, no third-party code; works offline against its own server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), dropText: $("drop-text"), thumb: $("thumb"), file: $("file"), camera: $("camera"),
    styleList: $("style-list"), size: $("size"), facesField: $("faces-field"), faces: $("faces"),
    go: $("go"), status: $("status"), error: $("error"), limitMb: $("limit-mb"),
    empty: $("empty"), compare: $("compare"), before: $("before"), after: $("after"), slider: $("slider"),
    busy: $("busy"), actions: $("after-actions"), download: $("download"), info: $("result-info"),
    timingsBox: $("timings-box"), timings: $("timings"),
  };
  const STAGE_NAMES = {
    queue: "Waiting for a free worker", decode: "Reading the photo", preprocess: "Resizing",
    faces: "Faces", inference: "Painting (the model)", postprocess: "Finishing", encode: "Saving the picture",
    cache: "Found in the cache", total: "Total on the server",
  };
  const SIZE_LABELS = { 256: "Quick", 384: "Light", 512: "Standard", 768: "Detailed", 1024: "Large", 1536: "Huge", 2048: "Huge" };

  let photo = null;          // the File/Blob chosen
  let photoUrl = null;       // object URL of the photo (the "before")
  let resultUrl = null;      // object URL of the result
  let controller = null;     // AbortController of the running request
  let tick = null;           // elapsed-time timer
  let maxUpload = 20 * 1024 * 1024;

  // ---------------------------------------------------------------- helpers
  function setStatus(text) { els.status.textContent = text || ""; }
  function showError(text) {
    els.error.textContent = text;
    els.error.hidden = !text;
  }
  function prettyName(name) {
    return name.split(/[_-]+/).map((w) => (/^v\d+$/.test(w) || /^\d+$/.test(w) ? w : w.charAt(0).toUpperCase() + w.slice(1))).join(" ");
  }
  function shortDescription(text) {
    const cut = text.split(" (")[0].split(": ");
    return (cut.length > 1 ? cut.slice(1).join(": ") : cut[0]).replace(/\.$/, "");
  }
  function ms(value) {
    if (value >= 1000) return (value / 1000).toFixed(2) + " s";
    return (value >= 10 ? Math.round(value) : value.toFixed(1)) + " ms";
  }
  function selectedStyle() {
    const checked = document.querySelector('input[name="style"]:checked');
    return checked ? checked.value : "";
  }

  // ---------------------------------------------------------------- catalog
  async function loadStyles() {
    let data;
    try {
      const res = await fetch("/v1/styles", { headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      data = await res.json();
    } catch (err) {
      els.styleList.innerHTML = "";
      showError("Could not load the list of styles from the server. Reload the page to try again.");
      return;
    }
    maxUpload = data.limits.max_upload_bytes;
    els.limitMb.textContent = String(Math.floor(maxUpload / (1024 * 1024)));
    els.styleList.innerHTML = "";
    const present = data.styles.filter((s) => s.present);
    if (!present.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No styles are installed on this server yet.";
      els.styleList.appendChild(p);
    }
    for (const s of present) {
      const card = document.createElement("div");
      card.className = "style-card";
      const input = document.createElement("input");
      input.type = "radio"; input.name = "style"; input.value = s.name; input.id = "style-" + s.name;
      input.className = "visually-hidden";
      input.checked = s.name === data.default_style;
      input.addEventListener("change", () => { if (photo) run(); });
      const label = document.createElement("label");
      label.htmlFor = input.id;
      const shot = document.createElement("div");
      shot.className = "shot";
      if (s.preview_url) {
        const img = document.createElement("img");
        img.alt = "";
        img.decoding = "async";
        img.addEventListener("load", () => shot.classList.add("loaded"));
        img.addEventListener("error", () => { shot.classList.add("loaded"); img.remove(); });
        img.src = s.preview_url;
        shot.appendChild(img);
      }
      const name = document.createElement("span");
      name.className = "name"; name.textContent = prettyName(s.name);
      const desc = document.createElement("span");
      desc.className = "desc"; desc.textContent = shortDescription(s.description || "");
      label.append(shot, name, desc);
      if (s.non_commercial) {
        const badge = document.createElement("span");
        badge.className = "badge"; badge.textContent = "Non-commercial";
        badge.title = s.licence;
        label.appendChild(badge);
      }
      card.append(input, label);
      els.styleList.appendChild(card);
    }
    if (!document.querySelector('input[name="style"]:checked') && present.length) {
      document.querySelector('input[name="style"]').checked = true;
    }
    const sizes = [256, 384, 512, 768, 1024, 1536, 2048].filter((v) => v >= data.sizes.min && v <= data.sizes.max);
    if (typeof data.sizes.default === "number" && !sizes.includes(data.sizes.default)) sizes.push(data.sizes.default);
    sizes.sort((a, b) => a - b);
    els.size.innerHTML = "";
    const auto = document.createElement("option");  // the server picks per photo, from its detail and faces
    auto.value = "auto";
    auto.textContent = "Auto (by detail, 384-768 px)";
    auto.selected = data.sizes.default === "auto";
    els.size.appendChild(auto);
    for (const v of sizes) {
      const opt = document.createElement("option");
      opt.value = String(v);
      opt.textContent = (SIZE_LABELS[v] || "Custom") + " (" + v + " px)";
      opt.selected = v === data.sizes.default;
      els.size.appendChild(opt);
    }
    const faces = data.faces || {};
    els.facesField.hidden = !faces.available;
    els.faces.checked = faces.default !== "off";
    updateButton();
  }

  // ---------------------------------------------------------------- choosing a photo
  function usePhoto(file) {
    showError("");
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError("That file is not a picture. Choose a JPEG, PNG or WebP photo.");
      return;
    }
    if (file.size > maxUpload) {
      showError("That photo is " + (file.size / 1048576).toFixed(1) + " MB; the limit is " +
        Math.floor(maxUpload / 1048576) + " MB. Choose a smaller one.");
      return;
    }
    photo = file;
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    els.thumb.onerror = () => { els.thumb.hidden = true; };  // e.g. HEIC, which the browser cannot show either
    els.thumb.src = photoUrl;
    els.thumb.alt = "The photo you chose" + (file.name ? ": " + file.name : "");
    els.thumb.hidden = false;
    els.dropText.textContent = file.name ? file.name : "Photo from the clipboard";
    updateButton();
    run();
  }

  function updateButton() {
    els.go.disabled = !photo || !selectedStyle();
  }

  els.file.addEventListener("change", () => { usePhoto(els.file.files[0]); els.file.value = ""; });
  els.camera.addEventListener("change", () => { usePhoto(els.camera.files[0]); els.camera.value = ""; });
  ["dragenter", "dragover"].forEach((type) => document.addEventListener(type, (e) => {
    e.preventDefault();
    els.drop.classList.add("dragging");
  }));
  ["dragleave", "dragend"].forEach((type) => document.addEventListener(type, (e) => {
    if (e.target === document.documentElement || e.target === els.drop || !e.relatedTarget) els.drop.classList.remove("dragging");
  }));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    els.drop.classList.remove("dragging");
    if (document.body.dataset.tab && document.body.dataset.tab !== "photo") return;  // media.js has the other tabs
    const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (file) usePhoto(file);
  });
  document.addEventListener("paste", (e) => {
    if (document.body.dataset.tab && document.body.dataset.tab !== "photo") return;
    const items = (e.clipboardData && e.clipboardData.files) || [];
    for (const f of items) {
      if (f.type.startsWith("image/")) { e.preventDefault(); usePhoto(f); return; }
    }
  });
  els.go.addEventListener("click", () => run());
  els.size.addEventListener("change", () => { if (photo) run(); });
  els.faces.addEventListener("change", () => { if (photo) run(); });

  // ---------------------------------------------------------------- the request
  async function run(attempt) {
    attempt = attempt || 0;
    const style = selectedStyle();
    if (!photo || !style) return;
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    showError("");
    busy(true);
    const params = new URLSearchParams({ style: style, size: els.size.value || "512", format: "jpg", quality: "90" });
    if (!els.facesField.hidden) params.set("faces", els.faces.checked ? "true" : "false");
    const form = new FormData();
    form.append("image", photo, photo.name || "photo");
    const started = performance.now();
    try {
      const res = await fetch("/v1/stylize?" + params.toString(), {
        method: "POST", body: form, headers: { Accept: "image/*" }, signal: mine.signal,
      });
      if (res.status === 503 && res.headers.get("Retry-After") && attempt < 3) {
        const wait = Math.min(30, parseInt(res.headers.get("Retry-After"), 10) || 2);
        setStatus("The server is busy; trying again in " + wait + " s…");
        await new Promise((r) => setTimeout(r, wait * 1000));
        if (mine === controller) return run(attempt + 1);
        return;
      }
      if (!res.ok) {
        let message = "The server could not make the picture (HTTP " + res.status + ").";
        try {
          const body = await res.json();
          if (body && body.error && body.error.message) message = sentence(body.error.message);
        } catch (_) { /* not JSON */ }
        throw new Error(message);
      }
      const blob = await res.blob();
      if (mine !== controller) return;
      showResult(blob, res.headers, performance.now() - started, style);
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(err.message && !/^(Failed to fetch|NetworkError|Load failed)/.test(err.message)
        ? err.message : "Could not reach the server. Check your connection and try again.");
      setStatus("");
    } finally {
      if (mine === controller) { busy(false); controller = null; }
    }
  }

  function sentence(text) {
    const t = text.replace(/^upload: /, "");
    return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".");
  }

  function busy(on) {
    els.go.disabled = on || !photo;
    els.go.textContent = on ? "Working…" : "Make it anime";
    els.drop.setAttribute("aria-busy", on ? "true" : "false");
    clearInterval(tick);
    if (on) {
      els.empty.hidden = true;
      els.compare.hidden = false;
      els.busy.hidden = false;
      els.compare.classList.add("is-busy");
      if (!resultUrl) {
        els.before.src = photoUrl;
        els.after.src = photoUrl;
      }
      const t0 = performance.now();
      setStatus("Painting your picture…");
      tick = setInterval(() => setStatus("Painting your picture… " + ((performance.now() - t0) / 1000).toFixed(1) + " s"), 200);
    } else {
      els.busy.hidden = true;
      els.compare.classList.remove("is-busy");
      updateButton();
    }
  }

  function showResult(blob, headers, elapsed, style) {
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    els.before.src = photoUrl;
    els.after.src = resultUrl;
    els.empty.hidden = true;
    els.compare.hidden = false;
    setSlider(50);
    const ext = (blob.type.split("/")[1] || "jpg").replace("jpeg", "jpg");
    const base = (photo.name || "photo").replace(/\.[^.]+$/, "").replace(/[^\w.-]+/g, "_").slice(0, 60) || "photo";
    els.download.href = resultUrl;
    els.download.download = base + "-" + style + "." + ext;
    els.actions.hidden = false;
    const size = headers.get("X-Animelite-Size") || "";
    const cache = headers.get("X-Animelite-Cache");
    els.info.textContent = (size ? size.replace("x", " × ") + " px · " : "") + ms(elapsed) +
      (cache === "hit" ? " (from the cache)" : "");
    let timings = {};
    try { timings = JSON.parse(headers.get("X-Animelite-Timings") || "{}"); } catch (_) { timings = {}; }
    els.timings.innerHTML = "";
    for (const [stage, value] of Object.entries(timings)) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = STAGE_NAMES[stage] || stage;
      const td = document.createElement("td");
      td.textContent = ms(Number(value));
      tr.append(th, td);
      els.timings.appendChild(tr);
    }
    els.timingsBox.hidden = !Object.keys(timings).length;
    setStatus("Done: " + prettyName(style) + " style. Drag the slider to compare.");
    const box = els.compare.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) {  // phones: the result is below the controls
      const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      els.compare.scrollIntoView({ block: "nearest", behavior: still ? "auto" : "smooth" });
    }
  }

  // ---------------------------------------------------------------- the comparison slider
  function setSlider(value) {
    els.slider.value = String(value);
    els.compare.style.setProperty("--pos", value + "%");
    els.slider.setAttribute("aria-valuetext", value + "% anime, " + (100 - value) + "% original");
  }
  els.slider.addEventListener("input", () => setSlider(Number(els.slider.value)));

  loadStyles();
})();
