// An OpenID provider (oidc-provider 9.13.3, in its default configuration plus
// what a test needs) and, beside it, the MCP server it protects: a test peer.
//
//   node tests/peers/oidc_provider.mjs --node-modules DIR --issuer-port P1 --mcp-port P2
//        [--access-token-ttl SECONDS] [--access-token-format opaque|jwt]
//        [--scopes 'mcp ...'] [--record-secrets FILE]
//        [--device-flow [--device-interval S] [--device-enforced-interval S]
//         [--device-code-ttl S]]
//
// DIR is the test peers' node_modules (tests/peers/install.sh). Both servers
// listen on 127.0.0.1 only:
//
// - http://127.0.0.1:P1 is the provider (the issuer). Besides its defaults
//   (PKCE, S256 only and required for public clients; offline_access dropped
//   unless the request has prompt=consent, OpenID Connect Core 11; the
//   RFC 9207 `iss` in authorization responses; the same metadata at
//   /.well-known/openid-configuration and at
//   /.well-known/oauth-authorization-server): open dynamic registration,
//   resource indicators (RFC 8707) with the MCP endpoint as the
//   one resource (scope `mcp`; its access tokens live --access-token-ttl
//   seconds, default 3, opaque or JWT), rotating refresh tokens (a rotated
//   one presented again revokes the grant), revocation and introspection.
//   Its own scopes (`scopes_supported`) are the default `openid` and
//   `offline_access` plus those of --scopes: a registration whose `scope`
//   names any other (the resource's `mcp`, unless --scopes has it) is refused
//   with invalid_client_metadata, as oidc-provider does by default.
//   /interaction/UID is the "user": it signs the account `test-user` in and
//   consents to everything asked, with no form, by redirecting back (the
//   provider's cookies must be kept across the redirects: a browser that
//   keeps none never gets past it).
//   With --device-flow, also the device authorization grant (RFC 8628,
//   oidc-provider's features.deviceFlow; open registration lets a public
//   native client ask for the grant): /device/auth issues a device code and a
//   user code, which a user enters at /device (the verification URI) and
//   confirms or aborts there in oidc-provider's own forms, before the
//   interaction above. Its device codes live --device-code-ttl seconds
//   (oidc-provider's default: 600). oidc-provider names no polling interval
//   and never answers slow_down; this peer adds both: --device-interval
//   seconds is the `interval` of its answer (none by default: RFC 8628's 5),
//   and a poll that comes less than --device-enforced-interval seconds after
//   the last one (or the code's issue) is answered slow_down rather than
//   authorization_pending (0, the default: never).
// - http://127.0.0.1:P2/mcp is the MCP server (TypeScript SDK 1.x, Streamable
//   HTTP with sessions; tools `echo(text)` and `whoami`). It serves its
//   protected resource metadata (RFC 9728) at
//   /.well-known/oauth-protected-resource/mcp (and at the root well-known
//   URL), answers 401 with `WWW-Authenticate: Bearer resource_metadata=...`
//   without a valid token, and checks every token: opaque ones by
//   introspection at the provider (as the confidential client
//   `mcp-resource-server`, secret from $MCPD_OIDC_RS_SECRET, else random),
//   JWTs with the provider's JWKS (issuer, audience = the resource, typ
//   at+jwt); either way the audience must be the resource and the scope must
//   hold `mcp`.
//
// It prints `mcpd-peer: listening on 127.0.0.1:P2` once both listen, and one
// JSON object a line for everything a test may assert on, each with
// "oidc": EVENT (see tests/peers/README.md). Tokens appear only as
// fingerprints (`fp`: the first 16 hex digits of the SHA-256 of the token's
// jti, which for an opaque token is the token itself): never as themselves.
// With --record-secrets FILE, every secret issued or received is appended to
// FILE as JSON lines with the field names tests/leakcheck.py reads.

