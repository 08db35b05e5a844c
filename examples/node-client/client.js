#!/usr/bin/env node
// A Tuneforge client that Tuneforge did not write: Node.js with @grpc/grpc-js
// and @grpc/proto-loader, reading the .proto files at run time (no generated
// code). It uploads a dataset, creates a fine-tuning job, and then follows it
// the two ways other services do: it watches the event stream, and it polls
// GetJob. The job's state decides the exit code (0: SUCCEEDED).
//
//   npm install @grpc/grpc-js @grpc/proto-loader
//   node examples/node-client/client.js --addr 127.0.0.1:50051 --data examples/hr.json \
//       [--epochs 2] [--model tiny-gpt2] [--token T] [--ca-file CA.pem]
//
// The token (also TUNEFORGE_TOKEN) goes with every call as
// "authorization: Bearer T"; a CA file (also TUNEFORGE_CA) turns TLS on.
//
// Output: one JSON object per line: {"dataset": ...}, {"job": ...}, every
// event as {"event": ...}, {"poll": ...} for each GetJob poll, and {"final": ...}.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function flag(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const addr = flag('addr', '127.0.0.1:50051');
const dataPath = flag('data', null);
const epochs = Number(flag('epochs', '2'));
const model = flag('model', 'tiny-gpt2');
const protoDir = flag('proto-dir', path.join(__dirname, '..', '..', 'proto'));
const token = flag('token', process.env.TUNEFORGE_TOKEN || '');
const caFile = flag('ca-file', process.env.TUNEFORGE_CA || '');
if (!dataPath) {
  console.error('usage: client.js --addr HOST:PORT --data FILE [--epochs N] [--model M]');
  process.exit(2);
}

const definition = protoLoader.loadSync(
    ['tuneforge/v1/dataset.proto', 'tuneforge/v1/job.proto'],
    {includeDirs: [protoDir], keepCase: false, longs: String, enums: String, defaults: true,
     oneofs: true});
const v1 = grpc.loadPackageDefinition(definition).tuneforge.v1;
const credentials = caFile ? grpc.credentials.createSsl(fs.readFileSync(caFile))
                           : grpc.credentials.createInsecure();
// Per call, not as call credentials: those are refused on plaintext
// channels, and a loopback server may be plaintext.
function metadata() {
  const m = new grpc.Metadata();
  if (token) m.set('authorization', 'Bearer ' + token);
  return m;
}
const datasets = new v1.DatasetService(addr, credentials);
const jobs = new v1.JobService(addr, credentials);
const print = (o) => console.log(JSON.stringify(o));
const deadline = (seconds) => ({deadline: Date.now() + seconds * 1000});

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), deadline(30),
                   (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// UploadDataset: a client stream, the metadata first, then the bytes in chunks.
function upload(file) {
  const bytes = fs.readFileSync(file);
  return new Promise((resolve, reject) => {
    const call = datasets.UploadDataset(metadata(), deadline(120), (err, dataset) =>
      err ? reject(err) : resolve(dataset));
    call.write({metadata: {displayName: path.basename(file), sizeBytes: String(bytes.length),
                           sha256: crypto.createHash('sha256').update(bytes).digest('hex')}});
    for (let at = 0; at < bytes.length; at += 64 * 1024) {
      call.write({chunk: bytes.subarray(at, at + 64 * 1024)});
    }
    call.end();
  });
}

// WatchJob: a server stream of every event, ending when the job ends.
function watch(name) {
  return new Promise((resolve, reject) => {
    const call = jobs.WatchJob({name, afterSequence: '0'}, metadata(), deadline(600));
    call.on('data', (event) => print({event}));
    call.on('error', reject);
    call.on('end', resolve);
  });
}

// GetJob every half second until the job is in a final state.
async function poll(name) {
  const done = ['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED'];
  for (;;) {
    const job = await unary(jobs, 'GetJob', {name});
    print({poll: {state: job.state, step: job.progress.step, trainLoss: job.progress.trainLoss}});
    if (done.includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function main() {
  const dataset = await upload(dataPath);
  print({dataset: {name: dataset.name, state: dataset.state,
                   examples: dataset.report.exampleCount}});
  const job = await unary(jobs, 'CreateJob', {job: {
    baseModel: 'models/' + model, trainingDataset: dataset.name,
    hyperparameters: {epochs, learningRate: 3e-3, maxSeqLen: 64, logEverySteps: 1},
    requestId: 'node-client-' + crypto.randomUUID()}});
  print({job: {name: job.name, state: job.state}});
  const [, final] = await Promise.all([watch(job.name), poll(job.name)]);
  print({final: {name: final.name, state: final.state, step: final.progress.step,
                 trainLoss: final.progress.trainLoss, resultModel: final.resultModel}});
  process.exit(final.state === 'JOB_STATE_SUCCEEDED' ? 0 : 1);
}

main().catch((err) => {
  console.error('client failed: ' + (err.details || err.message));
  process.exit(3);
});
