// Local OpenID Connect provider for Muster's SSO tests.
//
// This is only a harness around panva's certified `oidc-provider` package:
// configuration, a minimal login page, and a control API under /_test/ that
// lets a test change accounts, tamper with the next ID token, or rotate keys.
// See README.md in this folder.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';

import { CompactSign, exportJWK, generateKeyPair, importJWK } from 'jose';
import Provider from 'oidc-provider';
// oidc-provider's own in-memory adapter. Since v9 each Provider instance gets a
// private store, so we create one store here and hand it to every instance we
// build (see rebuild()): sessions, interactions, codes and grants then survive
// a rebuild. Deep import: fine while the package is pinned exactly.
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const log = (...args) => console.error('[oidc-provider]', ...args);

function parseEnvJson(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  try {
    return JSON.parse(raw);
  } catch (err) {
    log(`env ${name} is not valid JSON: ${err.message}`);
    process.exit(2);
  }
  return fallback;
}

// ---------------------------------------------------------------- state
const clientsEnv = parseEnvJson('CLIENTS', []);
const accountsEnv = parseEnvJson('ACCOUNTS', {});
if (!Array.isArray(clientsEnv)) {
  log('env CLIENTS must be a JSON array');
  process.exit(2);
}
if (accountsEnv === null || typeof accountsEnv !== 'object' || Array.isArray(accountsEnv)) {
  log('env ACCOUNTS must be a JSON object (subject -> claims)');
  process.exit(2);
}

const accounts = new Map(Object.entries(accountsEnv));
const TAMPER_MODES = new Set(['none', 'audience', 'expired', 'unknown-key', 'rotate', 'clock-ahead', 'just-expired', 'far-future']);
const state = {
  mode: 'none', // one-shot tamper mode for the next token response
  rotated: false, // after "rotate": sign with key-b, publish key-b and key-a
  claimsInIdToken: false, // conformIdTokenClaims = !claimsInIdToken
  tokensIssued: 0,
  codesRedeemed: 0,
  userinfoCalls: 0,
};

// ---------------------------------------------------------------- keys
async function makeKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, jwk, key: await importJWK(jwk, 'RS256') };
}
const [keyA, keyB, keyX] = await Promise.all([makeKey('key-a'), makeKey('key-b'), makeKey('key-x')]);
const currentSigningKey = () => (state.rotated ? keyB : keyA);

// Cookie signing keys and storage shared by every Provider instance we build,
// so that sessions, interactions and codes survive a rebuild.
const cookieKeys = [randomBytes(32).toString('base64url')];
const sharedAdapter = createMemoryAdapter(15);

// ---------------------------------------------------------------- provider
function buildConfiguration() {
  return {
    clients: clientsEnv.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      // oidc-provider accepts client_secret_post as well for a client
      // registered with client_secret_basic (both are "client secret" auth).
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: state.rotated ? [keyB.jwk, keyA.jwk] : [keyA.jwk] },
    cookies: { keys: cookieKeys },
    adapter: sharedAdapter,
    scopes: ['openid', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    conformIdTokenClaims: !state.claimsInIdToken,
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    async findAccount(_ctx, id) {
      if (!accounts.has(id)) return undefined;
      return {
        accountId: id,
        // Read at claim time, so /_test/accounts changes apply to userinfo.
        async claims() {
          return { ...(accounts.get(id) ?? {}), sub: id };
        },
      };
    },
    // Skip consent: always grant what the client asked for.
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      const scopes = [...ctx.oidc.requestParamOIDCScopes];
      if (scopes.length) grant.addOIDCScope(scopes.join(' '));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
  };
}

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function resign(idToken, key, mutate) {
  const [h, p] = idToken.split('.');
  const header = { ...decodePart(h), kid: key.kid };
  const payload = decodePart(p);
  mutate(payload);
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(key.key);
}

