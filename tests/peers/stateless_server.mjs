// An MCP server speaking the 2026-07-28 revision (stateless: no sessions, no
// initialize; `server/discover`, a `_meta` envelope on every request, multi
// round-trip requests, `subscriptions/listen`), on the TypeScript SDK v2
// (`@modelcontextprotocol/server` 2.4.0, served by its `createMcpHandler` through
// `@modelcontextprotocol/node`'s `toNodeHandler`): a test peer.
//
//   node tests/peers/stateless_server.mjs --node-modules DIR --port PORT
//        [--list-ttl-ms MS] [--legacy stateless|reject]
//
// DIR is the test peers' node_modules (tests/peers/install.sh). It listens on
// 127.0.0.1:PORT only, serves MCP at /mcp (any path, in fact: the SDK's handler
// does not look at it), and prints `mcpd-peer: listening on 127.0.0.1:PORT` on
// stdout once it listens.
//
// Tools (see tests/peers/README.md):
//   greet(name)                -> "Hello, NAME!"
//   confirm(action)            -> input_required: elicitation/create (form:
//                                 {confirm: boolean}); retried with the answer:
//                                 "Confirmed: ACTION" | "Not confirmed: ACTION (ACTION)"
//   sample(prompt)             -> input_required: sampling/createMessage; retried
//                                 with the answer: "Sampled: TEXT"
//   count(steps, interval_ms)  -> notifications/progress per step (with the
//                                 request's progressToken), "Counted to STEPS";
//                                 stops when the client closes the stream
//   add_tool(name)             -> registers a tool NAME (answers "NAME was
//                                 called") and publishes tools/list_changed to
//                                 every subscriptions/listen stream
//   client_info                -> the request's envelope: protocol version,
//                                 clientInfo, clientCapabilities (structured)
// List results carry ttlMs (--list-ttl-ms, default 60000) and cacheScope
// "private". 2025-era requests are served statelessly from the same tools
// (--legacy stateless, the SDK's default) or refused (--legacy reject).
//
// Every HTTP request is logged on stderr as one JSON object a line:
//   {"stateless": "request", "http": "POST", "path": "/mcp",
//    "mcp_method": <Mcp-Method header>, "mcp_name": <Mcp-Name header>,
//    "protocol_version": <MCP-Protocol-Version header>,
//    "session": <Mcp-Session-Id header>, "accept": ..., "rpc": [{"method",
//    "id", "name", "meta_keys": [keys of params._meta], "envelope_version",
//    "input_response_keys", "request_state"}]}
// followed by {"stateless": "response", "status", "content_type", ...}; and
// what the tools do: {"stateless": "tool", "tool": NAME, ...}, "progress",
// "cancelled", "tool_added", "list_changed_published".

import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
    options: {
        'node-modules': { type: 'string' },
        port: { type: 'string' },
        'list-ttl-ms': { type: 'string', default: '60000' },
        legacy: { type: 'string', default: 'stateless' },
        'log-file': { type: 'string' },
    },
});
for (const required of ['node-modules', 'port']) {
    if (!options[required]) {
        console.error(`stateless_server.mjs: --${required} is required`);
        process.exit(2);
    }
}
if (!['stateless', 'reject'].includes(options.legacy)) {
    console.error('stateless_server.mjs: --legacy is stateless or reject');
    process.exit(2);
}
const listTtlMs = Number.parseInt(options['list-ttl-ms'], 10);

const require = createRequire(join(options['node-modules'], 'resolve-from-here.js'));
const { McpServer, createMcpHandler, inputRequired, acceptedContent } = require('@modelcontextprotocol/server');
const { toNodeHandler } = require('@modelcontextprotocol/node');
// The zod the SDK itself resolves, so that its schemas are the SDK's kind.
const z = createRequire(require.resolve('@modelcontextprotocol/server'))('zod');

const HOST = '127.0.0.1';

function log(event, fields = {}) {
    const line = `${JSON.stringify({ stateless: event, at: Date.now() / 1000, ...fields })}\n`;
    process.stderr.write(line);
    if (options['log-file']) appendFileSync(options['log-file'], line);
}

const CONFIRM_SCHEMA = {
    type: 'object',
    properties: { confirm: { type: 'boolean', title: 'Go ahead?', default: false } },
    required: ['confirm'],
};

// Tools added by add_tool, for every instance the factory makes from now on.
const addedTools = [];
let handler;

