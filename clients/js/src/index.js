//! The corecast JavaScript client's public entry: the client, its error, and the pure helpers
//! it is built from (exported for tests and for applications that want the rules alone).

export { CorecastClient, CorecastError } from './client.js';
export { Backoff } from './backoff.js';
export { classify, Ledger, busy } from './answers.js';
export { Topics, NO_HISTORY } from './topics.js';
export { jwtExpiry, refreshDelay } from './token.js';

import { CorecastClient } from './client.js';

/** A client for `url`, not yet connected: call `connect()`. */
export function createClient(url, options) {
  return new CorecastClient(url, options);
}
