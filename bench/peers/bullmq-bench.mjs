// BullMQ on Redis, measured the way agentcom-loadgen measures the hub.
//
//   node bullmq-bench.mjs --port 6390 [--seconds 10] [--warmup 1]
//        [--producers 64] [--workers 8] [--concurrency 25] [--worker-procs 1]
//        [--probes 200] [--body-bytes 500]
//
// Needs a running redis-server on 127.0.0.1 (run.sh starts a private one
// with appendonly yes, appendfsync always). Three phases, each on a fresh
// queue:
//
// 1. create only: --producers concurrent producers, each awaiting one
//    queue.add after another (with appendfsync always Redis answers a write
//    only after write(2) + fdatasync of the AOF, so an awaited add is
//    durable); no workers. Adds that return inside the --seconds window
//    (after --warmup) are counted, with the p50/p99 of their latency.
// 2. full lifecycles: the same producers while --workers BullMQ Workers
//    (--concurrency each, in --worker-procs child processes; 0 = in the
//    producers' process) take and complete the jobs; the processor returns
//    at once. The figure is the rate of jobs whose completion Redis
//    acknowledged (the Worker's 'completed' event) inside the window. A
//    prober process meanwhile adds one job every 20 ms to a queue of its
//    own with one idle Worker (like the hub's idle probe agent) and times
//    add -> processor called.
// 3. enqueue -> start with idle workers: --probes jobs added one at a time
//    to a queue with --workers x --concurrency idle Workers, each waited
//    for until completed, then 20 ms of rest; the time from just before
//    queue.add to the processor being called (and to 'completed'), on the
//    clock of the one process that adds and processes.
//
// Prints Markdown tables (the figures, then the settings) on stdout and its
// progress on stderr.

import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { Queue, Worker } from 'bullmq';

const require = createRequire(import.meta.url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => console.error(`bullmq-bench: ${s}`);

function parseArgs(argv) {
  const a = {
    host: '127.0.0.1',
    port: 6390,
    seconds: 10,
    warmup: 1,
    producers: 64,
    workers: 8,
    concurrency: 25,
    workerProcs: 1,
    probes: 200,
    bodyBytes: 500,
    role: 'main',
    queue: '',
  };
  const names = {
    '--host': 'host', '--port': 'port', '--seconds': 'seconds', '--warmup': 'warmup',
    '--producers': 'producers', '--workers': 'workers', '--concurrency': 'concurrency',
    '--worker-procs': 'workerProcs', '--probes': 'probes', '--body-bytes': 'bodyBytes',
    '--role': 'role', '--queue': 'queue',
  };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-h' || argv[i] === '--help') {
      console.log(
        'bullmq-bench.mjs [--host 127.0.0.1] [--port 6390] [--seconds 10] [--warmup 1]\n' +
        '                 [--producers 64] [--workers 8] [--concurrency 25] [--worker-procs 1]\n' +
        '                 [--probes 200] [--body-bytes 500]',
      );
      process.exit(0);
    }
    const k = names[argv[i]];
    if (!k || i + 1 >= argv.length) {
      console.error(`bullmq-bench: unknown option or missing value: ${argv[i]} (see --help)`);
      process.exit(2);
    }
    const v = argv[++i];
    if (typeof a[k] === 'number') {
      a[k] = Number(v);
      if (!(a[k] >= 0)) {
        console.error(`bullmq-bench: ${argv[i - 1]} wants a number >= 0, not ${v}`);
        process.exit(2);
      }
    } else {
      a[k] = v;
    }
  }
  if (a.role === 'main' && (a.seconds <= 0 || a.producers < 1 || a.workers < 1 || a.concurrency < 1)) {
    console.error('bullmq-bench: --seconds, --producers, --workers and --concurrency want at least 1');
    process.exit(2);
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
const connection = { host: args.host, port: args.port };

// A job's data is what agentcom-loadgen POSTs as a task: a title and a
// --body-bytes description.
const description = 'lorem ipsum dolor sit amet '.repeat(Math.floor(args.bodyBytes / 27) + 1).slice(0, args.bodyBytes);
const taskData = (title) => ({ title, description });
const dataBytes = JSON.stringify(taskData('load 63-12345')).length;

function pct(values, q) {
  if (values.length === 0) return NaN;
  const v = [...values].sort((x, y) => x - y);
  return v[Math.round((v.length - 1) * q)];
}
const ms = (x) => (Number.isNaN(x) ? 'n/a' : x.toFixed(1));
const int = (x) => Math.round(x).toLocaleString('en-US');

// ---- redis-server facts and CPU -------------------------------------------------

let redisPid = 0;
const childPids = [];
// CPU seconds (user + system) a process has used, from /proc.
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in ticks of 1/100 s
  } catch {
    return NaN;
  }
}
// CPU seconds the whole machine has been busy (all cores), from /proc/stat.
function machineBusySeconds() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice: busy is
    // user + nice + system + irq + softirq (guest is inside user; steal is the host's)
    return (f[0] + f[1] + f[2] + (f[5] || 0) + (f[6] || 0)) / 100;
  } catch {
    return NaN;
  }
}
// CPU seconds of redis-server, this process, the worker and prober processes,
// and the whole machine.
const cpuNow = () => ({
  at: performance.now(),
  redis: cpuSeconds(redisPid),
  main: cpuSeconds(process.pid),
  children: new Map(childPids.map((pid) => [pid, cpuSeconds(pid)])),
  machine: machineBusySeconds(),
});
// Percent of one core each used between two cpuNow()s (children: those in both).
function cpuPercent(a, b) {
  const secs = (b.at - a.at) / 1000;
  let children = 0;
  for (const [pid, s] of a.children) if (b.children.has(pid)) children += b.children.get(pid) - s;
  const p = (x) => (100 * x) / secs;
  return { redis: p(b.redis - a.redis), main: p(b.main - a.main), children: p(children), machine: p(b.machine - a.machine) };
}