import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
    options: {
        'node-modules': { type: 'string' },
        'issuer-port': { type: 'string' },
        'mcp-port': { type: 'string' },
        'access-token-ttl': { type: 'string', default: '3' },
        'access-token-format': { type: 'string', default: 'opaque' },
        scopes: { type: 'string', default: '' },
        'record-secrets': { type: 'string' },
        'device-flow': { type: 'boolean', default: false },
        'device-interval': { type: 'string', default: '0' },
        'device-enforced-interval': { type: 'string', default: '0' },
        'device-code-ttl': { type: 'string', default: '0' },
    },
});
for (const required of ['node-modules', 'issuer-port', 'mcp-port']) {
    if (!options[required]) {
        console.error(`oidc_provider.mjs: --${required} is required`);
        process.exit(2);
    }
}
const format = options['access-token-format'];
if (!['opaque', 'jwt'].includes(format)) {
    console.error('oidc_provider.mjs: --access-token-format is opaque or jwt');
    process.exit(2);
}
const accessTokenTTL = Number.parseInt(options['access-token-ttl'], 10);
const deviceInterval = Number.parseInt(options['device-interval'], 10);
const deviceEnforcedInterval = Number.parseFloat(options['device-enforced-interval']);
const deviceCodeTTL = Number.parseInt(options['device-code-ttl'], 10);
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// The peers' packages, from the cache rather than from next to this file.
const require = createRequire(join(options['node-modules'], 'resolve-from-here.js'));
const { default: Provider, errors } = require('oidc-provider');
const jose = require('jose');
const { Server } = require('@modelcontextprotocol/sdk/server/index.js');
const { StreamableHTTPServerTransport } = require('@modelcontextprotocol/sdk/server/streamableHttp.js');
const { CallToolRequestSchema, ListToolsRequestSchema, isInitializeRequest } = require('@modelcontextprotocol/sdk/types.js');

const HOST = '127.0.0.1';
const ISSUER = `http://${HOST}:${options['issuer-port']}`;
const MCP_ORIGIN = `http://${HOST}:${options['mcp-port']}`;
const RESOURCE = `${MCP_ORIGIN}/mcp`;
const RESOURCE_METADATA = `${MCP_ORIGIN}/.well-known/oauth-protected-resource/mcp`;
const SCOPE = 'mcp';
const ACCOUNT = 'test-user';
const RS_CLIENT_ID = 'mcp-resource-server';
const RS_SECRET = process.env.MCPD_OIDC_RS_SECRET || randomBytes(32).toString('base64url');

function log(event, fields = {}) {
    process.stdout.write(`${JSON.stringify({ oidc: event, at: Date.now() / 1000, ...fields })}\n`);
}

function record(entry) {
    if (options['record-secrets']) {
        appendFileSync(options['record-secrets'], `${JSON.stringify(entry)}\n`);
    }
}

const fp = (jti) => (typeof jti === 'string' ? createHash('sha256').update(jti).digest('hex').slice(0, 16) : undefined);

/** The jti of an access token as issued: a JWT's claim, else the opaque value itself. */
function accessJti(value) {
    if (typeof value !== 'string') return undefined;
    if (value.split('.').length === 3) {
        try {
            return jose.decodeJwt(value).jti;
        } catch {
            return value;
        }
    }
    return value;
}

// Access tokens issued and retired, by fingerprint, to say why one is refused.
const accessTokens = new Map(); // fp -> { exp, destroyed }