async function tamperIdToken(idToken, mode) {
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'audience':
      return resign(idToken, currentSigningKey(), (p) => { p.aud = 'some-other-app'; });
    case 'expired':
      return resign(idToken, currentSigningKey(), (p) => { p.iat = now - 7200; p.exp = now - 3600; });
    case 'unknown-key':
      return resign(idToken, keyX, () => {});
    // A provider whose clock is off by 90 s either way (within a relying party's
    // usual tolerance), and one issuing tokens 10 minutes in the future (beyond it).
    case 'clock-ahead':
      return resign(idToken, currentSigningKey(), (p) => { p.iat = now + 90; p.exp = now + 90 + 3600; });
    case 'just-expired':
      return resign(idToken, currentSigningKey(), (p) => { p.iat = now - 3690; p.exp = now - 90; });
    case 'far-future':
      return resign(idToken, currentSigningKey(), (p) => { p.iat = now + 600; p.exp = now + 4200; });
    default:
      return idToken;
  }
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, buildConfiguration());
  provider.on('server_error', (_ctx, err) => log('server_error', err));
  provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'userinfo' && ctx.status === 200) {
      state.userinfoCalls += 1;
    }
    if (route === 'token' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      state.tokensIssued += 1;
      if (ctx.oidc.params?.grant_type === 'authorization_code') state.codesRedeemed += 1;
      const { mode } = state;
      if (mode !== 'none' && typeof ctx.body.id_token === 'string') {
        ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, mode) };
        log(`tampered id_token: ${mode}`);
      }
      state.mode = 'none'; // one-shot
    }
  });
  return provider;
}

