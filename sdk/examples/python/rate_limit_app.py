"""A rate-limit plugin in Python: each user may take `max` grants (default 1) per `window_ms`
(default 10 s), counted in a host counter that is scoped to the scene. The same decisions as
sdk/examples/rate_limit.rs.

World `rate-limit-plugin`: class `RateLimit`. Host functions are in `wit_world.imports.host`;
their errors are raised as `Err(HostError_…)`."""
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.rate_limit import Decision, Decision_Allow, Decision_Reject
from wit_world.imports import host
from wit_world.imports.types import CallContext

from hb_common import host_error, setting_i64, setting_u64


class RateLimit(exports.RateLimit):
    def check(self, ctx: CallContext) -> Decision:
        window_ms = setting_u64(ctx, "window_ms", 10_000)
        max_taken = setting_i64(ctx, "max", 1)
        try:
            taken = host.counter_add(f"user/{ctx.act_id}", 1, window_ms)
        except Err as e:
            raise host_error(e)
        if taken > max_taken:
            return Decision_Reject(f"{max_taken} per {window_ms} ms")
        return Decision_Allow()
