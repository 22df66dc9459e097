// The upload page: Uppy's Dashboard over tus (/api/uploads/), Golden Retriever to resume after a reload.
// The plain form stays as the fallback when this script cannot run.
import { Dashboard, GoldenRetriever, Tus, Uppy } from "./vendor/uppy-6.0.1/uppy.min.mjs";

const root = document.getElementById("uploader");
const plainForm = document.getElementById("plain-upload");
const ttl = document.getElementById("ttl");
const csrfToken = plainForm.querySelector("input[name=csrfmiddlewaretoken]").value;
const list = document.getElementById("file-progress");
const announcer = document.getElementById("announcer");
const batchBar = document.getElementById("batch-progress");
const batchText = document.getElementById("batch-text");
const MiB = 1024 * 1024;

const uppy = new Uppy({ id: "doorito-upload", autoProceed: false, meta: { ttl_hours: ttl.value } });
uppy.use(Dashboard, {
  inline: true,
  target: "#uppy-dashboard",
  width: "100%",
  height: 360,
  proudlyDisplayPoweredByUppy: false,
  showProgressDetails: true,
  note: "Drop files here; each is sent in resumable pieces.",
});
uppy.use(Tus, {
  endpoint: root.dataset.endpoint,
  headers: { "X-CSRFToken": csrfToken }, // the session cookie authenticates; CSRF guards the writes
  chunkSize: 8 * MiB,
  retryDelays: [0, 1000, 3000, 5000, 10000],
  allowedMetaFields: ["name", "type", "ttl_hours"], // name and type go out as tus filename and filetype too
  removeFingerprintOnSuccess: true,
});
// Files up to 512 MiB are kept in IndexedDB so that a reloaded page can resume them without re-picking.
uppy.use(GoldenRetriever, { indexedDB: { maxFileSize: 512 * MiB, maxTotalSize: 1024 * MiB } });

ttl.addEventListener("change", () => uppy.setMeta({ ttl_hours: ttl.value }));

// The server's refusal in its own words: {"error": {"code", "message"}} from the tus endpoint.
function refusal(error, response) {
  const candidates = [response?.body, error?.originalResponse?.getBody?.()];
  for (const body of candidates) {
    if (!body) continue;
    try {
      const parsed = typeof body === "string" ? JSON.parse(body) : body;
      if (parsed?.error?.message) return parsed.error.message;
    } catch {
      // not JSON: fall through to the next candidate
    }
  }
  if (!navigator.onLine) return "The network is down; the upload resumes when it is back.";
  return error?.message || "The upload failed.";
}

const rows = new Map(); // file id -> {bar, text, announcedStep}

function row(file) {
  let entry = rows.get(file.id);
  if (entry) return entry;
  const item = document.createElement("li");
  item.className = "progress-row";
  const label = document.createElement("label");
  label.htmlFor = `progress-${file.id}`;
  label.textContent = file.name;
  const bar = document.createElement("progress");
  bar.id = `progress-${file.id}`;
  bar.max = 100;
  bar.value = 0;
  const text = document.createElement("span");
  text.className = "state";
  text.id = `progress-text-${file.id}`;
  text.textContent = "waiting";
  bar.setAttribute("aria-describedby", text.id);
  item.append(label, " ", bar, " ", text);
  list.append(item);
  entry = { item, bar, text, announcedStep: -1 };
  rows.set(file.id, entry);
  return entry;
}

function announce(message) {
  announcer.textContent = message;
}

uppy.on("file-added", (file) => row(file));
uppy.on("file-removed", (file) => {
  rows.get(file.id)?.item.remove();
  rows.delete(file.id);
});
uppy.on("upload-progress", (file, progress) => {
  if (!file || !progress.bytesTotal) return;
  const entry = row(file);
  const percent = Math.floor((100 * progress.bytesUploaded) / progress.bytesTotal);
  entry.bar.value = percent;
  entry.text.textContent = `${percent}%`;
  entry.item.classList.remove("failed");
  // Screen readers hear every quarter, not every progress event.
  const step = Math.floor(percent / 25);
  if (step > entry.announcedStep && percent < 100) {
    entry.announcedStep = step;
    announce(`${file.name}: ${percent}% uploaded`);
  }
});
uppy.on("progress", (percent) => {
  batchBar.value = percent;
  if (percent < 100) batchText.textContent = `${percent}% of all files`;
});
uppy.on("upload-success", (file) => {
  const entry = row(file);
  entry.bar.value = 100;
  entry.text.textContent = "Uploaded";
  entry.item.classList.add("done");
  announce(`${file.name}: uploaded`);
});
const lostToNetwork = new Set(); // ids of files whose upload stopped without an answer from the server

uppy.on("upload-error", (file, error, response) => {
  if (!file) return;
  if (!error?.originalResponse && !response?.status) lostToNetwork.add(file.id);
  const message = refusal(error, response);
  // Shown next to the file in the Dashboard too.
  uppy.setFileState(file.id, { error: message });
  const entry = row(file);
  entry.text.textContent = `Refused: ${message}`;
  entry.item.classList.add("failed");
  announce(`${file.name} was not uploaded: ${message}`);
});
// Once no file is still on its way, say how the batch ended (Uppy's "complete" is not sent when one fails).
function summarize() {
  const files = uppy.getFiles();
  const busy = files.some((f) => f.progress.uploadStarted && !f.progress.uploadComplete && !f.error);
  if (busy || !files.length) return;
  const done = files.filter((f) => f.progress.uploadComplete).length;
  batchText.textContent = `${done} uploaded, ${files.length - done} failed.`;
  announce(batchText.textContent);
}
uppy.on("complete", summarize);
uppy.on("upload-success", () => setTimeout(summarize));
uppy.on("upload-error", () => setTimeout(summarize));
uppy.on("restored", () => {
  // After a reload the restored uploads continue from the server's offset without another click.
  for (const file of uppy.getFiles()) row(file);
  const { currentUploads } = uppy.getState();
  for (const uploadID of Object.keys(currentUploads)) {
    uppy.restore(uploadID).catch((error) => announce(`The restored upload failed: ${error.message}`));
  }
});
// Offline mid-upload: tus gives up after its retries; once the network is back, continue from the offset.
window.addEventListener("online", () => {
  for (const id of lostToNetwork) {
    lostToNetwork.delete(id);
    if (uppy.getFile(id)) uppy.retryUpload(id);
  }
});

plainForm.hidden = true;
root.hidden = false;
window.doorito = { uppy }; // for the browser tests and the curious
