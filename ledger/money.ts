/**
 * Exact money: amounts are BigInt counts of micro-units (1 unit = 1,000,000 micros; for USD one
 * micro-dollar). Micro-units rather than cents because unit prices are small (a CPU-second costs
 * about $0.00001) while line totals are rounded once, to the micro, when booked. Amounts are
 * parsed from and printed as decimal strings; binary floating point never touches money.
 * Stored as BIGINT (int64): up to ±9.2 × 10^12 units per entry.
 */
export type Micros = bigint;

export const MICROS_PER_UNIT = 1_000_000n;
export const MONEY_DECIMALS = 6;

const DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

/** Parses "12.34", "0.000005", "-3" (or a JSON number such as 0.05, via its shortest decimal text) into micros. */
export function parseMoney(value: string | number): Micros {
  const text = typeof value === 'number' ? numberToDecimal(value) : value.trim();
  const m = DECIMAL.exec(text);
  if (!m) throw new RangeError(`"${text}" is not a decimal amount`);
  const frac = m[3] ?? '';
  if (frac.length > MONEY_DECIMALS) throw new RangeError(`"${text}" has more than ${MONEY_DECIMALS} decimal places`);
  const micros = BigInt(m[2]!) * MICROS_PER_UNIT + BigInt(frac.padEnd(MONEY_DECIMALS, '0') || '0');
  return m[1] ? -micros : micros;
}

/** True when parseMoney would accept it. */
export function isMoney(value: unknown): boolean {
  if (typeof value !== 'string' && typeof value !== 'number') return false;
  try {
    parseMoney(value);
    return true;
  } catch {
    return false;
  }
}

function numberToDecimal(n: number): string {
  if (!Number.isFinite(n)) throw new RangeError(`${n} is not a finite amount`);
  const s = String(n);
  if (/e/i.test(s)) throw new RangeError(`${s}: write amounts as decimal strings, e.g. "0.0000001"`);
  return s;
}

/** Micros → decimal string with `decimals` places (default 2, rounded half away from zero). */
export function formatMoney(micros: Micros, decimals = 2): string {
  if (decimals < 0 || decimals > MONEY_DECIMALS) throw new RangeError(`decimals must be 0..${MONEY_DECIMALS}`);
  const step = 10n ** BigInt(MONEY_DECIMALS - decimals);
  const rounded = divRound(micros, step);
  return formatScaled(rounded, decimals);
}

/** Micros → the exact decimal string (6 places, trailing zeros trimmed down to 2). */
export function formatMoneyExact(micros: Micros): string {
  let s = formatScaled(micros, MONEY_DECIMALS);
  while (s.endsWith('0') && s.length - s.indexOf('.') - 1 > 2) s = s.slice(0, -1);
  return s;
}

/** Formats an integer that is `value × 10^-decimals` as a decimal string. */
export function formatScaled(value: bigint, decimals: number): string {
  const neg = value < 0n;
  const abs = neg ? -value : value;
  const scale = 10n ** BigInt(decimals);
  const whole = abs / scale;
  const frac = abs % scale;
  const body = decimals > 0 ? `${whole}.${frac.toString().padStart(decimals, '0')}` : `${whole}`;
  return neg && abs !== 0n ? `-${body}` : body;
}

/** a / b rounded half away from zero (b ≠ 0). */
export function divRound(a: bigint, b: bigint): bigint {
  if (b === 0n) throw new RangeError('division by zero');
  const neg = a < 0n !== b < 0n;
  const aa = a < 0n ? -a : a;
  const bb = b < 0n ? -b : b;
  const q = (aa * 2n + bb) / (2n * bb);
  return neg ? -q : q;
}

export function sumMoney(values: Iterable<Micros>): Micros {
  let total = 0n;
  for (const v of values) total += v;
  return total;
}
