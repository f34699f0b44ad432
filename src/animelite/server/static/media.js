// animelite web page, the Video and Live tabs (app.js has the Photo tab).
// Video: upload a clip (XHR for the upload progress) to POST /v1/jobs, poll the job, play before/after, download.
// Live: the camera (getUserMedia) -> JPEG frames over the WebSocket /v1/live -> stylized frames drawn on a canvas.
// Plain JavaScript, no third-party code, nothing loaded from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const tabs = { photo: $("tab-photo"), video: $("tab-video"), live: $("tab-live") };
  const panels = { photo: $("main"), video: $("panel-video"), live: $("panel-live") };
  let limits = { max_video_bytes: 200 * 1024 * 1024, max_video_seconds: 300 };

  // ---------------------------------------------------------------- tabs
  function showTab(name, focus) {
    for (const key of Object.keys(tabs)) {
      const on = key === name;
      tabs[key].setAttribute("aria-selected", String(on));
      tabs[key].tabIndex = on ? 0 : -1;
      panels[key].hidden = !on;
    }
    document.body.dataset.tab = name;
    if (focus) tabs[name].focus();
    if (name !== "live") live.stop("");  // the camera never runs behind another tab
    if (location.hash !== "#" + name && (name !== "photo" || location.hash)) history.replaceState(null, "", "#" + name);
  }
  const order = Object.keys(tabs);
  for (const key of order) {
    tabs[key].addEventListener("click", () => showTab(key));
    tabs[key].addEventListener("keydown", (e) => {
      const i = order.indexOf(key);
      if (e.key === "ArrowRight") showTab(order[(i + 1) % order.length], true);
      else if (e.key === "ArrowLeft") showTab(order[(i + order.length - 1) % order.length], true);
    });
  }

  function fillStyles(select, data) {
    select.innerHTML = "";
    for (const s of data.styles.filter((x) => x.present)) {
      const o = document.createElement("option");
      o.value = s.name;
      o.textContent = s.name.split(/[_-]+/).map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" ");
      o.selected = s.name === data.default_style;
      select.appendChild(o);
    }
  }
  function showError(el, text) { el.textContent = text || ""; el.hidden = !text; }
  async function errorText(res) {
    try { const body = await res.json(); return body.error.message; } catch (e) { return "the server answered " + res.status; }
  }
  function duration(s) {
    if (s == null || !isFinite(s)) return "";
    s = Math.max(0, Math.round(s));
    return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
  }

  // ---------------------------------------------------------------- Video
  const v = {
    drop: $("v-drop"), dropText: $("v-drop-text"), file: $("v-file"), style: $("v-style"), size: $("v-size"),
    temporal: $("v-temporal"), format: $("v-format"), go: $("v-go"), box: $("v-progress-box"),
    label: $("v-progress-label"), bar: $("v-progress"), text: $("v-progress-text"), cancel: $("v-cancel"),
    error: $("v-error"), empty: $("v-empty"), compare: $("v-compare"), before: $("v-before"), after: $("v-after"),
    actions: $("v-actions"), download: $("v-download"), info: $("v-info"), limitMb: $("v-limit-mb"), limitS: $("v-limit-s"),
  };
  let clip = null, clipUrl = null, xhr = null, job = null, poll = null;

  function useClip(file) {
    if (!file) return;
    if (file.size > limits.max_video_bytes) {
      showError(v.error, "That video is larger than this server accepts (" + Math.floor(limits.max_video_bytes / 1048576) + " MB).");
      return;
    }
    showError(v.error, "");
    clip = file;
    if (clipUrl) URL.revokeObjectURL(clipUrl);
    clipUrl = URL.createObjectURL(file);
    v.dropText.textContent = "Chosen: " + (file.name || "a video") + " (" + (file.size / 1048576).toFixed(1) + " MB)";
    v.go.disabled = false;
  }
  v.file.addEventListener("change", () => useClip(v.file.files[0]));
  ["dragenter", "dragover"].forEach((t) => v.drop.addEventListener(t, (e) => { e.preventDefault(); v.drop.classList.add("dragging"); }));
  ["dragleave", "drop"].forEach((t) => v.drop.addEventListener(t, () => v.drop.classList.remove("dragging")));
  document.addEventListener("drop", (e) => {
    if (document.body.dataset.tab !== "video") return;
    e.preventDefault();
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) useClip(f);
  });

  function working(on) {
    v.box.hidden = !on;
    v.cancel.hidden = !on;
    v.go.disabled = on || !clip;
    v.file.disabled = on;
  }
  function stopPolling() { if (poll) { clearTimeout(poll); poll = null; } }

  v.go.addEventListener("click", () => {
    if (!clip) return;
    showError(v.error, "");
    stopPolling();
    job = null;
    const q = new URLSearchParams({ style: v.style.value, size: v.size.value, temporal: v.temporal.value, format: v.format.value });
    const form = new FormData();
    form.append("video", clip, clip.name || "video");
    xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs?" + q.toString());
    xhr.responseType = "json";
    v.label.textContent = "Uploading…";
    v.bar.value = 0;
    v.text.textContent = "";
    working(true);
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      v.bar.value = e.loaded / e.total;
      v.text.textContent = (e.loaded / 1048576).toFixed(1) + " of " + (e.total / 1048576).toFixed(1) + " MB sent";
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response, accepted = xhr.status === 202;
      xhr = null;
      if (accepted && body && body.id && body.status_url) {
        job = body;
        v.label.textContent = "Waiting for the server…";
        v.bar.value = 0;
        v.bar.removeAttribute("value");  // indeterminate until the first frames are done
        follow();
      } else {
        working(false);
        showError(v.error, (body && body.error && body.error.message) || "The upload was refused.");
      }
    });
    xhr.addEventListener("error", () => { xhr = null; working(false); showError(v.error, "The upload failed: the connection was lost."); });
    xhr.addEventListener("abort", () => { xhr = null; working(false); v.text.textContent = ""; });
    xhr.send(form);
  });

  async function follow() {
    if (!job) return;
    let st;
    try {
      const res = await fetch(job.status_url, { cache: "no-store" });
      if (!res.ok) throw new Error(await errorText(res));
      st = await res.json();
    } catch (err) {
      working(false);
      showError(v.error, "Lost track of the video job: " + err.message);
      return;
    }
    if (st.status === "queued") {
      v.label.textContent = "In the queue…";
    } else if (st.status === "running") {
      v.label.textContent = "Painting the frames…";
      if (st.frames_total) {
        v.bar.value = st.progress;
        v.text.textContent = st.frames_done + " of " + st.frames_total + " frames" +
          (st.eta_s != null ? ", about " + duration(st.eta_s) + " left" : "") + (st.fps ? " (" + st.fps.toFixed(1) + " frames/s)" : "");
      } else {
        v.text.textContent = st.frames_done + " frames";
      }
    }
    if (st.status === "done") return finished(st);
    if (st.status === "failed" || st.status === "cancelled") {
      working(false);
      showError(v.error, st.status === "failed" ? "The video could not be made: " + (st.error || "unknown error") : "");
      v.text.textContent = st.status === "cancelled" ? "Cancelled." : "";
      job = null;
      return;
    }
    poll = setTimeout(follow, 700);
  }

  function finished(st) {
    working(false);
    v.box.hidden = false;  // keeps "Done: N frames" in view
    v.bar.value = 1;
    v.text.textContent = "Done: " + st.frames_done + " frames.";
    v.empty.hidden = true;
    v.compare.hidden = false;
    v.actions.hidden = false;
    v.before.src = clipUrl;
    v.after.src = st.result_url;
    v.download.href = st.result_url;
    v.download.setAttribute("download", "animelite-" + v.style.value + "." + st.format);
    v.info.textContent = (st.result_bytes / 1048576).toFixed(1) + " MB " + st.format.toUpperCase();
    job = null;
  }
  // the original follows the anime version: play, pause and seek together
  v.after.addEventListener("play", () => { v.before.currentTime = v.after.currentTime; v.before.play().catch(() => {}); });
  v.after.addEventListener("pause", () => v.before.pause());
  v.after.addEventListener("seeked", () => { v.before.currentTime = v.after.currentTime; });

  v.cancel.addEventListener("click", async () => {
    if (xhr) { xhr.abort(); return; }
    if (!job) return;
    stopPolling();
    const url = job.status_url;
    try { await fetch(url, { method: "DELETE" }); } catch (e) { /* the status poll says what happened */ }
    follow();
  });

  // ---------------------------------------------------------------- Live
  const l = {
    style: $("l-style"), size: $("l-size"), faces: $("l-faces"), start: $("l-start"), stop: $("l-stop"),
    flip: $("l-flip"), snap: $("l-snap"), canvas: $("l-canvas"), fps: $("l-fps"), idle: $("l-idle"),
    cam: $("l-cam"), status: $("l-status"), error: $("l-error"),
  };
  const grab = document.createElement("canvas");
  const live = {
    stream: null, ws: null, facing: "user", inFlight: 0, frames: 0, timer: null, running: false,

    async start() {
      showError(l.error, "");
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        showError(l.error, "This browser cannot open a camera here (the page must be opened over https or on localhost).");
        return;
      }
      this.stop("");
      this.running = true;
      try {
        this.stream = await navigator.mediaDevices.getUserMedia({ audio: false,
          video: { facingMode: this.facing, width: { ideal: 640 }, height: { ideal: 480 } } });
      } catch (err) {
        this.running = false;
        showError(l.error, "The camera could not be opened: " + (err.name === "NotAllowedError" ? "permission was refused." : err.message));
        return;
      }
      if (!this.running) { this.release(); return; }
      l.cam.srcObject = this.stream;
      await l.cam.play().catch(() => {});
      const q = new URLSearchParams({ style: l.style.value, size: l.size.value, faces: l.faces.checked ? "auto" : "off" });
      const ws = this.ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/live?" + q);
      ws.binaryType = "blob";
      this.inFlight = 0;
      this.frames = 0;
      l.status.textContent = "Connecting…";
      ws.addEventListener("message", (e) => this.message(e));
      ws.addEventListener("close", (e) => {
        if (this.ws !== ws) return;
        const why = e.code === 1000 || e.code === 1005 ? "" : " (" + (e.reason || "code " + e.code) + ")";
        this.stop(why ? "The live connection ended" + why + "." : "Stopped.");
      });
      l.start.hidden = true; l.stop.hidden = false; l.flip.hidden = false;
    },

    message(e) {
      if (typeof e.data === "string") {
        const m = JSON.parse(e.data);
        if (m.ready) { l.status.textContent = "Live: " + m.ready.style + " at " + m.ready.size + " px"; l.idle.hidden = true; this.pump(); }
        else if (m.error) showError(l.error, m.error.message);
        else if (m.fps !== undefined) l.fps.textContent = m.fps.toFixed(1) + " fps · " + Math.round(m.ms) + " ms" + (m.dropped ? " · " + m.dropped + " skipped" : "");
        return;
      }
      this.inFlight = Math.max(0, this.inFlight - 1);
      createImageBitmap(e.data).then((bmp) => {
        const c = l.canvas;
        if (c.width !== bmp.width || c.height !== bmp.height) { c.width = bmp.width; c.height = bmp.height; }
        const ctx = c.getContext("2d");
        ctx.save();
        if (this.facing === "user") { ctx.translate(c.width, 0); ctx.scale(-1, 1); }  // a mirror, as people expect
        ctx.drawImage(bmp, 0, 0);
        ctx.restore();
        bmp.close();
        this.frames += 1;
        l.canvas.dataset.frames = String(this.frames);
        l.snap.disabled = false;
      }).catch(() => {});
      this.pump();
    },

    pump() {  // at most two frames on the way: the server keeps only the latest anyway
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.inFlight >= 2) return;
      const vw = l.cam.videoWidth, vh = l.cam.videoHeight;
      if (!vw || !vh) { clearTimeout(this.timer); this.timer = setTimeout(() => this.pump(), 50); return; }
      const size = Number(l.size.value), scale = Math.min(1, size / Math.max(vw, vh));
      grab.width = Math.round(vw * scale); grab.height = Math.round(vh * scale);
      grab.getContext("2d").drawImage(l.cam, 0, 0, grab.width, grab.height);
      this.inFlight += 1;
      const ws = this.ws;
      grab.toBlob((blob) => {
        if (blob && ws.readyState === WebSocket.OPEN) ws.send(blob); else this.inFlight = Math.max(0, this.inFlight - 1);
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.pump(), 0);
      }, "image/jpeg", 0.8);
    },

    release() {
      if (this.stream) { this.stream.getTracks().forEach((t) => t.stop()); this.stream = null; }
      l.cam.srcObject = null;
    },

    stop(message) {
      this.running = false;
      clearTimeout(this.timer);
      const ws = this.ws;
      this.ws = null;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
      this.release();
      l.start.hidden = false; l.stop.hidden = true; l.flip.hidden = true;
      l.fps.textContent = "";
      if (message !== undefined) l.status.textContent = message;
    },
  };
  l.start.addEventListener("click", () => live.start());
  l.stop.addEventListener("click", () => live.stop("Stopped."));
  l.flip.addEventListener("click", () => { live.facing = live.facing === "user" ? "environment" : "user"; live.start(); });
  [l.style, l.size, l.faces].forEach((el) => el.addEventListener("change", () => { if (live.ws) live.start(); }));
  l.snap.addEventListener("click", () => {
    l.canvas.toBlob((blob) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "animelite-live-" + new Date().toISOString().replace(/[:.]/g, "-") + ".png";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }, "image/png");
  });
  document.addEventListener("visibilitychange", () => {  // a hidden page never keeps the camera on
    if (document.hidden && live.running) live.stop("Stopped while the page was hidden.");
  });

  // ---------------------------------------------------------------- start
  fetch("/v1/styles", { headers: { Accept: "application/json" } }).then((r) => r.json()).then((data) => {
    fillStyles(v.style, data);
    fillStyles(l.style, data);
    if (data.limits && data.limits.video) {
      limits = data.limits.video;
      v.limitMb.textContent = String(Math.floor(limits.max_video_bytes / 1048576));
      v.limitS.textContent = String(Math.round(limits.max_video_seconds));
    }
    if (data.faces && data.faces.available) l.faces.checked = false;
  }).catch(() => {});
  const start = location.hash.replace("#", "");
  if (start in tabs) showTab(start);
})();
