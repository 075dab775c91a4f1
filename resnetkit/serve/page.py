"""The page served at ``/``: drop or pick an image, see the top-5 classes as bars, the class activation map over the
image and the model card. Plain HTML and JavaScript in one string (no build step, nothing to package but this module);
it only calls the service's own routes, with the bearer token the user types when the server asks for one."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resnetkit serve</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
  header { background: #263238; color: #fff; padding: 10px 20px; }
  main { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 16px; padding: 16px 20px; }
  section { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 3px #0002; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  #drop { display: block; border: 2px dashed #90a4ae; border-radius: 8px; padding: 18px; text-align: center;
          cursor: pointer; }
  #drop.over { background: #e3f2fd; border-color: #1e88e5; }
  .pics { display: flex; gap: 8px; margin-top: 10px; }
  .pics figure { margin: 0; flex: 1; text-align: center; font-size: 12px; color: #555; }
  .pics img { width: 100%; image-rendering: pixelated; border-radius: 4px; }
  .bar { display: grid; grid-template-columns: 90px 1fr 56px; align-items: center; gap: 6px; margin: 5px 0; }
  .track { background: #eceff1; border-radius: 4px; height: 18px; }
  .fill { background: #1e88e5; height: 100%; border-radius: 4px; }
  .prob { text-align: right; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  td { padding: 3px 4px; border-bottom: 1px solid #eee; vertical-align: top; }
  td:first-child { color: #666; white-space: nowrap; }
  #status { color: #b00020; min-height: 1.2em; }
</style>
</head>
<body>
<header><b>resnetkit serve</b> &mdash; drop an image to see what the model thinks and where it looked</header>
<main>
  <section>
    <h2>Image</h2>
    <label id="drop">Drop an image here, or click to pick one
      <input id="file" type="file" accept="image/*" hidden></label>
    <div class="pics">
      <figure><img id="preview" alt=""><figcaption>image</figcaption></figure>
      <figure><img id="cam" alt=""><figcaption id="cam-caption">class activation map</figcaption></figure>
    </div>
    <p id="status"></p>
  </section>
  <section><h2>Top 5</h2><div id="bars"></div></section>
  <section><h2>Model</h2><table id="card"></table></section>
</main>
<script>
let token = sessionStorage.getItem("resnetkit-token") || "";
const $ = (id) => document.getElementById(id);

async function call(path, options = {}) {
  for (;;) {
    const headers = token ? {Authorization: "Bearer " + token} : {};
    const response = await fetch(path, {...options, headers});
    if (response.status !== 401) return response;
    token = prompt("This server needs a bearer token:") || "";
    if (!token) throw new Error("no token given");
    sessionStorage.setItem("resnetkit-token", token);
  }
}

async function answer(response) {
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function text(tag, value) { const e = document.createElement(tag); e.textContent = value; return e; }

async function showCard() {
  const card = await answer(await call("/v1/model"));
  const accuracy = card.metrics.map((m) => `${m.top1}% top-1 on ${m.dataset}, ${m.split}`).join("; ");
  const rows = [["arch", card.arch], ["backend", card.backend], ["classes", card.classes.length],
    ["params", (card.params / 1e6).toFixed(2) + " M"], ["MACs", (card.macs / 1e6).toFixed(1) + " M"],
    ["input", card.input_size.join(" x ")], ["accuracy", accuracy || "not measured"],
    ["weights sha256", (card.weights_sha256 || "-").slice(0, 16)]];
  for (const [key, value] of rows) {
    const tr = document.createElement("tr");
    tr.append(text("td", key), text("td", value));
    $("card").append(tr);
  }
}

function showBars(top) {
  $("bars").replaceChildren(...top.map(({class: name, probability}) => {
    const row = document.createElement("div"); row.className = "bar";
    const track = document.createElement("div"); track.className = "track";
    const fill = document.createElement("div"); fill.className = "fill";
    fill.style.width = (100 * probability).toFixed(1) + "%";
    track.append(fill);
    const label = text("span", name); label.className = "name";
    const prob = text("span", (100 * probability).toFixed(1) + "%"); prob.className = "prob";
    row.append(label, track, prob);
    return row;
  }));
}

async function classify(file) {
  $("status").textContent = ""; $("bars").replaceChildren(); $("cam").removeAttribute("src");
  $("preview").src = URL.createObjectURL(file);
  const form = () => { const f = new FormData(); f.append("images", file); return f; };
  try {
    const result = await answer(await call("/v1/predict?top_k=5", {method: "POST", body: form()}));
    showBars(result.predictions[0].top);
    const cam = await call("/v1/cam", {method: "POST", body: form()});
    if (cam.ok) {
      const map = await cam.json();
      $("cam").src = "data:image/png;base64," + map.png;
      $("cam-caption").textContent = `where it found ${map.class}`;
    }
  } catch (err) { $("status").textContent = err.message; }
}

$("file").addEventListener("change", (e) => e.target.files[0] && classify(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
showCard().catch((err) => { $("status").textContent = err.message; });
</script>
</body>
</html>
"""
