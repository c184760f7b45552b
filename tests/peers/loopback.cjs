// Preloaded with `node --require tests/peers/loopback.cjs SERVER.js`: every
// TCP server the program starts listens on 127.0.0.1 only, and a port it asks
// for that MCPD_PEER_PORT_MAP maps ("3000=41234,3001=41235") is replaced by
// the port mapped to.
//
// The peers are other people's servers, used unmodified: the TypeScript SDK's
// examples listen on a hard-coded 3000, and they and server-everything listen
// on every interface. Patching net.Server.prototype.listen in a preload is the
// one place that covers them all (express's app.listen and http.createServer
// both end there) without touching a file of the installed packages.
//
// Once a server listens, this prints "mcpd-peer: listening on 127.0.0.1:PORT",
// the line tests/real_peers.py waits for: proof that this process, and not
// another, holds the port. Unix sockets, pipes and handles are left alone.
"use strict";

const net = require("node:net");

const host = "127.0.0.1";
const portMap = new Map();
for (const pair of (process.env.MCPD_PEER_PORT_MAP || "").split(",").filter(Boolean)) {
  const [asked, given] = pair.split("=").map(Number);
  if (!Number.isInteger(asked) || !Number.isInteger(given)) {
    throw new Error(`loopback.cjs: MCPD_PEER_PORT_MAP has "${pair}", not ASKED=GIVEN`);
  }
  portMap.set(asked, given);
}

const originalListen = net.Server.prototype.listen;

function requestedPort(args) {
  // The port a listen() call asks for, or undefined when it is not a TCP
  // listen (a path, a handle, a file descriptor).
  const [target] = args;
  if (args.length === 0 || target === undefined || target === null || typeof target === "function") {
    return 0;
  }
  if (typeof target === "number") {
    return target;
  }
  if (typeof target === "string") {
    return /^\d+$/.test(target) ? Number(target) : undefined;
  }
  if (typeof target === "object" && !("path" in target) && !("fd" in target) && !("_handle" in target)) {
    return Number(target.port ?? 0);
  }
  return undefined;
}

net.Server.prototype.listen = function listen(...args) {
  const asked = requestedPort(args);
  if (asked === undefined) {
    return originalListen.apply(this, args);
  }
  const callback = typeof args[args.length - 1] === "function" ? args[args.length - 1] : undefined;
  const port = portMap.get(asked) ?? asked;
  if (port !== asked) {
    process.stderr.write(`loopback.cjs: the program asked for port ${asked}, gets ${port}\n`);
  }
  this.once("listening", () => {
    process.stderr.write(`mcpd-peer: listening on ${host}:${this.address().port}\n`);
  });
  return callback === undefined
    ? originalListen.call(this, { port, host })
    : originalListen.call(this, { port, host }, callback);
};
