// The chat page: talks to this server's OpenAI API (/v1/chat/completions, streamed), keeps
// conversations in localStorage, renders finished replies as Markdown (markdown.js), shows
// live tokens/s and TTFT, and W and J/token from the "amalia" object of the last chunk.
"use strict";

const STRINGS = {
  pt: {
    newChat: "Nova conversa", settings: "Definições", system: "Instrução de sistema",
    temperature: "Temperatura", maxTokens: "Máximo de tokens", apiKey: "Chave da API",
    extra: "Parâmetros extra (JSON)", tps: "tokens/s", jpt: "J/token", tokens: "tokens",
    placeholder: "Escreva uma mensagem…", send: "Enviar", stop: "Parar", copy: "Copiar",
    copied: "Copiado", stopped: "(interrompido)", untitled: "Conversa sem título",
    error: "Erro", loading: "a carregar o modelo…", ready: "pronto", you: "Você",
    assistant: "AMÁLIA", del: "Apagar", badExtra: "Parâmetros extra: JSON inválido",
  },
  en: {
    newChat: "New chat", settings: "Settings", system: "System prompt",
    temperature: "Temperature", maxTokens: "Max tokens", apiKey: "API key",
    extra: "Extra parameters (JSON)", tps: "tokens/s", jpt: "J/token", tokens: "tokens",
    placeholder: "Type a message…", send: "Send", stop: "Stop", copy: "Copy",
    copied: "Copied", stopped: "(stopped)", untitled: "Untitled chat",
    error: "Error", loading: "loading the model…", ready: "ready", you: "You",
    assistant: "AMÁLIA", del: "Delete", badExtra: "Extra parameters: invalid JSON",
  },
};

const KEY_CONVS = "amalia-edge.conversations";
const KEY_SETTINGS = "amalia-edge.settings";
const $ = (id) => document.getElementById(id);

const state = {
  lang: "pt",
  model: null,
  convs: [],       // [{id, title, messages: [{role, content, stats?}], updated}]
  current: null,   // id
  controller: null,
  settings: { system: "", temperature: 0.7, max_tokens: 512, api_key: "", extra: "" },
};

function t(key) { return STRINGS[state.lang][key] || key; }

function load() {
  try { state.convs = JSON.parse(localStorage.getItem(KEY_CONVS) || "[]"); } catch { state.convs = []; }
  try { Object.assign(state.settings, JSON.parse(localStorage.getItem(KEY_SETTINGS) || "{}")); } catch { /* defaults */ }
  state.lang = state.settings.lang === "en" ? "en" : "pt";
  state.current = state.convs.length ? state.convs[0].id : null;
}

function save() {
  localStorage.setItem(KEY_CONVS, JSON.stringify(state.convs));
  localStorage.setItem(KEY_SETTINGS, JSON.stringify(state.settings));
}

function currentConv() { return state.convs.find((c) => c.id === state.current) || null; }

function applyLanguage() {
  document.documentElement.lang = state.lang === "pt" ? "pt-PT" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
  $("lang").textContent = state.lang === "pt" ? "EN" : "PT";
  renderAll();
}

function renderConversations() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of state.convs) {
    const li = document.createElement("li");
    li.className = c.id === state.current ? "active" : "";
    const a = document.createElement("button");
    a.type = "button";
    a.className = "conv";
    a.textContent = c.title || t("untitled");
    a.onclick = () => { if (!state.controller) { state.current = c.id; renderAll(); } };
    const del = document.createElement("button");
    del.type = "button";
    del.className = "del";
    del.title = t("del");
    del.textContent = "×";
    del.onclick = () => {
      if (state.controller) return;
      state.convs = state.convs.filter((x) => x.id !== c.id);
      if (state.current === c.id) state.current = state.convs.length ? state.convs[0].id : null;
      save(); renderAll();
    };
    li.append(a, del);
    ul.append(li);
  }
}

function messageEl(msg) {
  const div = document.createElement("div");
  div.className = "msg " + msg.role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = msg.role === "user" ? t("you") : t("assistant");
  const body = document.createElement("div");
  body.className = "body";
  if (msg.role === "assistant" && !msg.streaming) {
    body.innerHTML = renderMarkdown(msg.content) + (msg.stopped ? ' <em class="note">' + escapeHtml(t("stopped")) + "</em>" : "");
  } else {
    body.textContent = msg.content;
  }
  div.append(who, body);
  if (msg.role === "assistant" && !msg.streaming) {
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = t("copy");
    copy.onclick = () => copyText(msg.content, copy);
    div.append(copy);
  }
  return div;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const conv = currentConv();
  if (!conv) return;
  for (const m of conv.messages) box.append(messageEl(m));
  box.scrollTop = box.scrollHeight;
}

function renderAll() { renderConversations(); renderMessages(); }

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = document.createElement("textarea");
    ta.value = text;
    document.body.append(ta);
    ta.select();
    document.execCommand("copy");
    ta.remove();
  }
  button.textContent = t("copied");
  button.dataset.copied = text;
  setTimeout(() => { button.textContent = t("copy"); }, 1500);
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.settings.api_key) h.Authorization = "Bearer " + state.settings.api_key;
  return h;
}

