import { createClient, secondsLeft } from "/demo/toutiao-gateway.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// ?gateway=http://127.0.0.1:PORT: call a gateway on another origin (its `cors` must allow this page).
// Loopback only: a link must not send what this page logs in with to a gateway of someone else's.
const asked = params.get("gateway") || "";
const gateway = /^http:\/\/(127\.0\.0\.1|localhost)(:\d{1,5})?$/.test(asked) ? asked : "";
const client = createClient({ baseUrl: gateway, onLoginRequired: () => show("login") });
let calls = 0;
let renewals = 0;
let lastToken = null;

function say(text) { $("message").textContent = text; }

function show(view) {
  const loggedIn = view === "session";
  $("login-form").hidden = loggedIn;
  $("session").hidden = !loggedIn;
  if (!loggedIn) {
    $("auto").checked = false;
    say("Please log in (your session is over, or you have not logged in yet).");
  }
}

$("send-code").addEventListener("click", async () => {
  try {
    const mobile = await client.requestCode($("mobile").value);
    say(`A code was sent to ${mobile}.`);
    const shown = await fetch(`/demo/code/${mobile}`); // demo mode only: the development sender's code
    if (shown.ok) {
      const { code } = await shown.json();
      $("demo-code").textContent = `the development sender's code: ${code}`;
      $("code").value = code;
    }
  } catch (error) {
    say(`${error.status || ""} ${error.message}`);
  }
});

$("login").addEventListener("click", async () => {
  try {
    await client.login({ mobile: $("mobile").value, code: $("code").value });
    lastToken = client.tokens().token;
    say("Logged in.");
    show("session");
  } catch (error) {
    say(`${error.status || ""} ${error.message}`);
  }
});

async function call() {
  try {
    const response = await client.fetch("/v1_0/user/profile");
    calls += 1;
    $("calls").textContent = String(calls);
    $("result").textContent = `${response.status}\n${await response.text()}`;
    $("result").dataset.status = String(response.status);
  } catch (error) {
    $("result").textContent = `${error.status || ""} ${error.message}`;
    $("result").dataset.status = String(error.status || 0);
  }
}

$("call").addEventListener("click", call);
$("logout").addEventListener("click", async () => {
  await client.logout().catch(() => {});
  show("login");
  say("Logged out.");
});

setInterval(() => {
  const tokens = client.tokens();
  if (!tokens) return;
  if (lastToken && tokens.token !== lastToken) {
    renewals += 1;
    $("renewals").textContent = String(renewals);
  }
  lastToken = tokens.token;
  $("left").textContent = String(secondsLeft(tokens.token));
  $("refresh-left").textContent = String(secondsLeft(tokens.refresh_token));
}, 250);

setInterval(() => { if ($("auto").checked && client.isLoggedIn()) call(); }, 1000);

show(client.isLoggedIn() ? "session" : "login");
if (!client.isLoggedIn()) say("");