// --- the provider --------------------------------------------------------

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const provider = new Provider(ISSUER, {
    clients: [
        {
            client_id: RS_CLIENT_ID,
            client_secret: RS_SECRET,
            redirect_uris: [],
            response_types: [],
            grant_types: [],
        },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    rotateRefreshToken: true,
    scopes: ['openid', 'offline_access', ...options.scopes.split(' ').filter(Boolean)],
    ...(deviceCodeTTL > 0 ? { ttl: { DeviceCode: deviceCodeTTL } } : {}),
    features: {
        devInteractions: { enabled: false }, // the interaction below stands for the user
        deviceFlow: { enabled: options['device-flow'] },
        registration: { enabled: true }, // open: no initial access token
        revocation: { enabled: true },
        introspection: { enabled: true },
        resourceIndicators: {
            enabled: true,
            getResourceServerInfo: async (_ctx, indicator) => {
                if (indicator !== RESOURCE) {
                    throw new errors.InvalidTarget(`unknown resource ${indicator}`);
                }
                return {
                    scope: SCOPE,
                    audience: RESOURCE,
                    accessTokenTTL,
                    accessTokenFormat: format,
                    ...(format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
                };
            },
        },
    },
});

// Every request: what it was and how it was answered (paths only, no query).
provider.use(async (ctx, next) => {
    if (ctx.path === '/auth' && ctx.method === 'GET') {
        const q = ctx.query;
        log('authorize', {
            client_id: q.client_id,
            scope: q.scope,
            prompt: q.prompt ?? null,
            resource: q.resource ?? null,
            code_challenge_method: q.code_challenge_method ?? null,
            response_type: q.response_type,
            redirect_uri: q.redirect_uri,
        });
    }
    await next();
    const entry = { method: ctx.method, path: ctx.path, route: ctx.oidc?.route ?? null, status: ctx.status };
    const location = ctx.response.get('location');
    if (location) entry.location = location.split('?')[0];
    if (ctx.oidc?.route === 'revocation' || ctx.oidc?.route === 'introspection') {
        entry.token = fp(accessJti(ctx.oidc.params?.token));
        entry.token_type_hint = ctx.oidc.params?.token_type_hint ?? null;
        entry.client_id = ctx.oidc.client?.clientId ?? null;
    }
    if (ctx.oidc?.route === 'revocation' && ctx.status === 200) {
        log('revoked', { token: entry.token, token_type_hint: entry.token_type_hint, client_id: entry.client_id });
    }
    log('http', entry);
});

// The device flow's polling, as RFC 8628 3.5 has it (see the header): the
// interval named, slow_down for a poll too soon, and every poll logged
// (`device_poll`: the code's fingerprint, the answer, the seconds since the
// last poll or the code's issue).
const lastPolls = new Map(); // device code fingerprint -> ms
provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'device_authorization' && ctx.status === 200) {
        if (deviceInterval > 0) ctx.body = { ...ctx.body, interval: deviceInterval };
        const code = fp(ctx.body.device_code);
        lastPolls.set(code, Date.now());
        record({ event: 'device_code', device_code: ctx.body.device_code });
        log('device_authorization', {
            client_id: ctx.oidc.client?.clientId,
            scope: ctx.oidc.params?.scope ?? null,
            resource: ctx.oidc.params?.resource ?? null,
            device_code: code,
            expires_in: ctx.body.expires_in,
            interval: ctx.body.interval ?? null,
        });
        return;
    }
    if (route !== 'token' || ctx.oidc.params?.grant_type !== DEVICE_CODE_GRANT) return;
    const code = fp(ctx.oidc.params.device_code);
    const now = Date.now();
    const since = lastPolls.has(code) ? (now - lastPolls.get(code)) / 1000 : null;
    lastPolls.set(code, now);
    let answer = ctx.status === 200 ? 'tokens' : (ctx.body?.error ?? `HTTP ${ctx.status}`);
    if (answer === 'authorization_pending' && since !== null && since < deviceEnforcedInterval) {
        ctx.status = 400;
        ctx.body = { error: 'slow_down', error_description: `poll at most every ${deviceEnforcedInterval} seconds` };
        answer = 'slow_down';
    }
    log('device_poll', { device_code: code, answer, since });
});

provider.on('registration_create.success', (_ctx, client) => {
    log('registered', {
        client_id: client.clientId,
        token_endpoint_auth_method: client.clientAuthMethod,
        application_type: client.applicationType,
        grant_types: client.grantTypes,
        redirect_uris: client.redirectUris,
    });
    record({ event: 'registered', client_id: client.clientId, client_secret: client.clientSecret ?? null });
});

provider.on('authorization.success', (ctx, out) => {
    log('authorized', { client_id: ctx.oidc.client?.clientId, scope: ctx.oidc.params?.scope ?? null });
    if (out?.code) record({ event: 'code', code: out.code });
});