async function serverFacts() {
  const q = new Queue(`bench-info-${Date.now()}`, { connection });
  const c = await q.client;
  const [, appendfsync] = await c.config('GET', 'appendfsync');
  const [, appendonly] = await c.config('GET', 'appendonly');
  const field = (text, key) => (text.match(new RegExp(`^${key}:(.*)$`, 'm')) || [])[1]?.trim();
  const server = await c.info('server');
  const persistence = await c.info('persistence');
  const memory = await c.info('memory');
  await q.close();
  redisPid = Number(field(server, 'process_id')) || 0;
  return {
    appendfsync, appendonly,
    redis: field(server, 'redis_version'),
    aofEnabled: field(persistence, 'aof_enabled'),
    aofRewrites: field(persistence, 'aof_rewrites'),
    aofDelayedFsync: field(persistence, 'aof_delayed_fsync'),
    aofSize: Number(field(persistence, 'aof_current_size')) || 0,
    usedMemory: field(memory, 'used_memory_human'),
  };
}

// Waits (up to 2 minutes) until Redis rewrites no AOF in the background, so
// that a rewrite set off by one phase's data does not run into the next phase.
async function aofQuiet() {
  const q = new Queue(`bench-info-${Date.now()}`, { connection });
  const c = await q.client;
  const t0 = performance.now();
  for (;;) {
    const p = await c.info('persistence');
    if (!/^aof_rewrite_in_progress:1/m.test(p) && !/^aof_rewrite_scheduled:1/m.test(p)) break;
    if (performance.now() - t0 > 120_000) { log('an AOF rewrite still runs after 2 minutes; going on'); break; }
    await sleep(100);
  }
  await q.close();
  return (performance.now() - t0) / 1000;
}

// ---- workers, in this process or in children ----------------------------------