function text(value) {
    return { content: [{ type: 'text', text: value }] };
}

function buildServer() {
    const cacheHints = {};
    for (const method of ['tools/list', 'prompts/list', 'resources/list', 'resources/templates/list']) {
        cacheHints[method] = { ttlMs: listTtlMs, cacheScope: 'private' };
    }
    const server = new McpServer(
        { name: 'mcpd-stateless-test-peer', version: '1.0.0' },
        { capabilities: { tools: { listChanged: true } }, cacheHints },
    );

    server.registerTool(
        'greet',
        { description: 'Greets NAME', inputSchema: z.object({ name: z.string() }) },
        async ({ name }) => {
            log('tool', { tool: 'greet' });
            return text(`Hello, ${name}!`);
        },
    );

    server.registerTool(
        'confirm',
        { description: 'Asks the user (elicitation) to confirm ACTION', inputSchema: z.object({ action: z.string() }) },
        async ({ action }, ctx) => {
            const responses = ctx.mcpReq.inputResponses;
            log('tool', {
                tool: 'confirm',
                input_response_keys: Object.keys(responses ?? {}),
                request_state: ctx.mcpReq.requestState() ?? null,
            });
            const answer = responses?.confirm;
            if (answer === undefined) {
                return inputRequired({
                    inputRequests: {
                        confirm: inputRequired.elicit({ message: `Go ahead with ${action}?`, requestedSchema: CONFIRM_SCHEMA }),
                    },
                    requestState: `confirm:${action}`,
                });
            }
            const accepted = acceptedContent(responses, 'confirm');
            if (accepted?.confirm === true) return text(`Confirmed: ${action}`);
            return text(`Not confirmed: ${action} (${answer?.action ?? 'no answer'})`);
        },
    );

    server.registerTool(
        'sample',
        { description: "Asks the client's model (sampling) about PROMPT", inputSchema: z.object({ prompt: z.string() }) },
        async ({ prompt }, ctx) => {
            const responses = ctx.mcpReq.inputResponses;
            log('tool', {
                tool: 'sample',
                input_response_keys: Object.keys(responses ?? {}),
                request_state: ctx.mcpReq.requestState() ?? null,
            });
            const answer = responses?.llm;
            if (answer === undefined) {
                return inputRequired({
                    inputRequests: {
                        llm: inputRequired.createMessage({
                            messages: [{ role: 'user', content: { type: 'text', text: prompt } }],
                            maxTokens: 100,
                        }),
                    },
                    requestState: 'sample',
                });
            }
            const content = Array.isArray(answer.content) ? answer.content[0] : answer.content;
            return text(`Sampled: ${content?.text ?? JSON.stringify(answer)}`);
        },
    );

    server.registerTool(
        'count',
        {
            description: 'Counts to STEPS, one step every INTERVAL_MS, with progress; stops when cancelled',
            inputSchema: z.object({ steps: z.number().int().min(1), interval_ms: z.number().int().min(0).default(100) }),
        },
        async ({ steps, interval_ms: interval }, ctx) => {
            const token = ctx.mcpReq._meta?.progressToken;
            const { signal } = ctx.mcpReq;
            log('tool', { tool: 'count', steps, interval_ms: interval, progress_token: token ?? null });
            for (let step = 1; step <= steps; step += 1) {
                await new Promise((resolve) => {
                    const timer = setTimeout(resolve, interval);
                    signal.addEventListener(
                        'abort',
                        () => {
                            clearTimeout(timer);
                            resolve();
                        },
                        { once: true },
                    );
                });
                if (signal.aborted) {
                    log('cancelled', { tool: 'count', at_step: step, reason: String(signal.reason ?? '') });
                    return text(`Cancelled at ${step}`);
                }
                if (token !== undefined) {
                    await ctx.mcpReq.notify({
                        method: 'notifications/progress',
                        params: { progressToken: token, progress: step, total: steps, message: `step ${step}` },
                    });
                    log('progress', { tool: 'count', progress: step, total: steps });
                }
            }
            return text(`Counted to ${steps}`);
        },
    );

    server.registerTool(
        'add_tool',
        { description: 'Adds a tool NAME and announces the new tool list', inputSchema: z.object({ name: z.string() }) },
        async ({ name }) => {
            if (!addedTools.includes(name)) addedTools.push(name);
            log('tool_added', { name });
            // After this answer is on its way: the instance that answers is not the
            // one a re-listing client reaches.
            setImmediate(() => {
                handler.notify.toolsChanged();
                log('list_changed_published', { list: 'tools' });
            });
            return text(`Added ${name}`);
        },
    );

    for (const name of addedTools) {
        server.registerTool(name, { description: `Added by add_tool`, inputSchema: z.object({}) }, async () => {
            log('tool', { tool: name });
            return text(`${name} was called`);
        });
    }

    server.registerTool('client_info', { description: "What this request's envelope says about its client" }, async (ctx) => {
        const envelope = ctx.mcpReq.envelope ?? {};
        const info = {
            protocolVersion: envelope['io.modelcontextprotocol/protocolVersion'] ?? null,
            clientInfo: envelope['io.modelcontextprotocol/clientInfo'] ?? null,
            clientCapabilities: envelope['io.modelcontextprotocol/clientCapabilities'] ?? null,
        };
        log('tool', { tool: 'client_info' });
        return { content: [{ type: 'text', text: JSON.stringify(info) }], structuredContent: info };
    });

    return server;
}

