// The rnnlab page: pick a model, then translate, tag or generate through the JSON API.
// No framework and no build step; every API error is shown in #error.
"use strict";

const $ = (id) => document.getElementById(id);
const LOADING_POLL_MS = 1000;
let models = [];
// Each request takes a ticket; only the latest one's answer is shown, so a second click, or a
// switch of model while a request is out, never shows an answer twice or under the wrong model.
let ticket = 0;
let shown = null;  // the name of the model the panels were last set up for
let poll = null;  // the one pending refresh of the model list while a model loads

async function latest(request) {
  const mine = ++ticket;
  try {
    const data = await request;
    return mine === ticket ? data : null;
  } catch (err) {
    if (mine === ticket) throw err;
    return null;  // an outdated request's failure is no longer news
  }
}

// A textarea's lines as rnnlab reads a file's: a final line end adds no empty line.
function lines(text) {
  const pieces = text.split(/\r?\n/);
  if (pieces.length > 1 && pieces[pieces.length - 1] === "") pieces.pop();
  return pieces;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the server did not answer: " + err.message);
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    throw new Error((data && data.error) || ("HTTP " + response.status));
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "style") node.style.cssText = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function currentModel() {
  return models.find((m) => m.name === $("model").value);
}

function selectModel() {
  const model = currentModel();
  const name = model ? model.name : null;
  if (name !== shown) {
    ticket++;  // an answer still on its way belongs to the model that was selected before
    shown = name;
  }
  showError("");
  for (const panel of ["translate", "tag", "generate"]) $(panel + "-panel").hidden = true;
  $("model-info").textContent = "";
  if (!model) return;
  if (!model.ready) {
    $("model-info").textContent = `${model.name} is still loading…`;
    if (poll === null) {
      poll = setTimeout(() => { poll = null; loadModels(); }, LOADING_POLL_MS);
    }
    return;
  }
  const panel = { seq2seq: "translate", tagger: "tag", lm: "generate" }[model.task];
  $(panel + "-panel").hidden = false;
  const info = [model.task];
  if (model.src_lang) info.push(model.src_lang + " → " + model.tgt_lang);
  if (model.cell) info.push(model.cell);
  if (model.attention && model.attention !== "none") info.push(model.attention + " attention");
  $("model-info").textContent = info.join(" · ");
  $("attention-label").hidden = !model.has_attention;
}

function heatmap(attention) {
  // Rows: output tokens; columns: source tokens; shade: attention weight.
  const head = el("tr", {}, el("th", {}));
  for (const token of attention.src_tokens) head.append(el("th", {}, token));
  const table = el("table", { class: "heatmap" }, el("thead", {}, head));
  const body = el("tbody");
  attention.weights.forEach((row, i) => {
    const tr = el("tr", {}, el("th", {}, attention.out_tokens[i]));
    for (const w of row) {
      const shade = Math.round(255 * (1 - w));
      tr.append(el("td", { title: w.toFixed(3), style: `background: rgb(${shade}, ${shade}, 255)` }));
    }
    body.append(tr);
  });
  table.append(body);
  return table;
}

async function translate() {
  const model = currentModel();
  const text = lines($("translate-input").value);
  const body = {
    text,
    beam: Number($("beam").value),
    n_best: Number($("n-best").value),
    attention: model.has_attention && $("attention").checked,
  };
  const out = $("translate-output");
  out.replaceChildren();
  try {
    showError("");
    const data = await latest(api(`/v1/models/${encodeURIComponent(model.name)}/translate`, body));
    if (!data) return;
    out.replaceChildren();
    data.translations.forEach((t) => {
      const block = el("div", { class: "translation" },
        el("div", {}, el("span", { class: "text" }, t.text),
          el("span", { class: "score" }, t.score.toFixed(3))));
      if (t.n_best) {
        const list = el("ol", { class: "nbest" });
        for (const alt of t.n_best) {
          list.append(el("li", {}, alt.text, el("span", { class: "score" }, alt.score.toFixed(3))));
        }
        block.append(list);
      }
      if (t.attention) block.append(heatmap(t.attention));
      out.append(block);
    });
  } catch (err) {
    showError(err.message);
  }
}

function tagColour(tag) {
  let hash = 0;
  for (const ch of tag) hash = (hash * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${hash}, 70%, 82%)`;
}

async function tag() {
  const model = currentModel();
  const out = $("tag-output");
  const legend = $("tag-legend");
  out.replaceChildren();
  legend.replaceChildren();
  try {
    showError("");
    const text = lines($("tag-input").value).filter((line) => line.trim());
    const data = await latest(api(`/v1/models/${encodeURIComponent(model.name)}/tag`, { text }));
    if (!data) return;
    out.replaceChildren();
    legend.replaceChildren();
    const seen = new Set();
    for (const sentence of data.sentences) {
      const line = el("div", { class: "tagged" });
      sentence.tokens.forEach((token, i) => {
        const t = sentence.tags[i];
        seen.add(t);
        line.append(el("span", { class: "token", "data-tag": t, style: `background: ${tagColour(t)}` },
          token, el("sub", {}, t)));
      });
      out.append(line);
    }
    for (const t of [...seen].sort()) {
      legend.append(el("span", { class: "token", "data-tag": t, style: `background: ${tagColour(t)}` }, t));
    }
  } catch (err) {
    showError(err.message);
  }
}

async function generate() {
  const model = currentModel();
  $("generate-output").textContent = "";
  try {
    showError("");
    const body = { prefix: $("prefix").value, temperature: Number($("temperature").value) };
    // An empty Length box leaves the length to the server (its default fits its own limits).
    if ($("length").value !== "") body.length = Number($("length").value);
    const data = await latest(api(`/v1/models/${encodeURIComponent(model.name)}/generate`, body));
    if (!data) return;
    $("generate-output").textContent = data.text;
  } catch (err) {
    showError(err.message);
  }
}

// The model list, again while a selected model is still loading; the selection is kept.
async function loadModels() {
  const selected = $("model").value;
  try {
    models = (await api("/v1/models")).models;
  } catch (err) {
    showError(err.message);
    return;
  }
  const options = models.map((m) =>
    el("option", { value: m.name }, m.ready ? `${m.name} (${m.task})` : `${m.name} (loading)`));
  $("model").replaceChildren(...options);
  if (models.some((m) => m.name === selected)) $("model").value = selected;
  selectModel();
}

async function start() {
  $("model").addEventListener("change", selectModel);
  $("translate-button").addEventListener("click", translate);
  $("tag-button").addEventListener("click", tag);
  $("generate-button").addEventListener("click", generate);
  await loadModels();
}

start();