// ---------------------------------------------------------------- http
const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function sendHtml(res, status, title, body) {
  const html = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${htmlEscape(title)}</title></head>
<body><h1>${htmlEscape(title)}</h1>
${body}
</body></html>
`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
  });
  res.end(html);
}

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1024 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

let issuer;
let current; // the current Provider instance
let currentCallback;
function rebuild() {
  current = buildProvider(issuer);
  currentCallback = current.callback();
}

function stateView() {
  return {
    mode: state.mode,
    tokens_issued: state.tokensIssued,
    codes_redeemed: state.codesRedeemed,
    userinfo_calls: state.userinfoCalls,
    claims_in_id_token: state.claimsInIdToken,
    rotated: state.rotated,
    signing_kid: currentSigningKey().kid,
  };
}

async function handleControl(req, res, path) {
  if (req.method === 'GET' && path === '/_test/state') {
    return sendJson(res, 200, stateView());
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });
  let body;
  try {
    const raw = await readBody(req);
    body = raw.trim() === '' ? {} : JSON.parse(raw);
  } catch (err) {
    return sendJson(res, 400, { error: `invalid JSON body: ${err.message}` });
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return sendJson(res, 400, { error: 'body must be a JSON object' });
  }
  if (path === '/_test/accounts') {
    for (const [sub, claims] of Object.entries(body)) {
      if (claims === null) accounts.delete(sub);
      else if (typeof claims === 'object' && !Array.isArray(claims)) accounts.set(sub, claims);
      else return sendJson(res, 400, { error: `claims for ${sub} must be an object or null` });
    }
    log(`accounts: ${[...accounts.keys()].join(', ')}`);
    return sendJson(res, 200, { accounts: Object.fromEntries(accounts) });
  }
  if (path === '/_test/tamper' || path === '/_test/mode') {
    let needRebuild = false;
    if ('mode' in body) {
      if (!TAMPER_MODES.has(body.mode)) {
        return sendJson(res, 400, { error: `unknown mode ${JSON.stringify(body.mode)}`, modes: [...TAMPER_MODES] });
      }
      if (body.mode === 'rotate') {
        if (!state.rotated) {
          state.rotated = true;
          needRebuild = true;
        }
      } else {
        state.mode = body.mode;
      }
    }
    if ('claims_in_id_token' in body) {
      const v = body.claims_in_id_token === true;
      if (v !== state.claimsInIdToken) {
        state.claimsInIdToken = v;
        needRebuild = true;
      }
    }
    if (needRebuild) rebuild();
    log(`control: ${JSON.stringify(stateView())}`);
    return sendJson(res, 200, stateView());
  }
  return sendJson(res, 404, { error: 'not found' });
}

function loginForm(uid, details, client) {
  const hint = details.params.login_hint ? ` value="${htmlEscape(details.params.login_hint)}"` : '';
  return `<p>Client: <code>${htmlEscape(client?.clientName ?? details.params.client_id)}</code></p>
<form method="post" action="/interaction/${htmlEscape(uid)}">
<input name="login" autocomplete="off" autofocus${hint}>
<input name="password" type="password">
<button type="submit">Sign in</button>
</form>`;
}

// Auto-grant consent if oidc-provider ever asks for it (it should not, as
// loadExistingGrant already grants every requested scope and claim).
async function finishConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await current.Grant.find(details.grantId)
    : new current.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scope] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
  }
  const grantId = await grant.save();
  await current.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function handleInteraction(req, res, uid) {
  let details;
  try {
    details = await current.interactionDetails(req, res);
  } catch (err) {
    return sendHtml(res, 400, 'Sign-in error',
      `<p id="error">${htmlEscape(err.error_description || err.message)}</p>`);
  }
  if (details.uid !== uid) {
    return sendHtml(res, 400, 'Sign-in error', '<p id="error">interaction mismatch</p>');
  }
  const promptName = details.prompt.name;
  if (promptName === 'consent') return finishConsent(req, res, details);
  if (promptName !== 'login') {
    return sendHtml(res, 501, 'Sign-in error', `<p id="error">unsupported prompt ${htmlEscape(promptName)}</p>`);
  }
  if (req.method === 'GET') {
    const client = await current.Client.find(details.params.client_id);
    return sendHtml(res, 200, 'Sign in', loginForm(uid, details, client));
  }
  if (req.method !== 'POST') return sendHtml(res, 405, 'Sign-in error', '<p id="error">method not allowed</p>');
  const form = new URLSearchParams(await readBody(req));
  const login = (form.get('login') ?? '').trim();
  if (!accounts.has(login)) {
    log(`login refused: unknown subject ${JSON.stringify(login)}`);
    return sendHtml(res, 403, 'Sign-in failed',
      `<p id="error">Unknown user: <code>${htmlEscape(login)}</code></p>
<p><a href="/interaction/${htmlEscape(uid)}">Try again</a></p>`);
  }
  log(`login: ${login}`);
  return current.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}

async function handle(req, res) {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    if (path.startsWith('/_test/')) return await handleControl(req, res, path);
    const m = path.match(/^\/interaction\/([^/]+)$/);
    if (m) return await handleInteraction(req, res, m[1]);
    return currentCallback(req, res);
  } catch (err) {
    log('harness error', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'harness error', message: String(err?.message ?? err) });
    else res.destroy();
  }
  return undefined;
}

const server = http.createServer((req, res) => { handle(req, res); });
const port = Number.parseInt(process.env.PORT ?? '0', 10) || 0;

function shutdown(why) {
  log(`exiting (${why})`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}`;
  rebuild();
  process.stdout.write(`${JSON.stringify({ issuer, control: `${issuer}/_test` })}\n`);
  // Stdout carries that one line only: the provider's own console output goes to
  // stderr, so a parent that stops reading stdout cannot kill us with EPIPE.
  console.log = console.info = (...args) => console.error(...args);
  log(`listening: ${issuer}; clients: ${clientsEnv.map((c) => c.client_id).join(', ') || '(none)'}; accounts: ${[...accounts.keys()].join(', ') || '(none)'}`);
  // Exit when our parent goes away (its end of our stdin closes), unless
  // told not to (OIDC_PROVIDER_IGNORE_STDIN=1, e.g. when run by hand with </dev/null).
  if (process.env.OIDC_PROVIDER_IGNORE_STDIN !== '1') {
    process.stdin.on('end', () => shutdown('stdin closed'));
    process.stdin.on('close', () => shutdown('stdin closed'));
    process.stdin.on('error', () => shutdown('stdin error'));
    process.stdin.resume();
  }
});
server.on('error', (err) => {
  log(`cannot listen: ${err.message}`);
  process.exit(1);
});