handler = createMcpHandler(() => buildServer(), {
    legacy: options.legacy,
    onerror: (error) => log('error', { message: String(error?.message ?? error) }),
});
const serve = toNodeHandler(handler, { onerror: (error) => log('error', { message: String(error?.message ?? error) }) });

function describe(message) {
    const params = message?.params ?? {};
    const meta = params._meta ?? {};
    const entry = { method: message?.method ?? null, id: message?.id ?? null };
    if (typeof params.name === 'string') entry.name = params.name;
    if (typeof params.uri === 'string') entry.uri = params.uri;
    entry.meta_keys = Object.keys(meta);
    if (meta['io.modelcontextprotocol/protocolVersion'] !== undefined) {
        entry.envelope_version = meta['io.modelcontextprotocol/protocolVersion'];
    }
    if (params.inputResponses) entry.input_response_keys = Object.keys(params.inputResponses);
    if (params.requestState !== undefined) entry.request_state = params.requestState;
    if (meta.progressToken !== undefined) entry.progress_token = meta.progressToken;
    return entry;
}

async function readBody(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
}

const httpServer = createServer(async (req, res) => {
    const header = (name) => req.headers[name] ?? null;
    let parsed;
    let raw = '';
    if (req.method === 'POST') {
        raw = await readBody(req);
        try {
            parsed = raw ? JSON.parse(raw) : undefined;
        } catch {
            parsed = undefined;
        }
    }
    const messages = Array.isArray(parsed) ? parsed : parsed !== undefined ? [parsed] : [];
    log('request', {
        http: req.method,
        path: new URL(req.url, `http://${HOST}`).pathname,
        mcp_method: header('mcp-method'),
        mcp_name: header('mcp-name'),
        protocol_version: header('mcp-protocol-version'),
        session: header('mcp-session-id'),
        accept: header('accept'),
        rpc: messages.map(describe),
        ...(raw && parsed === undefined ? { unparsed_bytes: raw.length } : {}),
    });
    // The SDK's adapter hands its headers to writeHead: note the content type there.
    let contentType = null;
    const writeHead = res.writeHead.bind(res);
    res.writeHead = (status, ...rest) => {
        const headers = rest.find((value) => value && typeof value === 'object') ?? {};
        for (const [name, value] of Object.entries(headers)) {
            if (name.toLowerCase() === 'content-type') contentType = value;
        }
        return writeHead(status, ...rest);
    };
    res.on('finish', () =>
        log('response', { http: req.method, status: res.statusCode, content_type: contentType ?? res.getHeader('content-type') ?? null }),
    );
    res.on('close', () => {
        if (!res.writableFinished) log('response_closed', { http: req.method, rpc: messages.map((m) => m?.method ?? null) });
    });
    if (raw && parsed === undefined) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
        return;
    }
    try {
        await serve(req, res, parsed);
    } catch (error) {
        log('error', { message: String(error?.stack ?? error) });
        if (!res.headersSent) res.writeHead(500);
        res.end();
    }
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

httpServer.once('error', (error) => {
    console.error(`stateless_server.mjs: ${error.code ?? ''} ${error.message}`);
    process.exit(1);
});
httpServer.listen(Number(options.port), HOST, () => {
    log('ready', { url: `http://${HOST}:${options.port}/mcp`, list_ttl_ms: listTtlMs, legacy: options.legacy });
    process.stdout.write(`mcpd-peer: listening on ${HOST}:${options.port}\n`);
});
