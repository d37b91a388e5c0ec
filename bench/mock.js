// OpenAI-compatible mock provider for the benchmark suite (bench/run). Loopback only.
// Grown from the peers recipe's mock (bench/peers/mock.js): the same fixed answers, plus
// slow streams for the memory scenario.
// Env: PORT (required), DELAY_MS (default 0): fixed latency before the answer starts;
// SLOW_INTERVAL_MS and SLOW_CHUNKS (default 0): when both are set, a streamed answer sends
// one chunk every SLOW_INTERVAL_MS, SLOW_CHUNKS times, then ends (a slow stream).
'use strict';
const http = require('http');
const PORT = +process.env.PORT;
const DELAY = +(process.env.DELAY_MS || 0);
const SLOW_MS = +(process.env.SLOW_INTERVAL_MS || 0);
const SLOW_CHUNKS = +(process.env.SLOW_CHUNKS || 0);
if (!PORT) { console.error('PORT is required'); process.exit(2); }
const completion = JSON.stringify({
  id: 'chatcmpl-mock', object: 'chat.completion', created: 1700000000, model: 'gpt-4o-mini',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello! This is a fixed mock reply.' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 9, completion_tokens: 9, total_tokens: 18 }
});
function chunk(delta, finish) {
  return 'data: ' + JSON.stringify({ id: 'chatcmpl-mock', object: 'chat.completion.chunk', created: 1700000000, model: 'gpt-4o-mini',
    choices: [{ index: 0, delta, finish_reason: finish }] }) + '\n\n';
}
const sse = chunk({ role: 'assistant', content: '' }, null) +
  ['Hello', '!', ' This', ' is', ' a', ' mock', '.'].map(t => chunk({ content: t }, null)).join('') +
  chunk({}, 'stop') + 'data: [DONE]\n\n';
const models = JSON.stringify({ object: 'list', data: [{ id: 'gpt-4o-mini', object: 'model', created: 0, owned_by: 'mock' }] });
function slowStream(req, res) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(chunk({ role: 'assistant', content: '' }, null));
  let sent = 0;
  const timer = setInterval(() => {
    sent += 1;
    if (sent >= SLOW_CHUNKS) {
      clearInterval(timer);
      res.end(chunk({}, 'stop') + 'data: [DONE]\n\n');
      return;
    }
    res.write(chunk({ content: ' tick' }, null));
  }, SLOW_MS);
  res.on('close', () => clearInterval(timer));
}
const server = http.createServer({ noDelay: true, keepAliveTimeout: 120000 }, (req, res) => {
  const bufs = [];
  req.on('data', d => bufs.push(d));
  req.on('end', () => {
    const reply = () => {
      if (req.method === 'GET' && req.url.endsWith('/models')) {
        res.writeHead(200, { 'content-type': 'application/json' }); return res.end(models);
      }
      if (req.method !== 'POST' || !req.url.includes('chat/completions')) { res.writeHead(404); return res.end('{}'); }
      let stream = false;
      try { stream = JSON.parse(Buffer.concat(bufs).toString() || '{}').stream === true; } catch (e) {}
      if (stream && SLOW_MS > 0 && SLOW_CHUNKS > 0) return slowStream(req, res);
      if (stream) { res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }); return res.end(sse); }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(completion) });
      res.end(completion);
    };
    DELAY > 0 ? setTimeout(reply, DELAY) : reply();
  });
});
server.headersTimeout = 0;
server.requestTimeout = 0;
server.maxConnections = 100000;
server.listen(PORT, '127.0.0.1', () => console.log('mock listening on 127.0.0.1:' + PORT + ' delay=' + DELAY + 'ms'));
process.on('SIGTERM', () => process.exit(0));