function startWorkers(queueName, count, concurrency, processor) {
  const state = { completed: 0, failed: 0, errors: 0, lastError: '' };
  const workers = [];
  for (let i = 0; i < count; i++) {
    const w = new Worker(queueName, processor ?? (async () => 'ok'), { connection, concurrency });
    w.on('completed', () => { state.completed++; });
    w.on('failed', (_job, err) => { state.failed++; state.lastError = String(err?.message ?? err); });
    w.on('error', (err) => { state.errors++; state.lastError = String(err?.message ?? err); });
    workers.push(w);
  }
  return {
    state,
    workers,
    ready: Promise.all(workers.map((w) => w.waitUntilReady())),
    close: () => Promise.all(workers.map((w) => w.close())),
  };
}

// Probes: one job at a time on its own queue, with idle Workers waiting on it;
// each is timed from just before queue.add to the processor being called and
// to the Worker's 'completed' event, then 20 ms of rest. Stops after `count`
// probes or when shouldStop() says so.
async function probeLoop(queueName, workers, concurrency, count, shouldStop = () => false) {
  const pending = new Map();
  const pool = startWorkers(queueName, workers, concurrency, async (job) => {
    const p = pending.get(job.id);
    if (p) p.started = performance.now();
    return 'ok';
  });
  for (const w of pool.workers) {
    w.on('completed', (job) => {
      const p = pending.get(job.id);
      if (p) { p.completed = performance.now(); p.done(); }
    });
  }
  await pool.ready;
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  await sleep(500); // let every Worker reach its blocking wait for a job
  const r = { start: [], done: [], add: [], timeouts: 0 };
  for (let i = 0; i < count && !shouldStop(); i++) {
    const id = `probe-${i}`;
    const p = {};
    const finished = new Promise((res) => { p.done = res; });
    pending.set(id, p);
    p.sent = performance.now();
    await queue.add('task', taskData('probe'), { jobId: id });
    p.added = performance.now();
    const ok = await Promise.race([finished.then(() => true), sleep(10_000).then(() => false)]);
    pending.delete(id);
    if (!ok) { r.timeouts++; continue; }
    r.start.push(p.started - p.sent);
    r.done.push(p.completed - p.sent);
    r.add.push(p.added - p.sent);
    await sleep(20);
  }
  await queue.close();
  await pool.close();
  r.failed = pool.state.failed + pool.state.errors;
  return r;
}

// A child process: --role workers (count on request, stop) or --role prober
// (probe until told to stop, then report).
async function child() {
  process.on('disconnect', () => process.exit(0)); // the main process is gone
  if (args.role === 'workers') {
    const pool = startWorkers(args.queue, args.workers, args.concurrency);
    await pool.ready;
    process.on('message', async (m) => {
      if (m.type === 'count') {
        process.send({ type: 'count', id: m.id, ...pool.state });
      } else if (m.type === 'stop') {
        await pool.close();
        process.send({ type: 'stopped', ...pool.state }, () => process.exit(0));
      }
    });
    process.send({ type: 'ready' });
  } else if (args.role === 'prober') {
    let stop = false;
    process.on('message', (m) => { if (m.type === 'stop') stop = true; });
    process.send({ type: 'ready' });
    const r = await probeLoop(args.queue, 1, 1, Infinity, () => stop);
    process.send({ type: 'stopped', ...r }, () => process.exit(0));
  } else {
    throw new Error(`unknown --role ${args.role}`);
  }
}

function spawnChild(role, extra) {
  const proc = fork(fileURLToPath(import.meta.url), [
    '--role', role, '--host', args.host, '--port', String(args.port), ...extra,
  ]);
  childPids.push(proc.pid);
  const waiters = new Map();
  let seq = 0;
  proc.on('message', (m) => {
    const key = m.type === 'count' ? m.id : m.type;
    const w = waiters.get(key);
    if (w) { waiters.delete(key); w(m); }
  });
  proc.on('exit', (code) => {
    childPids.splice(childPids.indexOf(proc.pid), 1);
    if (code !== 0) log(`a ${role} process exited with ${code}`);
  });
  const ask = (msg, key) => new Promise((res) => { waiters.set(key, res); if (msg) proc.send(msg); });
  const ready = ask(null, 'ready');
  return {
    ready,
    count: () => { const id = ++seq; return ask({ type: 'count', id }, id); },
    stop: () => ask({ type: 'stop' }, 'stopped'),
  };
}

