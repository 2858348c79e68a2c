"""Custom checks for the schemathesis run over /openapi.json (scripts/azure-sdk.sh loads
this module through SCHEMATHESIS_HOOKS)."""

import json

import schemathesis


@schemathesis.check
def arm_error_shape(ctx, response, case):
    """Every error answer is an ARM error body: {"error": {"code", "message", ...}}."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"error answer {response.status_code} is not JSON: {response.content[:200]!r}") from e
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
        raise AssertionError(f"error answer {response.status_code} is not in ARM shape: {body!r}")
    return None


@schemathesis.check
def no_retry_after_on_client_errors(ctx, response, case):
    """A Retry-After on a 4xx makes azure-core retry the request: never send one."""
    if 400 <= response.status_code < 500 and "retry-after" in response.headers:
        raise AssertionError(f"{response.status_code} carries Retry-After")
    return None