provider.on('grant.success', (ctx) => {
    const { params } = ctx.oidc;
    const body = ctx.body ?? {};
    const entry = {
        grant_type: params.grant_type,
        client_id: ctx.oidc.client?.clientId,
        access_token: fp(accessJti(body.access_token)),
        refresh_token: fp(body.refresh_token) ?? null,
        expires_in: body.expires_in,
        scope: body.scope ?? null,
        resource: params.resource ?? null,
    };
    if (params.grant_type === 'refresh_token') entry.presented = fp(params.refresh_token);
    log('token', entry);
    record({
        event: 'token',
        access_token: body.access_token,
        refresh_token: body.refresh_token ?? null,
        code_verifier: params.code_verifier ?? null,
        code: params.code ?? null,
    });
});

provider.on('grant.error', (ctx, error) => {
    const { params } = ctx.oidc ?? {};
    log('grant_error', {
        grant_type: params?.grant_type ?? null,
        presented: params?.grant_type === 'refresh_token' ? fp(params.refresh_token) : undefined,
        error: error.error,
        error_description: error.error_description,
        error_detail: error.error_detail,
    });
});

provider.on('grant.revoked', (_ctx, grantId) => log('grant_revoked', { grant: grantId }));

// An opaque token is `saved` (stored), a JWT `issued` (not stored): remember
// both, silently (the `token` event names them), to say why one is refused.
for (const name of ['access_token.saved', 'access_token.issued']) {
    provider.on(name, (token) => {
        if (!accessTokens.has(fp(token.jti))) accessTokens.set(fp(token.jti), { exp: token.exp, destroyed: false });
    });
}
provider.on('access_token.destroyed', (token) => {
    const known = accessTokens.get(fp(token.jti));
    if (known) known.destroyed = true;
    log('access_token_destroyed', { fp: fp(token.jti), grant: token.grantId });
});
provider.on('refresh_token.consumed', (token) => log('refresh_token_consumed', { fp: fp(token.jti), grant: token.grantId }));
provider.on('refresh_token.destroyed', (token) => log('refresh_token_destroyed', { fp: fp(token.jti), grant: token.grantId }));

for (const name of ['authorization.error', 'registration_create.error', 'revocation.error', 'introspection.error', 'discovery.error']) {
    provider.on(name, (_ctx, error) =>
        log(name.replace('.', '_'), { error: error.error, error_description: error.error_description, error_detail: error.error_detail }),
    );
}
provider.on('server_error', (_ctx, error) => log('server_error', { message: String(error?.stack ?? error) }));

// The user: signs in and consents to whatever is asked, with no form.
async function interaction(req, res) {
    try {
        const details = await provider.interactionDetails(req, res);
        const { prompt, params, session } = details;
        log('interaction', { prompt: prompt.name, reasons: prompt.reasons, scope: params.scope ?? null });
        let result;
        if (prompt.name === 'login') {
            result = { login: { accountId: ACCOUNT } };
        } else if (prompt.name === 'consent') {
            const grant = details.grantId
                ? await provider.Grant.find(details.grantId)
                : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
            const missing = prompt.details;
            if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
            if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
            for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
                grant.addResourceScope(indicator, scopes.join(' '));
            }
            result = { consent: { grantId: await grant.save() } };
        } else {
            result = { error: 'access_denied', error_description: `no answer for the prompt ${prompt.name}` };
        }
        await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
    } catch (error) {
        log('interaction_error', { message: String(error?.message ?? error) });
        if (!res.headersSent) {
            res.writeHead(400, { 'content-type': 'text/plain' });
        }
        res.end(`interaction failed: ${error?.message ?? error}\n`);
    }
}

const providerCallback = provider.callback();
const issuerServer = createServer((req, res) => {
    const path = new URL(req.url, ISSUER).pathname;
    if (req.method === 'GET' && /^\/interaction\/[^/]+$/.test(path)) {
        void interaction(req, res);
        return;
    }
    providerCallback(req, res);
});

// --- the MCP server --------------------------------------------------------

const jwks = jose.createRemoteJWKSet(new URL(`${ISSUER}/jwks`));

