// The real stripe-node client (package.json pins it) against idemproxy replicas in front
// of a Stripe-like upstream (test-upstream: /slow/MS answers after MS ms, anything else
// answers at once, each with a JSON object that has an "id"). Started by
// tests/integration/test_error_template.c, which counts what reached the proxies and the
// upstream.
//
//   node stripe_errors.mjs --mode plain|stripe --a PORT --b PORT --dead PORT --run ID
//
// --a and --b: two replicas on one Redis and one upstream (upstream-timeout 4s); --dead:
// a replica whose Redis is unreachable. --mode plain: the replicas answer RFC 9457
// problem+json (no error-template) and this checks the old behaviour, which is the bug:
// stripe-node takes a 409, 422, 503 or a recorded 504 for a successful object (it knows
// an error only by an "error" member in the body) and retries a recorded 504 that can
// never change. --mode stripe: the replicas use conf/error-templates/stripe.json.
// Keys are "<ID>-<scenario>"; each scenario has its own target ("?s=<scenario>"), so the
// caller can count its requests in the access logs. One line per check ("ok ..." or
// "FAIL ..."); exit status 0 when every check passed.
import Stripe from 'stripe';

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
    args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const mode = args.mode;
if (!['plain', 'stripe'].includes(mode) || !args.a || !args.b || !args.dead || !args.run) {
    console.error('usage: stripe_errors.mjs --mode plain|stripe --a PORT --b PORT --dead PORT --run ID');
    process.exit(2);
}

let failed = 0;
function check(name, cond, detail) {
    if (cond) {
        console.log(`ok ${mode}: ${name}`);
    } else {
        failed++;
        console.log(`FAIL ${mode}: ${name}: ${detail}`);
    }
}

// One client per call, so that its 'request' events (one per HTTP attempt, retries
// included: RequestSender emits it before each) count that call's attempts alone.
function client(port, maxNetworkRetries = 2) {
    const stripe = new Stripe('sk_test_idemproxy', {
        host: '127.0.0.1',
        port: Number(port),
        protocol: 'http',
        maxNetworkRetries,
        timeout: 20000,
    });
    const c = { stripe, attempts: 0 };
    stripe.on('request', () => c.attempts++);
    return c;
}

