"""What schemathesis needs to fuzz txmirror's API beyond JSON.

Loaded by the API fuzzing test in cli/tests/serve.rs through
SCHEMATHESIS_HOOKS. Module uploads and policies are not JSON: these
strategies give the fuzzer real ones (so that it reaches the code behind a
valid upload or policy) among broken ones (so that it tries the refusals).
Path parameters that name a module are pointed at a module the test
installed, most of the time, so that submissions run real transactions.
"""

import os
import random

import schemathesis
from hypothesis import strategies as st

with open(os.environ["TXMIRROR_FUZZ_COMPONENT"], "rb") as component:
    COMPONENT = component.read()
POLICY = os.environ["TXMIRROR_FUZZ_POLICY"].encode()
MODULE = os.environ["TXMIRROR_FUZZ_MODULE"]

schemathesis.openapi.media_type(
    "application/wasm",
    st.one_of(
        st.just(COMPONENT),
        # A component cut short, a core module's header, and noise.
        st.integers(min_value=0, max_value=len(COMPONENT) - 1).map(lambda n: COMPONENT[:n]),
        st.just(b"\0asm\x01\0\0\0"),
        st.binary(max_size=512),
    ),
)

schemathesis.openapi.media_type(
    "application/toml",
    st.one_of(
        st.just(POLICY),
        # The policy with a line of noise, and text that is not a policy.
        st.text(max_size=80).map(lambda line: POLICY + b"\n" + line.encode("utf-8", "surrogatepass")),
        st.binary(max_size=256),
    ),
)


@schemathesis.hook
def map_path_parameters(ctx, parameters):
    # Deleting the installed module would leave the other roles' runs
    # without it; other operations name it three times in four.
    if parameters and "hash" in parameters and ctx.operation.method.upper() != "DELETE":
        if random.random() < 0.75:
            parameters["hash"] = MODULE
    return parameters
