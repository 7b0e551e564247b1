/** Exponential backoff with full jitter. */

export interface BackoffParams {
  minMs: number;
  maxMs: number;
}

/**
 * The ceiling of attempt `attempt` (0-based): `min(maxMs, minMs * 2^attempt)`.
 */
export function backoffCeiling(attempt: number, p: BackoffParams): number {
  const n = Math.max(0, Math.floor(attempt));
  // 2^n overflows to Infinity for large n; min() handles that.
  return Math.min(p.maxMs, p.minMs * Math.pow(2, n));
}

/**
 * The delay before attempt `attempt` (0-based), uniformly random in
 * `[0, min(maxMs, minMs * 2^attempt)]` ("full jitter").
 */
export function backoffDelay(attempt: number, p: BackoffParams, random: () => number = Math.random): number {
  const ceiling = backoffCeiling(attempt, p);
  return Math.min(ceiling, Math.floor(random() * (ceiling + 1)));
}