// stripe.rawRequest: a POST with form parameters and an Idempotency-Key, as a resource
// method would send it. Settles to {ok, value | err, attempts}.
async function post(port, path, params, key, retries) {
    const c = client(port, retries);
    try {
        const value = await c.stripe.rawRequest('POST', path, params, { idempotencyKey: key });
        return { ok: true, value, attempts: c.attempts };
    } catch (err) {
        return { ok: false, err, attempts: c.attempts };
    }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const key = (s) => `${args.run}-${s}`;
const show = (r) =>
    r.ok ? `resolved ${JSON.stringify(r.value)}`
         : `rejected ${r.err.type} ${r.err.statusCode} ${r.err.rawType} ${r.err.code}: ${r.err.message}`;
const PROBLEM = 'tag:idemproxy.dev,2026:problem:';

// 409: the first request with the key still runs (2.5 s) on A; the same request on B
// meanwhile. stripe-node retries a 409 (maxNetworkRetries 2: three attempts, about 0.5
// and 1 s apart), all before the first one ends.
async function inUse() {
    const first = post(args.a, '/slow/2500?s=inuse', { amount: 100 }, key('inuse'));
    await sleep(300);
    const r = await post(args.b, '/slow/2500?s=inuse', { amount: 100 }, key('inuse'));
    const f = await first;
    check('409: the first request itself succeeds', f.ok && f.value.id === 'upstream', show(f));
    check('409: stripe-node retried it (3 attempts)', r.attempts === 3, `${r.attempts} attempts`);
    if (mode === 'plain') {
        check('409 (the bug): resolves as a successful object without an id',
            r.ok && r.value.id === undefined && r.value.status === 409 &&
            r.value.type === PROBLEM + 'idempotency-key-in-use', show(r));
        return;
    }
    // stripe-node 23 makes a StripeIdempotencyError of a v1 error only for status 400 or
    // 404 (Error.js generateV1Error); a 409 with type idempotency_error is a StripeAPIError
    // whose rawType says what it is — as with Stripe's own 409 idempotency_key_in_use.
    check('409: rejects with rawType idempotency_error, code idempotency_key_in_use',
        !r.ok && r.err.statusCode === 409 && r.err.rawType === 'idempotency_error' &&
        r.err.code === 'idempotency_key_in_use' && r.err.type === 'StripeAPIError', show(r));
    check('409: no Stripe-Should-Retry (a 409 is retried by the client\'s own rule)',
        !r.ok && r.err.headers['stripe-should-retry'] === undefined, JSON.stringify(r.err.headers));
    check('409: err.requestId is the proxy\'s request id',
        !r.ok && /^[0-9a-f]{32}$/.test(r.err.requestId || ''), `requestId ${r.err && r.err.requestId}`);
}

// A 409 that the retries outlive: the first request ends after 1 s, a later attempt is
// answered from its record.
async function inUseThenReplay() {
    const first = post(args.a, '/slow/1000?s=replay', { amount: 100 }, key('replay'));
    await sleep(300);
    const r = await post(args.b, '/slow/1000?s=replay', { amount: 100 }, key('replay'), 4);
    const f = await first;
    check('409 then replay: the first request succeeds', f.ok && f.value.id === 'upstream', show(f));
    if (mode === 'plain') {
        // the first attempt's 409 already counts as the answer, or a later replay does:
        // which one depends on timing; either way nothing raises
        check('409 then replay (plain): resolves', r.ok, show(r));
        return;
    }
    check('409 then replay: resolves with the first request\'s object, replayed',
        r.ok && f.ok && JSON.stringify(r.value) === JSON.stringify(f.value) &&
        r.value.lastResponse.headers['idempotent-replayed'] === 'true', show(r));
    check('409 then replay: after at least one retry', r.attempts >= 2, `${r.attempts} attempts`);
}

// 422: the key again, on the other replica, with other parameters.
async function reused() {
    const f = await post(args.a, '/v1/charges?s=reused', { amount: 100 }, key('reused'));
    const r = await post(args.b, '/v1/charges?s=reused', { amount: 200 }, key('reused'));
    check('422: the first request succeeds', f.ok && f.value.id === 'upstream', show(f));
    check('422: one attempt (not retried)', r.attempts === 1, `${r.attempts} attempts`);
    if (mode === 'plain') {
        check('422 (the bug): resolves as a successful object without an id',
            r.ok && r.value.id === undefined && r.value.status === 422 &&
            r.value.type === PROBLEM + 'idempotency-key-reused', show(r));
        return;
    }
    check('422: rejects with StripeIdempotencyError (status 400, as Stripe answers it)',
        !r.ok && r.err.type === 'StripeIdempotencyError' && r.err.statusCode === 400 &&
        r.err.rawType === 'idempotency_error' && r.err.code === 'idempotency_key_reused' &&
        r.err instanceof Stripe.errors.StripeIdempotencyError, show(r));
}

// 504 outcome-unknown: the upstream takes 5 s, the proxy gives up after 4 s and records
// that the outcome is unknown; the retry on the other replica is answered from the record.
async function outcomeUnknown() {
    const f = await post(args.a, '/slow/5000?s=unknown', { amount: 100 }, key('unknown'));
    const r = await post(args.b, '/slow/5000?s=unknown', { amount: 100 }, key('unknown'));
    if (mode === 'plain') {
        check('recorded 504 (the bug): the first call retried a recorded answer (3 attempts)',
            f.attempts === 3, `${f.attempts} attempts`);
        check('recorded 504 (the bug): resolves as a successful object without an id',
            f.ok && f.value.id === undefined && f.value.status === 504 &&
            f.value.type === PROBLEM + 'outcome-unknown', show(f));
        check('recorded 504 (the bug): a later call retries it too (3 attempts) and resolves',
            r.attempts === 3 && r.ok && r.value.status === 504, `${r.attempts} attempts, ${show(r)}`);
        return;
    }
    for (const [name, x] of [['the first call', f], ['a later call, on the other replica', r]]) {
        check(`recorded 504: ${name} rejects after exactly one attempt`, x.attempts === 1,
            `${x.attempts} attempts`);
        check(`recorded 504: ${name} is a StripeAPIError 504 api_error outcome-unknown with ` +
            'Stripe-Should-Retry: false',
            !x.ok && x.err.type === 'StripeAPIError' && x.err.statusCode === 504 &&
            x.err.rawType === 'api_error' && x.err.code === 'outcome-unknown' &&
            x.err.headers['stripe-should-retry'] === 'false', show(x));
    }
    if (!f.ok && !r.ok) {
        check('recorded 504: the later call is the record: replayed, same error, same request id',
            r.err.headers['idempotent-replayed'] === 'true' && r.err.message === f.err.message &&
            r.err.requestId === f.err.requestId &&
            JSON.stringify(r.err.raw.idemproxy) === JSON.stringify(f.err.raw.idemproxy),
            `${JSON.stringify(f.err.raw)} vs ${JSON.stringify(r.err.raw)}`);
    }
}

// 503 store-unavailable: the replica cannot reach Redis, forwards nothing; a retry is
// safe and stripe-node makes them all (maxNetworkRetries 2).
async function storeUnavailable() {
    const r = await post(args.dead, '/v1/charges?s=store', { amount: 100 }, key('store'));
    check('503: retried (3 attempts)', r.attempts === 3, `${r.attempts} attempts`);
    if (mode === 'plain') {
        check('503 (the bug): resolves as a successful object without an id',
            r.ok && r.value.id === undefined && r.value.status === 503, show(r));
        return;
    }
    check('503: rejects with StripeAPIError store-unavailable, Stripe-Should-Retry: true',
        !r.ok && r.err.type === 'StripeAPIError' && r.err.statusCode === 503 &&
        r.err.code === 'store-unavailable' && r.err.headers['stripe-should-retry'] === 'true',
        show(r));
}

await Promise.all([inUse(), inUseThenReplay(), reused(), outcomeUnknown(), storeUnavailable()]);
console.log(`${mode}: ${failed ? failed + ' check(s) FAILED' : 'all checks passed'}`);
process.exit(failed ? 1 : 0);