async function fetchModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.ok) {
      const data = await r.json();
      state.model = data.data[0].id;
      const meta = data.data[0].meta || {};
      $("model-name").textContent = state.model + (meta.quant ? " · " + meta.backend + " " + meta.quant : "");
      $("server-status").textContent = t("ready");
      return;
    }
    $("server-status").textContent = r.status === 503 ? t("loading") : t("error") + " " + r.status;
  } catch (e) {
    $("server-status").textContent = t("error");
  }
  setTimeout(fetchModel, 2000);
}

function setStat(id, value) { $(id).textContent = value; }

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  let extra = {};
  if (state.settings.extra && state.settings.extra.trim()) {
    try { extra = JSON.parse(state.settings.extra); } catch { alert(t("badExtra")); return; }
  }
  let conv = currentConv();
  if (!conv) {
    conv = { id: String(Date.now()), title: "", messages: [], updated: Date.now() };
    state.convs.unshift(conv);
    state.current = conv.id;
  }
  if (!conv.title) conv.title = text.slice(0, 40);
  conv.messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "", streaming: true };
  conv.messages.push(reply);
  conv.updated = Date.now();
  save();
  renderAll();
  const bodyEl = $("messages").lastElementChild.querySelector(".body");

  const messages = [];
  if (state.settings.system) messages.push({ role: "system", content: state.settings.system });
  for (const m of conv.messages.slice(0, -1)) messages.push({ role: m.role, content: m.content });
  const payload = Object.assign({
    model: state.model || undefined, messages, stream: true,
    stream_options: { include_usage: true },
    temperature: Number(state.settings.temperature),
    max_tokens: Number(state.settings.max_tokens) || undefined,
  }, extra);

  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  ["stat-tps", "stat-ttft", "stat-watts", "stat-jpt", "stat-tokens"].forEach((id) => setStat(id, "…"));
  const t0 = performance.now();
  let tFirst = null;
  let chunks = 0;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(payload), signal: controller.signal,
    });
    if (!r.ok) {
      let msg = t("error") + " " + r.status;
      try { msg += ": " + (await r.json()).error.message; } catch { /* keep status */ }
      throw new Error(msg);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const obj = JSON.parse(data);
        if (obj.error) throw new Error(obj.error.message);
        const delta = obj.choices && obj.choices[0] && obj.choices[0].delta;
        if (delta && delta.content) {
          const now = performance.now();
          if (tFirst === null) { tFirst = now; setStat("stat-ttft", ((now - t0) / 1000).toFixed(2) + " s"); }
          chunks += 1;
          reply.content += delta.content;
          bodyEl.textContent = reply.content;
          if (chunks > 1) setStat("stat-tps", ((chunks - 1) / ((now - tFirst) / 1000)).toFixed(1));
          $("messages").scrollTop = $("messages").scrollHeight;
        }
        if (obj.amalia) {
          const a = obj.amalia;
          if (a.decode_tokens_per_s) setStat("stat-tps", a.decode_tokens_per_s.toFixed(1));
          if (a.ttft_s !== null) setStat("stat-ttft", a.ttft_s.toFixed(2) + " s");
          setStat("stat-watts", a.watts === null ? "n/d" : a.watts.toFixed(1));
          setStat("stat-jpt", a.joules_per_token === null ? "n/d" : a.joules_per_token.toFixed(3));
        }
        if (obj.usage) setStat("stat-tokens", obj.usage.prompt_tokens + " + " + obj.usage.completion_tokens);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      reply.stopped = true;
    } else {
      reply.content += (reply.content ? "\n\n" : "") + "**" + t("error") + "**: " + e.message;
      reply.error = true;
    }
  } finally {
    delete reply.streaming;
    state.controller = null;
    setBusy(false);
    conv.updated = Date.now();
    save();
    renderAll();
    ["stat-tps", "stat-ttft", "stat-watts", "stat-jpt", "stat-tokens"].forEach((id) => {
      if ($(id).textContent === "…") setStat(id, "–");
    });
  }
}

function bindSettings() {
  const bind = (id, key) => {
    const el = $(id);
    el.value = state.settings[key];
    el.addEventListener("change", () => { state.settings[key] = el.value; save(); if (key === "api_key") fetchModel(); });
  };
  bind("set-system", "system");
  bind("set-temperature", "temperature");
  bind("set-max-tokens", "max_tokens");
  bind("set-api-key", "api_key");
  bind("set-extra", "extra");
}

function init() {
  load();
  bindSettings();
  $("lang").onclick = () => {
    state.lang = state.lang === "pt" ? "en" : "pt";
    state.settings.lang = state.lang;
    save();
    applyLanguage();
  };
  $("new-chat").onclick = () => { if (!state.controller) { state.current = null; renderAll(); $("input").focus(); } };
  $("stop").onclick = () => { if (state.controller) state.controller.abort(); };
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("input").value.trim();
    if (!text || state.controller) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("composer").requestSubmit(); }
  });
  applyLanguage();
  fetchModel();
}

init();
