#!/usr/bin/env node
// Checks rendered Kubernetes manifests offline, three ways:
//  1. kubernetes-models validates every object against the API's JSON
//     schemas (types, required fields, enums; not unknown fields);
//  2. every object is typed with kubernetes-types in a generated TypeScript
//     file that `tsc --strict` compiles, which refuses unknown fields;
//  3. the invariants a reviewer checks: every container has requests,
//     limits, probes and a restricted security context; the flags in the
//     ConfigMap and the container args are real flags of the binaries
//     (their --help); ports agree between flags, containers, probes, scrape
//     annotations and the Service; images are the Dockerfile's targets at the engine's version;
//     the workers' grace period exceeds their stop timeout.
//
//   node validate.js --bin BIN_DIR --dockerfile Dockerfile --version 0.1.0 \
//       --work DIR OVERLAY=rendered.yaml...
// Prints what it checked; exits 1 listing every problem.
'use strict';

const fs = require('fs');
const path = require('path');
const {execFileSync} = require('child_process');
const yaml = require('js-yaml');

function flag(name) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error('missing --' + name);
  return process.argv[i + 1];
}
const bin = flag('bin');
const dockerfile = fs.readFileSync(flag('dockerfile'), 'utf8');
const version = flag('version');
const work = flag('work');
const overlays = process.argv.slice(2).filter((a) => /^[a-z]+=/.test(a)).map((a) => a.split('='));

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

// The flags a binary really takes, from its --help.
function flagsOf(binary) {
  const help = execFileSync(path.join(bin, binary), ['--help'], {encoding: 'utf8'});
  return new Set([...help.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]));
}
const realFlags = {'tuneforge-server': flagsOf('tuneforge-server'),
                   'tuneforge-worker': flagsOf('tuneforge-worker')};

// TOML as the ConfigMap holds it: `name = value` lines and comments.
function parseToml(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = line.replace(/#.*$/, '').match(/^\s*([A-Za-z0-9_-]+)\s*=\s*(.+?)\s*$/);
    if (m) out[m[1]] = m[2].replace(/^"(.*)"$/, '$1');
  }
  return out;
}
const portOf = (address) => Number(String(address).split(':').pop());

// Dockerfile targets and what each final image holds.
const targets = new Set([...dockerfile.matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1]));
const imageRe = /^tuneforge\/tuneforge:([0-9.]+)-([a-z]+)$/;

let tsIndex = 0;
const tsLines = [];
const tsImports = new Map();  // module -> Set of kinds

function typesModule(apiVersion) {
  const [group, ver] = apiVersion.includes('/') ? apiVersion.split('/') : ['core', apiVersion];
  return `kubernetes-types/${group.replace(/\.k8s\.io$/, '')}/${ver}`;
}
function modelsModule(apiVersion, kind) {
  return `kubernetes-models/${apiVersion}/${kind}`;
}

