// Helpers for hongbao plugins in JavaScript (componentize-js). Each mirrors the Rust SDK helper
// of the same name (sdk/src/helpers.rs) bit for bit, so a JS plugin gives the same answers as its
// Rust twin. WIT s64/u64 arrive and leave as BigInt; s32/u32 are numbers.

const U64 = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/** A refusal: componentize-js turns a thrown `{ tag, val }` into the `err` of the WIT result. */
export class PluginError {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
}
export const unsupported = (m) => new PluginError('unsupported', m);
export const invalidInput = (m) => new PluginError('invalid-input', m);
export const hostFailed = (m) => new PluginError('host-failed', m);
export const other = (m) => new PluginError('other', m);

/** `yuan(888n)` → "8.88", `yuan(-120n)` → "-1.20". */
export function yuan(cents) {
  const sign = cents < 0n ? '-' : '';
  const abs = cents < 0n ? -cents : cents;
  return `${sign}${abs / 100n}.${String(abs % 100n).padStart(2, '0')}`;
}

/** splitmix64 seeded with the call's `randomSeed`, like the SDK's `Rng`. */
export class Rng {
  constructor(seed) {
    this.state = BigInt.asUintN(64, seed);
  }
  static fromCtx(ctx) {
    return new Rng(ctx.randomSeed);
  }
  nextU64() {
    this.state = (this.state + 0x9E3779B97F4A7C15n) & U64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & U64;
    z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & U64;
    return z ^ (z >> 31n);
  }
  /** Uniform in `low..=high` (BigInt), Lemire's multiply-and-reject, as `Rng::range_i64`. */
  rangeI64(low, high) {
    if (low > high) throw new Error(`Rng::range_i64: empty range \`${low}..=${high}\``);
    const spanMinusOne = BigInt.asUintN(64, high - low);
    if (spanMinusOne === U64) return BigInt.asIntN(64, this.nextU64());
    const span = spanMinusOne + 1n;
    const threshold = BigInt.asUintN(64, -span) % span;
    for (;;) {
      const product = this.nextU64() * span;
      if ((product & U64) >= threshold) return BigInt.asIntN(64, low + (product >> 64n));
    }
  }
}

/** The value of setting `key`, or undefined. `ctx.settings` is an array of `[key, value]`. */
export function setting(ctx, key) {
  const found = ctx.settings.find(([name]) => name === key);
  return found === undefined ? undefined : found[1];
}

// Rust's `str::trim` (Unicode White_Space); JS `trim()` also strips U+FEFF, which Rust keeps.
// Spelled out: StarlingMonkey's regexps reject `\p{White_Space}` ("invalid class property name").
const WS = '[\\u0009-\\u000D\\u0020\\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]';
const TRIM = new RegExp(`^${WS}+|${WS}+$`, 'g');
const rustTrim = (s) => s.replace(TRIM, '');

/** Setting `key` as an i64 (BigInt), `dflt` if unset; Rust's `i64::from_str` rules after a trim. */
export function settingI64(ctx, key, dflt) {
  const value = setting(ctx, key);
  if (value === undefined) return dflt;
  const t = rustTrim(value);
  if (/^[+-]?[0-9]+$/.test(t)) {
    const n = BigInt(t);
    if (n >= I64_MIN && n <= I64_MAX) return n;
  }
  throw invalidInput(`setting \`${key}\` must be an integer, got \`${value}\``);
}

/** Setting `key` as a u64 (BigInt), `dflt` if unset; Rust's `u64::from_str` rules (no `-`). */
export function settingU64(ctx, key, dflt) {
  const value = setting(ctx, key);
  if (value === undefined) return dflt;
  const t = rustTrim(value);
  if (/^\+?[0-9]+$/.test(t)) {
    const n = BigInt(t);
    if (n <= U64) return n;
  }
  throw invalidInput(`setting \`${key}\` must be a non-negative integer, got \`${value}\``);
}

const normalise = (c) => (c === '_' ? '-' : c >= 'A' && c <= 'Z' ? c.toLowerCase() : c);
// ASCII-only case folding, as Rust's `to_ascii_lowercase` (no Unicode folding such as U+212A → k).
const same = (a, b) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (normalise(a[i]) !== normalise(b[i])) return false;
  return true;
};
const language = (tag) => {
  const i = tag.search(/[-_]/);
  return i < 0 ? tag.length : i;
};

/** Exact match, else the same language, else `dflt`; as the SDK's `pick_locale`. */
export function pickLocale(requested, supported, dflt) {
  if (requested === undefined || requested === null) return dflt;
  requested = rustTrim(requested);
  if (requested === '') return dflt;
  const lang = requested.slice(0, language(requested));
  return (
    supported.find((s) => same(s, requested)) ??
    supported.find((s) => same(s, lang)) ??
    supported.find((s) => same(s.slice(0, language(s)), lang)) ??
    dflt
  );
}

// Rust's `{:?}` of a string, for the common cases: quotes, backslash, \t \r \n \0 and other
// control characters (Rust also escapes a few rarer unprintable code points).
function rustDebugStr(s) {
  let out = '"';
  for (const c of s) {
    const code = c.codePointAt(0);
    if (c === '"' || c === '\\') out += `\\${c}`;
    else if (c === '\t') out += '\\t';
    else if (c === '\r') out += '\\r';
    else if (c === '\n') out += '\\n';
    else if (c === '\0') out += '\\0';
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) out += `\\u{${code.toString(16)}}`;
    else out += c;
  }
  return `${out}"`;
}

const PASCAL = (tag) => tag.replace(/(^|-)([a-z])/g, (_, __, l) => l.toUpperCase());

/**
 * Calls a host function and turns its `host-error` into `PluginError::HostFailed`, with the
 * message a Rust plugin writes (`format!("{e:?}")`, e.g. `HostError::Unavailable("…")`).
 * componentize-js throws a host function's `err` as an Error whose `payload` is the variant.
 */
export function hostCall(f) {
  try {
    return f();
  } catch (e) {
    const error = e?.payload;
    if (error === undefined || typeof error.tag !== 'string') throw e;
    const name = `HostError::${PASCAL(error.tag)}`;
    throw hostFailed(error.val === undefined ? name : `${name}(${rustDebugStr(String(error.val))})`);
  }
}
