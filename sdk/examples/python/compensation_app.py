"""A compensation plugin in Python: retry every failed step after a fixed `retry_ms` (default 500)
up to `max_attempts` times (default 3), then give up and alert. The same decisions as
sdk/examples/compensation.rs.

World `compensation-plugin`: class `Compensation`. Enums are `Enum` members (`Step.STORE_GRANT`)."""
from wit_world import exports
from wit_world.exports.compensation import (
    Failure,
    Remedy,
    Remedy_GiveUpAndAlert,
    Remedy_ReleaseStock,
    Remedy_RetryAfterMs,
    Step,
)
from wit_world.imports.types import CallContext

from hb_common import setting_u64


class Compensation(exports.Compensation):
    def decide(self, ctx: CallContext, failure: Failure) -> Remedy:
        retry_ms = setting_u64(ctx, "retry_ms", 500)
        max_attempts = setting_u64(ctx, "max_attempts", 3)
        if failure.attempt <= max_attempts:
            return Remedy_RetryAfterMs(retry_ms)
        if failure.step == Step.STORE_GRANT:
            # Nothing was granted yet: hand the reserved stock back.
            return Remedy_ReleaseStock()
        return Remedy_GiveUpAndAlert(f"{failure.error_code}: {failure.error_message}")