function hasScope(scope) {
    return typeof scope === 'string' && scope.split(' ').includes(SCOPE);
}

function audienceOk(aud) {
    return Array.isArray(aud) ? aud.includes(RESOURCE) : aud === RESOURCE;
}

/** { ok, fp, why, info }: whether `token` is a valid access token for this resource. */
async function verify(token) {
    if (format === 'jwt' && token.split('.').length === 3) {
        try {
            const { payload } = await jose.jwtVerify(token, jwks, { issuer: ISSUER, audience: RESOURCE, typ: 'at+jwt' });
            if (!hasScope(payload.scope)) return { ok: false, fp: fp(payload.jti), why: 'insufficient_scope' };
            return { ok: true, fp: fp(payload.jti), info: { sub: payload.sub, client_id: payload.client_id, scope: payload.scope, exp: payload.exp } };
        } catch (error) {
            const jti = (() => {
                try {
                    return jose.decodeJwt(token).jti;
                } catch {
                    return undefined;
                }
            })();
            const why = error?.code === 'ERR_JWT_EXPIRED' ? 'expired' : 'invalid';
            return { ok: false, fp: fp(jti ?? token), why };
        }
    }
    const tokenFp = fp(accessJti(token));
    const response = await fetch(`${ISSUER}/token/introspection`, {
        method: 'POST',
        headers: {
            authorization: `Basic ${Buffer.from(`${RS_CLIENT_ID}:${RS_SECRET}`).toString('base64')}`,
            'content-type': 'application/x-www-form-urlencoded',
            accept: 'application/json',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
    });
    const answer = await response.json();
    if (!answer.active) {
        // Why, as far as this process knows: a token it issued is expired, or
        // else revoked (one by one, or with its grant).
        const known = accessTokens.get(tokenFp);
        let why = 'unknown';
        if (known && !known.destroyed && known.exp <= Date.now() / 1000) why = 'expired';
        else if (known) why = 'revoked';
        return { ok: false, fp: tokenFp, why };
    }
    if (answer.token_type !== 'Bearer') return { ok: false, fp: tokenFp, why: 'not_an_access_token' };
    if (!audienceOk(answer.aud)) return { ok: false, fp: tokenFp, why: 'wrong_audience' };
    if (!hasScope(answer.scope)) return { ok: false, fp: tokenFp, why: 'insufficient_scope' };
    return { ok: true, fp: tokenFp, info: { sub: answer.sub, client_id: answer.client_id, scope: answer.scope, exp: answer.exp } };
}

function mcpServer() {
    const server = new Server({ name: 'mcpd-oidc-test-peer', version: '1.0.0' }, { capabilities: { tools: {} } });
    server.setRequestHandler(ListToolsRequestSchema, async () => ({
        tools: [
            {
                name: 'echo',
                description: 'Returns its text',
                inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
            },
            { name: 'whoami', description: 'The subject and client of the access token', inputSchema: { type: 'object', properties: {} } },
        ],
    }));
    server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
        const { name, arguments: args } = request.params;
        if (name === 'echo') return { content: [{ type: 'text', text: String(args?.text ?? '') }] };
        if (name === 'whoami') {
            const who = { sub: extra.authInfo?.extra?.sub ?? null, client_id: extra.authInfo?.clientId ?? null };
            return { content: [{ type: 'text', text: JSON.stringify(who) }], structuredContent: who };
        }
        return { isError: true, content: [{ type: 'text', text: `unknown tool ${name}` }] };
    });
    return server;
}

const sessions = new Map(); // session id -> transport

async function readBody(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    return text ? JSON.parse(text) : undefined;
}

function unauthorized(res, error, description) {
    const challenge = [`Bearer resource_metadata="${RESOURCE_METADATA}"`, `scope="${SCOPE}"`];
    if (error) challenge.push(`error="${error}"`, `error_description="${description}"`);
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': challenge.join(', ') });
    res.end(JSON.stringify({ error: error ?? 'unauthorized', error_description: description ?? 'a bearer token is required' }));
}