for (const [overlay, file] of overlays) {
  const objects = yaml.loadAll(fs.readFileSync(file, 'utf8')).filter(Boolean);
  const byKind = (kind) => objects.filter((o) => o.kind === kind);
  console.log(`${overlay}: ${objects.length} objects: ` +
              objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', '));

  for (const o of objects) {
    const where = `${overlay} ${o.kind}/${o.metadata.name}`;
    // 1. Schemas. kustomize folds long base64 in a Secret's data over
    // lines; the API server's decoder (Go's) skips the newlines, the
    // schema's "byte" format does not: check the values as the server reads them.
    try {
      const Model = require(modelsModule(o.apiVersion, o.kind))[o.kind];
      const asRead = JSON.parse(JSON.stringify(o));
      if (o.kind === 'Secret' && asRead.data) {
        for (const k of Object.keys(asRead.data)) asRead.data[k] = asRead.data[k].replace(/\s+/g, '');
      }
      new Model(asRead).validate();
    } catch (e) {
      problem(where, `schema: ${e.message.split('\n').slice(0, 6).join(' ')}`);
    }
    // 2. Types (collected; compiled once below).
    const mod = typesModule(o.apiVersion);
    if (!tsImports.has(mod)) tsImports.set(mod, new Set());
    tsImports.get(mod).add(o.kind);
    const alias = `${o.kind}_${mod.replace(/[^a-z0-9]/gi, '_')}`;
    tsLines.push(`// ${where}\nexport const o${tsIndex++}: ${alias} = ${JSON.stringify(o, null, 2)};`);
  }

  // 3. Invariants.
  const config = byKind('ConfigMap').find((c) => c.metadata.name.startsWith('tuneforge-config'));
  if (!config) { problem(overlay, 'no tuneforge-config ConfigMap'); continue; }
  const tomls = {'tuneforge-server': parseToml(config.data['server.toml'] || ''),
                 'tuneforge-worker': parseToml(config.data['worker.toml'] || '')};
  for (const [binary, toml] of Object.entries(tomls)) {
    if (Object.keys(toml).length === 0) problem(overlay, `no flags for ${binary} in the ConfigMap`);
    for (const key of Object.keys(toml)) {
      if (!realFlags[binary].has(key)) problem(overlay, `${binary} has no flag --${key} (ConfigMap)`);
    }
  }
  const server = tomls['tuneforge-server'];
  const worker = tomls['tuneforge-worker'];
  if (!server['tls-cert'] || !server['tokens-file']) {
    problem(overlay, 'the scheduler must serve TLS with a tokens file');
  }
  if ('insecure' in server) problem(overlay, 'the scheduler must not run --insecure');

  for (const workload of [...byKind('Deployment'), ...byKind('StatefulSet')]) {
    const where = `${overlay} ${workload.kind}/${workload.metadata.name}`;
    const pod = workload.spec.template.spec;
    const podSec = pod.securityContext || {};
    if (podSec.runAsNonRoot !== true) problem(where, 'pod securityContext.runAsNonRoot must be true');
    if (!(Number.isInteger(podSec.runAsUser) && podSec.runAsUser > 0)) {
      problem(where, 'pod securityContext.runAsUser must be a numeric non-root uid (the kubelet ' +
                     'cannot verify a user name)');
    }
    if (!podSec.seccompProfile || podSec.seccompProfile.type !== 'RuntimeDefault') {
      problem(where, 'pod seccompProfile must be RuntimeDefault');
    }
    const mounts = new Set();
    for (const c of pod.containers) {
      const cw = `${where} container ${c.name}`;
      const r = c.resources || {};
      for (const part of ['requests', 'limits']) {
        for (const res of ['cpu', 'memory']) {
          if (!r[part] || r[part][res] === undefined) problem(cw, `no resources.${part}.${res}`);
        }
      }
      if (!c.readinessProbe || !c.livenessProbe) problem(cw, 'needs readiness and liveness probes');
      for (const probe of [c.readinessProbe, c.livenessProbe].filter(Boolean)) {
        if (!probe.grpc) problem(cw, 'probes must use the gRPC health service');
      }
      const s = c.securityContext || {};
      if (s.allowPrivilegeEscalation !== false) problem(cw, 'allowPrivilegeEscalation must be false');
      if (s.readOnlyRootFilesystem !== true) problem(cw, 'readOnlyRootFilesystem must be true');
      if (!s.capabilities || JSON.stringify(s.capabilities.drop) !== '["ALL"]') {
        problem(cw, 'capabilities must drop ALL');
      }
      if (s.privileged) problem(cw, 'must not be privileged');
      (c.volumeMounts || []).forEach((m) => mounts.add(m.mountPath));
      if (!mounts.has('/tmp')) problem(cw, 'a read-only root needs a volume at /tmp');

      // Image: a Dockerfile target at the engine's version; the CUDA image
      // holds only the worker.
      const m = imageRe.exec(c.image);
      if (!m) {
        problem(cw, `image ${c.image} is not tuneforge/tuneforge:VERSION-TARGET`);
      } else {
        if (m[1] !== version) problem(cw, `image version ${m[1]}, the engine is ${version}`);
        if (!targets.has(m[2])) problem(cw, `image target ${m[2]} is not a Dockerfile target`);
      }
      const binary = path.basename((c.command || [])[0] || '');
      if (!realFlags[binary]) { problem(cw, `runs ${binary}, not a Tuneforge binary`); continue; }
      if (binary === 'tuneforge-server' && m && m[2] !== 'cpu') {
        problem(cw, `the ${m[2]} image holds no tuneforge-server`);
      }
      for (const arg of c.args || []) {
        const name = (arg.match(/^--([a-z0-9-]+)/) || [])[1];
        if (!name || !realFlags[binary].has(name)) problem(cw, `${binary} has no flag ${arg}`);
        const file = (arg.match(/^--config=(.*)$/) || [])[1];
        if (file && !mounts.has(file)) problem(cw, `--config ${file} is not mounted`);
      }
      // Ports: what the flags listen on is what the container and probes name.
      const toml = tomls[binary];
      const ports = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
      if (toml['health-listen'] === undefined) problem(cw, 'no --health-listen for the probes');
      if (ports.health !== portOf(toml['health-listen'])) {
        problem(cw, `port health ${ports.health}, --health-listen ${toml['health-listen']}`);
      }
      for (const probe of [c.readinessProbe, c.livenessProbe].filter((p) => p && p.grpc)) {
        if (probe.grpc.port !== portOf(toml['health-listen'])) {
          problem(cw, `probe port ${probe.grpc.port}, --health-listen ${toml['health-listen']}`);
        }
      }
      // Metrics: the flag, the container port and the scrape annotation agree.
      const annotations = workload.spec.template.metadata.annotations || {};
      if (toml['metrics-listen'] === undefined) problem(cw, 'no --metrics-listen');
      if (ports.metrics !== portOf(toml['metrics-listen']) ||
          Number(annotations['prometheus.io/port']) !== ports.metrics ||
          annotations['prometheus.io/scrape'] !== 'true') {
        problem(cw, `metrics: --metrics-listen ${toml['metrics-listen']}, port ${ports.metrics}, ` +
                    `annotation ${annotations['prometheus.io/port']}`);
      }
      if (binary === 'tuneforge-server') {
        if (ports.grpc !== portOf(toml.listen)) problem(cw, `port grpc ${ports.grpc}, --listen ${toml.listen}`);
        const liveness = c.livenessProbe && c.livenessProbe.grpc;
        if (liveness && liveness.service) problem(cw, 'the server serves health as ""');
      } else {
        const liveness = c.livenessProbe && c.livenessProbe.grpc;
        if (!liveness || liveness.service !== 'liveness') {
          problem(cw, 'the worker\'s liveness probe must ask for "liveness" (ready means registered)');
        }
        const grace = pod.terminationGracePeriodSeconds;
        const stop = Number(toml['stop-timeout-seconds']);
        if (!(grace > stop)) {
          problem(cw, `terminationGracePeriodSeconds ${grace} must exceed --stop-timeout-seconds ${stop}`);
        }
        const [service, port] = String(toml.server).split(':');
        const svc = byKind('Service').find((x) => x.metadata.name === service);
        if (!svc) problem(cw, `--server ${toml.server}: no Service ${service}`);
        else if (!svc.spec.ports.some((p) => p.port === Number(port))) {
          problem(cw, `--server ${toml.server}: Service ${service} has no port ${port}`);
        }
      }
    }
  }
  const scheduler = byKind('StatefulSet').find((s) => s.metadata.name === 'tuneforge-scheduler');
  if (!scheduler) problem(overlay, 'no scheduler StatefulSet');
  else {
    if (scheduler.spec.replicas !== 1) problem(overlay, 'the scheduler runs exactly one replica');
    if (!(scheduler.spec.volumeClaimTemplates || []).some((v) => v.metadata.name === 'data')) {
      problem(overlay, 'the scheduler needs a volume claim for its data');
    }
  }
  const svc = byKind('Service').find((s) => s.metadata.name === 'tuneforge-scheduler');
  if (svc && !svc.spec.ports.some((p) => p.port === portOf(server.listen))) {
    problem(overlay, `Service tuneforge-scheduler does not expose --listen ${server.listen}`);
  }
  if (!byKind('PodDisruptionBudget').some((p) => p.metadata.name === 'tuneforge-worker')) {
    problem(overlay, 'no PodDisruptionBudget for the workers');
  }
  if (byKind('NetworkPolicy').length === 0) problem(overlay, 'no NetworkPolicy');
  for (const secret of ['tuneforge-scheduler', 'tuneforge-worker']) {
    if (!byKind('Secret').some((s) => s.metadata.name.startsWith(secret))) {
      problem(overlay, `no Secret ${secret}`);
    }
  }
  const gpuWorkers = byKind('Deployment').filter((d) => d.spec.template.spec.containers.some(
      (c) => c.resources && c.resources.limits && c.resources.limits['nvidia.com/gpu']));
  if (overlay === 'gpu' && gpuWorkers.length === 0) problem(overlay, 'workers request no nvidia.com/gpu');
  if (overlay === 'gpu') {
    for (const d of gpuWorkers) {
      for (const c of d.spec.template.spec.containers) {
        if (!/-cuda$/.test(c.image)) problem(overlay, `GPU worker image ${c.image} is not the cuda target`);
      }
    }
  }
}

// 2, compiled: unknown fields are errors under --strict.
const header = [...tsImports].map(([mod, kinds]) =>
    `import type {${[...kinds].map((k) => `${k} as ${k}_${mod.replace(/[^a-z0-9]/gi, '_')}`)
                             .join(', ')}} from '${mod}';`).join('\n');
const tsFile = path.join(work, 'manifests.ts');
fs.writeFileSync(tsFile, header + '\n\n' + tsLines.join('\n\n') + '\n');
try {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '--strict', '--noEmit',
                                  '--skipLibCheck', '--target', 'es2020', '--module', 'commonjs',
                                  '--moduleResolution', 'node', tsFile],
               {encoding: 'utf8', cwd: work, stdio: 'pipe'});
  console.log(`tsc --strict: ${tsIndex} objects typed with kubernetes-types, no unknown fields`);
} catch (e) {
  problem('tsc --strict', (e.stdout || e.message).trim());
}

if (problems.length) {
  console.error(`${problems.length} problem(s):\n` + problems.map((p) => '  ' + p).join('\n'));
  process.exit(1);
}
console.log('every object passed the schemas, the types and the invariants');
