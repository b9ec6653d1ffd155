//! Reading a JWT's `exp` (without verifying it: the server does) and when to refresh ahead of
//! it. Pure; works in browsers and Node (atob, TextDecoder).

/** Bytes of a base64 or base64url string. */
export function base64Bytes(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const bin = atob(padded);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** The `exp` of a JWT (seconds since the epoch), or null when it has none or is not a JWT. */
export function jwtExpiry(jwt) {
  if (typeof jwt !== 'string') return null;
  const parts = jwt.split('.');
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(new TextDecoder().decode(base64Bytes(parts[1])));
    return claims !== null && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch {
    return null;
  }
}

/**
 * Milliseconds from `nowMs` until a token expiring at `expSec` should be refreshed: `marginMs`
 * ahead of it, but never before half its remaining life (a short-lived token is not refreshed
 * at once), and 0 once it is due or past.
 */
export function refreshDelay(expSec, nowMs, marginMs) {
  const left = expSec * 1000 - nowMs;
  if (!(left > 0)) return 0;
  return Math.max(0, Math.round(left - Math.min(marginMs, left / 2)));
}
