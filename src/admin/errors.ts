/**
 * The admin API's one error shape, `{ error: { code, message } }`, and the exception
 * routes throw to produce it. `app.ts` turns an `ApiError` into the response.
 */
export type ErrorStatus = 400 | 401 | 404 | 409 | 413 | 500 | 503 | 507;

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: ErrorStatus,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }

  get body(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details === undefined ? {} : { details: this.details }),
      },
    };
  }
}

export function notFound(what: string): ApiError {
  return new ApiError(404, "not_found", what);
}

export function badRequest(message: string, details?: unknown): ApiError {
  return new ApiError(400, "bad_request", message, details);
}