// Workers for phase 2. Returns count() and stop(), both -> {completed, failed, errors}.
async function workerPool(queueName) {
  if (args.workerProcs === 0) {
    const pool = startWorkers(queueName, args.workers, args.concurrency);
    await pool.ready;
    return {
      count: async () => ({ ...pool.state }),
      stop: async () => { await pool.close(); return { ...pool.state }; },
    };
  }
  const procs = Math.min(args.workerProcs, args.workers);
  const children = [];
  for (let i = 0; i < procs; i++) {
    const n = Math.floor(args.workers / procs) + (i < args.workers % procs ? 1 : 0);
    children.push(spawnChild('workers', [
      '--queue', queueName, '--workers', String(n), '--concurrency', String(args.concurrency),
    ]));
  }
  await Promise.all(children.map((c) => c.ready));
  const sum = (rs) => rs.reduce((t, r) => ({
    completed: t.completed + r.completed, failed: t.failed + r.failed,
    errors: t.errors + r.errors, lastError: r.lastError || t.lastError,
  }), { completed: 0, failed: 0, errors: 0, lastError: '' });
  return {
    count: async () => sum(await Promise.all(children.map((c) => c.count()))),
    stop: async () => sum(await Promise.all(children.map((c) => c.stop()))),
  };
}

// ---- producers --------------------------------------------------------------------

// --producers loops of awaited adds for warmup + seconds; counts the adds that
// returned inside the window, with their latencies. onWindow('start'|'end') is
// awaited at the window's edges.
async function runProducers(queueName, onWindow = async () => {}) {
  const queues = [];
  for (let i = 0; i < args.producers; i++) queues.push(new Queue(queueName, { connection }));
  await Promise.all(queues.map((q) => q.waitUntilReady()));
  const st = { stop: false, t0: Infinity, t1: Infinity, count: 0, errors: 0, lastError: '', lat: [] };
  const loop = async (q, p) => {
    let n = 0;
    while (!st.stop) {
      const a = performance.now();
      try {
        await q.add('task', taskData(`load ${p}-${n++}`));
      } catch (e) {
        st.errors++;
        st.lastError = String(e?.message ?? e);
        await sleep(10);
        continue;
      }
      const b = performance.now();
      if (b >= st.t0 && b < st.t1) { st.count++; st.lat.push(b - a); }
    }
  };
  const loops = queues.map((q, p) => loop(q, p));
  await sleep(args.warmup * 1000);
  await onWindow('start');
  const cpu0 = cpuNow();
  st.t0 = performance.now();
  st.t1 = st.t0 + args.seconds * 1000;
  await sleep(args.seconds * 1000);
  const [, counts] = await Promise.all([
    onWindow('end'),
    queues[0].getJobCounts('waiting', 'active'),
  ]);
  const cpu = cpuPercent(cpu0, cpuNow());
  st.stop = true;
  await Promise.all(loops);
  await Promise.all(queues.map((q) => q.close()));
  return { ...st, counts, cpu };
}

// ---- phases -------------------------------------------------------------------------

const stamp = Date.now().toString(36);

async function phaseCreate() {
  const r = await runProducers(`bench-create-${stamp}`);
  return {
    rate: r.count / args.seconds,
    count: r.count,
    p50: pct(r.lat, 0.5),
    p99: pct(r.lat, 0.99),
    cpu: r.cpu,
    errors: r.errors,
    lastError: r.lastError,
  };
}

