// Run a Python script inside the real MicroPython VM (WebAssembly port, npm
// package @micropython/micropython-webassembly-pyscript, pinned in package.json).
//
// Usage:  node tests/mpy/run.mjs < job.json
//
// The job (JSON on stdin):
//   {
//     "files": {"/lib/firmware/__init__.py": "<utf-8 text>",
//               "/data/blob.bin": {"base64": "<bytes as base64>"}},
//     "script": "<python source>",
//     "heap_bytes": 16777216            // optional, initial GC heap
//   }
//
// Files are written into the VM's in-memory filesystem (parent folders are
// created), then the script runs as __main__. Its stdout and stderr are passed
// through byte-exactly (no line buffering, no re-decoding).
//
// Exit codes: 0 success (also SystemExit / SystemExit(0)); 1 Python exception
// (traceback on stderr); n for SystemExit(n); 2 bad job or harness failure.
// The VM's default sys.path is ['', '.frozen', '/lib'], so files under /lib
// are importable.

import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript/micropython.mjs";

const DEFAULT_HEAP_BYTES = 16 * 1024 * 1024;

/** Append-only byte buffer fed one byte at a time by the VM. */
class ByteSink {
  constructor() {
    this.chunks = [];
    this.cur = new Uint8Array(1 << 16);
    this.pos = 0;
  }
  push(bytes) {
    for (const b of bytes) {
      if (this.pos === this.cur.length) {
        this.chunks.push(this.cur);
        this.cur = new Uint8Array(this.cur.length);
        this.pos = 0;
      }
      this.cur[this.pos++] = b;
    }
  }
  pushText(text) {
    this.push(new TextEncoder().encode(text));
  }
  toBuffer() {
    return Buffer.concat([...this.chunks, this.cur.subarray(0, this.pos)]);
  }
}

async function readStdin() {
  const parts = [];
  for await (const chunk of process.stdin) parts.push(chunk);
  return Buffer.concat(parts).toString("utf8");
}

/** Create every missing parent folder of `path`, one level at a time. */
function makeParents(FS, path) {
  const parts = path.split("/").filter(Boolean).slice(0, -1);
  let dir = "";
  for (const part of parts) {
    dir += "/" + part;
    if (!FS.analyzePath(dir).exists) FS.mkdir(dir);
  }
}

function fileBytes(path, value) {
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (value && typeof value.base64 === "string") {
    return new Uint8Array(Buffer.from(value.base64, "base64"));
  }
  throw new Error(`file ${path}: value must be a string or {"base64": "..."}`);
}

/** Exit code for a SystemExit traceback message, as CPython would use. */
function systemExitCode(message) {
  const last = message.trimEnd().split("\n").pop();
  const m = /^SystemExit(?:: (.*))?$/.exec(last);
  if (!m || m[1] === undefined || m[1] === "0" || m[1] === "None") return 0;
  return /^-?\d+$/.test(m[1]) ? Number(m[1]) & 0xff : 1;
}

function finish(out, err, code) {
  process.exitCode = code;
  process.stdout.write(out.toBuffer());
  process.stderr.write(err.toBuffer());
}

async function main() {
  const out = new ByteSink();
  const err = new ByteSink();
  let job;
  try {
    job = JSON.parse(await readStdin());
    if (typeof job.script !== "string") throw new Error('job needs a "script" string');
  } catch (e) {
    err.pushText(`run.mjs: bad job on stdin: ${e.message}\n`);
    return finish(out, err, 2);
  }

  let mp;
  try {
    mp = await loadMicroPython({
      heapsize: job.heap_bytes ?? DEFAULT_HEAP_BYTES,
      linebuffer: false, // byte callbacks: keeps output byte-exact
      stdout: (bytes) => out.push(bytes),
      stderr: (bytes) => err.push(bytes),
    });
    for (const [path, value] of Object.entries(job.files ?? {})) {
      if (!path.startsWith("/")) throw new Error(`file path must be absolute: ${path}`);
      makeParents(mp.FS, path);
      mp.FS.writeFile(path, fileBytes(path, value));
    }
  } catch (e) {
    err.pushText(`run.mjs: could not set up the VM: ${e.message}\n`);
    return finish(out, err, 2);
  }

  try {
    mp.runPython(job.script);
    return finish(out, err, 0);
  } catch (e) {
    if (e?.name !== "PythonError") {
      // Not a Python exception: print our own short message, never the
      // minified module source that Node shows for an uncaught error.
      err.pushText(`run.mjs: VM failure: ${e?.message ?? e}\n`);
      return finish(out, err, 2);
    }
    if (e.type === "SystemExit") {
      const code = systemExitCode(e.message);
      if (code !== 0) err.pushText(e.message);
      return finish(out, err, code);
    }
    err.pushText(e.message); // already a full "Traceback (most recent call last): ..."
    return finish(out, err, 1);
  }
}

await main();