async function mcp(req, res) {
    const url = new URL(req.url, MCP_ORIGIN);
    if (req.method === 'GET' && url.pathname.startsWith('/.well-known/oauth-protected-resource')) {
        if (url.pathname !== '/.well-known/oauth-protected-resource/mcp' && url.pathname !== '/.well-known/oauth-protected-resource') {
            res.writeHead(404).end();
            return;
        }
        log('resource_metadata', { path: url.pathname });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
            JSON.stringify({
                resource: RESOURCE,
                authorization_servers: [ISSUER],
                scopes_supported: [SCOPE],
                bearer_methods_supported: ['header'],
                resource_name: 'mcpd oidc-provider test peer',
            }),
        );
        return;
    }
    if (url.pathname !== '/mcp') {
        res.writeHead(404).end();
        return;
    }
    let body;
    if (req.method === 'POST') {
        try {
            body = await readBody(req);
        } catch {
            res.writeHead(400, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
            return;
        }
    }
    const messages = Array.isArray(body) ? body : body ? [body] : [];
    const rpc = messages.map((m) => m.method ?? (m.id !== undefined ? 'response' : '?'));
    const sessionId = req.headers['mcp-session-id'];
    const authorization = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (!match) {
        log('mcp', { http: req.method, rpc, session: sessionId ?? null, outcome: 'missing' });
        unauthorized(res);
        return;
    }
    const checked = await verify(match[1]);
    log('mcp', { http: req.method, rpc, session: sessionId ?? null, token: checked.fp, outcome: checked.ok ? 'ok' : checked.why });
    if (!checked.ok) {
        if (checked.why === 'insufficient_scope' || checked.why === 'wrong_audience') {
            res.writeHead(403, {
                'content-type': 'application/json',
                'www-authenticate': `Bearer error="insufficient_scope", scope="${SCOPE}", resource_metadata="${RESOURCE_METADATA}"`,
            });
            res.end(JSON.stringify({ error: 'insufficient_scope' }));
            return;
        }
        unauthorized(res, 'invalid_token', `the access token is ${checked.why}`);
        return;
    }
    req.auth = {
        token: match[1],
        clientId: checked.info.client_id,
        scopes: checked.info.scope.split(' '),
        expiresAt: checked.info.exp,
        resource: new URL(RESOURCE),
        extra: { sub: checked.info.sub },
    };
    let transport = sessionId ? sessions.get(sessionId) : undefined;
    if (sessionId && !transport) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } }));
        return;
    }
    if (!transport) {
        // As the SDK's own examples answer anything but an initialize without a session.
        if (req.method !== 'POST' || !messages.some((m) => isInitializeRequest(m))) {
            res.writeHead(400, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: No valid session ID provided' } }));
            return;
        }
        const created = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            onsessioninitialized: (id) => {
                sessions.set(id, created);
            },
        });
        created.onclose = () => {
            if (created.sessionId) sessions.delete(created.sessionId);
        };
        await mcpServer().connect(created);
        transport = created;
    }
    await transport.handleRequest(req, res, body);
}

const mcpServerHttp = createServer((req, res) => {
    mcp(req, res).catch((error) => {
        log('mcp_error', { message: String(error?.stack ?? error) });
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end();
    });
});

// --- start -------------------------------------------------------------------

function listen(server, port) {
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(Number(port), HOST, () => resolve());
    });
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

try {
    await listen(issuerServer, options['issuer-port']);
    await listen(mcpServerHttp, options['mcp-port']);
} catch (error) {
    console.error(`oidc_provider.mjs: ${error.code ?? ''} ${error.message}`);
    process.exit(1);
}
log('ready', {
    issuer: ISSUER,
    resource: RESOURCE,
    access_token_ttl: accessTokenTTL,
    access_token_format: format,
    scopes: options.scopes,
    device_flow: options['device-flow'],
});
process.stdout.write(`mcpd-peer: listening on ${HOST}:${options['issuer-port']}\n`);
process.stdout.write(`mcpd-peer: listening on ${HOST}:${options['mcp-port']}\n`);