async function phaseLifecycle() {
  const name = `bench-lifecycle-${stamp}`;
  const pool = await workerPool(name);
  const prober = spawnChild('prober', ['--queue', `bench-loadprobe-${stamp}`]);
  await prober.ready;
  const window = {};
  const r = await runProducers(name, async (edge) => {
    const c = await pool.count();
    window[edge] = { at: performance.now(), ...c };
  });
  const [probes, final] = await Promise.all([prober.stop(), pool.stop()]);
  const secs = (window.end.at - window.start.at) / 1000;
  const done = window.end.completed - window.start.completed;
  return {
    rate: done / secs,
    done,
    addRate: r.count / args.seconds,
    addP50: pct(r.lat, 0.5),
    addP99: pct(r.lat, 0.99),
    waiting: r.counts.waiting,
    cpu: r.cpu,
    probes,
    failed: final.failed,
    workerErrors: final.errors,
    addErrors: r.errors,
    lastError: final.lastError || r.lastError,
  };
}

async function phaseProbes() {
  const cpu0 = cpuNow();
  const r = await probeLoop(`bench-probe-${stamp}`, args.workers, args.concurrency, args.probes);
  r.cpu = cpuPercent(cpu0, cpuNow());
  return r;
}

const cpuText = (c, main = "producers' process") => {
  const ours = c.redis + c.main + c.children;
  return `redis-server ${c.redis.toFixed(0)} %, ${main} ${c.main.toFixed(0)} %` +
    (c.children > 0 ? `, worker and prober processes ${c.children.toFixed(0)} %` : '') +
    `; rest of the machine (kernel, other processes) ${Math.max(0, c.machine - ours).toFixed(0)} %`;
};

function versionOf(pkg) {
  try {
    return JSON.parse(readFileSync(require.resolve(`${pkg}/package.json`), 'utf8')).version;
  } catch {
    return '?';
  }
}

