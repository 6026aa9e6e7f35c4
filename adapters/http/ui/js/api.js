// Calls to this server with the signed-in token (kept in sessionStorage only).
const KEY = "tierlog.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

async function call(method, path, { signal, tokenOverride } = {}) {
  const answer = await fetch(path, {
    method,
    signal,
    headers: { Authorization: `Bearer ${tokenOverride || token.get()}` },
  });
  const body = await answer.json().catch(() => null);
  if (!answer.ok) {
    if (answer.status === 401 && !tokenOverride) onUnauthorized();
    throw new ApiError(answer.status, body);
  }
  return body;
}

export const get = (path, options) => call("GET", path, options);
export const post = (path, options) => call("POST", path, options);