async function main() {
  const before = await serverFacts();
  if (before.appendfsync !== 'always' || before.aofEnabled !== '1') {
    log(`warning: redis has appendfsync ${before.appendfsync}, aof_enabled:${before.aofEnabled}: these are not durable figures`);
  }
  log(`phase 1/3: create only: ${args.producers} producers, no workers, ${args.warmup} s warm-up + ${args.seconds} s`);
  const c = await phaseCreate();
  log(`  ${int(c.rate)} adds/s`);
  const w2 = await aofQuiet();
  if (w2 > 0.5) log(`  waited ${w2.toFixed(1)} s for Redis's background AOF rewrite to end`);
  log(`phase 2/3: full lifecycles: ${args.producers} producers, ${args.workers} workers x concurrency ${args.concurrency}, ${args.warmup} s warm-up + ${args.seconds} s`);
  const l = await phaseLifecycle();
  log(`  ${int(l.rate)} completed/s, ${int(l.addRate)} adds/s`);
  const w3 = await aofQuiet();
  if (w3 > 0.5) log(`  waited ${w3.toFixed(1)} s for Redis's background AOF rewrite to end`);
  log(`phase 3/3: enqueue -> start: ${args.probes} probes one at a time, ${args.workers} idle workers x concurrency ${args.concurrency}`);
  const p = await phaseProbes();
  const after = await serverFacts();

  const wp = args.workerProcs === 0 ? 'in the producers\' process' : `in ${Math.min(args.workerProcs, args.workers)} child process(es) of their own`;
  const lp = l.probes;
  const out = [];
  out.push(`## BullMQ ${versionOf('bullmq')} on Redis ${after.redis} (appendfsync ${after.appendfsync}): ${args.producers} producers, ${args.workers} workers x ${args.concurrency}, ${args.seconds} s a phase, ${args.bodyBytes}-byte descriptions`);
  out.push('');
  out.push('| figure | value |');
  out.push('| --- | --- |');
  out.push(`| durable creates/s, create only (${args.producers} producers, no workers) | ${int(c.rate)} (${int(c.count)} adds in ${args.seconds} s; CPU: ${cpuText(c.cpu)}) |`);
  out.push(`| one add's latency, create only | p50 ${ms(c.p50)} ms, p99 ${ms(c.p99)} ms |`);
  out.push(`| full lifecycles/s (${args.workers} workers x concurrency ${args.concurrency}; completions Redis acknowledged) | ${int(l.rate)} (${int(l.done)} completed in ${args.seconds} s; CPU: ${cpuText(l.cpu)}) |`);
  out.push(`| durable creates/s while the workers consume | ${int(l.addRate)} (p50 ${ms(l.addP50)} ms, p99 ${ms(l.addP99)} ms; ${int(l.waiting)} jobs waiting at the window's end) |`);
  out.push(`| add → start at an idle worker of its own queue, under that load (a probe every 20 ms) | p50 ${ms(pct(lp.start, 0.5))} ms, p99 ${ms(pct(lp.start, 0.99))} ms, max ${ms(pct(lp.start, 1))} ms (${lp.start.length} probes) |`);
  out.push(`| enqueue → start (processor called), idle workers | p50 ${ms(pct(p.start, 0.5))} ms, p99 ${ms(pct(p.start, 0.99))} ms, max ${ms(pct(p.start, 1))} ms (${p.start.length} probes; CPU: ${cpuText(p.cpu, 'the probing process')}) |`);
  out.push(`| enqueue → completed (the Worker's 'completed' event), idle workers | p50 ${ms(pct(p.done, 0.5))} ms, p99 ${ms(pct(p.done, 0.99))} ms |`);
  out.push(`| one add's latency, idle | p50 ${ms(pct(p.add, 0.5))} ms, p99 ${ms(pct(p.add, 0.99))} ms |`);
  out.push('');
  out.push('| setting | value |');
  out.push('| --- | --- |');
  out.push(`| producers | ${args.producers} async loops in one Node process, one Queue (one Redis connection) each, each \`queue.add\` awaited before the next |`);
  out.push(`| workers | ${args.workers} BullMQ Workers x concurrency ${args.concurrency} = ${args.workers * args.concurrency} slots, ${wp}; the processor returns at once |`);
  out.push(`| probes | phase 2: one Worker (concurrency 1) on a queue of its own, in a prober process; phase 3: ${args.probes} probes, the ${args.workers} x ${args.concurrency} Workers in the probing process; each probe waited for until completed, then 20 ms of rest |`);
  out.push(`| job | \`add('task', {title, description})\`: ${args.bodyBytes}-byte description, ${dataBytes} bytes of JSON; BullMQ's default options (attempts 1, completed jobs kept) |`);
  out.push(`| timed phases | ${args.warmup} s warm-up (not counted), then ${args.seconds} s counted; before phases 2 and 3 the bench waits for any background AOF rewrite of Redis to end |`);
  out.push(`| redis-server | ${after.redis}: CONFIG GET appendonly ${after.appendonly}, appendfsync ${after.appendfsync}; INFO persistence aof_enabled:${after.aofEnabled}, aof_rewrites:${after.aofRewrites}, aof_delayed_fsync:${after.aofDelayedFsync}; AOF ${(after.aofSize / 1048576).toFixed(0)} MiB, used memory ${after.usedMemory} at the end |`);
  out.push(`| bullmq / ioredis / node | ${versionOf('bullmq')} / ${versionOf('ioredis')} / ${process.version} |`);
  out.push(`| machine | ${cpus().length} cores (${cpus()[0]?.model?.trim() ?? '?'}), shared by redis-server and every client process |`);
  const problems = [];
  if (c.errors || l.addErrors) problems.push(`${c.errors + l.addErrors} adds failed (${c.lastError || l.lastError})`);
  if (l.failed || l.workerErrors) problems.push(`${l.failed} jobs failed, ${l.workerErrors} worker errors (${l.lastError})`);
  if (p.timeouts || p.failed || lp.timeouts || lp.failed) problems.push(`${p.timeouts + lp.timeouts} probes timed out, ${p.failed + lp.failed} failed or errored`);
  if (problems.length) out.push(`| problems | ${problems.join('; ')} |`);
  console.log(out.join('\n'));
  process.exit(problems.length ? 1 : 0);
}

(args.role === 'main' ? main() : child()).catch((e) => {
  console.error(e);
  process.exit(1);
});
